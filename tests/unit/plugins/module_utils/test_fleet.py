"""The fleet plan of the lab's inventory: which node serves which profile with which processes,
what the controller is told, and the values the roles share."""

import ipaddress

from vpnfleet.shared import fleet, instances


def test_each_node_plans_each_profile_once_with_the_planner(lab_inventory):
    plan = lab_inventory().plan()
    node = plan.nodes["node-y1"]
    assert (node["location"], node["cores"], node["absent"]) == ("y", 4, [])
    internet, office = node["profiles"]
    # The plan is the planner's own, for the node's cores, on the node's part (1 of 4) of the ranges.
    expected = instances.plan_profile(
        "office",
        "198.18.1.64/26",
        "2001:db8:101:0:4000::/66",
        cores=4,
        udp_port_base=1294,
        tcp_port_base=1294,
    )
    assert office["plan"] == expected.as_dict()
    assert internet["plan"]["listeners"] == ["udp/1194", "tcp/1194"]  # processes: 2 beats 4 cores
    assert office["ports_in_use"] == {"internet": ["udp/1194", "tcp/1194"]}
    assert internet["ports_in_use"] == {"office": ["udp/1294", "udp/1295", "udp/1296", "tcp/1294"]}
    # Defaults are filled in once, for the roles to use as they are.
    assert (internet["tcp_share"], internet["client_to_client"], internet["routes"]) == (0.25, False, [])


def test_the_slices_of_a_node_cover_its_part_of_each_range_without_overlap(lab_inventory):
    for node in lab_inventory().plan().nodes.values():
        for served in node["profiles"]:
            part = ipaddress.ip_network(served["plan"]["ipv4_range"])
            assert part.subnet_of(ipaddress.ip_network(served["ipv4_range"]))
            slices = [ipaddress.ip_network(process["ipv4"]) for process in served["plan"]["processes"]]
            assert list(ipaddress.collapse_addresses(slices)) == [part]


def addresses_of(plan, node):
    return {
        (served["id"], process["name"]): (
            ipaddress.ip_network(process["ipv4"]),
            ipaddress.ip_network(process["ipv6"]),
        )
        for served in plan.nodes[node]["profiles"]
        for process in served["plan"]["processes"]
    }


def test_two_nodes_of_a_profile_hand_out_disjoint_addresses(lab_inventory):
    plan = lab_inventory().plan()
    x1, y1 = addresses_of(plan, "node-x1"), addresses_of(plan, "node-y1")
    for ipv4, ipv6 in x1.values():
        for other4, other6 in y1.values():
            assert not ipv4.overlaps(other4) and not ipv6.overlaps(other6)
    # Each node takes part vpnfleet_slice of max_nodes (4) parts: node-y1 the second quarter.
    assert [served["plan"]["ipv4_range"] for served in plan.nodes["node-y1"]["profiles"]] == [
        "198.18.0.64/26",
        "198.18.1.64/26",
    ]


def with_node_z1(inventory, **variables):
    inventory.groups["vpnfleet_location_z"] = ["node-z1"]
    inventory.groups["vpnfleet_nodes"].append("node-z1")
    inventory.variables["node-z1"] = {"vpnfleet_location": "z", **variables}
    inventory.cores["node-z1"] = 8
    return inventory


def test_a_node_added_takes_a_free_part_and_every_other_node_keeps_its_own(lab_inventory):
    before = lab_inventory().plan()
    after = with_node_z1(lab_inventory(), vpnfleet_slice=2).plan()
    for name in ("node-x1", "node-y1"):
        assert after.nodes[name] == before.nodes[name]
    assert [served["plan"]["ipv4_range"] for served in after.nodes["node-z1"]["profiles"]] == [
        "198.18.0.128/26",
        "198.18.1.128/26",
    ]
    # Names sort either way: an index written down, not a position, decides the part.
    early = with_node_z1(lab_inventory(), vpnfleet_slice=2)
    early.groups["vpnfleet_nodes"].insert(0, early.groups["vpnfleet_nodes"].pop())
    assert early.plan().nodes["node-x1"] == before.nodes["node-x1"]


def test_the_controller_learns_which_node_and_process_hold_each_address(lab_inventory):
    view = lab_inventory().plan().as_dict()["controller"]
    y1 = next(node for node in view["nodes"] if node["name"] == "node-y1")
    assert y1["slices"] == [
        {"profile": "internet", "ipv4": "198.18.0.64/26", "ipv6": "2001:db8:100:0:4000::/66"},
        {"profile": "office", "ipv4": "198.18.1.64/26", "ipv6": "2001:db8:101:0:4000::/66"},
    ]
    owners = [
        (node["name"], process["name"])
        for node in view["nodes"]
        for process in node["processes"]
        if ipaddress.ip_address("198.18.1.77") in ipaddress.ip_network(process["ipv4"])
    ]
    assert owners == [("node-y1", "office-0")]


