"""The lab reads its shape from the inventory and refuses one it cannot build safely."""

import hashlib
import json
from pathlib import Path

import pytest

from vpnfleet.lab.spec import LabSpecError, build_spec

NETWORKS = [
    {"name": "core", "ipv4": "203.0.113.0/26", "ipv6": "2001:db8:1f00:1::/64"},
    {"name": "location-x", "ipv4": "198.51.100.0/26", "ipv6": "2001:db8:1f00:11::/64"},
]


def inventory(hosts, networks=None, groups=None):
    shared = {"vpnfleet_lab_networks": networks or NETWORKS, "vpnfleet_lab_base_packages": ["openvpn"]}
    return {
        "_meta": {"hostvars": {name: {**shared, **variables} for name, variables in hosts.items()}},
        "all": {"children": ["ungrouped", *(groups or {})]},
        **(groups or {}),
    }


def test_hosts_get_their_network_and_mirrored_ipv6():
    spec = build_spec(
        Path("lab"),
        inventory(
            {"node-x1": {"ansible_host": "198.51.100.10", "vpnfleet_lab_network": "location-x"}},
            groups={
                "vpnfleet_nodes": {"children": ["vpnfleet_location_x"]},
                "vpnfleet_location_x": {"hosts": ["node-x1"]},
            },
        ),
    )
    (host,) = spec.hosts
    assert host.network.name == "location-x"
    assert str(host.ipv6) == "2001:db8:1f00:11::a"
    assert host.role == "node x"
    assert set(host.groups) == {"vpnfleet_nodes", "vpnfleet_location_x"}
    assert host.network.bridge == "vfl-location-x"
    assert str(host.network.gateway4) == "198.51.100.1"


def test_image_key_follows_the_package_list():
    base = inventory({"a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"}})
    changed = inventory(
        {
            "a": {
                "ansible_host": "203.0.113.10",
                "vpnfleet_lab_network": "core",
                "vpnfleet_lab_base_packages": ["openvpn", "nginx"],
            }
        }
    )
    same_again = inventory({"a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"}})
    key = build_spec(Path("lab"), base).hosts[0].image.key()
    assert key == build_spec(Path("lab"), same_again).hosts[0].image.key()
    assert key != build_spec(Path("lab"), changed).hosts[0].image.key()


def test_the_image_key_of_a_plain_image_is_the_one_it_had_before_backports():
    # Caches built before per-host suites and backports stay valid.
    spec = build_spec(
        Path("lab"), inventory({"a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"}})
    )
    earlier = json.dumps({"suite": "bookworm", "packages": ["openvpn"], "format": 2})
    assert spec.hosts[0].image.key() == "bookworm-" + hashlib.sha256(earlier.encode()).hexdigest()[:12]


def mixed_fleet(node_vars, group_vars=None):
    """A controller on the lab's default suite and two nodes of one location group."""
    nodes = {
        "node-x1": {"ansible_host": "198.51.100.10", "vpnfleet_lab_network": "location-x"},
        "node-x2": {"ansible_host": "198.51.100.11", "vpnfleet_lab_network": "location-x"},
    }
    hosts = {
        "controller": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"},
        **{
            name: {**variables, **(group_vars or {}), **node_vars.get(name, {})}
            for name, variables in nodes.items()
        },
    }
    groups = {
        "vpnfleet_controllers": {"hosts": ["controller"]},
        "vpnfleet_location_x": {"hosts": list(nodes)},
    }
    return build_spec(Path("lab"), inventory(hosts, groups=groups))


def test_each_host_boots_the_suite_its_vars_name_and_hosts_of_one_suite_share_an_image():
    spec = mixed_fleet({}, group_vars={"vpnfleet_lab_suite": "trixie"})
    suites = {host.name: host.image.suite for host in spec.hosts}
    assert suites == {"controller": "bookworm", "node-x1": "trixie", "node-x2": "trixie"}
    assert [image.suite for image in spec.images()] == ["bookworm", "trixie"]
    keys = {image.key() for image in spec.images()}
    assert len(keys) == 2 and all(key.startswith(("bookworm-", "trixie-")) for key in keys)


