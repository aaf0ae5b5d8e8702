"""Planning and configuring the OpenVPN server processes of one profile on one node.

Pure functions on the standard library, shared by the ``openvpn_instances`` module and the
services (imported as ``vpnfleet.shared.instances``).

Public interface
----------------
    PlanError                       every refusal; the message names the cause
    parse_listen(entry)             "udp/1194" or {"proto": "udp", "port": 1194} -> ("udp", 1194)
    protocol_mix(count, tcp_share)  ["udp", ..., "tcp", ...]
    split_ipv4(network, count)      the IPv4 slices (see the rule below)
    split_ipv6(network, count)      one /112 per process
    plan_profile(...) -> ProfilePlan; ProfilePlan.from_dict(plan.as_dict()) == plan
    ServerOptions                   what a rendered config needs beyond the plan
    render_server_config(plan, process, options) -> str
    unit_name(profile_id, index), config_path(...), management_socket(...), device_name(...)
    process_index_of(profile_id, instance_name) -> int or None
    wireguard_interface(profile_id)  the node's WireGuard interface of a profile ("wg-<profile>")
    plan_wireguard(profile_id, ipv4_part, ipv6_part, port) -> WireGuardPlan (the node's part of
                                    the profile's WireGuard ranges, its own address on it, its port)

The rule (eduVPN v3 and beyond)
-------------------------------
eduVPN v3 allows 1, 2, 4, ... 64 processes and gives each an equal IPv4 slice. We allow any
count: the profile's IPv4 range is halved again and again, always splitting the last of the
largest blocks, until there are as many blocks as processes. With a power of two this is
eduVPN's equal split; otherwise the first processes get blocks twice the size of the last ones
and nothing of the range is left unused (3 processes in a /24: a /25 and two /26). Blocks are
handed out in address order, UDP processes first, so the bigger slices serve UDP, the protocol
most clients use. The smallest slice OpenVPN accepts is a /29.

``max-clients`` of a process is 2^(32-p) - 4: the network and broadcast addresses, the server's
own address and the last host, which OpenVPN keeps out of its pool, cannot go to clients. A
client finding a process full moves on to the next one.

Each process gets the next /112 of the profile's IPv6 range (eduVPN's choice), which holds
more addresses than any IPv4 slice.

WireGuard needs no processes: the node has one interface per profile, which holds the node's
whole part of the profile's WireGuard ranges; the node's own address is the part's first host and
the clients get the others (the controller hands them out).

Protocols: with ``tcp_share`` t (0.25 by default, eduVPN's 75/25), floor(n*t) processes use TCP
but at least one once there are two processes, so networks that block UDP are always served.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import itertools
import math
import re

# The profile's own checks and defaults live in profiles.py.
from .profiles import (
    DEFAULT_PORT_BASE,
    DEFAULT_TCP_SHARE,
    DEFAULT_WIREGUARD_PORT,
    PROTOCOLS,
    ProfileError,
    check_profile_id,
    parse_dns_server,
    parse_listen,
    parse_network,
)

SMALLEST_IPV4_SLICE = 29
IPV6_SLICE = 112
# OpenVPN keeps the network, broadcast, its own and the last host address out of the pool.
ADDRESSES_NOT_FOR_CLIENTS = 4
TLS_VERSIONS = ("1.2", "1.3")

CONFIG_DIR = "/etc/openvpn/server"
MANAGEMENT_DIR = "/run/openvpn-server"
UNIT_TEMPLATE = "openvpn-server@"
IFNAMSIZ = 15

# A profile that cannot be laid out is a profile that cannot be used: one error type for both,
# whose ``field`` names the profile field to change.
PlanError = ProfileError


# ----------------------------------------------------------------------------- names


def instance_name(profile_id, index):
    return "%s-%d" % (profile_id, index)


def unit_name(profile_id, index):
    return UNIT_TEMPLATE + instance_name(profile_id, index)


def config_path(profile_id, index, directory=CONFIG_DIR):
    return "%s/%s.conf" % (directory, instance_name(profile_id, index))


def management_socket(profile_id, index, directory=MANAGEMENT_DIR):
    return "%s/%s.sock" % (directory, instance_name(profile_id, index))


def device_name(profile_id, index):
    """``tun-<profile>-<i>``; a long profile id is replaced by a short digest so the name fits
    the kernel's 15 characters and stays unique and stable. All start with ``tun-``."""
    name = "tun-%s" % instance_name(profile_id, index)
    if len(name) <= IFNAMSIZ:
        return name
    digest = hashlib.sha256(profile_id.encode()).hexdigest()[:5]
    return "tun-%s-%d" % (digest, index)


