"""The OpenID Connect provider role: the same Canaille as the service tests run (one set of pins
in two places, because the tests' virtual environment is made before any role runs), and a seed
that names each group's members and each client's audience by the ids it gives them."""

import json
import re

import pytest
import yaml
from role_play import ANSIBLE_PLAYBOOK, REPO, run_play

SEED_TEMPLATE = REPO / "roles" / "oidc_provider" / "templates" / "seed.json.j2"


def _pins(lines):
    pins = {}
    for line in lines:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line.split("#")[0].strip())
        if found:
            pins[re.sub(r"[-_.]+", "-", found.group(1)).lower()] = found.group(2)
    return pins


def test_the_role_installs_the_canaille_that_the_service_tests_run():
    tests = _pins((REPO / "requirements" / "oidc-provider.txt").read_text().splitlines())
    defaults = yaml.safe_load((REPO / "roles" / "oidc_provider" / "defaults" / "main.yml").read_text())
    role = _pins(defaults["oidc_provider_requirements"])
    # The role's environment holds the vpnfleet wheel too, which needs PyYAML.
    assert role.pop("pyyaml") == "6.0.3"
    assert role == tests


PLAYBOOK = """
- name: Render the provider's seed
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    oidc_provider_users:
      - {user_name: olga, password: olga-provider-password, name: Olga}
      - {user_name: otto, password: otto-provider-password}
    oidc_provider_groups: [{name: staff, members: [olga, otto]}, {name: vpn-admins, members: [otto]}]
    oidc_provider_clients:
      - {client_id: vpn-portal, client_secret: a-relying-party-secret, redirect_uris: ["https://portal/cb"]}
  tasks:
    - name: Render it
      ansible.builtin.copy:
        content: "{{ lookup('ansible.builtin.template', template) }}"
        dest: "{{ out }}"
        mode: "0600"
"""


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="needs ansible-playbook")
def test_the_seed_names_members_and_audiences_by_their_ids(tmp_path):
    out = tmp_path / "seed.json"
    interpreter = "{{ ansible_playbook_python }}"
    variables = {"template": str(SEED_TEMPLATE), "out": str(out), "ansible_python_interpreter": interpreter}
    answer = run_play(tmp_path, PLAYBOOK, inventory="localhost,", variables=variables)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    seed = json.loads(out.read_text())
    users = {user["user_name"]: user["id"] for user in seed["user"]}
    assert [user["formatted_name"] for user in seed["user"]] == ["Olga", "otto"]
    assert {group["display_name"]: group["members"] for group in seed["group"]} == {
        "staff": [users["olga"], users["otto"]],
        "vpn-admins": [users["otto"]],
    }
    (client,) = seed["client"]
    assert client["audience"] == [client["id"]]
    assert client["client_secret"] == "a-relying-party-secret"  # noqa: S105 - the test's own seed
    assert len(set(users.values()) | {client["id"]} | {group["id"] for group in seed["group"]}) == 5