def test_one_public_port_per_protocol_spreads_over_the_processes_of_that_protocol(lab_inventory):
    inventory = lab_inventory()
    inventory.internet.update(processes=4, public_ports=["udp/1190", "tcp/443"])
    inventory.variables["node-y1"]["vpnfleet_entry_points"] = {"internet": ["udp/53"]}
    # Four internet processes: udp/1194-1196 and tcp/1194, behind one public port per protocol.
    plan = inventory.plan()
    x1 = plan.nodes["node-x1"]["profiles"][0]
    assert x1["entry_points"] == [
        {"proto": "udp", "port": 1190, "ports": [1194, 1195, 1196]},
        {"proto": "tcp", "port": 443, "ports": [1194]},
    ]
    y1 = plan.nodes["node-y1"]["profiles"][0]
    assert [entry["port"] for entry in y1["entry_points"]] == [1190, 443, 53]
    view = plan.as_dict()["controller"]
    assert [node["entry_points"] for node in view["nodes"]] == [
        [
            {"profile": "internet", "proto": "udp", "port": 1190},
            {"profile": "internet", "proto": "tcp", "port": 443},
        ],
        [
            {"profile": "internet", "proto": "udp", "port": 1190},
            {"profile": "internet", "proto": "tcp", "port": 443},
            {"profile": "internet", "proto": "udp", "port": 53},
        ],
    ]
    # Without public ports a profile keeps one remote per process (eduVPN's way).
    assert plan.nodes["node-x1"]["profiles"][1]["entry_points"] == []


def test_a_profile_of_one_location_is_absent_from_the_others(lab_inventory):
    inventory = lab_inventory()
    inventory.office["locations"] = ["y"]
    plan = inventory.plan()
    assert [p["id"] for p in plan.nodes["node-x1"]["profiles"]] == ["internet"]
    assert plan.nodes["node-x1"]["absent"] == ["office"]
    assert plan.nodes["node-y1"]["absent"] == []


def test_the_controller_sees_every_process_and_only_the_profile_fields_it_reads(lab_inventory):
    view = lab_inventory().plan().as_dict()["controller"]
    assert [profile["id"] for profile in view["profiles"]] == ["internet", "office"]
    assert view["profiles"][1] == {
        "id": "office",
        "display_name": "Office (split tunnel)",
        "protocols": ["openvpn"],
        "default_gateway": False,
        # A WireGuard config carries the routes and DNS servers itself (OpenVPN pushes them).
        "routes": ["198.51.100.64/26", "2001:db8:1f00:12::/64"],
        "dns": [],
        "dns_search": [],
        "groups": [],
    }
    node_x1 = view["nodes"][0]
    node_x1_identity = (node_x1["name"], node_x1["location"], node_x1["public_address"])
    assert node_x1_identity == ("node-x1", "x", "198.51.100.10")
    assert [
        (p["profile"], p["name"], p["proto"], p["port"], p["max_clients"], p["ipv4"])
        for p in node_x1["processes"]
    ] == [
        ("internet", "internet-0", "udp", 1194, 28, "198.18.0.0/27"),
        ("internet", "internet-1", "tcp", 1194, 28, "198.18.0.32/27"),
        ("office", "office-0", "udp", 1294, 28, "198.18.1.0/27"),
        ("office", "office-1", "tcp", 1294, 28, "198.18.1.32/27"),
    ]
    assert sum(len(node["processes"]) for node in view["nodes"]) == 4 + 2 + 4


def test_the_public_address_and_the_cores_may_be_set_per_node(lab_inventory):
    inventory = lab_inventory()
    inventory.variables["node-x1"].update(vpnfleet_public_address="198.51.100.11", vpnfleet_cores="3")
    node = inventory.plan().nodes["node-x1"]
    assert (node["public_address"], node["cores"]) == ("198.51.100.11", 3)
    assert [p["plan"]["process_count"] for p in node["profiles"]] == [2, 3]


def test_the_contract_defaults_to_the_first_controller_and_its_virtual_environment(lab_inventory):
    assert lab_inventory().plan().contract == {
        "ca_host": "controller",
        "ca_path": "/var/lib/vpnfleet/ca",
        "controller_venv": "/opt/vpnfleet/controller",
        "ca_python": "/opt/vpnfleet/controller/bin/python",
        "node_token_dir": "/etc/vpnfleet/controller/node-tokens",
    }


