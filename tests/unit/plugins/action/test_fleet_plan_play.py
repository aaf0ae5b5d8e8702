"""The fleet_plan action plugin for real, through ansible-playbook, against an inventory whose
hosts are all this machine (local connection): the plan a valid inventory gets, and mistakes
refused in the first play, before the next play could change anything."""

import json
import os
import re

import pytest
from role_play import ANSIBLE_PLAYBOOK, LAB_PROFILES, REPO, fleet_plays, run_play, write_inventory

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="ansible-playbook is not on PATH")

# As playbooks/site.yml: the fleet role first, then a play that changes something (here a file
# in the test's directory, standing in for the base role).
PLAYBOOK = fleet_plays(gather_facts=False)


def inventory(controllers=("controller",), location_vars=None):
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    return {
        "all": {
            "vars": local,
            "children": {
                "vpnfleet_controllers": {"hosts": {name: {} for name in controllers}},
                "vpnfleet_nodes": {
                    "children": {
                        "vpnfleet_location_x": {
                            "vars": {"vpnfleet_location": "x"} if location_vars is None else location_vars,
                            "hosts": {"node-x1": {"vpnfleet_cores": 2}},
                        }
                    }
                },
            },
        }
    }


def run(tmp_path, hosts, profiles=None):
    changed = tmp_path / "changed"
    changed.mkdir()
    # The minimal callback prints each result as "host | STATUS => {json}".
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
    )
    answer = run_play(
        tmp_path,
        PLAYBOOK,
        inventory=write_inventory(tmp_path, hosts, profiles),
        variables={"changed_dir": str(changed)},
        env=env,
        timeout=300,
    )
    return answer.returncode, _results(answer.stdout), sorted(path.name for path in changed.iterdir())


def _results(output):
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"^(\S+) \| (\w+)(?:!)? => ", output, re.MULTILINE):
        found.append((match.group(1), match.group(2), decoder.raw_decode(output, match.end())[0]))
    return found


def plan_result(results):
    """The fleet plan's result, and its status (SUCCESS, FAILED)."""
    [found] = [
        (result, status) for unused_host, status, result in results if {"contract", "problems"} & set(result)
    ]
    return found


def test_a_valid_inventory_gets_its_plan_and_the_next_play_reads_it(tmp_path):
    code, results, changed = run(tmp_path, inventory())
    assert code == 0
    assert changed == ["controller.json", "node-x1.json"]
    node = json.loads((tmp_path / "changed" / "node-x1.json").read_text())
    assert [served["plan"]["listeners"] for served in node["profiles"]] == [
        ["udp/1194", "tcp/1194"],
        ["udp/1294", "tcp/1294"],
    ]
    result, status = plan_result(results)
    assert (status, result["contract"]["ca_host"]) == ("SUCCESS", "controller")


@pytest.mark.parametrize(
    ("hosts", "profiles", "message"),
    [
        (
            inventory(),
            {"vpnfleet_profiles": [dict(LAB_PROFILES["vpnfleet_profiles"][0], processes="four")]},
            "host controller: vpnfleet_profiles[0] (internet).processes: must be a whole number, got 'four'",
        ),
        (
            inventory(location_vars={}),
            None,
            "host node-x1: vpnfleet_location: is not set, though the host is in group vpnfleet_location_x",
        ),
        (
            inventory(controllers=()),
            None,
            "host node-x1: vpnfleet_ca_host: the inventory has no controller (group vpnfleet_controllers",
        ),
    ],
    ids=["processes-four", "location-group-without-location", "no-controller"],
)
def test_a_mistake_stops_the_run_before_any_host_changes(tmp_path, hosts, profiles, message):
    code, results, changed = run(tmp_path, hosts, profiles)
    assert code != 0
    result, status = plan_result(results)
    assert status == "FAILED"
    assert any(problem.startswith(message) for problem in result["problems"]), result["problems"]
    assert message in result["msg"]
    assert changed == []
