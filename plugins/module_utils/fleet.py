# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet plan: the inventory checked as a whole, and which node serves which profile with
which processes, ports and address slices, before any host changes.

Plain Python on the standard library. The ``fleet_plan`` action plugin hands it what the
inventory says about each host (``HostInput``); the controller and node roles read the plan it
returns, so nothing is checked or planned twice.

The plan (``FleetPlan.as_dict()``):

    contract    the values the controller and the node roles must agree on (CONTRACT below)
    profiles    every profile, defaults filled in (profiles.Profile.as_dict())
    nodes       node name -> {name, location, cores, public_address, slice,
                              profiles: [profile + plan (instances.ProfilePlan.as_dict(), its
                                         ranges the node's part) + ports_in_use (the other
                                         profiles' listeners) + entry_points (the node's
                                         public ports of the profile, each spread over the
                                         processes of its protocol: {proto, port, ports})],
                              absent: [ids of the profiles the node does not serve]}
    controller  {profiles: [the fields the controller reads], nodes: [{name, location,
                 public_address, slices: [{profile, ipv4, ipv6}],
                 entry_points: [{profile, proto, port}],
                 processes: [{profile, name, proto, port, max_clients, ipv4, ipv6}]}]}

Per-node slices: each profile's ranges are cut into ``max_nodes`` parts (rounded up to a power
of two, so the parts are equal), and a node takes part ``vpnfleet_slice`` (default 0) of every
profile it serves, which its processes then split. A node's part depends on its own index and the
profile alone, never on the other nodes: adding a node moves nobody (docs/node.md says why the
index is written down rather than derived from names or order). Two nodes of one profile on the
same index are refused.
    warnings    what is odd but not wrong (a node nobody can plan now, a profile no node serves)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import posixpath

from . import instances
from .profiles import ProfileError, Refusal, parse_listen, profile_label, read_profiles

CONTROLLERS_GROUP = "vpnfleet_controllers"
NODES_GROUP = "vpnfleet_nodes"
LOCATION_GROUP_PREFIX = "vpnfleet_location_"
PROFILES_VARIABLE = "vpnfleet_profiles"
LOCAL_HOSTS = ("localhost", "127.0.0.1")
# Where a refusal of a value that the play sets (play or role vars) says it comes from.
PLAY_VARIABLES = "(play vars)"

# Fleet-level values two roles must agree on, each with its one default (None: computed).
CONTRACT = {
    # The host that keeps the CA (the controller role makes it, the node role signs there).
    "vpnfleet_ca_host": None,
    # The CA's directory there, and the per-profile tls-crypt keys beside it.
    "vpnfleet_ca_path": "/var/lib/vpnfleet/ca",
    # The controller's virtual environment: its Python signs the nodes' requests.
    "vpnfleet_controller_venv": "/opt/vpnfleet/controller",
    # The Python on the CA host that runs the CA modules (default: the controller's venv).
    "vpnfleet_ca_python": None,
    # Where the controller keeps each node's API token (<dir>/<node>.token); the node copies its own.
    "vpnfleet_node_token_dir": "/etc/vpnfleet/controller/node-tokens",
}
# Per-host variables the plan reads.
HOST_VARIABLES = (
    "vpnfleet_location",
    "vpnfleet_cores",
    "vpnfleet_public_address",
    "vpnfleet_slice",
    "vpnfleet_entry_points",
)
# Role variables the fleet-level ones replaced: set, they would be ignored, so they are refused.
RETIRED = {
    "node_profiles": PROFILES_VARIABLE,
    "controller_profiles": PROFILES_VARIABLE,
    "node_location": "vpnfleet_location",
    "node_known_locations": "the vpnfleet_location_<name> groups",
    "controller_known_locations": "the vpnfleet_location_<name> groups",
    "controller_nodes_group": "the vpnfleet_nodes group",
    "node_cores": "vpnfleet_cores",
    "node_ca_host": "vpnfleet_ca_host",
    "node_ca_path": "vpnfleet_ca_path",
    "controller_ca_path": "vpnfleet_ca_path",
    "node_ca_python": "vpnfleet_ca_python",
    "controller_venv": "vpnfleet_controller_venv",
    "controller_node_token_dir": "vpnfleet_node_token_dir",
    "node_hooks_token_source": "vpnfleet_node_token_dir",
    "node_hooks_openvpn_group": "node_openvpn_group",
}
# The profile fields the controller's settings read (vpnfleet/controller/settings.py).
# WireGuard has no push: the controller writes the routes and DNS servers into its configs.
CONTROLLER_PROFILE_FIELDS = (
    "id",
    "display_name",
    "protocols",
    "default_gateway",
    "routes",
    "dns",
    "dns_search",
    "groups",
)