def process_index_of(profile_id, name):
    """The process index when ``name`` ("<profile>-<i>", maybe with ``.conf``/unit prefix) is one of
    this profile's processes; None otherwise (so profile "a" never claims "a-1-0" of profile "a-1")."""
    if name.startswith(UNIT_TEMPLATE):
        name = name[len(UNIT_TEMPLATE) :]
    for suffix in (".service", ".conf"):
        name = name.removesuffix(suffix)
    match = re.fullmatch(re.escape(profile_id) + r"-(0|[1-9][0-9]*)", name)
    return int(match.group(1)) if match else None


def wireguard_interface(profile_id):
    """``wg-<profile>``; a profile id too long for the kernel's 15 characters becomes a digest of
    it (``wg-`` and 12 hex digits), stable and unique like the tun devices' names."""
    name = "wg-%s" % profile_id
    if len(name) <= IFNAMSIZ:
        return name
    return "wg-%s" % hashlib.sha256(profile_id.encode()).hexdigest()[: IFNAMSIZ - 3]


# ----------------------------------------------------------------------------- protocols, ports


def protocol_mix(count, tcp_share=DEFAULT_TCP_SHARE):
    if not 0 <= tcp_share <= 1:
        raise PlanError("tcp_share %r: must be between 0 and 1" % (tcp_share,), "tcp_share")
    tcp = math.floor(count * tcp_share + 1e-9)
    if count >= 2 and 0 < tcp_share < 1:
        tcp = min(max(tcp, 1), count - 1)
    return ["udp"] * (count - tcp) + ["tcp"] * tcp


def _auto_listeners(protocols, udp_port_base, tcp_port_base):
    next_port = {"udp": udp_port_base, "tcp": tcp_port_base}
    listeners = []
    for proto in protocols:
        listeners.append((proto, next_port[proto]))
        next_port[proto] += 1
    for proto, port in listeners:
        if port > 65535:
            raise PlanError("ports run past 65535: lower %s_port_base" % proto, "%s_port_base" % proto)
    return listeners


def _check_ports(profile_id, listeners, ports_in_use, explicit):
    """``explicit``: the listeners come from ``listen`` (else from the port bases)."""
    seen = set()
    for listener in listeners:
        if listener in seen:
            raise PlanError("profile %s: %s/%d is listed twice" % (profile_id, *listener), "listen")
        seen.add(listener)
    for other_profile, entries in sorted((ports_in_use or {}).items()):
        if other_profile == profile_id:
            continue
        taken = {parse_listen(entry) for entry in entries}
        clashes = sorted(seen & taken)
        if clashes:
            raise PlanError(
                "profile %s: %s already used by profile %s; choose other ports or port bases"
                % (profile_id, ", ".join("%s/%d" % clash for clash in clashes), other_profile),
                "listen" if explicit else "%s_port_base" % clashes[0][0],
            )


# ----------------------------------------------------------------------------- address slices


def _network(text, version, what, field):
    try:
        return parse_network(text, version)
    except ProfileError as exc:
        raise PlanError("%s %s" % (what, exc), field) from None


def split_ipv4(network, count):
    """``count`` slices covering ``network``, sizes differing at most by a factor of two."""
    network = ipaddress.ip_network(network)
    needed_bits = math.ceil(math.log2(count)) if count > 1 else 0
    if network.prefixlen + needed_bits > SMALLEST_IPV4_SLICE:
        most = 2 ** max(SMALLEST_IPV4_SLICE - network.prefixlen, 0)
        fitting_prefix = SMALLEST_IPV4_SLICE - needed_bits
        raise PlanError(
            "IPv4 range %s is too small for %d processes: each needs at least a /%d, so it holds at "
            "most %d; give the profile a /%d or larger, or fewer processes"
            % (network, count, SMALLEST_IPV4_SLICE, most, fitting_prefix),
            "ipv4_range",
        )
    blocks = [network]
    while len(blocks) < count:
        largest = min(block.prefixlen for block in blocks)
        last_largest = max(i for i, block in enumerate(blocks) if block.prefixlen == largest)
        blocks[last_largest : last_largest + 1] = list(blocks[last_largest].subnets(prefixlen_diff=1))
    return blocks


