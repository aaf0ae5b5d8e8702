"""A node that does not answer stops nobody else: through ansible-playbook with the project's
ansible.cfg (its fact cache in the test's directory), against an inventory whose hosts are this
machine, and a node-y1 that refuses SSH in the second run. The run converges the others, the
controller's view keeps what the first run learnt of node-y1, and the last play names it."""

import json
import os
import re
import shutil
import time

import pytest
from role_play import ANSIBLE_PLAYBOOK, REPO, fleet_plays, run_play, write_inventory

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="ansible-playbook is not on PATH")

# As playbooks/site.yml: the fleet role (with the facts of every host), a layer that changes
# the hosts (a file each in the test's directory), the report of what was not converged.
PLAYBOOK = (
    fleet_plays(gather_facts=True)
    + """
- name: What the run did not converge
  hosts: vpnfleet_controllers:vpnfleet_nodes
  gather_facts: false
  tasks:
    - name: Name them
      ansible.builtin.include_role:
        name: vpnfleet.server.fleet
        tasks_from: report
"""
)


def inventory(node_y1_answers):
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    # Port 1 of this machine: the connection is refused at once, as a node whose sshd is gone.
    silent = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1}
    return {
        "all": {
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "children": {
                "vpnfleet_controllers": {"hosts": {"controller": local}},
                "vpnfleet_nodes": {
                    "children": {
                        "vpnfleet_location_x": {
                            "vars": {"vpnfleet_location": "x"},
                            "hosts": {"node-x1": local},
                        },
                        "vpnfleet_location_y": {
                            "vars": {"vpnfleet_location": "y"},
                            "hosts": {
                                "node-y1": dict(local if node_y1_answers else silent, vpnfleet_slice=1)
                            },
                        },
                    }
                },
            },
        }
    }


def run(tmp_path, node_y1_answers, *args, **env_vars):
    changed = tmp_path / "changed"
    shutil.rmtree(changed, ignore_errors=True)
    changed.mkdir()
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"),
        ANSIBLE_NOCOLOR="1",
        **env_vars,
    )
    started = time.monotonic()
    answer = run_play(
        tmp_path,
        PLAYBOOK,
        inventory=write_inventory(tmp_path, inventory(node_y1_answers)),
        variables={"changed_dir": str(changed)},
        env=env,
        timeout=300,
    )
    files = {path.stem: json.loads(path.read_text()) for path in changed.iterdir()}
    return answer, files, time.monotonic() - started


def recap(output):
    return dict(re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.MULTILINE))


def test_a_node_down_leaves_the_others_converged_and_the_controller_keeps_its_plan(tmp_path):
    first, files, unused = run(tmp_path, node_y1_answers=True)
    assert first.returncode == 0, first.stdout + first.stderr
    known = next(node for node in files["controller"]["nodes"] if node["name"] == "node-y1")
    assert "Every host of the run converged." in first.stdout

    second, files, seconds = run(tmp_path, node_y1_answers=False)
    output = second.stdout + second.stderr
    hosts = recap(second.stdout)
    assert "unreachable=1" in hosts["node-y1"], output
    assert all(
        "failed=0" in hosts[name] and "unreachable=0" in hosts[name] for name in ("controller", "node-x1")
    )
    # The others changed; the controller's view still has node-y1 as the first run planned it.
    assert sorted(files) == ["controller", "node-x1"]
    assert next(node for node in files["controller"]["nodes"] if node["name"] == "node-y1") == known
    assert "Not converged in this run (unreachable or failed): node-y1." in " ".join(output.split())
    assert seconds < 60, seconds


@pytest.mark.parametrize("limit", [[], ["--limit", "all:!node-y1"]], ids=["whole-fleet", "limit-without-it"])
def test_a_node_down_that_nothing_is_known_of_is_left_out_and_the_others_converge(tmp_path, limit):
    """No cache (a fresh control machine): the node that did not answer, in the run or outside
    its --limit, is left out of the plan with a warning; the run goes on for every other host."""
    answer, files, unused = run(tmp_path, False, *limit, ANSIBLE_CACHE_PLUGIN="memory")
    output = " ".join((answer.stdout + answer.stderr).split())
    assert sorted(files) == ["controller", "node-x1"], output
    assert [node["name"] for node in files["controller"]["nodes"]] == ["node-x1"]
    assert "host node-y1: not in this run (outside --limit, or unreachable), no facts known" in output