_MISSING = object()


@dataclasses.dataclass(frozen=True)
class HostInput:
    """What the inventory says about one host of the fleet.

    ``variables`` holds only the variables set for the host (fleet-level, per-host and retired
    names); ``cores`` and ``address`` come from its facts when it has any."""

    name: str
    groups: tuple = ()
    variables: dict = dataclasses.field(default_factory=dict)
    cores: int | None = None
    address: str | None = None
    ansible_host: str | None = None


class FleetRefused(ValueError):
    """The inventory cannot be deployed; ``refusals`` holds every problem found."""

    def __init__(self, refusals):
        self.refusals = list(refusals)
        super().__init__("; ".join(str(refusal) for refusal in self.refusals))


@dataclasses.dataclass(frozen=True)
class FleetPlan:
    contract: dict
    profiles: tuple
    nodes: dict
    warnings: tuple

    def as_dict(self):
        return {
            "contract": dict(self.contract),
            "profiles": [profile.as_dict() for profile in self.profiles],
            "nodes": self.nodes,
            "controller": {
                "profiles": [
                    {name: profile.as_dict()[name] for name in CONTROLLER_PROFILE_FIELDS}
                    for profile in self.profiles
                ],
                "nodes": [
                    {
                        "name": node["name"],
                        "location": node["location"],
                        "public_address": node["public_address"],
                        # Which node and process handed out an address: the connection log's question.
                        "slices": [
                            {
                                "profile": served["id"],
                                "ipv4": served["plan"]["ipv4_range"],
                                "ipv6": served["plan"]["ipv6_range"],
                            }
                            for served in node["profiles"]
                            if served["plan"]
                        ],
                        # Each WireGuard interface: the node's part of the profile's WireGuard
                        # ranges (the controller hands out its addresses), its own address, its port.
                        "wireguard": [
                            {"profile": served["id"], **served["wireguard"]}
                            for served in node["profiles"]
                            if served["wireguard"]
                        ],
                        # Where present, a config needs one remote per entry point, not per process.
                        "entry_points": [
                            {"profile": served["id"], "proto": entry["proto"], "port": entry["port"]}
                            for served in node["profiles"]
                            for entry in served["entry_points"]
                        ],
                        "processes": [
                            {
                                "profile": served["id"],
                                "name": process["name"],
                                "proto": process["proto"],
                                "port": process["port"],
                                "max_clients": process["max_clients"],
                                "ipv4": process["ipv4"],
                                "ipv6": process["ipv6"],
                            }
                            for served in node["profiles"]
                            for process in (served["plan"] or {"processes": []})["processes"]
                        ],
                    }
                    for node in self.nodes.values()
                ],
            },
            "warnings": list(self.warnings),
        }