def split_ipv6(network, count):
    network = ipaddress.ip_network(network)
    available = 2 ** (IPV6_SLICE - network.prefixlen) if network.prefixlen <= IPV6_SLICE else 0
    if count > available:
        raise PlanError(
            "IPv6 range %s is too small for %d processes: each gets a /%d; give the profile a /%d or larger"
            % (
                network,
                count,
                IPV6_SLICE,
                IPV6_SLICE - math.ceil(math.log2(count)) if count > 1 else IPV6_SLICE,
            ),
            "ipv6_range",
        )
    return list(itertools.islice(network.subnets(new_prefix=IPV6_SLICE), count))


# ----------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class ProcessPlan:
    profile_id: str
    index: int
    proto: str
    port: int
    ipv4: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network | None
    listen_address: str | None

    @property
    def name(self):
        return instance_name(self.profile_id, self.index)

    @property
    def max_clients(self):
        return self.ipv4.num_addresses - ADDRESSES_NOT_FOR_CLIENTS

    @property
    def openvpn_proto(self):
        """udp6/tcp6-server listen on IPv4 and IPv6 at once unless bound to an IPv4 address."""
        ipv4_only = self.listen_address and ipaddress.ip_address(self.listen_address).version == 4
        suffix = "" if ipv4_only else "6"
        return "udp" + suffix if self.proto == "udp" else "tcp%s-server" % suffix

    def as_dict(self):
        return {
            "index": self.index,
            "name": self.name,
            "proto": self.proto,
            "port": self.port,
            "ipv4": str(self.ipv4),
            "ipv4_gateway": str(self.ipv4.network_address + 1),
            "max_clients": self.max_clients,
            "ipv6": str(self.ipv6) if self.ipv6 else None,
            "ipv6_gateway": str(self.ipv6.network_address + 1) if self.ipv6 else None,
            "management_socket": management_socket(self.profile_id, self.index),
            "device": device_name(self.profile_id, self.index),
            "unit": unit_name(self.profile_id, self.index),
            "config_path": config_path(self.profile_id, self.index),
            "listen_address": self.listen_address,
        }

    @classmethod
    def from_dict(cls, data, profile_id):
        """The inverse of ``as_dict``; the fields ``as_dict`` derives from the others are not read."""
        what = "process %r of the plan of profile %s" % (data, profile_id)
        try:
            ipv6 = data.get("ipv6")
            process = cls(
                profile_id,
                int(data["index"]),
                data["proto"],
                int(data["port"]),
                ipaddress.IPv4Network(data["ipv4"]),
                ipaddress.IPv6Network(ipv6) if ipv6 else None,
                data.get("listen_address"),
            )
        except KeyError as exc:
            raise PlanError("%s: %s is missing" % (what, exc)) from None
        except (AttributeError, TypeError, ValueError) as exc:
            raise PlanError("%s: %s" % (what, exc)) from None
        if process.proto not in PROTOCOLS:
            raise PlanError("%s: proto must be udp or tcp" % what)
        return process


