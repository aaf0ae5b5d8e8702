"""The signer's settings: one YAML file that the controller role writes, checked at start-up."""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path

from vpnfleet.controller.settings import parse_duration
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
    max_client_lifetime: timedelta = timedelta(days=90)
    # The CA's own CRL lifetime by default (the ca module's crl_lifetime_days).
    max_crl_lifetime: timedelta = timedelta(days=365)

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
        for name in ("max_client_lifetime", "max_crl_lifetime"):
            if reader.has(name):
                values[name] = parse_duration(reader.get(name, (str, int)), name)
        return cls(**values)
