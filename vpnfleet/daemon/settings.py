"""The daemon's settings: one YAML (or JSON) file that the node role writes, checked at start-up."""

import ipaddress
import os
from dataclasses import dataclass, fields
from pathlib import Path

from vpnfleet.settings_file import read_settings_file

DEFAULT_CONFIG_PATH = Path("/etc/vpnfleet/daemon.yaml")
# The port eduVPN's vpn-daemon listens on; the controller expects it there.
DEFAULT_LISTEN_PORT = 41194
DEFAULT_MANAGEMENT_SOCKET_GLOB = "/run/openvpn-server/*.sock"
DEFAULT_MANAGEMENT_TIMEOUT = 2.0
# A process that takes longer than this is broken, and the controller's request must not hang on it.
MAX_MANAGEMENT_TIMEOUT = 30.0


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the setting and the reason."""


@dataclass(frozen=True)
class DaemonSettings:
    tls_certificate: Path
    tls_private_key: Path
    tls_ca: Path
    # The CA's CRL: a revoked controller certificate is refused from the next start on.
    tls_crl: Path | None = None
    listen_address: str = "::"
    listen_port: int = DEFAULT_LISTEN_PORT
    management_socket_glob: str = DEFAULT_MANAGEMENT_SOCKET_GLOB
    management_timeout: float = DEFAULT_MANAGEMENT_TIMEOUT

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "DaemonSettings":
        data = read_settings_file(path, ConfigError, "configuration")
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: object, source: str = "configuration") -> "DaemonSettings":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        known = {field.name for field in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        required = ("tls_certificate", "tls_private_key", "tls_ca")
        missing = [name for name in required if name not in data]
        if missing:
            raise ConfigError(f"{source}: missing required setting(s) {', '.join(missing)}")

        def fail(name: str, reason: str) -> ConfigError:
            return ConfigError(f"{source}: {name}: {reason} (got {data[name]!r})")

        values: dict[str, object] = {}
        for name in required:
            values[name] = _readable_file(data[name], lambda reason, name=name: fail(name, reason))
        if data.get("tls_crl") is not None:
            values["tls_crl"] = _readable_file(data["tls_crl"], lambda reason: fail("tls_crl", reason))
        if "listen_address" in data:
            try:
                values["listen_address"] = str(ipaddress.ip_address(data["listen_address"]))
            except ValueError:
                raise fail("listen_address", "not an IPv4 or IPv6 address") from None
        if "listen_port" in data:
            port = data["listen_port"]
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise fail("listen_port", "must be an integer from 1 to 65535")
            values["listen_port"] = port
        if "management_socket_glob" in data:
            pattern = data["management_socket_glob"]
            if not isinstance(pattern, str) or not pattern.startswith("/"):
                raise fail("management_socket_glob", "must be an absolute path pattern")
            values["management_socket_glob"] = pattern
        if "management_timeout" in data:
            timeout = data["management_timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise fail("management_timeout", "must be a number of seconds")
            if not 0 < timeout <= MAX_MANAGEMENT_TIMEOUT:
                raise fail(
                    "management_timeout", f"must be more than 0 and at most {MAX_MANAGEMENT_TIMEOUT:g}"
                )
            values["management_timeout"] = float(timeout)
        return cls(**values)


def _readable_file(value: object, fail) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise fail("must be an absolute path")
    path = Path(value)
    if not path.is_file():
        raise fail("no such file")
    if not os.access(path, os.R_OK):
        raise fail("not readable by this user")
    return path
