"""The controller's settings: one typed object, loaded from the YAML file the role writes.

Everything is checked when the service starts, so that a wrong file stops the service with a
message naming the setting, rather than failing on the first request that needs it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from vpnfleet.controller.login_settings import LdapSettings, OidcSettings, read_ldap, read_oidc
from vpnfleet.controller.oauth_clients import DEFAULT_OAUTH_CLIENTS, OAuthClient
from vpnfleet.settings_file import SettingsError, SettingsReader, load_settings_file
from vpnfleet.shared.profiles import PROTOCOLS, ProfileError, check_profile_id

# The VPN protocols a profile may offer (the contract of docs/node.md, "WireGuard").
OPENVPN = "openvpn"
WIREGUARD = "wireguard"
VPN_PROTOCOLS = (OPENVPN, WIREGUARD)

_DURATION = re.compile(r"^(\d+)([smhd])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def parse_duration(value: Any, setting: str) -> timedelta:
    """'90d', '12h', '30m', '45s' (or a number of seconds) as a timedelta."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match or int(match.group(1)) == 0:
        raise SettingsError(f"{setting}: {value!r} is not a duration like 90d, 12h, 30m or 45s")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class Profile:
    """What the controller needs of a profile. OpenVPN's client ranges, routes and DNS servers are
    the nodes' business: their server configs push them (the fleet plan checked them). WireGuard
    has no push: its configs carry the routes and DNS servers themselves."""

    id: str
    display_name: str
    default_gateway: bool
    groups: tuple[str, ...]  # empty: every user may use the profile
    tls_crypt_key_file: Path
    # The first is the one a client that takes either gets (eduVPN's preferred protocol).
    protocols: tuple[str, ...] = (OPENVPN,)
    routes: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()

    def allows(self, user_groups: list[str] | tuple[str, ...]) -> bool:
        return not self.groups or bool(set(self.groups) & set(user_groups))

    def offers(self, protocol: str) -> bool:
        return protocol in self.protocols


def _within(address: str, *networks: str | None) -> bool:
    try:
        found = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(found in ipaddress.ip_network(network) for network in networks if network)


@dataclass(frozen=True)
class NodeProcess:
    profile_id: str
    proto: str  # udp or tcp
    port: int
    max_clients: int | None
    # The process's name ("<profile>-<index>", as the node's daemon reports it) and address slices
    # (the fleet plan's), so that an address names its process. None in a file that leaves them out.
    name: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None

    def holds(self, address: str) -> bool:
        """Whether ``address`` lies in one of the process's slices."""
        return _within(address, self.ipv4, self.ipv6)


@dataclass(frozen=True)
class EntryPoint:
    """A public port of a node for a profile; nftables spreads its new flows over the processes."""

    profile_id: str
    proto: str
    port: int


@dataclass(frozen=True)
class WireguardSlice:
    """A node's WireGuard interface of a profile, as the fleet plan made it: the node's own
    address is the first host of each slice, the clients' addresses the controller hands out
    are the rest."""

    profile_id: str
    interface: str
    port: int
    ipv4_range: str
    ipv6_range: str | None = None
    ipv4_address: str | None = None
    ipv6_address: str | None = None

    def holds(self, address: str) -> bool:
        return _within(address, self.ipv4_range, self.ipv6_range)

    @property
    def client_addresses(self) -> int:
        """The configs the slice holds: its IPv4 addresses but the network's, the node's and the
        broadcast address (eduVPN's count of a WireGuard range too)."""
        return ipaddress.ip_network(self.ipv4_range).num_addresses - 3


@dataclass(frozen=True)
class Node:
    name: str
    location: str
    public_address: str
    daemon_address: str
    api_token_sha256: str
    processes: tuple[NodeProcess, ...]
    entry_points: tuple[EntryPoint, ...] = ()
    wireguard: tuple[WireguardSlice, ...] = ()

    def wireguard_of(self, profile_id: str) -> WireguardSlice | None:
        return next((interface for interface in self.wireguard if interface.profile_id == profile_id), None)

    def processes_of(self, profile_id: str) -> list[NodeProcess]:
        return [process for process in self.processes if process.profile_id == profile_id]

    def entry_points_of(self, profile_id: str) -> list[EntryPoint]:
        return [entry for entry in self.entry_points if entry.profile_id == profile_id]