def plan_fleet(hosts, groups, play_variables=None, play_hosts=None, playbook_python=None):
    """Check the inventory and plan the fleet -> FleetPlan; raises FleetRefused with every problem.

    ``hosts``: name -> HostInput for every host of the controllers' and the nodes' groups;
    ``groups``: the inventory's groups (name -> host names); ``play_variables``: fleet-level values
    the play sets for all its hosts; ``play_hosts``: the hosts this run configures (None: all);
    ``playbook_python``: the control machine's Python (the CA's when the CA host is local)."""
    play_variables = play_variables or {}
    controllers = list(groups.get(CONTROLLERS_GROUP, ()))
    nodes = list(groups.get(NODES_GROUP, ()))
    fleet = list(dict.fromkeys(controllers + nodes))
    known_locations = sorted(
        name[len(LOCATION_GROUP_PREFIX) :] for name in groups if name.startswith(LOCATION_GROUP_PREFIX)
    )
    refusals = _retired_variables(fleet, hosts, play_variables)
    warnings = []

    contract, found = _contract(fleet, hosts, groups, controllers, nodes, play_variables, playbook_python)
    refusals += found

    source, raw_profiles, found = _fleet_value(PROFILES_VARIABLE, fleet, hosts, play_variables, None)
    refusals += found
    profiles = []
    if nodes or raw_profiles is not None:
        profiles, found = read_profiles(raw_profiles, source, PROFILES_VARIABLE, known_locations)
        refusals += found

    planned = {}
    slices = {}
    for name in nodes:
        host = hosts.get(name) or HostInput(name)
        location, found = _location(host, known_locations)
        refusals += found
        cores, found = _cores(host)
        refusals += found
        index, slice_found = _slice(host)
        refusals += slice_found
        entry_points, entry_found = _entry_points(host, profiles)
        refusals += entry_found
        if location is not None and not slice_found:
            slices[name] = (location, index)
        if found or slice_found or entry_found or location is None or not profiles:
            continue
        if cores is None:
            if play_hosts is None or name in play_hosts:
                refusals.append(
                    Refusal(
                        name,
                        "vpnfleet_cores",
                        "is not set and the host's facts are not known: gather facts or set vpnfleet_cores",
                    )
                )
            else:
                warnings.append(
                    "host %s: not in this run (outside --limit, or unreachable), no facts known and no "
                    "vpnfleet_cores: its processes are left out of this plan" % name
                )
            continue
        view, found = _node_view(host, location, cores, profiles, index, entry_points)
        refusals += found
        planned[name] = view
    refusals += _shared_slices(slices, profiles)
    served = {served["id"] for view in planned.values() for served in view["profiles"]}
    warnings += [
        "%s: no node serves it" % profile_label(PROFILES_VARIABLE, index, {"id": profile.id})
        for index, profile in enumerate(profiles)
        if planned and profile.id not in served
    ]
    if refusals:
        raise FleetRefused(refusals)
    return FleetPlan(contract, tuple(profiles), planned, tuple(warnings))


# ----------------------------------------------------------------------------- fleet-level values


def _show(value):
    return "not set" if value is _MISSING else repr(value)


def _fleet_value(variable, fleet, hosts, play_variables, default):
    """One value for the whole fleet -> (host it was read on, value, [Refusal]).

    A play's value holds for every host. Otherwise every host must have the same (set in
    group_vars/all): a value set on some hosts only is the way two roles come to disagree."""
    if variable in play_variables:
        return PLAY_VARIABLES, play_variables[variable], []
    values = [(name, hosts[name].variables.get(variable, _MISSING)) for name in fleet if name in hosts]
    given = [(name, value) for name, value in values if value is not _MISSING]
    if not given:
        return (fleet[0] if fleet else "(inventory)"), default, []
    first_host, first = given[0]
    refusals = []
    for name, value in values:
        if value != first:
            what = "differs from" if value is not _MISSING else "is not set here, unlike"
            shown = "" if variable == PROFILES_VARIABLE else " (%s here, %r there)" % (_show(value), first)
            refusals.append(
                Refusal(
                    name,
                    variable,
                    "%s host %s's%s: the fleet has one %s, for every host; set it in group_vars/all"
                    % (what, first_host, shown, variable),
                )
            )
    return first_host, first, refusals


def _retired_variables(fleet, hosts, play_variables):
    """One refusal per retired variable, naming every host that sets it."""
    setters = {}
    for name in [PLAY_VARIABLES] + fleet:
        variables = play_variables if name == PLAY_VARIABLES else hosts.get(name, HostInput(name)).variables
        for old in RETIRED:
            if old in variables:
                setters.setdefault(old, []).append(name)
    return [
        Refusal(
            ", ".join(names),
            old,
            "is no longer read: set %s instead (one value for the fleet)" % RETIRED[old],
        )
        for old, names in setters.items()
    ]


def _absolute_path(host, variable, value):
    if isinstance(value, str) and posixpath.isabs(value) and "\n" not in value:
        return []
    return [Refusal(host, variable, "must be an absolute path, got %r" % (value,))]


