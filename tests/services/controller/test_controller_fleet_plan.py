"""The fleet plan's view for the controller, as the role writes it into the settings: every
client address names its node and process, and a node with public ports gets one remote per
port, not one per process."""

from __future__ import annotations

import copy
import pathlib
from datetime import datetime

import pytest
import yaml
from controller_helpers import settings_mapping
from vpnfleet.shared import fleet

from vpnfleet.controller.daemons import NodeHealth
from vpnfleet.controller.fleet import choose_remotes
from vpnfleet.controller.settings import SettingsError, settings_from_mapping

REPO = pathlib.Path(__file__).resolve().parents[3]
LAB = REPO / "inventories/lab"


def lab_plan(**internet):
    profiles = yaml.safe_load((LAB / "group_vars/all/profiles.yml").read_text())["vpnfleet_profiles"]
    profiles[0].update(internet)
    hosts = yaml.safe_load((LAB / "hosts.yml").read_text())["all"]["children"]
    groups = {"vpnfleet_controllers": ["controller"], "vpnfleet_nodes": ["node-x1", "node-y1"]}
    given = {
        "controller": fleet.HostInput(
            "controller", ("vpnfleet_controllers",), {"vpnfleet_profiles": profiles}
        )
    }
    for location in ("x", "y"):
        group = "vpnfleet_location_%s" % location
        groups[group] = list(hosts["vpnfleet_nodes"]["children"][group]["hosts"])
        group_vars = yaml.safe_load((LAB / "group_vars" / f"{group}.yml").read_text())
        for name, variables in hosts["vpnfleet_nodes"]["children"][group]["hosts"].items():
            merged = {**group_vars, **variables}
            read = {key: value for key, value in merged.items() if key in fleet.HOST_VARIABLES}
            given[name] = fleet.HostInput(
                name,
                ("vpnfleet_nodes", group),
                {"vpnfleet_profiles": profiles, **read},
                cores=2,
                ansible_host=variables["ansible_host"],
            )
    return fleet.plan_fleet(given, groups).as_dict()["controller"]


def settings_of(view, pki_dir):
    mapping = settings_mapping(pki_dir, "sqlite:///unused.sqlite", 41194)
    mapping["profiles"] = view["profiles"]
    mapping["nodes"] = [{**node, "api_token_sha256": "0" * 64} for node in view["nodes"]]
    return settings_from_mapping(mapping)


def test_every_client_address_names_its_node_and_process(pki_dir):
    settings = settings_of(lab_plan(), pki_dir)
    found = {
        address: (node.name, process.name)
        for address in ("198.18.0.5", "198.18.0.70", "198.18.1.40", "2001:db8:100:0:4000::1:7")
        for node, process in [settings.holder_of(address)]
    }
    assert found == {
        "198.18.0.5": ("node-x1", "internet-0"),
        "198.18.0.70": ("node-y1", "internet-0"),
        "198.18.1.40": ("node-x1", "office-1"),
        "2001:db8:100:0:4000::1:7": ("node-y1", "internet-1"),
    }
    assert settings.holder_of("203.0.113.130") is None


def _every_process_answers(settings) -> dict[str, NodeHealth]:
    """Each node as its daemon would describe it with every process up and empty."""
    return {
        node.name: NodeHealth(
            node=node,
            asked_at=datetime(2026, 12, 1),
            info={
                "rel_load_average": [0, 0, 0],
                "maintenance_mode": False,
                "o_process_list": [
                    {"process": process.name, "profile_id": process.profile_id, "client_count": 0}
                    for process in node.processes
                ],
            },
            error=None,
            last_answer_at=datetime(2026, 12, 1),
        )
        for node in settings.nodes
    }


def test_a_node_with_public_ports_gets_one_remote_per_port(pki_dir):
    settings = settings_of(lab_plan(processes=4, public_ports=["udp/1190", "tcp/443"]), pki_dir)
    health = _every_process_answers(settings)

    def remotes(profile_id):
        return choose_remotes(settings, profile_id, health, lives_for_months=True)

    assert sorted(remotes("internet")) == [
        "remote 198.51.100.10 1190 udp",
        "remote 198.51.100.10 443 tcp",
        "remote 198.51.100.74 1190 udp",
        "remote 198.51.100.74 443 tcp",
    ]
    # A profile without public ports: one process's port per node and protocol.
    office = remotes("office")
    assert len(office) == 4 and {line.split()[1] for line in office} == {"198.51.100.10", "198.51.100.74"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda node: node["entry_points"][0].update(profile="guest"), "nodes[0].entry_points[0].profile"),
        (lambda node: node["entry_points"][0].update(proto="sctp"), "must be udp or tcp"),
        (lambda node: node["processes"][0].update(ipv4="198.18.0.1/27"), "nodes[0].processes[0].ipv4"),
    ],
)
def test_a_wrong_slice_or_entry_point_names_the_setting(pki_dir, change, message):
    view = copy.deepcopy(lab_plan(public_ports=["udp/1190"]))
    change(view["nodes"][0])
    with pytest.raises(
        SettingsError, match=message.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")
    ):
        settings_of(view, pki_dir)