@dataclass(frozen=True)
class DaemonClientTLS:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Settings:
    base_url: str
    secret_key: str
    database_url: str
    ca_dir: Path
    daemon_client: DaemonClientTLS
    profiles: tuple[Profile, ...]
    nodes: tuple[Node, ...]
    daemon_port: int = 41194
    daemon_timeout_seconds: float = 5.0
    session_expiry: timedelta = timedelta(days=90)
    max_configs_per_user: int = 3
    access_token_lifetime: timedelta = timedelta(hours=1)
    authorization_code_lifetime: timedelta = timedelta(minutes=5)
    login_max_failures: int = 5
    login_failure_window: timedelta = timedelta(minutes=15)
    login_delay_max: timedelta = timedelta(minutes=5)
    api_connect_limit: int = 20
    api_connect_window: timedelta = timedelta(hours=1)
    connection_log_retention: timedelta = timedelta(days=90)
    # How long a CRL the controller signs is valid (its nextUpdate). A node whose CRL is older
    # admits no client without the controller's yes, so this is how long the nodes ride out a
    # controller they cannot reach; it is also the longest a revocation can go unseen by a node
    # cut off from the controller (docs/security.md). Renewed at half-life (crl.RENEW_AT).
    crl_lifetime: timedelta = timedelta(hours=1)
    # Each node's share of a revocation's push (the CRL, then the disconnects run on in parallel).
    crl_push_timeout_seconds: float = 2.0
    oauth_clients: tuple[OAuthClient, ...] = field(default=DEFAULT_OAUTH_CLIENTS)
    # Behind nginx the service sees the proxy's address; trust its X-Forwarded-* headers.
    behind_proxy: bool = True
    # The signer service's socket: the CA key is the signer's, the app only asks it (docs/security.md).
    signer_socket: Path = Path("/run/vpnfleet-signer/signer.sock")
    # SHA-256 of the bearer token Prometheus scrapes /metrics with; None: no /metrics at all.
    metrics_token_sha256: str | None = None
    # Node choice (docs/controller.md): how long a node's /i/node answer is reused, how long a
    # config waits for the nodes at most, and how many nodes a config lists after the first.
    node_health_ttl_seconds: float = 5.0
    node_health_timeout_seconds: float = 2.0
    config_fallback_nodes: int = 2
    # Directory logins beside the local users (login_settings.py).
    ldap: LdapSettings | None = None
    oidc: OidcSettings | None = None

    def profile(self, profile_id: str) -> Profile | None:
        return next((profile for profile in self.profiles if profile.id == profile_id), None)

    def node(self, name: str) -> Node | None:
        return next((node for node in self.nodes if node.name == name), None)

    def wireguard_holder_of(self, address: str) -> tuple[Node, WireguardSlice] | None:
        """The node and WireGuard interface whose slice holds a client address."""
        return next(
            (
                (node, interface)
                for node in self.nodes
                for interface in node.wireguard
                if interface.holds(address)
            ),
            None,
        )

    def holder_of(self, address: str) -> tuple[Node, NodeProcess] | None:
        """The node and process whose slice holds a client address (the fleet plan makes them disjoint)."""
        return next(
            ((node, process) for node in self.nodes for process in node.processes if process.holds(address)),
            None,
        )

    def oauth_client(self, client_id: str) -> OAuthClient | None:
        return next((client for client in self.oauth_clients if client.client_id == client_id), None)


def _read_profile(reader: SettingsReader, ca_dir: Path) -> Profile:
    profile_id = reader.get("id", str)
    try:
        check_profile_id(profile_id)
    except ProfileError as error:
        raise SettingsError(f"{reader.where('id')}: {error}") from None
    protocols = reader.strings("protocols") if reader.has("protocols") else (OPENVPN,)
    unknown = [protocol for protocol in protocols if protocol not in VPN_PROTOCOLS]
    if not protocols or unknown or len(set(protocols)) != len(protocols):
        raise SettingsError(
            f"{reader.where('protocols')}: must list {' and/or '.join(VPN_PROTOCOLS)} once each, "
            f"got {list(protocols)}"
        )
    for setting in ("routes", "dns"):
        for value in reader.strings(setting):
            try:
                (ipaddress.ip_network if setting == "routes" else ipaddress.ip_address)(value)
            except ValueError as error:
                raise SettingsError(f"{reader.where(setting)}: {error}") from None
    return Profile(
        id=profile_id,
        display_name=reader.get("display_name", str, profile_id, nonempty=True),
        default_gateway=reader.get("default_gateway", bool, True),
        groups=reader.strings("groups"),
        tls_crypt_key_file=Path(
            reader.get("tls_crypt_key_file", str, str(ca_dir / f"tls-crypt-{profile_id}.key"))
        ),
        protocols=protocols,
        routes=reader.strings("routes"),
        dns=reader.strings("dns"),
        dns_search=reader.strings("dns_search"),
    )