def test_backports_packages_make_an_image_of_their_own():
    spec = mixed_fleet(
        {"node-x1": {"vpnfleet_lab_backports_packages": ["openvpn"]}},
        group_vars={"vpnfleet_lab_suite": "trixie"},
    )
    by_name = {host.name: host.image for host in spec.hosts}
    assert by_name["node-x1"].backports == ("openvpn",)
    assert by_name["node-x1"].backports_suite == "trixie-backports"
    assert by_name["node-x2"].backports == ()
    assert by_name["node-x1"].key() != by_name["node-x2"].key()
    assert len(spec.images()) == 3
    # Only the hosts asked for: their images, not every image of the inventory.
    assert spec.images(spec.select(["node-x2"])) == (by_name["node-x2"],)


def test_the_selected_hosts_images_come_once_in_the_hosts_order():
    spec = mixed_fleet({"node-x1": {"vpnfleet_lab_suite": "trixie"}})
    assert [image.suite for image in spec.images(spec.select(["node-x2", "node-x1", "controller"]))] == [
        "bookworm",
        "trixie",
    ]


def test_a_host_var_wins_over_the_group_var_when_ansible_reads_the_inventory(tmp_path):
    """The real precedence, from ansible-inventory: group_vars of a location, a host var on one node."""
    from vpnfleet.lab.spec import read_spec

    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(
        "vpnfleet_lab_suite: bookworm\nvpnfleet_lab_base_packages: [openvpn]\n"
        "vpnfleet_lab_networks:\n"
        "  - {name: core, ipv4: 203.0.113.0/26, ipv6: '2001:db8:1f00:1::/64'}\n"
    )
    (tmp_path / "group_vars" / "vpnfleet_location_x.yml").write_text("vpnfleet_lab_suite: trixie\n")
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    vpnfleet_controllers:\n      hosts:\n"
        "        controller: {ansible_host: 203.0.113.10, vpnfleet_lab_network: core}\n"
        "    vpnfleet_location_x:\n      hosts:\n"
        "        node-x1: {ansible_host: 203.0.113.11, vpnfleet_lab_network: core}\n"
        "        node-x2: {ansible_host: 203.0.113.12, vpnfleet_lab_network: core,\n"
        "                  vpnfleet_lab_suite: bookworm}\n"
    )
    # A second source laid over the first, as a molecule scenario lays its hosts over the lab's.
    overlay = tmp_path / "overlay.yml"
    overlay.write_text("all:\n  hosts:\n    controller: {vpnfleet_lab_suite: trixie}\n")
    suites = {host.name: host.image.suite for host in read_spec((tmp_path / "hosts.yml", overlay)).hosts}
    assert suites == {"controller": "trixie", "node-x1": "trixie", "node-x2": "bookworm"}