def _contract(fleet, hosts, groups, controllers, nodes, play_variables, playbook_python):
    contract, sources, refusals = {}, {}, []
    for variable, default in CONTRACT.items():
        sources[variable], value, found = _fleet_value(variable, fleet, hosts, play_variables, default)
        refusals += found
        if value is not None and variable != "vpnfleet_ca_host":
            refusals += _absolute_path(sources[variable], variable, value)
        contract[variable] = value
    ca_host = contract["vpnfleet_ca_host"]
    if ca_host is None and nodes:
        if controllers:
            ca_host = controllers[0]
        else:
            refusals.append(
                Refusal(
                    ", ".join(nodes),
                    "vpnfleet_ca_host",
                    "the inventory has no controller (group %s is empty) and vpnfleet_ca_host is not set: "
                    "the nodes need the controller's CA; add the controller to %s"
                    % (CONTROLLERS_GROUP, CONTROLLERS_GROUP),
                )
            )
    elif ca_host is not None:
        known = {name for members in groups.values() for name in members}
        if not isinstance(ca_host, str) or (ca_host not in known and ca_host not in LOCAL_HOSTS):
            refusals.append(
                Refusal(
                    sources["vpnfleet_ca_host"],
                    "vpnfleet_ca_host",
                    "%r is not a host of the inventory" % (ca_host,),
                )
            )
    if contract["vpnfleet_ca_python"] is None:
        venv = contract["vpnfleet_controller_venv"] or ""
        contract["vpnfleet_ca_python"] = (
            playbook_python if ca_host in LOCAL_HOSTS else posixpath.join(venv, "bin/python")
        )
    contract["vpnfleet_ca_host"] = ca_host
    # The roles read the contract without the prefix: fleet_plan.contract.ca_path.
    return {variable[len("vpnfleet_") :]: value for variable, value in contract.items()}, refusals


# ----------------------------------------------------------------------------- nodes


def _location(host, known_locations):
    """The node's location -> (name or None, [Refusal])."""
    in_groups = sorted(group for group in host.groups if group.startswith(LOCATION_GROUP_PREFIX))
    names = [group[len(LOCATION_GROUP_PREFIX) :] for group in in_groups]
    location = host.variables.get("vpnfleet_location")
    if len(in_groups) > 1:
        return None, [
            Refusal(
                host.name,
                "groups",
                "the node is in more than one location group (%s); "
                "a node serves one location" % ", ".join(in_groups),
            )
        ]
    if location is None or location == "":
        if in_groups:
            reason = (
                "is not set, though the host is in group %s: set vpnfleet_location: %s in that group's "
                "variables (group_vars/%s.yml)" % (in_groups[0], names[0], in_groups[0])
            )
        else:
            reason = (
                "is not set and the host is in no vpnfleet_location_<name> group: put the node in one "
                "(known: %s) and set vpnfleet_location there" % (", ".join(known_locations) or "none")
            )
        return None, [Refusal(host.name, "vpnfleet_location", reason)]
    if not isinstance(location, str):
        return None, [Refusal(host.name, "vpnfleet_location", "must be a string, got %r" % (location,))]
    if location not in known_locations:
        return None, [
            Refusal(
                host.name,
                "vpnfleet_location",
                "%r is not a known location (%s): there is no group %s%s"
                % (location, ", ".join(known_locations) or "none", LOCATION_GROUP_PREFIX, location),
            )
        ]
    if names and names[0] != location:
        return None, [
            Refusal(
                host.name,
                "vpnfleet_location",
                "is %r, but the host is in group %s" % (location, in_groups[0]),
            )
        ]
    return location, []


def _cores(host):
    value = host.variables.get("vpnfleet_cores", _MISSING)
    if value is _MISSING or value is None:
        return host.cores, []
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        reason = "must be a whole number of at least 1, got %r" % (value,)
        return None, [Refusal(host.name, "vpnfleet_cores", reason)]
    return value, []


def _public_address(host):
    return host.variables.get("vpnfleet_public_address") or host.address or host.ansible_host or host.name


def _slice(host):
    """The node's index among the nodes of its profiles -> (index, [Refusal])."""
    value = host.variables.get("vpnfleet_slice", _MISSING)
    if value is _MISSING or value is None:
        return 0, []
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0, [Refusal(host.name, "vpnfleet_slice", "must be a whole number from 0, got %r" % (value,))]
    return value, []


