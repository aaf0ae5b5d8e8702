"""Inventory mistakes, one at a time: each is refused with a message that names the host, the
variable as the inventory spells it, and the reason. The inventory is the lab's (two nodes in
locations x and y, a controller); each case changes one thing in it."""

import copy

import pytest
from vpnfleet.shared import fleet, profiles


def set_office(**fields):
    return lambda inventory: inventory.office.update(fields)


def set_internet(**fields):
    return lambda inventory: inventory.internet.update(fields)


def wireguard_internet(**fields):
    """The internet profile offering WireGuard too, on its own ranges, with ``fields`` changed."""
    wanted = {
        "protocols": ["openvpn", "wireguard"],
        "wireguard_ipv4_range": "198.18.4.0/24",
        "wireguard_ipv6_range": "2001:db8:104::/64",
        **fields,
    }

    def change(inventory):
        inventory.internet.update(wanted)
        for name in [name for name, value in wanted.items() if value is None]:
            del inventory.internet[name]

    return change


def on_host(host, **variables):
    return lambda inventory: inventory.variables[host].update(variables)


def drop_office(field):
    return lambda inventory: inventory.office.pop(field)


def replace_profiles(value):
    def change(inventory):
        inventory.profiles = value

    return change


def without_controller(inventory):
    inventory.groups["vpnfleet_controllers"] = []
    del inventory.variables["controller"]


def node_y1_also_in_location_x(inventory):
    inventory.groups["vpnfleet_location_x"].append("node-y1")


def node_x1_in_no_location_group(inventory):
    inventory.groups["vpnfleet_location_x"] = []
    inventory.variables["node-x1"].pop("vpnfleet_location")


def node_y1_without_facts_in_this_run(inventory):
    inventory.cores.pop("node-y1")
    inventory.play_hosts = ["controller", "node-x1", "node-y1"]


def profiles_differ_on_node_y1(inventory):
    inventory.variables["node-y1"]["vpnfleet_profiles"] = [copy.deepcopy(inventory.profiles[0])]