@dataclasses.dataclass(frozen=True)
class ProfilePlan:
    profile_id: str
    ipv4_range: ipaddress.IPv4Network
    ipv6_range: ipaddress.IPv6Network | None
    processes: tuple

    @property
    def capacity(self):
        return sum(process.max_clients for process in self.processes)

    def listeners(self):
        return ["%s/%d" % (process.proto, process.port) for process in self.processes]

    def as_dict(self):
        return {
            "profile_id": self.profile_id,
            "ipv4_range": str(self.ipv4_range),
            "ipv6_range": str(self.ipv6_range) if self.ipv6_range else None,
            "process_count": len(self.processes),
            "udp": sum(1 for process in self.processes if process.proto == "udp"),
            "tcp": sum(1 for process in self.processes if process.proto == "tcp"),
            "max_clients": self.capacity,
            "listeners": self.listeners(),
            "processes": [process.as_dict() for process in self.processes],
        }

    @classmethod
    def from_dict(cls, data):
        """A plan as ``as_dict`` gave it (made on the control machine), without planning it again."""
        if not isinstance(data, dict):
            raise PlanError("a plan is a mapping as ProfilePlan.as_dict() returns it, not %r" % (data,))
        try:
            profile_id = data["profile_id"]
            check_profile_id(profile_id)
            ipv6_range = data.get("ipv6_range")
            ipv4_range = ipaddress.IPv4Network(data["ipv4_range"])
            ipv6_range = ipaddress.IPv6Network(ipv6_range) if ipv6_range else None
            entries = data["processes"]
        except KeyError as exc:
            raise PlanError("the plan %r: %s is missing" % (data, exc)) from None
        except (TypeError, ValueError) as exc:
            raise PlanError("the plan of profile %s: %s" % (data.get("profile_id"), exc)) from None
        if not isinstance(entries, list) or not entries:
            raise PlanError("the plan of profile %s has no processes" % profile_id)
        processes = tuple(ProcessPlan.from_dict(entry, profile_id) for entry in entries)
        if [process.index for process in processes] != list(range(len(processes))):
            raise PlanError(
                "the plan of profile %s: process indexes must be 0, 1, 2, ... in order" % profile_id
            )
        return cls(profile_id, ipv4_range, ipv6_range, processes)


def plan_profile(
    profile_id,
    ipv4_range,
    ipv6_range=None,
    cores=None,
    processes=None,
    listen=None,
    tcp_share=DEFAULT_TCP_SHARE,
    udp_port_base=DEFAULT_PORT_BASE,
    tcp_port_base=DEFAULT_PORT_BASE,
    ports_in_use=None,
    listen_address=None,
):
    """Lay out one profile's processes on a node.

    The count comes from ``listen`` (an explicit list of proto/port) if given, else ``processes``,
    else ``cores``. ``ports_in_use`` maps other profiles' ids to their listeners ("udp/1194").
    """
    check_profile_id(profile_id)
    ipv4_network = _network(ipv4_range, 4, "IPv4 range", "ipv4_range")
    ipv6_network = _network(ipv6_range, 6, "IPv6 range", "ipv6_range") if ipv6_range else None
    if listen_address:
        try:
            ipaddress.ip_address(listen_address)
        except ValueError:
            raise PlanError("listen address %r is not an IP address" % (listen_address,)) from None

    if listen:
        listeners = [parse_listen(entry) for entry in listen]
        if processes and processes != len(listeners):
            raise PlanError(
                "processes is %d but listen names %d listeners" % (processes, len(listeners)), "processes"
            )
        # UDP first, so the bigger slices go to UDP; the given order holds within each protocol.
        listeners = [entry for entry in listeners if entry[0] == "udp"] + [
            entry for entry in listeners if entry[0] == "tcp"
        ]
    else:
        count = processes or cores
        if not count or count < 1:
            raise PlanError(
                "profile %s: give cores, processes or listen (at least one process)" % profile_id, "processes"
            )
        listeners = _auto_listeners(protocol_mix(count, tcp_share), udp_port_base, tcp_port_base)
    _check_ports(profile_id, listeners, ports_in_use, explicit=bool(listen))

    count = len(listeners)
    ipv4_slices = split_ipv4(ipv4_network, count)
    ipv6_slices = split_ipv6(ipv6_network, count) if ipv6_network else [None] * count
    plans = tuple(
        ProcessPlan(profile_id, index, proto, port, ipv4_slices[index], ipv6_slices[index], listen_address)
        for index, (proto, port) in enumerate(listeners)
    )
    return ProfilePlan(profile_id, ipv4_network, ipv6_network, plans)


