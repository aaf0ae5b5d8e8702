"""The hooks' settings: one YAML file that the node role writes, read by every hook run.

```yaml
controller_url: https://vpn.example.org        # the node API is <controller_url>/node-api/v1/
node_name: node-x1                             # HTTP Basic user name (the controller's nodes[].name)
token_file: /etc/vpnfleet/hooks.token          # the node's token; 0640 root:<OpenVPN's group>
ca_file: /etc/vpnfleet/controller-ca.pem       # optional; default: the system's CA bundle
timeout_seconds: 3                             # the whole call to the controller, 0.1 .. 30
crl_file: /var/lib/vpnfleet-crl/crl.pem        # the CRL OpenVPN checks; with no valid answer from
                                               # the controller a client gets in only while it is fresh
crl_ca_file: /etc/openvpn/server/pki/ca.crt    # the CA that signs it (fetch-crl checks the signature)
syslog: false                                  # also log each decision to syslog (LOG_DAEMON)
profile_id: office                             # optional; default: $VPNFLEET_PROFILE (setenv)
```
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vpnfleet.settings_file import SettingsReader, load_settings_file
from vpnfleet.shared.profiles import ProfileError, check_profile_id

DEFAULT_SETTINGS_PATH = Path("/etc/vpnfleet/hooks.yaml")
MIN_TIMEOUT_SECONDS = 0.1
# OpenVPN's client waits for its PUSH_REPLY; a check that takes longer than this helps nobody.
MAX_TIMEOUT_SECONDS = 30.0
# Settings that are no longer read, and why: a file that still sets one is refused.
RETIRED = {
    "unreachable_policy": (
        "retired: with no valid answer from the controller a client gets in only while the node's "
        "CRL (crl_file) is fresh, never on a policy (docs/hooks.md)"
    ),
}


@dataclass(frozen=True)
class HookSettings:
    controller_url: str
    node_name: str
    token: str  # read from token_file, never a setting of its own
    token_file: Path
    ca_file: Path | None = None
    timeout_seconds: float = 3.0
    # Without it, no valid answer means no: there is no CRL to rely on.
    crl_file: Path | None = None
    crl_ca_file: Path | None = None
    syslog: bool = False
    profile_id: str | None = None

    def __repr__(self) -> str:  # never the token
        return f"HookSettings(controller_url={self.controller_url!r}, node_name={self.node_name!r}, ...)"

    @property
    def node_api_url(self) -> str:
        return self.controller_url + "/node-api/v1"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> HookSettings:
        return load_settings_file(path, cls.from_mapping)

    @classmethod
    def from_mapping(cls, data: object) -> HookSettings:
        """The settings, checked; a SettingsError names the first wrong setting and the reason."""
        reader = SettingsReader(data)
        for name, reason in RETIRED.items():
            if isinstance(reader.data, dict) and name in reader.data:
                raise reader.fail(name, reason)
        reader.refuse_unknown(field.name for field in fields(cls) if field.name != "token")

        url = reader.get("controller_url", str, nonempty=True).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise reader.fail("controller_url", f"{url!r} must be an https:// URL without query or fragment")
        node_name = reader.get("node_name", str, nonempty=True)
        if ":" in node_name or any(ch.isspace() for ch in node_name):
            raise reader.fail("node_name", f"{node_name!r} must not contain ':' or white space")
        token_file = Path(reader.get("token_file", str, nonempty=True))
        # What the file leaves out keeps the dataclass's default.
        values: dict[str, Any] = {}

        if reader.has("ca_file"):
            ca_file = Path(reader.get("ca_file", str, nonempty=True))
            try:
                with open(ca_file, "rb") as handle:
                    if b"-----BEGIN CERTIFICATE-----" not in handle.read():
                        raise reader.fail("ca_file", f"{ca_file} holds no PEM certificate")
            except OSError as exc:
                raise reader.fail("ca_file", f"cannot read {ca_file}: {exc.strerror}") from None
            values["ca_file"] = ca_file

        if reader.has("timeout_seconds"):
            timeout = reader.get("timeout_seconds", (int, float))
            if not MIN_TIMEOUT_SECONDS <= timeout <= MAX_TIMEOUT_SECONDS:
                raise reader.fail(
                    "timeout_seconds",
                    f"{timeout} is not between {MIN_TIMEOUT_SECONDS} and {MAX_TIMEOUT_SECONDS}",
                )
            values["timeout_seconds"] = float(timeout)

        for name in ("crl_file", "crl_ca_file"):
            if reader.has(name):
                path = reader.get(name, str, nonempty=True)
                if not path.startswith("/"):
                    raise reader.fail(name, f"must be an absolute path (got {path!r})")
                values[name] = Path(path)
        if "crl_ca_file" in values and "crl_file" not in values:
            raise reader.fail("crl_ca_file", "is set without crl_file")

        if reader.has("syslog"):
            values["syslog"] = reader.get("syslog", bool)

        if reader.has("profile_id"):
            profile_id = reader.get("profile_id", str)
            try:
                check_profile_id(profile_id)
            except ProfileError as exc:
                raise reader.fail("profile_id", str(exc)) from None
            values["profile_id"] = profile_id

        return cls(
            controller_url=url,
            node_name=node_name,
            token=_read_token(reader, token_file),
            token_file=token_file,
            **values,
        )


def _read_token(reader: SettingsReader, path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            token = handle.read().strip()
    except OSError as exc:
        raise reader.fail("token_file", f"cannot read {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o007:
        raise reader.fail(
            "token_file", f"{path} is accessible to others (mode {stat.S_IMODE(mode):04o}); make it 0640"
        )
    if not token or any(ch.isspace() for ch in token):
        raise reader.fail("token_file", f"{path} must hold the token on one line")
    return token


def profile_from(settings: HookSettings | None, argument: str | None, environment: dict) -> str | None:
    """The profile of this OpenVPN process: --profile, else the settings, else $VPNFLEET_PROFILE."""
    for candidate in (
        argument,
        settings.profile_id if settings else None,
        environment.get("VPNFLEET_PROFILE"),
    ):
        if candidate:
            return candidate
    return None