# (kind of mistake, change, host, variable, reason): the refusal must name exactly this host and
# variable and contain the reason.
MISTAKES = [
    (
        "overlapping IPv4 ranges",
        set_office(ipv4_range="198.18.0.128/25"),
        "controller",
        "vpnfleet_profiles[1] (office).ipv4_range",
        "198.18.0.128/25 overlaps 198.18.0.0/24 (vpnfleet_profiles[0] (internet).ipv4_range)",
    ),
    (
        "WireGuard range overlapping another profile's OpenVPN range",
        wireguard_internet(wireguard_ipv4_range="198.18.1.0/25"),
        "controller",
        "vpnfleet_profiles[1] (office).ipv4_range",
        "198.18.1.0/24 overlaps 198.18.1.0/25 (vpnfleet_profiles[0] (internet).wireguard_ipv4_range)",
    ),
    (
        "WireGuard range overlapping the profile's own OpenVPN range",
        wireguard_internet(wireguard_ipv6_range="2001:db8:100::/64"),
        "controller",
        "vpnfleet_profiles[0] (internet).wireguard_ipv6_range",
        "2001:db8:100::/64 overlaps 2001:db8:100::/64 (vpnfleet_profiles[0] (internet).ipv6_range)",
    ),
    (
        "WireGuard port that an OpenVPN process of another profile listens on",
        set_office(
            protocols=["openvpn", "wireguard"], wireguard_ipv4_range="198.18.5.0/24", wireguard_port=1194
        ),
        "node-y1",
        "vpnfleet_profiles[1] (office).wireguard_port",
        "udp/1194 is already used on this node by the OpenVPN processes of profile internet",
    ),
    (
        "WireGuard port that the profile's own OpenVPN process listens on",
        wireguard_internet(wireguard_port=1194),
        "node-x1",
        "vpnfleet_profiles[0] (internet).wireguard_port",
        "udp/1194 is already used on this node by the OpenVPN processes of profile internet",
    ),
    (
        "OpenVPN port base on the WireGuard port of a profile before",
        lambda inventory: wireguard_internet(wireguard_port=1294)(inventory),
        "node-x1",
        "vpnfleet_profiles[1] (office).udp_port_base",
        "udp/1294 already used by profile internet (wireguard_port)",
    ),
    (
        "two WireGuard profiles on one port",
        lambda inventory: (
            wireguard_internet()(inventory),
            inventory.office.update(protocols=["openvpn", "wireguard"], wireguard_ipv4_range="198.18.5.0/24"),
        ),
        "node-x1",
        "vpnfleet_profiles[1] (office).wireguard_port",
        "udp/51820 is already used on this node by the WireGuard interface of profile internet",
    ),
    (
        "a public port on the WireGuard port",
        wireguard_internet(wireguard_port=1190, public_ports=["udp/1190"]),
        "node-x1",
        "vpnfleet_profiles[0] (internet).public_ports",
        "udp/1190 is the own port of the WireGuard interface of profile internet",
    ),
    (
        "WireGuard port out of range",
        wireguard_internet(wireguard_port=0),
        "controller",
        "vpnfleet_profiles[0] (internet).wireguard_port",
        "0 is not between 1 and 65535",
    ),
    (
        "unknown VPN protocol",
        set_office(protocols=["openvpn", "ipsec"]),
        "controller",
        "vpnfleet_profiles[1] (office).protocols[1]",
        "'ipsec' is not a VPN protocol; use openvpn or wireguard",
    ),
    (
        "empty protocol list",
        set_office(protocols=[]),
        "controller",
        "vpnfleet_profiles[1] (office).protocols",
        "is empty: a profile offers openvpn or wireguard, or both",
    ),
    (
        "a protocol named twice",
        set_office(protocols=["openvpn", "openvpn"]),
        "controller",
        "vpnfleet_profiles[1] (office).protocols",
        "names a protocol twice: openvpn, openvpn",
    ),
    (
        "protocols written as a string",
        set_office(protocols="wireguard"),
        "controller",
        "vpnfleet_profiles[1] (office).protocols",
        "must be a list, got 'wireguard' (write [wireguard] for one item)",
    ),
    (
        "WireGuard without a range",
        wireguard_internet(wireguard_ipv4_range=None, wireguard_ipv6_range=None),
        "controller",
        "vpnfleet_profiles[0] (internet).wireguard_ipv4_range",
        "is required: the profile offers WireGuard (protocols has wireguard)",
    ),
    (
        "a WireGuard range on a profile without WireGuard",
        set_office(wireguard_ipv4_range="198.18.5.0/24"),
        "controller",
        "vpnfleet_profiles[1] (office).wireguard_ipv4_range",
        "is set, but the profile does not offer wireguard (protocols: openvpn): it would be ignored",
    ),
    (
        "an OpenVPN range on a WireGuard-only profile",
        wireguard_internet(protocols=["wireguard"]),
        "controller",
        "vpnfleet_profiles[0] (internet).ipv4_range",
        "is set, but the profile does not offer openvpn (protocols: wireguard): it would be ignored",
    ),
    (
        "a WireGuard range too small for the node's address and clients",
        wireguard_internet(wireguard_ipv4_range="198.18.4.0/28"),
        "node-x1",
        "vpnfleet_profiles[0] (internet).wireguard_ipv4_range",
        "198.18.4.0/28: the node's part 198.18.4.0/30 is smaller than a /29",
    ),
    (
        "a WireGuard range too small to cut for max_nodes",
        wireguard_internet(wireguard_ipv6_range="2001:db8:104::/127", max_nodes=8),
        "node-x1",
        "vpnfleet_profiles[0] (internet).wireguard_ipv6_range",
        "2001:db8:104::/127 cannot be cut into 8 parts (max_nodes 8)",
    ),
    (
        "overlapping IPv6 ranges",
        set_office(ipv6_range="2001:db8:100::/48"),
        "controller",
        "vpnfleet_profiles[1] (office).ipv6_range",
        "2001:db8:100::/48 overlaps 2001:db8:100::/64",
    ),
    (
        "IPv4 range too small for the processes",
        set_internet(ipv4_range="198.18.0.0/29"),
        "node-x1",
        "vpnfleet_profiles[0] (internet).ipv4_range",
        "the node's part of 198.18.0.0/29 (part 0 of 4, max_nodes 4) is 198.18.0.0/31, too small for its 2 "
        "processes, each of which needs a /29: give the profile a /26 or larger",
    ),
    (
        "IPv4 range too small for the node's cores",
        set_office(ipv4_range="198.18.1.0/28"),
        "node-y1",
        "vpnfleet_profiles[1] (office).ipv4_range",
        "part of 198.18.1.0/28 (part 1 of 4, max_nodes 4) is 198.18.1.4/30, too small for its 4 processes, "
        "each of which needs a /29: give the profile a /25 or larger, lower max_nodes",
    ),
    (
        "IPv6 range too small",
        set_internet(ipv6_range="2001:db8:100::/120"),
        "node-x1",
        "vpnfleet_profiles[0] (internet).ipv6_range",
        "2001:db8:100::/120 (part 0 of 4, max_nodes 4) is 2001:db8:100::/122, too small for its 2 processes, "
        "each of which needs a /112: give the profile a /109 or larger",
    ),
    (
        "IPv4 range with host bits",
        set_office(ipv4_range="198.18.1.1/24"),
        "controller",
        "vpnfleet_profiles[1] (office).ipv4_range",
        "'198.18.1.1/24' is not a valid CIDR network: 198.18.1.1/24 has host bits set",
    ),
    (
        "IPv6 range as ipv4_range",
        set_office(ipv4_range="2001:db8:200::/64"),
        "controller",
        "vpnfleet_profiles[1] (office).ipv4_range",
        "'2001:db8:200::/64' is not an IPv4 network",
    ),
    (
        "IPv4 range as ipv6_range",
        set_office(ipv6_range="198.18.9.0/24"),
        "controller",
        "vpnfleet_profiles[1] (office).ipv6_range",
        "'198.18.9.0/24' is not an IPv6 network",
    ),
    (
        "range that is no CIDR at all",
        set_office(ipv4_range="the office"),
        "controller",
        "vpnfleet_profiles[1] (office).ipv4_range",
        "'the office' is not a valid CIDR network",
    ),
    (
        "missing ipv4_range",
        drop_office("ipv4_range"),
        "controller",
        "vpnfleet_profiles[1] (office).ipv4_range",
        "is required: the profile offers OpenVPN",
    ),
    (
        "port clash between profiles",
        set_office(udp_port_base=1194),
        "node-x1",
        "vpnfleet_profiles[1] (office).udp_port_base",
        "udp/1194 already used by profile internet; choose other ports or port bases",
    ),
    (
        "explicit listener clashing with another profile",
        set_office(listen=["udp/1194", "tcp/1295"]),
        "node-x1",
        "vpnfleet_profiles[1] (office).listen",
        "udp/1194 already used by profile internet",
    ),
    (
        "ports running past 65535",
        set_office(udp_port_base=65535),
        "node-y1",
        "vpnfleet_profiles[1] (office).udp_port_base",
        "ports run past 65535",
    ),
    (
        "port base out of range",
        set_office(tcp_port_base=70000),
        "controller",
        "vpnfleet_profiles[1] (office).tcp_port_base",
        "70000 is not between 1 and 65535",
    ),
    (
        "unknown location in a profile",
        set_office(locations=["x", "z"]),
        "controller",
        "vpnfleet_profiles[1] (office).locations",
        "unknown location(s) z; known: x, y",
    ),
    (
        "node in a location group without vpnfleet_location",
        lambda inventory: inventory.variables["node-x1"].pop("vpnfleet_location"),
        "node-x1",
        "vpnfleet_location",
        "is not set, though the host is in group vpnfleet_location_x: set vpnfleet_location: x",
    ),
    (
        "node in no location group",
        node_x1_in_no_location_group,
        "node-x1",
        "vpnfleet_location",
        "is not set and the host is in no vpnfleet_location_<name> group",
    ),
    (
        "unknown location of a node",
        on_host("node-y1", vpnfleet_location="z"),
        "node-y1",
        "vpnfleet_location",
        "'z' is not a known location (x, y): there is no group vpnfleet_location_z",
    ),
    (
        "node location other than its group's",
        on_host("node-y1", vpnfleet_location="x"),
        "node-y1",
        "vpnfleet_location",
        "is 'x', but the host is in group vpnfleet_location_y",
    ),
    (
        "node in two location groups",
        node_y1_also_in_location_x,
        "node-y1",
        "groups",
        "the node is in more than one location group (vpnfleet_location_x, vpnfleet_location_y)",
    ),
    (
        "process count that is no number",
        set_office(processes="four"),
        "controller",
        "vpnfleet_profiles[1] (office).processes",
        "must be a whole number, got 'four'",
    ),
    (
        "zero processes",
        set_office(processes=0),
        "controller",
        "vpnfleet_profiles[1] (office).processes",
        "0 is not between 1 and 1024",
    ),
    (
        "TCP share above one",
        set_office(tcp_share=2),
        "controller",
        "vpnfleet_profiles[1] (office).tcp_share",
        "2 is not between 0 and 1",
    ),
    (
        "full tunnel that is neither true nor false",
        set_internet(default_gateway="maybe"),
        "controller",
        "vpnfleet_profiles[0] (internet).default_gateway",
        "must be true or false, got 'maybe'",
    ),
    (
        "a string where a list belongs",
        set_office(routes="198.51.100.64/26"),
        "controller",
        "vpnfleet_profiles[1] (office).routes",
        "must be a list, got '198.51.100.64/26' (write [198.51.100.64/26] for one item)",
    ),
    (
        "a route that is no CIDR",
        set_office(routes=["198.51.100.64/26", "198.51.100.65/26"]),
        "controller",
        "vpnfleet_profiles[1] (office).routes[1]",
        "'198.51.100.65/26' is not a valid CIDR network",
    ),
    (
        "split tunnel without routes",
        drop_office("routes"),
        "controller",
        "vpnfleet_profiles[1] (office).routes",
        "a split-tunnel profile (default_gateway: false) needs routes",
    ),
    (
        "DNS server that is no address",
        set_internet(dns=["dns.lab.example"]),
        "controller",
        "vpnfleet_profiles[0] (internet).dns[0]",
        "'dns.lab.example' is not an IP address",
    ),
    (
        "search domain with a space",
        set_internet(dns_search=["lab example"]),
        "controller",
        "vpnfleet_profiles[0] (internet).dns_search[0]",
        "'lab example' is not a domain name",
    ),
    (
        "bad profile id",
        set_office(id="Office!"),
        "controller",
        "vpnfleet_profiles[1] (Office!).id",
        "profile id 'Office!': use 1 to 32 of a-z, 0-9, '-' and '_'",
    ),
    (
        "profile id used twice",
        set_office(id="internet"),
        "controller",
        "vpnfleet_profiles[1] (internet).id",
        "'internet' is the id of vpnfleet_profiles[0] (internet) as well",
    ),
    (
        "misspelt field",
        lambda inventory: inventory.office.update(default_gatway=False),
        "controller",
        "vpnfleet_profiles[1] (office).default_gatway",
        "is not a profile field; known: id, display_name",
    ),
    (
        "profile that is no mapping",
        lambda inventory: inventory.profiles.append("guest"),
        "controller",
        "vpnfleet_profiles[2]",
        "must be a mapping (a profile), got 'guest'",
    ),
    (
        "profiles that are no list",
        replace_profiles("internet, office"),
        "controller",
        "vpnfleet_profiles",
        "must be a list of profiles, got 'internet, office'",
    ),
    (
        "no profiles",
        replace_profiles([]),
        "controller",
        "vpnfleet_profiles",
        "is empty: the fleet needs at least one VPN profile",
    ),
    (
        "listener with an unknown protocol",
        set_office(listen=["sctp/1294"]),
        "controller",
        "vpnfleet_profiles[1] (office).listen[0]",
        "listener 'sctp/1294': protocol must be udp or tcp",
    ),
    (
        "the same listener twice",
        set_office(listen=["udp/1294", "udp/1294"]),
        "controller",
        "vpnfleet_profiles[1] (office).listen",
        "names a listener twice",
    ),
    (
        "process count other than the listeners'",
        set_office(listen=["udp/1294", "tcp/1294"], processes=3),
        "controller",
        "vpnfleet_profiles[1] (office).processes",
        "is 3 but listen names 2 listeners",
    ),
    (
        "no controller in the inventory",
        without_controller,
        "node-x1, node-y1",
        "vpnfleet_ca_host",
        "the inventory has no controller (group vpnfleet_controllers is empty) and vpnfleet_ca_host is not",
    ),
    (
        "CA host that is not in the inventory",
        lambda inventory: [
            variables.update(vpnfleet_ca_host="ca.example.org") for variables in inventory.variables.values()
        ],
        "controller",
        "vpnfleet_ca_host",
        "'ca.example.org' is not a host of the inventory",
    ),
    (
        "relative CA path",
        lambda inventory: inventory.play_variables.update(vpnfleet_ca_path="ca"),
        "(play vars)",
        "vpnfleet_ca_path",
        "must be an absolute path, got 'ca'",
    ),
    (
        "a shared value set on one host only",
        on_host("controller", vpnfleet_ca_path="/srv/ca"),
        "node-x1",
        "vpnfleet_ca_path",
        "is not set here, unlike host controller's (not set here, '/srv/ca' there): the fleet has one",
    ),
    (
        "profiles that differ on one host",
        profiles_differ_on_node_y1,
        "node-y1",
        "vpnfleet_profiles",
        "differs from host controller's: the fleet has one vpnfleet_profiles, for every host",
    ),
    (
        "a role variable the fleet-level one replaced",
        on_host("node-x1", node_ca_path="/srv/ca"),
        "node-x1",
        "node_ca_path",
        "is no longer read: set vpnfleet_ca_path instead",
    ),
    (
        "core count that is no number",
        on_host("node-y1", vpnfleet_cores="many"),
        "node-y1",
        "vpnfleet_cores",
        "must be a whole number of at least 1, got 'many'",
    ),
    (
        "node of this run without cores",
        node_y1_without_facts_in_this_run,
        "node-y1",
        "vpnfleet_cores",
        "is not set and the host's facts are not known: gather facts or set vpnfleet_cores",
    ),
    (
        "two nodes of a profile on one slice",
        on_host("node-y1", vpnfleet_slice=0),
        "node-y1",
        "vpnfleet_slice",
        "is 0, as on node node-x1, which serves vpnfleet_profiles[0] (internet) too, node node-x1, which "
        "serves vpnfleet_profiles[1] (office) too: each node of a profile needs a part of its own "
        "(free for all of them: 1, 2, 3)",
    ),
    (
        "a slice beyond the profile's max_nodes",
        lambda inventory: (
            inventory.office.update(max_nodes=2),
            on_host("node-y1", vpnfleet_slice=2)(inventory),
        ),
        "node-y1",
        "vpnfleet_slice",
        "is 2, but vpnfleet_profiles[1] (office).max_nodes is 2 (parts 0-1): give the node a lower index",
    ),
    (
        "a slice that is no number",
        on_host("node-y1", vpnfleet_slice="second"),
        "node-y1",
        "vpnfleet_slice",
        "must be a whole number from 0, got 'second'",
    ),
    (
        "max_nodes that is no number",
        set_office(max_nodes="many"),
        "controller",
        "vpnfleet_profiles[1] (office).max_nodes",
        "must be a whole number, got 'many'",
    ),
    (
        "a range too small to cut for max_nodes",
        set_internet(ipv6_range="2001:db8:100::/127", max_nodes=8),
        "node-x1",
        "vpnfleet_profiles[0] (internet).ipv6_range",
        "2001:db8:100::/127 cannot be cut into 8 parts (max_nodes 8): give the profile a larger range",
    ),
    (
        "two public ports of one protocol",
        set_internet(public_ports=["udp/1190", "udp/1191"]),
        "controller",
        "vpnfleet_profiles[0] (internet).public_ports",
        "names udp/1190, udp/1191: one public port per protocol",
    ),
    (
        "a public port that a process listens on",
        set_internet(public_ports=["udp/1294"]),
        "node-x1",
        "vpnfleet_profiles[0] (internet).public_ports",
        "udp/1294 is the own port of a process of profile office: choose a port no process listens on",
    ),
    (
        "a public port of a protocol the node runs no process of",
        set_internet(public_ports=["tcp/443"], tcp_share=0),
        "node-x1",
        "vpnfleet_profiles[0] (internet).public_ports",
        "tcp/443: the node runs no TCP process of profile internet (see tcp_share, processes)",
    ),
    (
        "the same entry point for two profiles",
        lambda inventory: (
            inventory.internet.update(public_ports=["udp/53"]),
            inventory.office.update(public_ports=["udp/53"]),
        ),
        "node-x1",
        "vpnfleet_profiles[1] (office).public_ports",
        "udp/53 is an entry point of profile internet already on this node",
    ),
    (
        "a node's entry point for an unknown profile",
        on_host("node-y1", vpnfleet_entry_points={"guest": ["udp/53"]}),
        "node-y1",
        "vpnfleet_entry_points.guest",
        "is not a profile of the fleet (internet, office)",
    ),
    (
        "a node's entry point that is no listener",
        on_host("node-y1", vpnfleet_entry_points={"internet": ["dns"]}),
        "node-y1",
        "vpnfleet_entry_points.internet[0]",
        "listener 'dns': write it as proto/port, e.g. udp/1194",
    ),
    (
        "a node's entry points that are no mapping",
        on_host("node-y1", vpnfleet_entry_points=["udp/53"]),
        "node-y1",
        "vpnfleet_entry_points",
        "must be a mapping of profile id to listeners",
    ),
]