def _entry_points(host, profiles):
    """The node's own entry points beyond the profiles' public ports (udp/53, tcp/80 where networks
    block the rest) -> ({profile id: [listener]}, [Refusal])."""
    value = host.variables.get("vpnfleet_entry_points", _MISSING)
    if value is _MISSING or value is None:
        return {}, []
    if not isinstance(value, dict):
        reason = "must be a mapping of profile id to listeners (internet: [udp/53, tcp/80]), got %r" % (
            value,
        )
        return {}, [Refusal(host.name, "vpnfleet_entry_points", reason)]
    known = [profile.id for profile in profiles]
    found, refusals = {}, []
    for profile_id, listeners in value.items():
        variable = "vpnfleet_entry_points.%s" % profile_id
        if profile_id not in known:
            reason = "is not a profile of the fleet (%s)" % ", ".join(known)
            refusals.append(Refusal(host.name, variable, reason))
            continue
        if isinstance(listeners, str) or not isinstance(listeners, (list, tuple)):
            reason = "must be a list of listeners (proto/port), got %r" % (listeners,)
            refusals.append(Refusal(host.name, variable, reason))
            continue
        found[profile_id] = []
        for position, listener in enumerate(listeners):
            try:
                found[profile_id].append("%s/%d" % parse_listen(listener))
            except ProfileError as exc:
                refusals.append(Refusal(host.name, "%s[%d]" % (variable, position), str(exc)))
    return found, refusals


def slots_of(max_nodes):
    """The parts a range is cut into for ``max_nodes`` nodes: the next power of two, so all are equal."""
    return 1 << (max_nodes - 1).bit_length()


def node_part(network, max_nodes, index):
    """Part ``index`` of ``network`` cut for ``max_nodes`` nodes; None when it cannot be cut so fine."""
    network = ipaddress.ip_network(network)
    bits = (slots_of(max_nodes) - 1).bit_length()
    if network.prefixlen + bits > network.max_prefixlen:
        return None
    return ipaddress.ip_network(
        (int(network.network_address) + index * (network.num_addresses >> bits), network.prefixlen + bits)
    )


def _shared_slices(slices, profiles):
    """Two nodes of one profile on one index would hand out the same addresses: refused, once per
    node, on the node that comes later by name (the earlier keeps its part)."""
    refusals = []
    holders = {}  # profile id -> {index: node}
    for name in sorted(slices):
        location, position = slices[name]
        clashes, beyond = [], []
        for index, profile in enumerate(profiles):
            if not profile.serves(location):
                continue
            label = profile_label(PROFILES_VARIABLE, index, {"id": profile.id})
            taken = holders.setdefault(profile.id, {})
            if position >= profile.max_nodes:
                beyond.append(
                    "%s.max_nodes is %d (parts 0-%d)" % (label, profile.max_nodes, profile.max_nodes - 1)
                )
            elif position in taken:
                clashes.append((label, taken[position], profile))
            else:
                taken[position] = name
        if beyond:
            reason = "is %d, but %s: give the node a lower index, or raise max_nodes (which moves every part)"
            refusals.append(Refusal(name, "vpnfleet_slice", reason % (position, "; ".join(beyond))))
        if clashes:
            free = sorted(
                set.intersection(
                    *(
                        set(range(profile.max_nodes)) - set(holders[profile.id])
                        for unused, unused_node, profile in clashes
                    )
                )
            )
            reason = (
                "is %d, as on %s: each node of a profile needs a part of its own (free for all of them: %s)"
                % (
                    position,
                    ", ".join(
                        "node %s, which serves %s too" % (node, label) for label, node, unused in clashes
                    ),
                    ", ".join(map(str, free)) or "none; raise max_nodes",
                )
            )
            refusals.append(Refusal(name, "vpnfleet_slice", reason))
    return refusals


def _node_part_or_refusal(host, label, profile, field, index):
    text = getattr(profile, field)
    if text is None:
        return None, []
    part = node_part(text, profile.max_nodes, index)
    if part is not None:
        return str(part), []
    reason = (
        "%s cannot be cut into %d parts (max_nodes %d): give the profile a larger range or lower max_nodes"
        % (
            text,
            slots_of(profile.max_nodes),
            profile.max_nodes,
        )
    )
    return None, [Refusal(host.name, "%s.%s" % (label, field), reason)]