def test_a_play_may_keep_the_ca_on_the_control_machine(lab_inventory):
    # molecule/node: no controller, the CA in the scenario's directory on the control machine.
    inventory = lab_inventory()
    inventory.groups["vpnfleet_controllers"] = []
    del inventory.variables["controller"]
    inventory.play_variables.update(vpnfleet_ca_host="localhost", vpnfleet_ca_path="/srv/scenario/ca")
    contract = inventory.plan().contract
    assert (contract["ca_host"], contract["ca_path"], contract["ca_python"]) == (
        "localhost",
        "/srv/scenario/ca",
        "/usr/bin/python3",
    )


def test_a_value_set_for_every_host_holds_for_the_fleet(lab_inventory):
    inventory = lab_inventory()
    for variables in inventory.variables.values():
        variables["vpnfleet_controller_venv"] = "/srv/vpnfleet/controller"
    contract = inventory.plan().contract
    assert contract["ca_python"] == "/srv/vpnfleet/controller/bin/python"


def test_a_node_outside_the_run_without_facts_is_left_out_with_a_warning(lab_inventory):
    inventory = lab_inventory()
    inventory.cores.pop("node-y1")
    inventory.play_hosts = ["node-x1"]
    plan = inventory.plan()
    assert set(plan.nodes) == {"node-x1"}
    assert plan.warnings == (
        "host node-y1: not in this run (outside --limit, or unreachable), no facts known and no "
        "vpnfleet_cores: its processes are left out of this plan",
    )


def test_an_inventory_with_only_a_controller_needs_no_profiles():
    plan = fleet.plan_fleet(
        {"controller": fleet.HostInput("controller")}, {"vpnfleet_controllers": ["controller"]}
    )
    assert (plan.nodes, plan.profiles) == ({}, ())


def with_wireguard(inventory, **fields):
    """The lab's internet profile offering WireGuard beside OpenVPN, on ranges of its own."""
    inventory.internet.update(
        protocols=["openvpn", "wireguard"],
        wireguard_ipv4_range="198.18.4.0/24",
        wireguard_ipv6_range="2001:db8:104::/64",
        **fields,
    )
    return inventory


def test_a_wireguard_profile_gets_one_interface_per_node_on_the_nodes_part_of_its_ranges(lab_inventory):
    plan = with_wireguard(lab_inventory()).plan()
    internet_x1, office_x1 = plan.nodes["node-x1"]["profiles"]
    internet_y1 = plan.nodes["node-y1"]["profiles"][0]
    assert internet_x1["wireguard"] == {
        "interface": "wg-internet",
        "port": 51820,
        "ipv4_range": "198.18.4.0/26",
        "ipv6_range": "2001:db8:104::/66",
        "ipv4_address": "198.18.4.1",
        "ipv6_address": "2001:db8:104::1",
    }
    # node-y1 (vpnfleet_slice 1) takes the second part, as for its OpenVPN ranges.
    assert (internet_y1["wireguard"]["ipv4_range"], internet_y1["wireguard"]["ipv6_range"]) == (
        "198.18.4.64/26",
        "2001:db8:104:0:4000::/66",
    )
    assert office_x1["wireguard"] is None
    # The OpenVPN side of the profile is planned as before.
    assert internet_x1["plan"]["listeners"] == ["udp/1194", "tcp/1194"]
    controller_x1 = plan.as_dict()["controller"]["nodes"][0]
    assert controller_x1["wireguard"] == [{"profile": "internet", **internet_x1["wireguard"]}]
    assert plan.as_dict()["controller"]["profiles"][0]["protocols"] == ["openvpn", "wireguard"]


def test_a_wireguard_only_profile_has_no_openvpn_processes(lab_inventory):
    inventory = lab_inventory()
    inventory.profiles.append(
        {
            "id": "wg",
            "protocols": ["wireguard"],
            "wireguard_ipv4_range": "198.18.5.0/24",
            "wireguard_port": 51821,
        }
    )
    plan = inventory.plan()
    wg = plan.nodes["node-x1"]["profiles"][2]
    assert (wg["id"], wg["plan"], wg["ipv4_range"]) == ("wg", None, None)
    assert wg["wireguard"]["port"] == 51821 and wg["wireguard"]["ipv6_range"] is None
    controller = plan.as_dict()["controller"]["nodes"][0]
    assert {process["profile"] for process in controller["processes"]} == {"internet", "office"}
    assert [slice_["profile"] for slice_ in controller["slices"]] == ["internet", "office"]
    assert [entry["interface"] for entry in controller["wireguard"]] == ["wg-internet", "wg-wg"]


def test_an_interface_name_fits_the_kernel_and_stays_the_same():
    assert instances.wireguard_interface("internet") == "wg-internet"
    long_name = instances.wireguard_interface("a-profile-id-much-too-long")
    assert len(long_name) == 15 and long_name.startswith("wg-")
    assert long_name == instances.wireguard_interface("a-profile-id-much-too-long")
    assert long_name != instances.wireguard_interface("a-profile-id-much-too-long2")