def test_the_lab_inventory_is_accepted(lab_inventory):
    assert set(lab_inventory().plan().nodes) == {"node-x1", "node-y1"}


@pytest.mark.parametrize(
    ("change", "host", "variable", "reason"),
    [mistake[1:] for mistake in MISTAKES],
    ids=[mistake[0] for mistake in MISTAKES],
)
def test_each_mistake_is_refused_naming_host_variable_and_reason(
    change, host, variable, reason, lab_inventory
):
    inventory = lab_inventory()
    change(inventory)
    refusals = inventory.refusals()
    matching = [refusal for refusal in refusals if (refusal.host, refusal.variable) == (host, variable)]
    assert matching, "no refusal for host %s, variable %s in:\n%s" % (
        host,
        variable,
        "\n".join(map(str, refusals)),
    )
    assert any(reason in refusal.reason for refusal in matching), "\n".join(map(str, matching))
    assert str(matching[0]).startswith("host %s: %s: " % (host, variable))


def test_the_kinds_of_mistake_are_many():
    assert len({mistake[0] for mistake in MISTAKES}) >= 25


def test_every_problem_is_reported_at_once(lab_inventory):
    inventory = lab_inventory()
    set_office(processes="four")(inventory)
    set_internet(default_gateway="maybe", ipv4_range="198.18.1.0/25")(inventory)
    inventory.variables["node-x1"].pop("vpnfleet_location")
    without = {(refusal.host, refusal.variable) for refusal in inventory.refusals()}
    assert without >= {
        ("controller", "vpnfleet_profiles[1] (office).processes"),
        ("controller", "vpnfleet_profiles[0] (internet).default_gateway"),
        # the office profile has a problem of its own, its range still counts
        ("controller", "vpnfleet_profiles[1] (office).ipv4_range"),
        ("node-x1", "vpnfleet_location"),
    }


