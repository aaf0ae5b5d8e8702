"""The daemon's settings: one YAML (or JSON) file that the node role writes, checked at start-up."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vpnfleet.settings_file import SettingsReader, load_settings_file

from .wireguard import Interface

DEFAULT_SETTINGS_PATH = Path("/etc/vpnfleet/daemon.yaml")
# A process that takes longer than this is broken, and the controller's request must not hang on it.
MAX_MANAGEMENT_TIMEOUT = 30.0
IFNAMSIZ = 15


@dataclass(frozen=True)
class DaemonSettings:
    tls_certificate: Path
    tls_private_key: Path
    tls_ca: Path
    # The CA's CRL: a revoked controller certificate is refused from the next start on.
    tls_crl: Path | None = None
    listen_address: str = "::"
    # The port eduVPN's vpn-daemon listens on; the controller expects it there.
    listen_port: int = 41194
    management_socket_glob: str = "/run/openvpn-server/*.sock"
    management_timeout: float = 2.0
    # The node's maintenance mode (docs/daemon.md): present means in maintenance. In the unit's
    # StateDirectory, so it survives restarts and reboots.
    maintenance_flag_file: Path = Path("/var/lib/vpnfleet-daemon/maintenance")
    # GET /metrics on a port of its own (off when None), for the monitoring host only: mutual
    # TLS against the certificates in metrics_client_certificates (pinned: a monitoring host
    # holds no certificate of the fleet's CA, which would let it disconnect clients).
    metrics_listen_port: int | None = None
    metrics_client_certificates: Path | None = None
    # The certificate /metrics presents: the CA's `server` purpose (extended key usage serverAuth
    # alone). Not tls_certificate: daemon_server's own purpose OID is an arc (2.25.<128 bits>)
    # that Go's encoding/asn1 cannot hold, so Prometheus, a Go client, refuses that certificate.
    metrics_tls_certificate: Path | None = None
    metrics_tls_private_key: Path | None = None
    # The node's WireGuard interfaces, one per profile (the fleet plan's `wireguard` entries), and
    # the `wg` that reads and changes them.
    wireguard: tuple[Interface, ...] = ()
    wireguard_command: str = "/usr/bin/wg"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DaemonSettings:
        return load_settings_file(path, cls.from_mapping)

    @classmethod
    def from_mapping(cls, data: object) -> DaemonSettings:
        """The settings, checked; a SettingsError names the first wrong setting and the reason."""
        reader = SettingsReader(data)
        reader.refuse_unknown(field.name for field in fields(cls))
        # What the file leaves out keeps the dataclass's default.
        values: dict[str, Any] = {
            name: _readable_file(reader, name) for name in ("tls_certificate", "tls_private_key", "tls_ca")
        }
        if reader.has("tls_crl"):
            values["tls_crl"] = _readable_file(reader, "tls_crl")
        if reader.has("listen_address"):
            address = reader.get("listen_address", str)
            try:
                values["listen_address"] = str(ipaddress.ip_address(address))
            except ValueError:
                raise reader.fail(
                    "listen_address", f"not an IPv4 or IPv6 address (got {address!r})"
                ) from None
        for name in ("listen_port", "metrics_listen_port"):
            if reader.has(name):
                port = reader.get(name, int)
                if not 1 <= port <= 65535:
                    raise reader.fail(name, f"must be an integer from 1 to 65535 (got {port})")
                values[name] = port
        for name in ("metrics_client_certificates", "metrics_tls_certificate", "metrics_tls_private_key"):
            if reader.has(name):
                values[name] = _readable_file(reader, name)
        if values.get("metrics_listen_port") is not None:
            if values["metrics_listen_port"] == values.get("listen_port", cls.listen_port):
                raise reader.fail("metrics_listen_port", "must differ from listen_port")
            if not reader.has("metrics_client_certificates"):
                raise reader.fail(
                    "metrics_client_certificates", "is required with metrics_listen_port (who may scrape)"
                )
            for name in ("metrics_tls_certificate", "metrics_tls_private_key"):
                if not reader.has(name):
                    raise reader.fail(
                        name, "is required with metrics_listen_port (the node's `server` certificate)"
                    )
        if reader.has("management_socket_glob"):
            pattern = reader.get("management_socket_glob", str)
            if not pattern.startswith("/"):
                raise reader.fail(
                    "management_socket_glob", f"must be an absolute path pattern (got {pattern!r})"
                )
            values["management_socket_glob"] = pattern
        if reader.has("management_timeout"):
            timeout = reader.get("management_timeout", (int, float))
            if not 0 < timeout <= MAX_MANAGEMENT_TIMEOUT:
                raise reader.fail(
                    "management_timeout",
                    f"must be more than 0 and at most {MAX_MANAGEMENT_TIMEOUT:g} (got {timeout})",
                )
            values["management_timeout"] = float(timeout)
        if reader.has("maintenance_flag_file"):
            flag = reader.get("maintenance_flag_file", str)
            if not flag.startswith("/"):
                raise reader.fail("maintenance_flag_file", f"must be an absolute path (got {flag!r})")
            values["maintenance_flag_file"] = Path(flag)
        if reader.has("wireguard"):
            values["wireguard"] = _wireguard_interfaces(reader)
        if reader.has("wireguard_command"):
            command = reader.get("wireguard_command", str)
            if not command.startswith("/"):
                raise reader.fail("wireguard_command", f"must be an absolute path (got {command!r})")
            values["wireguard_command"] = command
        return cls(**values)


def _wireguard_interfaces(reader: SettingsReader) -> tuple[Interface, ...]:
    interfaces: list[Interface] = []
    for entry in reader.items("wireguard"):
        entry.refuse_unknown(("profile_id", "interface", "port", "ipv4_range", "ipv6_range"))
        name = entry.get("interface", str, nonempty=True)
        if len(name) > IFNAMSIZ or "/" in name or any(ch.isspace() for ch in name):
            raise entry.fail("interface", f"{name!r} is not an interface name (1-{IFNAMSIZ} characters)")
        port = entry.get("port", int)
        if not 1 <= port <= 65535:
            raise entry.fail("port", f"must be an integer from 1 to 65535 (got {port})")
        ipv4 = _interface_range(entry, "ipv4_range", interfaces)
        ipv6 = _interface_range(entry, "ipv6_range", interfaces) if entry.has("ipv6_range") else None
        if not isinstance(ipv4, ipaddress.IPv4Network) or not isinstance(ipv6, ipaddress.IPv6Network | None):
            raise entry.fail("ipv4_range", "ipv4_range must be an IPv4 and ipv6_range an IPv6 network")
        if any(other.name == name for other in interfaces):
            raise entry.fail("interface", f"{name} is named twice")
        interfaces.append(Interface(entry.get("profile_id", str, nonempty=True), name, port, ipv4, ipv6))
    return tuple(interfaces)


def _interface_range(
    entry: SettingsReader, family: str, interfaces: list[Interface]
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = entry.get(family, str)
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise entry.fail(family, f"not a CIDR network: {exc}") from None
    for other in interfaces:
        if any(network.overlaps(own) for own in other.ranges if own.version == network.version):
            raise entry.fail(family, f"{text} overlaps a range of interface {other.name}")
    return network


def _readable_file(reader: SettingsReader, name: str) -> Path:
    value = reader.get(name, str)
    if not value.startswith("/"):
        raise reader.fail(name, f"must be an absolute path (got {value!r})")
    path = Path(value)
    if not path.is_file():
        raise reader.fail(name, f"no such file (got {value!r})")
    if not os.access(path, os.R_OK):
        raise reader.fail(name, f"not readable by this user (got {value!r})")
    return path
