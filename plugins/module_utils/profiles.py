# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VPN profile, written once: its fields with their defaults, its validation, and the checks
every part of vpnfleet shares (the profile-id rule, IPv4/IPv6 ranges, routes, DNS servers).

Plain Python on the standard library. The fleet plan (fleet.py), the planner (instances.py), the
modules and the services (``vpnfleet.shared.profiles``) import it; nothing else checks a profile.

Public interface
----------------
    ProfileError                      a value that cannot be used; ``field`` names it when known
    Refusal(host, variable, reason)   one problem of an inventory, printed as "host H: V: reason"
    check_profile_id(value)           the profile-id rule
    parse_network(text, version)      a CIDR network (strict: no host bits), of that IP version
    parse_dns_server(text)            an IP address
    parse_listen(entry)               "udp/1194" or {"proto": "udp", "port": 1194} -> ("udp", 1194)
    FIELDS                            every field of a profile, its kind and default
    Profile                           a checked profile, defaults filled in
    read_profiles(value, host, variable, known_locations) -> (profiles, refusals)

The refusals name the variable as the user wrote it (``vpnfleet_profiles[1] (office).ipv4_range``)
and are collected, all of them: a user fixes an inventory in one go rather than one error a run.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

PROTOCOLS = ("udp", "tcp")
# The VPN protocols a profile may offer (eduVPN v3's vpn_proto_list).
VPN_PROTOCOLS = ("openvpn", "wireguard")
DEFAULT_VPN_PROTOCOLS = ("openvpn",)
DEFAULT_WIREGUARD_PORT = 51820
# The fields that only one protocol reads: set on a profile that does not offer it, they would be
# ignored without a word, so they are refused.
OPENVPN_ONLY_FIELDS = ("ipv4_range", "ipv6_range", "processes", "listen", "public_ports")
WIREGUARD_ONLY_FIELDS = ("wireguard_ipv4_range", "wireguard_ipv6_range", "wireguard_port")
DEFAULT_TCP_SHARE = 0.25
# The parts a profile's ranges are cut into, one per node (fleet.py, docs/node.md): room for
# nodes not there yet, so that a node added later takes a free part and no other node's moves.
DEFAULT_MAX_NODES = 4
DEFAULT_PORT_BASE = 1194
PROFILE_ID_RULE = "1 to 32 of a-z, 0-9, '-' and '_', starting with a letter or digit"
_PROFILE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# What Ansible's own boolean conversion accepts from a string (an extra var is always one).
# Every client range of a profile, with its IP version; no two of the fleet may overlap.
RANGE_FIELDS = (
    ("ipv4_range", 4),
    ("ipv6_range", 6),
    ("wireguard_ipv4_range", 4),
    ("wireguard_ipv6_range", 6),
)
_TRUE = ("yes", "on", "true", "1", "y", "t")
_FALSE = ("no", "off", "false", "0", "n", "f")