def _wireguard_owner(profile_id):
    """How the planner's ports_in_use names a profile's WireGuard port (in its refusals too)."""
    return "%s (wireguard_port)" % profile_id


def _port_user(owner):
    """A key of the planner's ports_in_use, as a person reads it."""
    wireguard_suffix = _wireguard_owner("")
    if owner.endswith(wireguard_suffix):
        return "the WireGuard interface of profile %s" % owner[: -len(wireguard_suffix)]
    return "the OpenVPN processes of profile %s" % owner


def _node_view(host, location, cores, profiles, index, entry_points):
    """Plan the profiles the node serves, in the inventory's order, each on the node's part of
    its ranges and refusing the ports of those before it -> (view, [Refusal])."""
    here = [(position, profile) for position, profile in enumerate(profiles) if profile.serves(location)]
    taken, plans, wireguard, refusals = {}, {}, {}, []
    for position, profile in here:
        label = profile_label(PROFILES_VARIABLE, position, {"id": profile.id})
        if profile.openvpn:
            plan, found = _openvpn_plan(host, label, profile, cores, index, taken)
            refusals += found
            if plan is None:
                continue
            plans[profile.id] = plan
            taken[profile.id] = plan.listeners()
        if profile.wireguard:
            planned, found = _wireguard_plan(host, label, profile, index, taken, wireguard)
            refusals += found
            if planned is None:
                continue
            wireguard[profile.id] = planned
            taken[_wireguard_owner(profile.id)] = ["udp/%d" % planned.port]
    entries, found = _plan_entry_points(host, profiles, plans, entry_points, wireguard)
    refusals += found
    served = []
    for profile in (profile for unused_position, profile in here):
        if profile.id not in plans and profile.id not in wireguard:
            continue
        entry = profile.as_dict()
        entry["plan"] = plans[profile.id].as_dict() if profile.id in plans else None
        entry["wireguard"] = wireguard[profile.id].as_dict() if profile.id in wireguard else None
        entry["ports_in_use"] = {
            other: plan.listeners() for other, plan in plans.items() if other != profile.id
        }
        entry["entry_points"] = entries.get(profile.id, [])
        served.append(entry)
    view = {
        "name": host.name,
        "location": location,
        "cores": cores,
        "public_address": _public_address(host),
        "slice": index,
        "profiles": served,
        "absent": [profile.id for profile in profiles if not profile.serves(location)],
    }
    return view, refusals


def _openvpn_plan(host, label, profile, cores, index, taken):
    """The profile's OpenVPN processes on the node's part of its ranges
    -> (ProfilePlan or None, [Refusal])."""
    ipv4_part, found = _node_part_or_refusal(host, label, profile, "ipv4_range", index)
    ipv6_part, found6 = _node_part_or_refusal(host, label, profile, "ipv6_range", index)
    if found or found6:
        return None, found + found6
    try:
        plan = instances.plan_profile(
            profile.id,
            ipv4_part,
            ipv6_part,
            cores=cores,
            processes=profile.processes,
            listen=list(profile.listen) if profile.listen else None,
            tcp_share=profile.tcp_share,
            udp_port_base=profile.udp_port_base,
            tcp_port_base=profile.tcp_port_base,
            ports_in_use=taken,
        )
    except ProfileError as exc:
        variable = "%s.%s" % (label, exc.field) if exc.field else label
        reason = "%s (the node has %d cores)" % (exc, cores)
        if exc.field in ("ipv4_range", "ipv6_range"):
            reason = _part_too_small(profile, exc.field, index, cores)
        return None, [Refusal(host.name, variable, reason)]
    return plan, []


