"""The node's CRL fetch unit as the role renders it from its own defaults: it must be able to
read the hooks' token, which only OpenVPN's own group may read (roles/node/tasks/hooks.yml)."""

import pytest
import yaml
from role_play import ANSIBLE_PLAYBOOK, REPO, run_play

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="needs ansible-playbook")

PLAYBOOK = """
- name: Render the node's CRL fetch unit
  hosts: node-x1
  connection: local
  gather_facts: false
  vars_files:
    - "{{ repo }}/roles/node/defaults/main.yml"
    - "{{ repo }}/roles/node/vars/main.yml"
  tasks:
    - name: Render it
      ansible.builtin.template:
        src: "{{ repo }}/roles/node/templates/vpnfleet-crl-fetch.service.j2"
        dest: "{{ out }}"
        mode: "0600"
"""


def test_the_crl_fetch_runs_in_the_group_that_may_read_the_hooks_token(tmp_path):
    out = tmp_path / "vpnfleet-crl-fetch.service"
    interpreter = "{{ ansible_playbook_python }}"
    variables = {"repo": str(REPO), "out": str(out), "ansible_python_interpreter": interpreter}
    answer = run_play(tmp_path, PLAYBOOK, inventory="node-x1,", variables=variables)
    assert out.exists(), answer.stdout + answer.stderr
    defaults = yaml.safe_load((REPO / "roles/node/defaults/main.yml").read_text())
    hooks_tasks = yaml.safe_load((REPO / "roles/node/tasks/hooks.yml").read_text())
    token_task = next(task for task in hooks_tasks if task["name"].startswith("Put the token"))
    assert token_task["ansible.builtin.copy"]["group"] == "{{ node_openvpn_group }}"
    assert token_task["ansible.builtin.copy"]["mode"] == "0640"
    assert f"SupplementaryGroups={defaults['node_openvpn_group']}\n" in out.read_text()
