"""The hooks' settings: one YAML file that the node role writes, read by every hook run.

```yaml
controller_url: https://vpn.example.org        # the node API is <controller_url>/node-api/v1/
node_name: node-x1                             # HTTP Basic user name (the controller's nodes[].name)
token_file: /etc/vpnfleet/hooks.token          # the node's token; 0640 root:<OpenVPN's group>
ca_file: /etc/vpnfleet/controller-ca.pem       # optional; default: the system's CA bundle
timeout_seconds: 3                             # the whole call to the controller, 0.1 .. 30
unreachable_policy: allow                      # allow | deny: controller unreachable or 5xx
syslog: false                                  # also log each decision to syslog (LOG_DAEMON)
profile_id: office                             # optional; default: $VPNFLEET_PROFILE (setenv)
```
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vpnfleet.settings_file import read_settings_file
from vpnfleet.shared.profiles import ProfileError, check_profile_id

DEFAULT_CONFIG_PATH = Path("/etc/vpnfleet/hooks.yaml")
DEFAULT_TIMEOUT_SECONDS = 3.0
MIN_TIMEOUT_SECONDS = 0.1
# OpenVPN's client waits for its PUSH_REPLY; a check that takes longer than this helps nobody.
MAX_TIMEOUT_SECONDS = 30.0
POLICIES = ("allow", "deny")
DEFAULT_POLICY = "allow"
_KNOWN = (
    "controller_url",
    "node_name",
    "token_file",
    "ca_file",
    "timeout_seconds",
    "unreachable_policy",
    "syslog",
    "profile_id",
)


class ConfigError(Exception):
    """The settings cannot be used; the message names the file, the setting and the reason."""


@dataclass(frozen=True)
class HookSettings:
    controller_url: str
    node_name: str
    token: str
    token_file: Path
    ca_file: Path | None
    timeout_seconds: float
    unreachable_policy: str
    syslog: bool
    profile_id: str | None

    def __repr__(self) -> str:  # never the token
        return f"HookSettings(controller_url={self.controller_url!r}, node_name={self.node_name!r}, ...)"

    @property
    def node_api_url(self) -> str:
        return self.controller_url + "/node-api/v1"

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> HookSettings:
        data = read_settings_file(path, ConfigError, "hooks configuration")
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: object, source: str = "hooks configuration") -> HookSettings:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in _KNOWN)
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(_KNOWN)}"
            )

        def fail(name: str, why: str) -> ConfigError:
            return ConfigError(f"{source}: {name}: {why}")

        def text(name: str, required: bool = True) -> str | None:
            value = data.get(name)
            if value is None or value == "":
                if required:
                    raise fail(name, "is required")
                return None
            if not isinstance(value, str):
                raise fail(name, f"must be a string, got {type(value).__name__}")
            return value

        url = text("controller_url").rstrip("/")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise fail("controller_url", f"{url!r} must be an https:// URL without query or fragment")
        node_name = text("node_name")
        if ":" in node_name or any(ch.isspace() for ch in node_name):
            raise fail("node_name", f"{node_name!r} must not contain ':' or white space")

        token_file = Path(text("token_file"))
        token = _read_token(token_file, fail)

        ca_file = text("ca_file", required=False)
        if ca_file is not None:
            ca_file = Path(ca_file)
            try:
                with open(ca_file, "rb") as handle:
                    if b"-----BEGIN CERTIFICATE-----" not in handle.read():
                        raise fail("ca_file", f"{ca_file} holds no PEM certificate")
            except OSError as exc:
                raise fail("ca_file", f"cannot read {ca_file}: {exc.strerror}") from None

        timeout = data.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise fail("timeout_seconds", f"must be a number of seconds, got {timeout!r}")
        if not MIN_TIMEOUT_SECONDS <= timeout <= MAX_TIMEOUT_SECONDS:
            raise fail(
                "timeout_seconds", f"{timeout} is not between {MIN_TIMEOUT_SECONDS} and {MAX_TIMEOUT_SECONDS}"
            )

        policy = data.get("unreachable_policy", DEFAULT_POLICY)
        if policy not in POLICIES:
            raise fail("unreachable_policy", f"{policy!r} is not one of {', '.join(POLICIES)}")

        use_syslog = data.get("syslog", False)
        if not isinstance(use_syslog, bool):
            raise fail("syslog", f"must be true or false, got {use_syslog!r}")

        profile_id = text("profile_id", required=False)
        if profile_id is not None:
            try:
                check_profile_id(profile_id)
            except ProfileError as exc:
                raise fail("profile_id", str(exc)) from None

        return cls(
            controller_url=url,
            node_name=node_name,
            token=token,
            token_file=token_file,
            ca_file=ca_file,
            timeout_seconds=float(timeout),
            unreachable_policy=policy,
            syslog=use_syslog,
            profile_id=profile_id,
        )


def _read_token(path: Path, fail) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            token = handle.read().strip()
    except OSError as exc:
        raise fail("token_file", f"cannot read {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o007:
        raise fail(
            "token_file", f"{path} is accessible to others (mode {stat.S_IMODE(mode):04o}); make it 0640"
        )
    if not token or any(ch.isspace() for ch in token):
        raise fail("token_file", f"{path} must hold the token on one line")
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
