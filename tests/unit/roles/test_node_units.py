"""The node's CRL fetch unit and the hooks' worker as the role renders them from its own defaults:
they must be able to read the hooks' token, which only OpenVPN's own group may read
(roles/node/tasks/hooks.yml), and the worker's socket must admit that group only."""

import pytest
import yaml
from role_play import ANSIBLE_PLAYBOOK, REPO, run_play

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="needs ansible-playbook")

PLAYBOOK = """
- name: Render the node's CRL fetch unit and the hooks' worker
  hosts: node-x1
  connection: local
  gather_facts: false
  vars_files:
    - "{{ repo }}/roles/node/defaults/main.yml"
    - "{{ repo }}/roles/node/vars/main.yml"
  tasks:
    - name: Render them
      ansible.builtin.template:
        src: "{{ repo }}/roles/node/templates/{{ item }}.j2"
        dest: "{{ out }}/{{ item }}"
        mode: "0600"
      loop: [vpnfleet-crl-fetch.service, vpnfleet-hooks.service, vpnfleet-hooks.socket]
"""


def test_the_crl_fetch_and_the_worker_run_in_the_group_that_may_read_the_hooks_token(tmp_path):
    out = tmp_path / "vpnfleet-crl-fetch.service"
    interpreter = "{{ ansible_playbook_python }}"
    variables = {"repo": str(REPO), "out": str(tmp_path), "ansible_python_interpreter": interpreter}
    answer = run_play(tmp_path, PLAYBOOK, inventory="node-x1,", variables=variables)
    assert out.exists(), answer.stdout + answer.stderr
    defaults = yaml.safe_load((REPO / "roles/node/defaults/main.yml").read_text())
    hooks_tasks = yaml.safe_load((REPO / "roles/node/tasks/hooks.yml").read_text())
    token_task = next(task for task in hooks_tasks if task["name"].startswith("Put the token"))
    assert token_task["ansible.builtin.copy"]["group"] == "{{ node_openvpn_group }}"
    assert token_task["ansible.builtin.copy"]["mode"] == "0640"
    assert f"SupplementaryGroups={defaults['node_openvpn_group']}\n" in out.read_text()
    worker = (tmp_path / "vpnfleet-hooks.service").read_text()
    assert f"SupplementaryGroups={defaults['node_openvpn_group']}\n" in worker
    assert "DynamicUser=yes\n" in worker and "CapabilityBoundingSet=\n" in worker
    assert "ReadWritePaths" not in worker  # it writes nothing: the shim writes the decision
    socket = (tmp_path / "vpnfleet-hooks.socket").read_text()
    assert f"ListenStream={defaults['node_hooks_worker_socket']}\n" in socket
    assert f"SocketGroup={defaults['node_openvpn_group']}\n" in socket and "SocketMode=0660\n" in socket


def test_the_role_installs_and_starts_the_crl_pull_timer():
    # Without it the nodes never pull: their CRL ages to stale (the hooks then refuse everyone
    # while the controller is down) and the controller renews its CRL for nobody.
    tasks = yaml.safe_load((REPO / "roles/node/tasks/hooks.yml").read_text())
    installed = [task for task in tasks if "vpnfleet-crl-fetch.timer" in task.get("loop", [])]
    started = [
        task
        for task in tasks
        if task.get("ansible.builtin.systemd_service", {}).get("name") == "vpnfleet-crl-fetch.timer"
    ]
    assert installed and installed[0]["ansible.builtin.template"]["src"] == "{{ item }}.j2"
    assert started and started[0]["ansible.builtin.systemd_service"]["state"] == "started"
    assert started[0]["ansible.builtin.systemd_service"]["enabled"] is True