@dataclasses.dataclass(frozen=True)
class WireGuardPlan:
    """One profile's WireGuard interface on one node."""

    profile_id: str
    port: int
    ipv4_range: ipaddress.IPv4Network
    ipv6_range: ipaddress.IPv6Network | None

    @property
    def interface(self):
        return wireguard_interface(self.profile_id)

    def as_dict(self):
        return {
            "interface": self.interface,
            "port": self.port,
            "ipv4_range": str(self.ipv4_range),
            "ipv6_range": str(self.ipv6_range) if self.ipv6_range else None,
            # The node's own address, on the interface with the part's prefix length.
            "ipv4_address": str(self.ipv4_range.network_address + 1),
            "ipv6_address": str(self.ipv6_range.network_address + 1) if self.ipv6_range else None,
        }


def plan_wireguard(profile_id, ipv4_part, ipv6_part=None, port=None):
    """The node's WireGuard interface of a profile, on the node's part of its ranges. A part must
    leave room for clients beside the node's address: a /29 at most for IPv4 (as an OpenVPN
    process's slice), a /112 at most for IPv6 (SMALLEST_IPV4_SLICE, IPV6_SLICE)."""
    check_profile_id(profile_id)
    ipv4 = _network(ipv4_part, 4, "WireGuard IPv4 range", "wireguard_ipv4_range")
    ipv6 = _network(ipv6_part, 6, "WireGuard IPv6 range", "wireguard_ipv6_range") if ipv6_part else None
    for network, smallest, field in (
        (ipv4, SMALLEST_IPV4_SLICE, "wireguard_ipv4_range"),
        (ipv6, IPV6_SLICE, "wireguard_ipv6_range"),
    ):
        if network is not None and network.prefixlen > smallest:
            raise PlanError(
                "the node's part %s is smaller than a /%d, too small for the node's address and its clients"
                % (network, smallest),
                field,
            )
    return WireGuardPlan(profile_id, port if port is not None else DEFAULT_WIREGUARD_PORT, ipv4, ipv6)


