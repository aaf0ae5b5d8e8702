"""The fleet plan of the lab's inventory: which node serves which profile with which processes,
what the controller is told, and the values the roles share."""

import ipaddress

from vpnfleet.shared import fleet, instances


def test_each_node_plans_each_profile_once_with_the_planner(lab_inventory):
    plan = lab_inventory().plan()
    node = plan.nodes["node-y1"]
    assert (node["location"], node["cores"], node["absent"]) == ("y", 4, [])
    internet, office = node["profiles"]
    # The plan is the planner's own, for the node's cores.
    expected = instances.plan_profile(
        "office", "198.18.1.0/24", "2001:db8:101::/64", cores=4, udp_port_base=1294, tcp_port_base=1294
    )
    assert office["plan"] == expected.as_dict()
    assert internet["plan"]["listeners"] == ["udp/1194", "tcp/1194"]  # processes: 2 beats 4 cores
    assert office["ports_in_use"] == {"internet": ["udp/1194", "tcp/1194"]}
    assert internet["ports_in_use"] == {"office": ["udp/1294", "udp/1295", "udp/1296", "tcp/1294"]}
    # Defaults are filled in once, for the roles to use as they are.
    assert (internet["tcp_share"], internet["client_to_client"], internet["routes"]) == (0.25, False, [])


def test_the_slices_of_a_node_cover_each_range_without_overlap(lab_inventory):
    for node in lab_inventory().plan().nodes.values():
        for served in node["profiles"]:
            slices = [ipaddress.ip_network(process["ipv4"]) for process in served["plan"]["processes"]]
            assert list(ipaddress.collapse_addresses(slices)) == [ipaddress.ip_network(served["ipv4_range"])]


def test_a_profile_of_one_location_is_absent_from_the_others(lab_inventory):
    inventory = lab_inventory()
    inventory.office["locations"] = ["y"]
    plan = inventory.plan()
    assert [p["id"] for p in plan.nodes["node-x1"]["profiles"]] == ["internet"]
    assert plan.nodes["node-x1"]["absent"] == ["office"]
    assert plan.nodes["node-y1"]["absent"] == []


def test_the_controller_sees_every_process_and_only_the_profile_fields_it_reads(lab_inventory):
    view = lab_inventory().plan().as_dict()["controller"]
    assert view["profiles"] == [
        {"id": "internet", "display_name": "Internet (full tunnel)", "default_gateway": True, "groups": []},
        {"id": "office", "display_name": "Office (split tunnel)", "default_gateway": False, "groups": []},
    ]
    node_x1 = view["nodes"][0]
    node_x1_identity = (node_x1["name"], node_x1["location"], node_x1["public_address"])
    assert node_x1_identity == ("node-x1", "x", "198.51.100.10")
    assert node_x1["processes"] == [
        {"profile": "internet", "name": "internet-0", "proto": "udp", "port": 1194, "max_clients": 124},
        {"profile": "internet", "name": "internet-1", "proto": "tcp", "port": 1194, "max_clients": 124},
        {"profile": "office", "name": "office-0", "proto": "udp", "port": 1294, "max_clients": 124},
        {"profile": "office", "name": "office-1", "proto": "tcp", "port": 1294, "max_clients": 124},
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
        "host node-y1: no facts and no vpnfleet_cores: its processes are left out of this plan",
    )


def test_an_inventory_with_only_a_controller_needs_no_profiles():
    plan = fleet.plan_fleet(
        {"controller": fleet.HostInput("controller")}, {"vpnfleet_controllers": ["controller"]}
    )
    assert (plan.nodes, plan.profiles) == ({}, ())
