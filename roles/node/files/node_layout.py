# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check the inventory's profiles for one node and lay them out: the node role runs this on the
control machine, before any host changes.

Reads JSON on stdin: profiles, host, location, known_locations, cores, variable.
Writes JSON: problems (one sentence each, naming host, variable and cause), profiles (those the
node serves, defaults filled in, with the ports the other profiles take) and absent (the ids of
the profiles it does not serve).

The planning is the collection's own (plugins/module_utils/instances.py, plain Python), the same
code the openvpn_instances module runs, so the check and the node agree on every process, port
and slice.
"""

import ipaddress
import json
import pathlib
import sys

# The collection root is two levels above the role; module_utils/instances.py needs only the stdlib.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "plugins" / "module_utils"))
import instances  # noqa: E402

# Every field a profile may have, with its default (None: required or optional without one).
PROFILE_DEFAULTS = {
    "id": None,
    "display_name": None,
    "ipv4_range": None,
    "ipv6_range": None,
    "default_gateway": True,
    "nat": True,
    "routes": [],
    "dns": [],
    "dns_search": [],
    "client_to_client": False,
    "block_lan": False,
    "processes": None,
    "listen": None,
    "tcp_share": instances.DEFAULT_TCP_SHARE,
    "udp_port_base": instances.DEFAULT_PORT_BASE,
    "tcp_port_base": instances.DEFAULT_PORT_BASE,
    "locations": [],
    "groups": [],
}


def _normalised(profile):
    filled = {name: profile.get(name, default) for name, default in PROFILE_DEFAULTS.items()}
    for name in ("routes", "dns", "dns_search", "locations", "groups"):
        filled[name] = list(filled[name] or [])
    filled["display_name"] = filled["display_name"] or filled["id"]
    return filled


def _network(text, version):
    network = ipaddress.ip_network(str(text), strict=True)
    if network.version != version:
        raise ValueError("not an IPv%d network" % version)
    return network


def _serves(profile, location):
    return not profile["locations"] or location in profile["locations"]


def _plan_all(profiles, cores):
    """Plan the given profiles in order, each refusing the ports of those before it."""
    taken = {}
    plans = {}
    for profile in profiles:
        plan = instances.plan_profile(
            profile["id"],
            profile["ipv4_range"],
            profile["ipv6_range"],
            cores=int(cores),
            processes=profile["processes"],
            listen=profile["listen"],
            tcp_share=float(profile["tcp_share"]),
            udp_port_base=profile["udp_port_base"],
            tcp_port_base=profile["tcp_port_base"],
            ports_in_use=taken,
        )
        plans[profile["id"]] = plan
        taken[profile["id"]] = plan.listeners()
    return plans


def node_profile_problems(profiles, host, location, known_locations, cores, variable="node_profiles"):
    """Everything wrong with the profiles for this host, one readable sentence each; [] when fine."""
    if not isinstance(profiles, list) or not all(isinstance(item, dict) for item in profiles):
        return ["host %s: %s must be a list of profiles (mappings)" % (host, variable)]
    problems = []

    def problem(index, profile_id, text):
        problems.append("host %s: %s[%d] (%s): %s" % (host, variable, index, profile_id, text))

    if not location:
        problems.append(
            "host %s: node_location (vpnfleet_location) is empty: put the node in a location group" % host
        )
    elif known_locations and location not in known_locations:
        problems.append(
            "host %s: node_location %r is not a known location (%s)"
            % (host, location, ", ".join(known_locations))
        )
    normalised = [_normalised(profile) for profile in profiles]
    seen_ids = set()
    ranges = []  # (network, index, profile id, field)
    for index, profile in enumerate(normalised):
        profile_id = profile["id"] or "?"
        try:
            instances.check_profile_id(profile["id"])
        except instances.PlanError as exc:
            problem(index, profile_id, "id: %s" % exc)
        if profile["id"] in seen_ids:
            problem(index, profile_id, "id is used by another profile as well")
        seen_ids.add(profile["id"])
        for field, version in (("ipv4_range", 4), ("ipv6_range", 6)):
            if profile[field] is None:
                if version == 4:
                    problem(index, profile_id, "ipv4_range is missing")
                continue
            try:
                ranges.append((_network(profile[field], version), index, profile_id, field))
            except ValueError as exc:
                problem(
                    index,
                    profile_id,
                    "%s %r is not a valid IPv%d CIDR: %s" % (field, profile[field], version, exc),
                )
        for route in profile["routes"]:
            try:
                ipaddress.ip_network(str(route), strict=True)
            except ValueError as exc:
                problem(index, profile_id, "routes: %r is not a valid CIDR: %s" % (route, exc))
        if not profile["default_gateway"] and not profile["routes"]:
            problem(index, profile_id, "a split-tunnel profile (default_gateway: false) needs routes")
        for server in profile["dns"]:
            try:
                ipaddress.ip_address(str(server))
            except ValueError:
                problem(index, profile_id, "dns: %r is not an IP address" % (server,))
        unknown = [name for name in profile["locations"] if known_locations and name not in known_locations]
        if unknown:
            problem(
                index,
                profile_id,
                "locations: unknown location(s) %s; known: %s"
                % (", ".join(unknown), ", ".join(known_locations)),
            )
    for position, (network, index, profile_id, field) in enumerate(ranges):
        for other, other_index, other_id, other_field in ranges[position + 1 :]:
            if network.version == other.version and network.overlaps(other):
                problem(
                    index,
                    profile_id,
                    "%s %s overlaps %s %s of profile %s (%s[%d])"
                    % (field, network, other_field, other, other_id, variable, other_index),
                )
    if problems:
        return problems
    here = [profile for profile in normalised if _serves(profile, location)]
    try:
        _plan_all(here, cores)
    except instances.PlanError as exc:
        problems.append("host %s: %s cannot be laid out on %s cores: %s" % (host, variable, cores, exc))
    return problems


def node_layout(profiles, location, cores):
    """The profiles this node serves (defaults filled in) with the ports the others planned
    before them, and the ids of the profiles it does not serve."""
    normalised = [_normalised(profile) for profile in profiles]
    here = [profile for profile in normalised if _serves(profile, location)]
    plans = _plan_all(here, cores)
    for profile in here:
        profile["ports_in_use"] = {
            other: plan.listeners() for other, plan in plans.items() if other != profile["id"]
        }
    return {
        "profiles": here,
        "absent": [profile["id"] for profile in normalised if not _serves(profile, location)],
    }


def main():
    request = json.load(sys.stdin)
    problems = node_profile_problems(
        request["profiles"],
        request["host"],
        request["location"],
        request["known_locations"],
        request["cores"],
        request.get("variable", "node_profiles"),
    )
    answer = {"problems": problems, "profiles": [], "absent": []}
    if not problems:
        answer.update(node_layout(request["profiles"], request["location"], request["cores"]))
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