# ----------------------------------------------------------------------------- server config


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Everything a process's config needs beyond its plan. Key material stays in files the
    config names, so a config holds no secret and can be shown in a diff."""

    ca_path: str
    cert_path: str
    key_path: str
    crl_path: str
    tls_crypt_path: str
    full_tunnel: bool = True
    routes: tuple = ()
    dns_servers: tuple = ()
    dns_search_domains: tuple = ()
    block_lan: bool = False
    client_to_client: bool = False
    tls_version_min: str = "1.3"
    cpu_has_aes: bool = True
    user: str | None = "nobody"
    group: str | None = "nogroup"
    client_connect: str | None = None
    client_disconnect: str | None = None
    extra_directives: tuple = ()
    verbosity: int = 3

    def __post_init__(self):
        if self.tls_version_min not in TLS_VERSIONS:
            raise PlanError("tls_version_min must be one of %s" % ", ".join(TLS_VERSIONS))
        for route in self.routes:
            _route(route)
        for server in self.dns_servers:
            try:
                parse_dns_server(server)
            except ProfileError as exc:
                raise PlanError("DNS server %s" % exc, "dns") from None
        for value in (*self.extra_directives, *self.dns_search_domains):
            if "\n" in str(value) or '"' in str(value):
                raise PlanError("%r: newlines and double quotes are not allowed in a config line" % (value,))


def _route(text):
    try:
        return parse_network(text)
    except ProfileError as exc:
        raise PlanError("route %s" % exc, "routes") from None


def _push_route(network):
    if network.version == 6:
        return 'push "route-ipv6 %s"' % network
    return 'push "route %s %s"' % (network.network_address, network.netmask)


def render_server_config(plan, process, options):
    """The config of one process, as OpenVPN 2.6 reads it. Deterministic, so an unchanged plan
    renders byte for byte the same and nothing restarts."""
    aead_ciphers = ["AES-256-GCM", "CHACHA20-POLY1305"]
    if not options.cpu_has_aes:
        # Without AES-NI ChaCha20 is the faster cipher; clients take the first one they share.
        aead_ciphers.reverse()
    lines = [
        "# Written by vpnfleet (vpnfleet.server.openvpn_instances); changes here are overwritten.",
        "# profile %s, process %d (of processes 0-%d)"
        % (plan.profile_id, process.index, len(plan.processes) - 1),
        "verb %d" % options.verbosity,
        "dev %s" % device_name(plan.profile_id, process.index),
        "dev-type tun",
        "topology subnet",
        "proto %s" % process.openvpn_proto,
        "port %d" % process.port,
    ]
    if process.listen_address:
        lines.append("local %s" % process.listen_address)
    lines += [
        "server %s %s" % (process.ipv4.network_address, process.ipv4.netmask),
    ]
    if process.ipv6:
        lines.append("server-ipv6 %s" % process.ipv6)
    lines += [
        "max-clients %d" % process.max_clients,
        # A reconnect storm after a restart must refill a full process within seconds.
        "connect-freq-initial %d 10" % max(100, process.max_clients),
        # Failover in seconds (docs/node.md): clients ping every 2 s and give a silent node up
        # after 8 s (the server waits twice that before it drops a silent client).
        "keepalive 2 8",
        # eduVPN's choice: new data channel keys every 10 hours instead of every hour.
        "reneg-sec 36000",
        "persist-key",
        "persist-tun",
    ]
    if options.user:
        lines.append("user %s" % options.user)
    if options.group:
        lines.append("group %s" % options.group)
    lines += [
        "ca %s" % options.ca_path,
        "cert %s" % options.cert_path,
        "key %s" % options.key_path,
        "crl-verify %s" % options.crl_path,
        "tls-crypt %s" % options.tls_crypt_path,
        "dh none",
        "tls-version-min %s" % options.tls_version_min,
        "verify-client-cert require",
        "remote-cert-tls client",
        "data-ciphers %s" % ":".join(aead_ciphers),
        "allow-compression no",
        "management %s unix" % management_socket(plan.profile_id, process.index),
        "setenv VPNFLEET_PROFILE %s" % plan.profile_id,
        "setenv VPNFLEET_PROCESS %d" % process.index,
    ]
    if process.proto == "udp":
        # When this process stops its clients are told to take the next remote (2: "[N]"), which
        # is another node; and they are asked to tell us when they leave.
        lines += ["explicit-exit-notify 2", 'push "explicit-exit-notify 1"']
        # Writes to the tun device and the socket without a poll first: less CPU per GB at the
        # same load (bench/dataplane.py's ablation, docs/bench.md). OpenVPN 2.7 ignores it.
        lines.append("fast-io")
    else:
        lines.append("tcp-nodelay")
    if options.client_connect or options.client_disconnect:
        lines.append("script-security 2")
        if options.client_connect:
            lines.append("client-connect %s" % options.client_connect)
        if options.client_disconnect:
            lines.append("client-disconnect %s" % options.client_disconnect)
    lines += _routing_lines(plan, options)
    lines += _dns_lines(options)
    lines += list(options.extra_directives)
    return "\n".join(lines) + "\n"


def _routing_lines(plan, options):
    lines = []
    if options.full_tunnel:
        flags = ["def1"] + (["ipv6"] if plan.ipv6_range else [])
        if options.block_lan:
            flags.append("block-local")
        lines.append('push "redirect-gateway %s"' % " ".join(flags))
        # eduVPN's quirk: Windows only believes it is online with a plain default route as well.
        lines.append('push "route 0.0.0.0 0.0.0.0"')
    else:
        lines += [_push_route(_route(route)) for route in options.routes]
    if options.client_to_client:
        # Clients on the other processes of the profile sit in other slices: route the whole range.
        lines.append("client-to-client")
        if not options.full_tunnel:
            lines.append(_push_route(plan.ipv4_range))
            if plan.ipv6_range:
                lines.append(_push_route(plan.ipv6_range))
    return lines


def _dns_lines(options):
    lines = []
    if options.full_tunnel and options.dns_servers:
        # Windows would otherwise keep asking its local resolvers and leak names.
        lines.append('push "block-outside-dns"')
    lines += ['push "dhcp-option DNS %s"' % server for server in options.dns_servers]
    lines += ['push "dhcp-option DOMAIN-SEARCH %s"' % domain for domain in options.dns_search_domains]
    return lines