class ProfileError(ValueError):
    """A profile value that cannot be used. ``field`` names the profile's field when the cause is
    one field (the fleet plan puts it into the refusal)."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class Refusal:
    host: str
    variable: str
    reason: str

    def __str__(self):
        return "host %s: %s: %s" % (self.host, self.variable, self.reason)


# ----------------------------------------------------------------------------- shared checks


def check_profile_id(profile_id):
    if not isinstance(profile_id, str) or not _PROFILE_ID.match(profile_id):
        raise ProfileError("profile id %r: use %s" % (profile_id, PROFILE_ID_RULE), "id")


def parse_network(text, version=None):
    """A network in CIDR notation without host bits; of IP ``version`` when given."""
    if not isinstance(text, str):
        raise ProfileError("%r is not a network in CIDR notation (write it as a string)" % (text,))
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ProfileError("%r is not a valid CIDR network: %s" % (text, exc)) from None
    if version and network.version != version:
        raise ProfileError("%r is not an IPv%d network" % (text, version))
    return network


def parse_dns_server(text):
    try:
        return ipaddress.ip_address(text if isinstance(text, str) else None)
    except ValueError:
        raise ProfileError("%r is not an IP address" % (text,)) from None


def parse_listen(entry):
    """One explicit listener: "udp/1194", "tcp/443" or {"proto": ..., "port": ...}."""
    if isinstance(entry, dict):
        proto, port = entry.get("proto"), entry.get("port")
    elif isinstance(entry, str) and entry.count("/") == 1:
        proto, port = entry.split("/")
    else:
        raise ProfileError("listener %r: write it as proto/port, e.g. udp/1194" % (entry,), "listen")
    proto = str(proto).lower()
    if proto not in PROTOCOLS:
        raise ProfileError("listener %r: protocol must be udp or tcp" % (entry,), "listen")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ProfileError("listener %r: port is not a number" % (entry,), "listen") from None
    if not 1 <= port <= 65535:
        raise ProfileError("listener %r: port must be 1-65535" % (entry,), "listen")
    return proto, port


# ----------------------------------------------------------------------------- field kinds
# Each reads one value as a user may write it (YAML, or a string from an extra var) and returns
# it in its one form, or raises ProfileError with the reason.


def _text(value):
    if not isinstance(value, str) or not value.strip():
        raise ProfileError("must be a non-empty string, got %r" % (value,))
    return value


def _boolean(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ProfileError("must be true or false, got %r" % (value,))


def _whole_number(value, lowest, highest):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError("must be a whole number, got %r" % (value,))
    if not lowest <= value <= highest:
        raise ProfileError("%d is not between %d and %d" % (value, lowest, highest))
    return value


def _count(value):
    return _whole_number(value, 1, 1024)


def _port(value):
    return _whole_number(value, 1, 65535)


def _share(value):
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError("must be a number between 0 and 1, got %r" % (value,))
    if not 0 <= value <= 1:
        raise ProfileError("%r is not between 0 and 1" % (value,))
    return float(value)


def _list_of(item_reader):
    def read(value):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ProfileError("must be a list, got %r (write [%s] for one item)" % (value, value))
        items = []
        for index, item in enumerate(value):
            try:
                items.append(item_reader(item))
            except ProfileError as exc:
                raise ProfileError("[%d]: %s" % (index, exc)) from None
        return tuple(items)

    return read


def _ipv4_range(value):
    return str(parse_network(value, 4))


def _ipv6_range(value):
    return str(parse_network(value, 6))


def _route(value):
    return str(parse_network(value))


def _dns_server(value):
    return str(parse_dns_server(value))


def _search_domain(value):
    # The planner writes each into a quoted push line of the server's config.
    if not isinstance(value, str) or not value or any(ch.isspace() or ch in "\"'\\" for ch in value):
        raise ProfileError("%r is not a domain name" % (value,))
    return value


def _listener(value):
    return "%s/%d" % parse_listen(value)


def _vpn_protocol(value):
    if value not in VPN_PROTOCOLS:
        raise ProfileError("%r is not a VPN protocol; use %s" % (value, " or ".join(VPN_PROTOCOLS)))
    return value


def _profile_id(value):
    check_profile_id(value)
    return value


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    read: object  # value -> the field's value, or ProfileError
    default: object = None
    required: bool = False
    doc: str = ""


# Every field of a profile, once. The node role, the controller role, openvpn_instances and the
# controller's settings all take their profile from here.
FIELDS = (
    Field("id", _profile_id, required=True, doc="1-32 of a-z, 0-9, - and _; names units, configs, devices"),
    Field("display_name", _text, doc="the name users see; default the id"),
    Field(
        "protocols",
        _list_of(_vpn_protocol),
        DEFAULT_VPN_PROTOCOLS,
        doc="the VPN protocols the profile offers: openvpn, wireguard or both",
    ),
    Field("ipv4_range", _ipv4_range, doc="OpenVPN: IPv4 client range (CIDR), split over the processes"),
    Field("ipv6_range", _ipv6_range, doc="OpenVPN: IPv6 client range (CIDR); each process gets a /112"),
    Field(
        "wireguard_ipv4_range",
        _ipv4_range,
        doc="WireGuard: IPv4 client range (CIDR), one part per node like the OpenVPN range",
    ),
    Field("wireguard_ipv6_range", _ipv6_range, doc="WireGuard: IPv6 client range (CIDR), one part per node"),
    Field(
        "wireguard_port", _port, DEFAULT_WIREGUARD_PORT, doc="WireGuard: the node's UDP port of the profile"
    ),
    Field("default_gateway", _boolean, True, doc="full tunnel; false: split tunnel with routes"),
    Field("nat", _boolean, True, doc="full tunnel: masquerade the clients behind the node's address"),
    Field("routes", _list_of(_route), (), doc="split tunnel: the prefixes pushed to clients"),
    Field("dns", _list_of(_dns_server), (), doc="DNS servers pushed to clients"),
    Field("dns_search", _list_of(_search_domain), (), doc="DNS search domains pushed to clients"),
    Field("client_to_client", _boolean, False, doc="the profile's clients reach each other"),
    Field("block_lan", _boolean, False, doc="clients may not reach their LAN nor the node's"),
    Field("processes", _count, doc="process count; default one per core of the node"),
    Field("listen", _list_of(_listener), doc="explicit listeners proto/port, one process each"),
    Field("tcp_share", _share, DEFAULT_TCP_SHARE, doc="share of TCP processes (at least one of two)"),
    Field("udp_port_base", _port, DEFAULT_PORT_BASE, doc="port of the first UDP process"),
    Field("tcp_port_base", _port, DEFAULT_PORT_BASE, doc="port of the first TCP process"),
    Field(
        "public_ports",
        _list_of(_listener),
        (),
        doc="one public port per protocol (udp/1194, tcp/443), spread by nftables over the processes",
    ),
    Field(
        "max_nodes",
        _count,
        DEFAULT_MAX_NODES,
        doc="nodes the ranges are cut for, each node one part (its vpnfleet_slice); room to grow",
    ),
    Field("locations", _list_of(_text), (), doc="locations that serve the profile; empty: every one"),
    Field("groups", _list_of(_text), (), doc="user groups that may use it (the controller's business)"),
)
FIELD_NAMES = tuple(field.name for field in FIELDS)


@dataclasses.dataclass(frozen=True)
class Profile:
    """A checked profile with every default filled in (field by field as in FIELDS)."""

    id: str
    display_name: str
    protocols: tuple
    ipv4_range: str | None
    ipv6_range: str | None
    wireguard_ipv4_range: str | None
    wireguard_ipv6_range: str | None
    wireguard_port: int
    default_gateway: bool
    nat: bool
    routes: tuple
    dns: tuple
    dns_search: tuple
    client_to_client: bool
    block_lan: bool
    processes: int | None
    listen: tuple | None
    tcp_share: float
    udp_port_base: int
    tcp_port_base: int
    public_ports: tuple
    max_nodes: int
    locations: tuple
    groups: tuple

    def serves(self, location):
        return not self.locations or location in self.locations

    @property
    def openvpn(self):
        return "openvpn" in self.protocols

    @property
    def wireguard(self):
        return "wireguard" in self.protocols

    def as_dict(self):
        """JSON-ready: tuples as lists."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }


def profile_label(variable, index, profile):
    """``vpnfleet_profiles[1] (office)``: the index and, when it has one, the id the user wrote."""
    profile_id = profile.get("id") if isinstance(profile, dict) else None
    if isinstance(profile_id, str) and profile_id:
        return "%s[%d] (%s)" % (variable, index, profile_id)
    return "%s[%d]" % (variable, index)


def read_profile(value, host, label, known_locations=None):
    """One profile as the user wrote it -> (Profile or None, [Refusal])."""
    if not isinstance(value, dict):
        return None, [Refusal(host, label, "must be a mapping (a profile), got %r" % (value,))]
    refusals = []

    def refuse(field, reason):
        refusals.append(Refusal(host, "%s.%s" % (label, field), reason))

    for name in sorted(set(value) - set(FIELD_NAMES), key=str):
        refuse(name, "is not a profile field; known: %s" % ", ".join(FIELD_NAMES))
    filled = {}
    for field in FIELDS:
        raw = value.get(field.name)
        if raw is None or (raw == "" and not field.required):
            if field.required:
                refuse(field.name, "is required")
            filled[field.name] = field.default
            continue
        try:
            filled[field.name] = field.read(raw)
        except ProfileError as exc:
            reason = str(exc)
            # A list item's problem reads "routes[2]: ..."; any other "routes: ...".
            if reason.startswith("["):
                index, unused_colon, rest = reason.partition(": ")
                refusals.append(Refusal(host, "%s.%s%s" % (label, field.name, index), rest))
            else:
                refuse(field.name, reason)
    if refusals:
        return None, refusals
    filled["display_name"] = filled["display_name"] or filled["id"]
    refusals += _protocol_refusals(host, label, value, filled)
    if not filled["default_gateway"] and not filled["routes"]:
        refuse("routes", "a split-tunnel profile (default_gateway: false) needs routes")
    if filled["listen"] is not None:
        if len(set(filled["listen"])) != len(filled["listen"]):
            refuse("listen", "names a listener twice: %s" % ", ".join(filled["listen"]))
        if filled["processes"] is not None and filled["processes"] != len(filled["listen"]):
            refuse(
                "processes",
                "is %d but listen names %d listeners; give one of them"
                % (filled["processes"], len(filled["listen"])),
            )
    protocols = [listener.split("/")[0] for listener in filled["public_ports"]]
    if len(set(protocols)) != len(protocols):
        refuse(
            "public_ports",
            "names %s: one public port per protocol (the node's own entry points: vpnfleet_entry_points)"
            % ", ".join(filled["public_ports"]),
        )
    clashing = sorted(set(filled["public_ports"]) & set(filled["listen"] or ()))
    if clashing:
        refuse(
            "public_ports",
            "%s is a process's own listener too (listen): a public port is spread over the processes, "
            "so no process may listen on it" % ", ".join(clashing),
        )
    known = filled["locations"] if known_locations is None else known_locations
    unknown = [name for name in filled["locations"] if name not in known]
    if unknown:
        refuse(
            "locations",
            "unknown location(s) %s; known: %s (one vpnfleet_location_<name> group each)"
            % (", ".join(unknown), ", ".join(known_locations) or "none"),
        )
    if refusals:
        return None, refusals
    return Profile(**filled), []