@pytest.mark.parametrize(
    ("hosts", "networks", "message"),
    [
        (
            {"a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "nowhere"}},
            None,
            "host a: vpnfleet_lab_network is 'nowhere'",
        ),
        (
            {"a": {"ansible_host": "198.51.100.10", "vpnfleet_lab_network": "core"}},
            None,
            "host a: ansible_host 198.51.100.10 is not a host address of core",
        ),
        ({"a": {"ansible_host": "203.0.113.1", "vpnfleet_lab_network": "core"}}, None, "gateway 203.0.113.1"),
        (
            {
                "a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"},
                "b": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"},
            },
            None,
            "host b: ansible_host 203.0.113.10 is already used by a",
        ),
        (
            {"a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"}},
            [
                {"name": "core", "ipv4": "203.0.113.0/26", "ipv6": "2001:db8:1f00:1::/64"},
                {"name": "mgmt", "ipv4": "100.64.0.0/24", "ipv6": "2001:db8:1f00:2::/64"},
            ],
            "vpnfleet_lab_networks[mgmt]: 100.64.0.0/24 is outside the lab's ranges",
        ),
        (
            {"a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"}},
            [
                {"name": "core", "ipv4": "203.0.113.0/26", "ipv6": "2001:db8:1f00:1::/64"},
                {"name": "again", "ipv4": "203.0.113.32/27", "ipv6": "2001:db8:1f00:2::/64"},
            ],
            "core and again overlap",
        ),
        (
            {"a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"}},
            [
                {"name": "core", "ipv4": "203.0.113.0/26", "ipv6": "2001:db8:1f00:1::/64"},
                {"name": "up", "ipv4": "203.0.113.248/29", "ipv6": "2001:db8:1f00:2::/64"},
            ],
            "overlaps the lab uplink",
        ),
        (
            {"a": {"ansible_host": "not-an-address", "vpnfleet_lab_network": "core"}},
            None,
            "host a: ansible_host must be an IPv4 address",
        ),
        (
            {"a": {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core", "vpnfleet_lab_suite": 13}},
            None,
            "host a: vpnfleet_lab_suite is 13; expected a Debian suite's code name",
        ),
        (
            {
                "a": {
                    "ansible_host": "203.0.113.10",
                    "vpnfleet_lab_network": "core",
                    "vpnfleet_lab_suite": "Trixie Backports",
                }
            },
            None,
            "host a: vpnfleet_lab_suite is 'Trixie Backports'",
        ),
        (
            {
                "a": {
                    "ansible_host": "203.0.113.10",
                    "vpnfleet_lab_network": "core",
                    "vpnfleet_lab_backports_packages": "openvpn",
                }
            },
            None,
            "host a: vpnfleet_lab_backports_packages must be a list of package names, not 'openvpn'",
        ),
        (
            {
                "a": {
                    "ansible_host": "203.0.113.10",
                    "vpnfleet_lab_network": "core",
                    "vpnfleet_lab_base_packages": [],
                }
            },
            None,
            "host a: vpnfleet_lab_base_packages is empty",
        ),
    ],
)
def test_inventory_mistakes_name_the_host_and_the_variable(hosts, networks, message):
    with pytest.raises(
        LabSpecError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
    ):
        build_spec(Path("lab"), inventory(hosts, networks))


def test_the_embedded_lab_inventory_builds():
    from vpnfleet.lab.spec import read_spec

    spec = read_spec(Path(__file__).parents[3] / "inventories" / "lab")
    names = {host.name for host in spec.hosts}
    assert {"controller", "node-x1", "node-y1", "client", "internet"} <= names
    assert {host.role for host in spec.hosts if host.name.startswith("node-")} == {"node x", "node y"}
    assert {host.image.suite for host in spec.hosts} == {"bookworm"}


def test_the_trixie_scenario_lays_debian_13_nodes_over_the_lab():
    from vpnfleet.lab.spec import read_spec

    repo = Path(__file__).parents[3]
    spec = read_spec((repo / "inventories" / "lab", repo / "molecule" / "trixie" / "inventory" / "hosts.yml"))
    images = {host.name: host.image for host in spec.hosts}
    assert images["controller"].suite == "bookworm"
    assert (images["node-x1"].suite, images["node-x1"].backports) == ("trixie", ("openvpn",))
    assert (images["node-y1"].suite, images["node-y1"].backports) == ("trixie", ())


def test_extra_packages_give_a_host_an_image_of_its_own():
    plain = {"ansible_host": "203.0.113.10", "vpnfleet_lab_network": "core"}
    spec = build_spec(
        Path("lab"),
        inventory(
            {
                "controller": plain,
                "monitoring": {
                    **plain,
                    "ansible_host": "203.0.113.30",
                    "vpnfleet_lab_extra_packages": ["prometheus"],
                },
            }
        ),
    )
    controller, monitoring = spec.hosts
    assert controller.image.packages == ("openvpn",)
    assert monitoring.image.packages == ("openvpn", "prometheus")
    assert len(spec.images()) == 2
    with pytest.raises(LabSpecError, match="host monitoring: vpnfleet_lab_extra_packages must be a list"):
        build_spec(
            Path("lab"),
            inventory({"monitoring": {**plain, "vpnfleet_lab_extra_packages": "prometheus"}}),
        )
