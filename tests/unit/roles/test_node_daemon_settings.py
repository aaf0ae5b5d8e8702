"""The daemon's settings as the node role renders them, read by the daemon's own settings loader,
and the certificates the role issues: with metrics on, a third one of the `server` purpose for
the metrics port (Go clients such as Prometheus cannot parse daemon_server's)."""

import json
from pathlib import Path

import pytest
import yaml
from role_play import ANSIBLE_PLAYBOOK, REPO, run_play

from vpnfleet.daemon.settings import DaemonSettings

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="needs ansible-playbook")

PLAYBOOK = """
- name: Render the daemon's settings
  hosts: node-x1
  connection: local
  gather_facts: false
  vars_files:
    - "{{ repo }}/roles/node/defaults/main.yml"
    - "{{ repo }}/roles/node/vars/main.yml"
  tasks:
    - name: Write the certificates the role issues
      ansible.builtin.copy:
        content: "{{ __node_certificates | to_json }}"
        dest: "{{ out }}/certificates.json"
        mode: "0600"
    - name: Render the settings
      ansible.builtin.template:
        src: "{{ repo }}/roles/node/templates/daemon.yaml.j2"
        dest: "{{ out }}/daemon.yaml"
        mode: "0600"
"""


# The node's view in the fleet plan, as much of it as the settings read: one WireGuard profile.
WIREGUARD = {
    "interface": "wg-internet",
    "port": 51820,
    "ipv4_range": "198.18.4.0/26",
    "ipv6_range": "2001:db8:104::/66",
    "ipv4_address": "198.18.4.1",
    "ipv6_address": "2001:db8:104::1",
}
FLEET_PLAN = {
    "nodes": {
        "node-x1": {
            "profiles": [{"id": "internet", "wireguard": WIREGUARD}, {"id": "office", "wireguard": None}]
        }
    }
}


def render(tmp_path: Path, metrics: bool) -> tuple[list[dict], dict]:
    variables = {
        "fleet_plan": FLEET_PLAN,
        "repo": str(REPO),
        "out": str(tmp_path),
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "node_daemon_config_dir": str(tmp_path / "daemon"),
        "node_pki_dir": str(tmp_path / "pki"),
        "node_crl_dir": str(tmp_path / "crl"),
        "node_metrics_enabled": metrics,
    }
    answer = run_play(tmp_path, PLAYBOOK, inventory="node-x1,", variables=variables)
    assert (tmp_path / "daemon.yaml").exists(), answer.stdout + answer.stderr
    certificates = json.loads((tmp_path / "certificates.json").read_text())
    return certificates, yaml.safe_load((tmp_path / "daemon.yaml").read_text())


def loaded(settings: dict) -> DaemonSettings:
    """What the daemon makes of the file, once the files it names exist."""
    for name, value in settings.items():
        if name.startswith(("tls_", "metrics_")) and isinstance(value, str):
            Path(value).parent.mkdir(parents=True, exist_ok=True)
            Path(value).touch()
    return DaemonSettings.from_mapping(settings)


def test_with_metrics_the_metrics_port_gets_a_server_certificate_of_its_own(tmp_path):
    certificates, settings = render(tmp_path, metrics=True)
    assert [(c["name"], c["purpose"]) for c in certificates] == [
        ("server", "vpn_server"),
        ("daemon_server", "daemon_server"),
        ("metrics", "server"),
    ]
    # The CA host keeps one copy per name, not per purpose (a copy's file is "<node>-<name>.crt").
    assert len({c["name"] for c in certificates}) == len({c["key"] for c in certificates}) == 3
    daemon_certificate, metrics_certificate = certificates[1], certificates[2]
    assert metrics_certificate["dns_names"] == daemon_certificate["dns_names"] == ["node-x1"]
    daemon = loaded(settings)
    assert str(daemon.tls_certificate) == daemon_certificate["cert"]
    assert str(daemon.metrics_tls_certificate) == metrics_certificate["cert"]
    assert str(daemon.metrics_tls_private_key) == metrics_certificate["key"]
    assert daemon.metrics_listen_port == 9194


def test_without_metrics_there_is_no_third_certificate_nor_metrics_port(tmp_path):
    certificates, settings = render(tmp_path, metrics=False)
    assert [c["name"] for c in certificates] == ["server", "daemon_server"]
    daemon = loaded(settings)
    assert (daemon.metrics_listen_port, daemon.metrics_tls_certificate) == (None, None)


def test_the_daemon_is_told_the_nodes_wireguard_interfaces(tmp_path):
    unused_certificates, settings = render(tmp_path, metrics=False)
    [interface] = loaded(settings).wireguard
    assert (interface.profile_id, interface.name, interface.port) == ("internet", "wg-internet", 51820)
    assert (str(interface.ipv4_range), str(interface.ipv6_range)) == ("198.18.4.0/26", "2001:db8:104::/66")
