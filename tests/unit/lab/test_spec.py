"""The lab reads its shape from the inventory and refuses one it cannot build safely."""

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
    key = build_spec(Path("lab"), base).image_key()
    assert key == build_spec(Path("lab"), same_again).image_key()
    assert key != build_spec(Path("lab"), changed).image_key()


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