ODD_VALUES = [None, "", "x", "four", 0, -1, 3, 1.5, True, False, [], ["x"], [1], {}, {"a": 1}, "udp/1", 70000]


@pytest.mark.parametrize("field", profiles.FIELD_NAMES)
def test_a_value_of_any_type_in_any_field_is_a_refusal_never_a_traceback(field, lab_inventory):
    for value in ODD_VALUES:
        inventory = lab_inventory()
        inventory.office[field] = copy.deepcopy(value)
        try:
            inventory.plan()
        except fleet.FleetRefused as refused:
            assert all(str(refusal).startswith("host ") for refusal in refused.refusals)


@pytest.mark.parametrize("variable", ["vpnfleet_location", "vpnfleet_cores", "vpnfleet_ca_path"])
def test_a_fleet_variable_of_any_type_is_a_refusal_never_a_traceback(variable, lab_inventory):
    for value in ODD_VALUES:
        inventory = lab_inventory()
        inventory.variables["node-x1"][variable] = copy.deepcopy(value)
        try:
            inventory.plan()
        except fleet.FleetRefused as refused:
            assert refused.refusals


def test_values_written_as_strings_are_read_as_ansible_would(lab_inventory):
    # An extra var (-e processes=3) is a string: it means what it says.
    inventory = lab_inventory()
    set_office(processes="3", default_gateway="no", tcp_share="0.5", udp_port_base="1300")(inventory)
    [office] = [p for p in inventory.plan().nodes["node-x1"]["profiles"] if p["id"] == "office"]
    assert (office["processes"], office["default_gateway"], office["tcp_share"]) == (3, False, 0.5)
    assert office["plan"]["listeners"] == ["udp/1300", "udp/1301", "tcp/1294"]