def _read_wireguard(reader: SettingsReader, profiles: dict[str, Profile], node: str) -> WireguardSlice:
    profile_id = reader.get("profile", str)
    profile = profiles.get(profile_id)
    if profile is None or not profile.offers(WIREGUARD):
        raise SettingsError(f"{reader.where('profile')}: no WireGuard profile {profile_id!r} (node {node})")
    port = reader.get("port", int)
    if not 1 <= port <= 65535:
        raise SettingsError(f"{reader.where('port')}: {port} is not a port number")
    values = {}
    for key, check, version in (
        ("ipv4_range", ipaddress.ip_network, 4),
        ("ipv6_range", ipaddress.ip_network, 6),
        ("ipv4_address", ipaddress.ip_address, 4),
        ("ipv6_address", ipaddress.ip_address, 6),
    ):
        value = reader.get(key, str) if key == "ipv4_range" else reader.get(key, str, None)
        try:
            if value is not None and check(value).version != version:
                raise ValueError(f"{value!r} is not IPv{version}")
        except ValueError as error:
            raise SettingsError(f"{reader.where(key)}: {error}") from None
        values[key] = value
    return WireguardSlice(profile_id, reader.get("interface", str, nonempty=True), port, **values)


def _read_node(reader: SettingsReader, profiles: dict[str, Profile]) -> Node:
    profile_ids = set(profiles)
    name = reader.get("name", str)
    if not _NODE_NAME.match(name):
        raise SettingsError(f"{reader.where('name')}: {name!r} is not a host name")
    token_hash = reader.get("api_token_sha256", str).lower()
    if not _SHA256_HEX.match(token_hash):
        raise SettingsError(
            f"{reader.where('api_token_sha256')}: must be 64 hex digits (SHA-256 of the token)"
        )
    processes = []
    seen_ports: set[tuple[str, int]] = set()
    for process in reader.items("processes", []):
        profile_id = process.get("profile", str)
        if profile_id not in profile_ids:
            raise SettingsError(f"{process.where('profile')}: unknown profile {profile_id!r}")
        proto = process.get("proto", str)
        if proto not in PROTOCOLS:
            raise SettingsError(f"{process.where('proto')}: must be udp or tcp, got {proto!r}")
        port = process.get("port", int)
        if not 1 <= port <= 65535:
            raise SettingsError(f"{process.where('port')}: {port} is not a port number")
        if (proto, port) in seen_ports:
            raise SettingsError(f"{process.where('port')}: {proto}/{port} is used twice on node {name}")
        seen_ports.add((proto, port))
        max_clients = process.get("max_clients", int, None)
        slices = [process.get(family, str, None) for family in ("ipv4", "ipv6")]
        for family, network in zip(("ipv4", "ipv6"), slices, strict=True):
            try:
                if network is not None:
                    ipaddress.ip_network(network)
            except ValueError as error:
                raise SettingsError(f"{process.where(family)}: {error}") from None
        name_of_process = process.get("name", str, None)
        processes.append(NodeProcess(profile_id, proto, port, max_clients, name_of_process, *slices))
    entry_points = []
    for entry in reader.items("entry_points", []):
        profile_id = entry.get("profile", str)
        if profile_id not in profile_ids:
            raise SettingsError(f"{entry.where('profile')}: unknown profile {profile_id!r}")
        proto = entry.get("proto", str)
        if proto not in PROTOCOLS:
            raise SettingsError(f"{entry.where('proto')}: must be udp or tcp, got {proto!r}")
        port = entry.get("port", int)
        if not 1 <= port <= 65535:
            raise SettingsError(f"{entry.where('port')}: {port} is not a port number")
        entry_points.append(EntryPoint(profile_id, proto, port))
    public_address = reader.get("public_address", str, nonempty=True)
    return Node(
        name=name,
        location=reader.get("location", str, nonempty=True),
        public_address=public_address,
        daemon_address=reader.get("daemon_address", str, public_address, nonempty=True),
        api_token_sha256=token_hash,
        processes=tuple(processes),
        entry_points=tuple(entry_points),
        wireguard=tuple(_read_wireguard(item, profiles, name) for item in reader.items("wireguard", [])),
    )


def _read_oauth_clients(reader: SettingsReader) -> tuple[OAuthClient, ...]:
    clients = []
    for client in reader.items("oauth_clients"):
        client_id = client.get("client_id", str, nonempty=True)
        clients.append(
            OAuthClient(client_id, client.get("name", str, client_id), client.strings("redirect_uris"))
        )
        if not clients[-1].redirect_uris:
            raise SettingsError(f"{client.where('redirect_uris')}: must list at least one URI")
    return tuple(clients)


def _as_read(value: Any, setting: str) -> Any:
    return value


def _seconds(value: float, setting: str) -> float:
    return float(value)


def _sha256_hex(value: str, setting: str) -> str:
    if not _SHA256_HEX.match(value.lower()):
        raise SettingsError(f"{setting}: must be 64 hex digits (SHA-256 of the token)")
    return value.lower()


def _positive_seconds(value: float, setting: str) -> float:
    if value <= 0:
        raise SettingsError(f"{setting}: must be more than 0 seconds")
    return float(value)


