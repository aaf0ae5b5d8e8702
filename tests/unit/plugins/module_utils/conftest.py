"""The lab's inventory as the fleet_plan action plugin hands it to the fleet plan."""

import copy
import pathlib

import pytest
import yaml
from vpnfleet.shared import fleet

REPO = pathlib.Path(__file__).resolve().parents[4]
LAB_PROFILES = yaml.safe_load((REPO / "inventories/lab/group_vars/all/profiles.yml").read_text())[
    "vpnfleet_profiles"
]


class Inventory:
    """The lab's inventory as the action plugin hands it over: groups, and per host the variables
    set for it and its facts (cores, address)."""

    def __init__(self):
        self.groups = {
            "vpnfleet_controllers": ["controller"],
            "vpnfleet_nodes": ["node-x1", "node-y1"],
            "vpnfleet_location_x": ["node-x1"],
            "vpnfleet_location_y": ["node-y1"],
        }
        self.profiles = copy.deepcopy(LAB_PROFILES)
        self.variables = {
            "controller": {},
            "node-x1": {"vpnfleet_location": "x"},
            "node-y1": {"vpnfleet_location": "y", "vpnfleet_slice": 1},
        }
        self.cores = {"controller": 2, "node-x1": 2, "node-y1": 4}
        self.play_variables = {}
        self.play_hosts = None

    @property
    def office(self):
        return self.profiles[1]

    @property
    def internet(self):
        return self.profiles[0]

    def hosts(self):
        found = {}
        for name, variables in self.variables.items():
            groups = tuple(group for group, members in self.groups.items() if name in members)
            given = {"vpnfleet_profiles": self.profiles, **variables}
            found[name] = fleet.HostInput(name, groups, given, self.cores.get(name), None, "198.51.100.10")
        return found

    def plan(self):
        return fleet.plan_fleet(
            self.hosts(),
            self.groups,
            play_variables=self.play_variables,
            play_hosts=self.play_hosts,
            playbook_python="/usr/bin/python3",
        )

    def refusals(self):
        with pytest.raises(fleet.FleetRefused) as refused:
            self.plan()
        return refused.value.refusals


@pytest.fixture
def lab_inventory():
    """A factory: each call gives a fresh copy of the lab's inventory to change."""
    return Inventory