def _protocol_refusals(host, label, value, filled):
    """What the protocol list asks of the other fields: each protocol's range, and no field of a
    protocol the profile does not offer (it would be ignored)."""
    protocols = filled["protocols"]
    refusals = []

    def refuse(field, reason):
        refusals.append(Refusal(host, "%s.%s" % (label, field), reason))

    if not protocols:
        refuse("protocols", "is empty: a profile offers %s, or both" % " or ".join(VPN_PROTOCOLS))
        return refusals
    if len(set(protocols)) != len(protocols):
        refuse("protocols", "names a protocol twice: %s" % ", ".join(protocols))
    if "openvpn" in protocols and filled["ipv4_range"] is None:
        refuse("ipv4_range", "is required: the profile offers OpenVPN (protocols has openvpn)")
    if "wireguard" in protocols and filled["wireguard_ipv4_range"] is None:
        refuse(
            "wireguard_ipv4_range",
            "is required: the profile offers WireGuard (protocols has wireguard), whose clients need "
            "a range of their own, apart from the OpenVPN ranges",
        )
    for protocol, fields in (("openvpn", OPENVPN_ONLY_FIELDS), ("wireguard", WIREGUARD_ONLY_FIELDS)):
        if protocol in protocols:
            continue
        for field in fields:
            if value.get(field) not in (None, ""):
                refuse(
                    field,
                    "is set, but the profile does not offer %s (protocols: %s): it would be ignored; "
                    "add %s to protocols or remove %s" % (protocol, ", ".join(protocols), protocol, field),
                )
    return refusals


def read_profiles(value, host, variable="vpnfleet_profiles", known_locations=None):
    """The fleet's profiles as the user wrote them -> ([Profile], [Refusal]).

    Checks every profile on its own, then what only the list shows: ids used twice and client
    ranges that overlap. ``known_locations`` None skips the check of ``locations``."""
    if value is None:
        return [], [Refusal(host, variable, "is not set: the fleet needs at least one VPN profile")]
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [], [Refusal(host, variable, "must be a list of profiles, got %r" % (value,))]
    if not value:
        return [], [Refusal(host, variable, "is empty: the fleet needs at least one VPN profile")]
    profiles, refusals = [], []
    for index, raw in enumerate(value):
        profile, found = read_profile(raw, host, profile_label(variable, index, raw), known_locations)
        refusals.extend(found)
        profiles.append(profile)
    # Across profiles, from what each wrote (a profile with another problem still takes its
    # range and its id), so one run shows every problem.
    first_label = {}
    ranges = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict):
            continue
        label = profile_label(variable, index, raw)
        profile_id = raw.get("id")
        if isinstance(profile_id, str) and profile_id in first_label:
            reason = "%r is the id of %s as well" % (profile_id, first_label[profile_id])
            refusals.append(Refusal(host, label + ".id", reason))
        elif isinstance(profile_id, str):
            first_label[profile_id] = label
        for field, version in RANGE_FIELDS:
            try:
                ranges.append((parse_network(raw.get(field), version), label, field))
            except ProfileError:
                continue  # refused above, or not given
    for position, (network, label, field) in enumerate(ranges):
        for other, other_label, other_field in ranges[position + 1 :]:
            if network.version == other.version and network.overlaps(other):
                refusals.append(
                    Refusal(
                        host,
                        "%s.%s" % (other_label, other_field),
                        "%s overlaps %s (%s.%s); every profile and protocol needs a range of its own"
                        % (other, network, label, field),
                    )
                )
    return ([] if refusals else profiles), refusals
