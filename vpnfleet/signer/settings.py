"""The signer's settings: one YAML file that the controller role writes, checked at start-up."""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path

from vpnfleet.settings_file import SettingsReader, load_settings_file

DEFAULT_SETTINGS_PATH = Path("/etc/vpnfleet/signer.yml")


@dataclass(frozen=True)
class SignerSettings:
    ca_dir: Path
    # Where the signer makes its socket when systemd did not hand it one (tests, a manual run).
    socket: Path = Path("/run/vpnfleet-signer/signer.sock")
    # The group that may connect to a socket the signer makes (systemd's SocketGroup otherwise).
    socket_group: str | None = None
    # No client certificate outlives this: the controller's longest session (90 days by default).
    max_client_lifetime_days: float = 90.0
    max_crl_lifetime_days: float = 30.0

    @property
    def max_client_lifetime(self) -> timedelta:
        return timedelta(days=self.max_client_lifetime_days)

    @property
    def max_crl_lifetime(self) -> timedelta:
        return timedelta(days=self.max_crl_lifetime_days)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SignerSettings:
        return load_settings_file(path, cls.from_mapping)

    @classmethod
    def from_mapping(cls, data: object) -> SignerSettings:
        reader = SettingsReader(data)
        reader.refuse_unknown(field.name for field in fields(cls))
        ca_dir = Path(reader.get("ca_dir", str, nonempty=True))
        if not (ca_dir / "ca.key").is_file():
            raise reader.fail("ca_dir", f"no CA key in {ca_dir} (ca.key)")
        values: dict = {"ca_dir": ca_dir}
        if reader.has("socket"):
            values["socket"] = Path(reader.get("socket", str, nonempty=True))
        if reader.has("socket_group"):
            group = reader.get("socket_group", str, nonempty=True)
            try:
                grp.getgrnam(group)
            except KeyError:
                raise reader.fail("socket_group", f"no such group: {group}") from None
            values["socket_group"] = group
        for name in ("max_client_lifetime_days", "max_crl_lifetime_days"):
            if reader.has(name):
                days = reader.get(name, (int, float))
                if not 0 < days <= 3650:
                    raise reader.fail(name, f"must be more than 0 and at most 3650 days (got {days})")
                values[name] = float(days)
        return cls(**values)