def _wireguard_plan(host, label, profile, index, taken, planned):
    """The profile's WireGuard interface on the node's part of its WireGuard ranges, on a UDP port
    no process and no interface planned before uses -> (WireGuardPlan or None, [Refusal])."""
    ipv4_part, found = _node_part_or_refusal(host, label, profile, "wireguard_ipv4_range", index)
    ipv6_part, found6 = _node_part_or_refusal(host, label, profile, "wireguard_ipv6_range", index)
    if found or found6:
        return None, found + found6
    try:
        plan = instances.plan_wireguard(profile.id, ipv4_part, ipv6_part, profile.wireguard_port)
    except ProfileError as exc:
        reason = (
            "%s: %s (part %d of %d, max_nodes %d): give the profile a larger range or lower max_nodes"
            % (
                getattr(profile, exc.field),
                exc,
                index,
                slots_of(profile.max_nodes),
                profile.max_nodes,
            )
        )
        return None, [Refusal(host.name, "%s.%s" % (label, exc.field), reason)]
    listener = "udp/%d" % plan.port
    users = sorted(owner for owner, listeners in taken.items() if listener in listeners)
    if users:
        reason = "%s is already used on this node by %s: give the WireGuard interface a port of its own" % (
            listener,
            ", ".join(_port_user(owner) for owner in users),
        )
        return None, [Refusal(host.name, "%s.wireguard_port" % label, reason)]
    clash = [other for other, other_plan in planned.items() if other_plan.interface == plan.interface]
    if clash:
        reason = "names the same WireGuard interface %s as profile %s: choose another profile id" % (
            plan.interface,
            clash[0],
        )
        return None, [Refusal(host.name, "%s.id" % label, reason)]
    return plan, []


def _part_too_small(profile, field, index, cores):
    """Why the node's part of a range cannot hold its processes, and what the profile needs."""
    count = len(profile.listen or ()) or profile.processes or cores
    smallest = instances.SMALLEST_IPV4_SLICE if field == "ipv4_range" else instances.IPV6_SLICE
    bits = (slots_of(profile.max_nodes) - 1).bit_length()
    needed = smallest - (count - 1).bit_length() - bits
    part = node_part(getattr(profile, field), profile.max_nodes, index)
    return (
        "the node's part of %s (part %d of %d, max_nodes %d) is %s, too small for its %d processes, each of "
        "which needs a /%d: give the profile a /%d or larger, lower max_nodes, or plan fewer processes "
        "(the node has %d cores)"
        % (
            getattr(profile, field),
            index,
            slots_of(profile.max_nodes),
            profile.max_nodes,
            part,
            count,
            smallest,
            needed,
            cores,
        )
    )


def _plan_entry_points(host, profiles, plans, extra, wireguard):
    """Each served profile's public ports and the node's own entry points, with the process
    ports nftables spreads them over -> ({profile id: [{proto, port, ports}]}, [Refusal]).

    A public port is nobody's listener: the processes of every profile keep their own ports, and
    two profiles never share an entry point (the profile is told by the port)."""
    listeners = {
        parse_listen(item): "a process of profile %s" % profile_id
        for profile_id, plan in plans.items()
        for item in plan.listeners()
    }
    listeners.update(
        {
            ("udp", plan.port): "the WireGuard interface of profile %s" % profile_id
            for profile_id, plan in wireguard.items()
        }
    )
    claimed, found, refusals = {}, {}, []
    for position, profile in enumerate(profiles):
        if profile.id not in plans and profile.id not in wireguard:
            continue
        label = profile_label(PROFILES_VARIABLE, position, {"id": profile.id})
        wanted = [(item, "%s.public_ports" % label) for item in profile.public_ports]
        wanted += [(item, "vpnfleet_entry_points.%s" % profile.id) for item in extra.get(profile.id, [])]
        found[profile.id] = []
        for item, variable in wanted:
            proto, port = parse_listen(item)
            processes = plans[profile.id].processes if profile.id in plans else ()
            ports = [process.port for process in processes if process.proto == proto]
            if (proto, port) in listeners:
                reason = "%s is the own port of %s: choose a port no process listens on" % (
                    item,
                    listeners[(proto, port)],
                )
            elif (proto, port) in claimed:
                reason = "%s is an entry point of profile %s already on this node" % (
                    item,
                    claimed[(proto, port)],
                )
            elif not ports:
                reason = "%s: the node runs no %s process of profile %s (see tcp_share, processes)" % (
                    item,
                    proto.upper(),
                    profile.id,
                )
            else:
                claimed[(proto, port)] = profile.id
                found[profile.id].append({"proto": proto, "port": port, "ports": ports})
                continue
            refusals.append(Refusal(host.name, variable, reason))
    return found, refusals
