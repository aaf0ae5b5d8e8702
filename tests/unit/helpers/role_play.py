"""What the unit tests of roles and plugins share: a play run for real through ansible-playbook
with the project's ansible.cfg, against hosts that are this machine."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook") or os.environ.get("VPNFLEET_ANSIBLE_PLAYBOOK")
LAB_PROFILES = yaml.safe_load((REPO / "inventories/lab/group_vars/all/profiles.yml").read_text())


def fleet_plays(*, gather_facts: bool) -> str:
    """As playbooks/site.yml begins: the fleet role, then a play that changes the hosts (a file
    each in ``changed_dir``, standing in for the base role)."""
    return f"""
- name: The fleet's plan
  hosts: vpnfleet_controllers:vpnfleet_nodes
  gather_facts: {str(gather_facts).lower()}
  roles:
    - role: vpnfleet.server.fleet

- name: A layer that changes the hosts
  hosts: vpnfleet_controllers:vpnfleet_nodes
  gather_facts: false
  tasks:
    - name: Change something
      ansible.builtin.copy:
        content: "{{{{ fleet_plan.nodes[inventory_hostname] | default(fleet_plan.controller) | to_json }}}}"
        dest: "{{{{ changed_dir }}}}/{{{{ inventory_hostname }}}}.json"
        mode: "0600"
"""


def write_inventory(workdir: Path, hosts: dict, profiles: dict | None = None) -> str:
    """An inventory directory in ``workdir``: ``hosts`` and the profiles (the lab's by default)."""
    (workdir / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (workdir / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (workdir / "group_vars" / "all" / "profiles.yml").write_text(yaml.safe_dump(profiles or LAB_PROFILES))
    return str(workdir / "hosts.yml")


def run_play(
    workdir: Path,
    play: str,
    *,
    inventory: str,
    variables: dict | None = None,
    env: dict | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """``play`` (YAML) written to ``workdir``/play.yml, run against ``inventory`` (a file, or a
    host list such as ``"node-x1,"``) with ``variables`` as extra vars; its output captured."""
    (workdir / "play.yml").write_text(play)
    command = [ANSIBLE_PLAYBOOK, "-i", inventory]
    if variables is not None:
        (workdir / "vars.json").write_text(json.dumps(variables))
        command += ["-e", f"@{workdir / 'vars.json'}"]
    return subprocess.run(
        [*command, str(workdir / "play.yml")],
        cwd=REPO,
        env=env if env is not None else dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
