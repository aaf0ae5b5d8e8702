"""The modules run for real by ansible-playbook against localhost: check, apply, check, apply,
asserting ``changed`` each time, as community.crypto's integration targets do. Services are not
managed here (manage_services: false); the lab scenario molecule/modules does that."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook") or os.environ.get("VPNFLEET_ANSIBLE_PLAYBOOK")

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="ansible-playbook is not on PATH")

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: CA
      vpnfleet.server.ca: {path: "{{ d }}/ca"}
      register: r_ca
    - name: Node key and CSR
      vpnfleet.server.csr:
        privatekey_path: "{{ d }}/node/server.key"
        csr_path: "{{ d }}/node/server.csr"
        common_name: node-a
        dns_names: [node-a.example.org]
      register: csr
    - name: Sign the CSR
      vpnfleet.server.certificate:
        ca_path: "{{ d }}/ca"
        path: "{{ d }}/ca/hosts/node-a.crt"
        csr_content: "{{ csr.csr }}"
        purpose: server
      # In check mode on a bare host there is no CA and no CSR to sign yet.
      when: not (ansible_check_mode and r_ca is changed)
      register: r_sign
    - name: A user certificate with its key made on the CA host
      vpnfleet.server.certificate:
        ca_path: "{{ d }}/ca"
        path: "{{ d }}/ca/users/alice.crt"
        privatekey_path: "{{ d }}/ca/users/alice.key"
        common_name: alice
        purpose: client
      when: not (ansible_check_mode and r_ca is changed)
      register: r_user
    - name: Instances
      vpnfleet.server.openvpn_instances:
        profile_id: internet
        ipv4_range: 198.18.0.0/24
        ipv6_range: 2001:db8:100::/64
        cores: "{{ cores }}"
        ca_path: "{{ d }}/ca/ca.crt"
        cert_path: "{{ d }}/node/server.crt"
        key_path: "{{ d }}/node/server.key"
        crl_path: "{{ d }}/ca/crl.pem"
        tls_crypt_path: "{{ d }}/node/tc.key"
        config_dir: "{{ d }}/conf"
        systemd_dir: "{{ d }}/systemd"
        manage_services: false
      register: r_inst
    - name: Hand the results to the test (written in check mode too)
      ansible.builtin.copy:
        content: >-
          {{ {"CA": r_ca, "Node key and CSR": csr, "Sign the CSR": r_sign,
              "User certificate": r_user, "Instances": r_inst} | to_json }}
        dest: "{{ d }}/results.json"
        mode: "0600"
      check_mode: false
"""


def run(tmp_path, cores, check=False):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    command = [ANSIBLE_PLAYBOOK, str(play), "-e", json.dumps({"d": str(tmp_path), "cores": cores})]
    if check:
        command.append("--check")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return json.loads((tmp_path / "results.json").read_text())


def changed(results):
    return {name for name, outcome in results.items() if outcome.get("changed")}


def test_check_apply_check_apply_then_scale_down(tmp_path):
    everything = {"CA", "Node key and CSR", "Sign the CSR", "User certificate"}
    first_check = changed(run(tmp_path, 4, check=True))
    assert first_check == {"CA", "Node key and CSR", "Instances"}
    assert not (tmp_path / "ca").exists()  # check mode wrote nothing

    applied = run(tmp_path, 4)
    assert changed(applied) == everything | {"Instances"}
    plan = applied["Instances"]["plan"]
    assert plan["listeners"] == ["udp/1194", "udp/1195", "udp/1196", "tcp/1194"]
    assert sorted(os.listdir(tmp_path / "conf")) == ["internet-%d.conf" % index for index in range(4)]
    assert oct((tmp_path / "node" / "server.key").stat().st_mode & 0o777) == "0o600"
    assert "BEGIN" not in json.dumps(applied["Instances"]["diff"])  # no key material in diffs

    assert changed(run(tmp_path, 4, check=True)) == set()
    assert changed(run(tmp_path, 4)) == set()

    scaled = run(tmp_path, 2)
    assert changed(scaled) == {"Instances"}
    assert scaled["Instances"]["removed"] == ["openvpn-server@internet-2", "openvpn-server@internet-3"]
    assert sorted(os.listdir(tmp_path / "conf")) == ["internet-0.conf", "internet-1.conf"]
    assert changed(run(tmp_path, 2)) == set()