def _not_negative(value: int, setting: str) -> int:
    if value < 0:
        raise SettingsError(f"{setting}: must be 0 or more")
    return value


def _at_least_one(value: int, setting: str) -> int:
    if value < 1:
        raise SettingsError(f"{setting}: must be at least 1")
    return value


def _crl_lifetime(value: Any, setting: str) -> timedelta:
    lifetime = parse_duration(value, setting)
    # The nodes pull every minute or so and the controller renews at half-life.
    if lifetime < timedelta(seconds=20):
        raise SettingsError(f"{setting}: must be at least 20s, so the nodes can renew it in time")
    return lifetime


def _push_timeout(value: float, setting: str) -> float:
    if not 0 < value <= 30:
        raise SettingsError(f"{setting}: must be more than 0 and at most 30 seconds")
    return float(value)


# The settings a file may leave out, each with its type in the file and how it becomes the value of
# Settings; their defaults are the dataclass's (Settings above), and nowhere else.
_OPTIONAL: dict[str, tuple[type | tuple[type, ...], Callable[[Any, str], Any]]] = {
    "daemon_port": (int, _as_read),
    "daemon_timeout_seconds": ((int, float), _seconds),
    "session_expiry": ((str, int), parse_duration),
    "max_configs_per_user": (int, _at_least_one),
    "access_token_lifetime": ((str, int), parse_duration),
    "authorization_code_lifetime": ((str, int), parse_duration),
    "login_max_failures": (int, _as_read),
    "login_failure_window": ((str, int), parse_duration),
    "login_delay_max": ((str, int), parse_duration),
    "api_connect_limit": (int, _at_least_one),
    "api_connect_window": ((str, int), parse_duration),
    "connection_log_retention": ((str, int), parse_duration),
    "crl_lifetime": ((str, int), _crl_lifetime),
    "crl_push_timeout_seconds": ((int, float), _push_timeout),
    "behind_proxy": (bool, _as_read),
    "signer_socket": (str, lambda value, _setting: Path(value)),
    "metrics_token_sha256": (str, _sha256_hex),
    "node_health_ttl_seconds": ((int, float), _positive_seconds),
    "node_health_timeout_seconds": ((int, float), _positive_seconds),
    "config_fallback_nodes": (int, _not_negative),
}


def settings_from_mapping(data: Any) -> Settings:
    """Build and check the settings; raises SettingsError naming the first wrong setting."""
    reader = SettingsReader(data, "")
    secret_key = reader.get("secret_key", str, None)
    if secret_key is None:
        secret_file = Path(reader.get("secret_key_file", str))
        try:
            secret_key = secret_file.read_text().strip()
        except OSError as error:
            raise SettingsError(f"secret_key_file: cannot read {secret_file}: {error.strerror}") from None
    if len(secret_key) < 32:
        raise SettingsError("secret_key: must be at least 32 characters")
    base_url = reader.get("base_url", str).rstrip("/")
    if not re.match(r"^https?://[^/]+", base_url):
        raise SettingsError(f"base_url: {base_url!r} must be an http(s) URL")
    ca_dir = Path(reader.get("ca_dir", str))
    profiles = tuple(_read_profile(item, ca_dir) for item in reader.items("profiles"))
    profile_ids = [profile.id for profile in profiles]
    if len(set(profile_ids)) != len(profile_ids):
        raise SettingsError(f"profiles: a profile id is used twice: {profile_ids}")
    nodes = tuple(
        _read_node(item, {profile.id: profile for profile in profiles}) for item in reader.items("nodes", [])
    )
    node_names = [node.name for node in nodes]
    if len(set(node_names)) != len(node_names):
        raise SettingsError(f"nodes: a node name is used twice: {node_names}")
    daemon = SettingsReader(reader.get("daemon_client", dict), "daemon_client")
    optional = {
        setting: convert(reader.get(setting, kind), setting)
        for setting, (kind, convert) in _OPTIONAL.items()
        if reader.has(setting)
    }
    if "oauth_clients" in reader.data:
        optional["oauth_clients"] = _read_oauth_clients(reader)
    if reader.has("ldap"):
        optional["ldap"] = read_ldap(SettingsReader(reader.get("ldap", dict), "ldap"))
    if reader.has("oidc"):
        optional["oidc"] = read_oidc(SettingsReader(reader.get("oidc", dict), "oidc"))
    return Settings(
        base_url=base_url,
        secret_key=secret_key,
        database_url=reader.get("database_url", str),
        ca_dir=ca_dir,
        daemon_client=DaemonClientTLS(
            Path(daemon.get("cert", str)), Path(daemon.get("key", str)), Path(daemon.get("ca", str))
        ),
        profiles=profiles,
        nodes=nodes,
        **optional,
    )


def load_settings(path: str | Path) -> Settings:
    """Load the settings file that the role writes."""
    return load_settings_file(path, settings_from_mapping)
