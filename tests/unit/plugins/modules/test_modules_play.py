"""The modules run for real by ansible-playbook against localhost: check, apply, check, apply,
asserting ``changed`` each time, as community.crypto's integration targets do. Services are not
managed here (manage_services: false); the lab scenario molecule/modules does that."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from vpnfleet.shared import instances

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
        cpu_affinity: true
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


def pins(root):
    """Process index -> the CPU its own unit's drop-in pins it to, from the files written."""
    found = {}
    for directory in sorted((root / "systemd").glob("openvpn-server@internet-*.service.d")):
        index = int(directory.name.removesuffix(".service.d").rsplit("-", 1)[1])
        drop_in = (directory / "vpnfleet-cpu.conf").read_text()
        found[index] = int(re.search(r"^CPUAffinity=(\d+)$", drop_in, re.M)[1])
    return found


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

    cpus = sorted(os.sched_getaffinity(0))
    assert pins(tmp_path) == {index: cpus[index % len(cpus)] for index in range(4)}

    assert changed(run(tmp_path, 4, check=True)) == set()
    assert changed(run(tmp_path, 4)) == set()

    scaled = run(tmp_path, 2)
    assert changed(scaled) == {"Instances"}
    assert scaled["Instances"]["removed"] == ["openvpn-server@internet-2", "openvpn-server@internet-3"]
    assert sorted(os.listdir(tmp_path / "conf")) == ["internet-0.conf", "internet-1.conf"]
    assert sorted(pins(tmp_path)) == [0, 1]  # the removed processes' drop-in directories went too
    assert changed(run(tmp_path, 2)) == set()


PLAN_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Instances from the fleet plan
      vpnfleet.server.openvpn_instances:
        profile_id: internet
        plan: "{{ plan }}"
        cores: "{{ cores | default(omit) }}"
        ca_path: /etc/vpnfleet/ca.crt
        cert_path: /etc/vpnfleet/server.crt
        key_path: /etc/vpnfleet/server.key
        crl_path: /etc/vpnfleet/crl.pem
        tls_crypt_path: /etc/vpnfleet/tc.key
        cpu_has_aes: true
        cpu_affinity: "{{ cpu_affinity | default(true) }}"
        config_dir: "{{ d }}/conf"
        systemd_dir: "{{ d }}/systemd"
        manage_services: false
      # Any import of cryptography would crash the module: it must run on a host without it.
      environment:
        PYTHONPATH: "{{ d }}/shadow"
      register: r_inst
      ignore_errors: "{{ expect_failure | default(false) }}"
    - name: Hand the result to the test (written in check mode too)
      ansible.builtin.copy:
        content: "{{ {'Instances': r_inst} | to_json }}"
        dest: "{{ d }}/results.json"
        mode: "0600"
      check_mode: false
"""


def run_plan(tmp_path, plan, check=False, **extra):
    play = tmp_path / "plan-play.yml"
    play.write_text(PLAN_PLAY)
    shadow = tmp_path / "shadow" / "cryptography"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text('raise RuntimeError("openvpn_instances imported cryptography")\n')
    variables = {"d": str(tmp_path), "plan": plan, **extra}
    command = [ANSIBLE_PLAYBOOK, str(play), "-e", json.dumps(variables)] + (["--check"] if check else [])
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return json.loads((tmp_path / "results.json").read_text())["Instances"]


def test_a_plan_made_on_the_control_machine_is_rendered_as_it_is(tmp_path):
    # An explicit layout that the node's own planning (4 cores here) would never make.
    plan = instances.plan_profile(
        "internet", "198.18.0.0/24", "2001:db8:100::/64", listen=["udp/53", "tcp/443"]
    )
    assert run_plan(tmp_path, plan.as_dict(), check=True)["changed"]
    assert not (tmp_path / "conf").exists()
    applied = run_plan(tmp_path, plan.as_dict())
    assert applied["changed"] and applied["plan"] == plan.as_dict()
    options = instances.ServerOptions(
        ca_path="/etc/vpnfleet/ca.crt",
        cert_path="/etc/vpnfleet/server.crt",
        key_path="/etc/vpnfleet/server.key",
        crl_path="/etc/vpnfleet/crl.pem",
        tls_crypt_path="/etc/vpnfleet/tc.key",
    )
    for process in plan.processes:
        written = (tmp_path / "conf" / ("internet-%d.conf" % process.index)).read_text()
        assert written == instances.render_server_config(plan, process, options)
    assert not run_plan(tmp_path, plan.as_dict(), check=True)["changed"]
    assert not run_plan(tmp_path, plan.as_dict())["changed"]

    smaller = instances.plan_profile("internet", "198.18.0.0/24", "2001:db8:100::/64", listen=["udp/53"])
    shrunk = run_plan(tmp_path, smaller.as_dict())
    assert shrunk["changed"] and shrunk["removed"] == ["openvpn-server@internet-1"]
    assert sorted(os.listdir(tmp_path / "conf")) == ["internet-0.conf"]
    assert list(pins(tmp_path)) == [0]


def test_pins_go_without_cpu_affinity_and_check_mode_says_so_first(tmp_path):
    plan = instances.plan_profile("internet", "198.18.0.0/24", "2001:db8:100::/64", processes=2).as_dict()
    run_plan(tmp_path, plan)
    assert sorted(pins(tmp_path)) == [0, 1]
    checked = run_plan(tmp_path, plan, check=True, cpu_affinity=False)
    assert checked["changed"] and sorted(pins(tmp_path)) == [0, 1]
    assert "CPUAffinity=" in checked["diff"][0]["before"] and checked["diff"][0]["after"] == ""
    unpinned = run_plan(tmp_path, plan, cpu_affinity=False)
    assert unpinned["changed"] and pins(tmp_path) == {}
    assert not list((tmp_path / "systemd").glob("openvpn-server@internet-*.service.d"))
    assert not run_plan(tmp_path, plan, cpu_affinity=False)["changed"]


@pytest.mark.parametrize(
    ("plan", "extra", "message"),
    [
        ({"profile_id": "internet"}, {"cores": 2}, "mutually exclusive: plan|cores"),
        ({"profile_id": "internet", "ipv4_range": "198.18.0.0/24"}, {}, "'processes' is missing"),
        (
            instances.plan_profile("office", "198.18.0.0/24", cores=1).as_dict(),
            {},
            "not of profile_id internet",
        ),
    ],
)
def test_a_plan_that_does_not_fit_fails_before_any_change(tmp_path, plan, extra, message):
    result = run_plan(tmp_path, plan, expect_failure=True, **extra)
    assert result["failed"] and re.search(message, result["msg"]), result["msg"]
    assert not (tmp_path / "conf").exists() and not (tmp_path / "systemd").exists()


GUARD_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: A CA on a Python whose cryptography will not do
      vpnfleet.server.ca: {path: "{{ d }}/ca"}
      environment:
        PYTHONPATH: "{{ d }}/shadow"
      register: r_ca
      ignore_errors: true
    - name: Hand the result to the test
      ansible.builtin.copy:
        content: "{{ r_ca | to_json }}"
        dest: "{{ d }}/results.json"
        mode: "0600"
"""


@pytest.mark.parametrize(
    ("shadow", "expected"),
    [
        # What the module's Python finds as "cryptography": nothing importable, or a release too old
        # for the purpose OIDs (these hosts carry 38.0.4 on Debian 12 and 43.0.0 on Debian 13).
        ('raise ImportError("no cryptography on this host")\n', "cryptography is not installed"),
        ('__version__ = "43.0.0"\n', "found cryptography 43.0.0 at .*too old"),
    ],
    ids=["missing", "too-old"],
)
def test_the_guard_speaks_before_any_pki_code_runs(tmp_path, shadow, expected):
    package = tmp_path / "shadow" / "cryptography"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(shadow)
    play = tmp_path / "guard-play.yml"
    play.write_text(GUARD_PLAY)
    command = [ANSIBLE_PLAYBOOK, str(play), "-e", json.dumps({"d": str(tmp_path)})]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["failed"]
    assert "Failed to import the required Python library (cryptography >= 44.0)" in result["msg"]
    assert re.search(expected, result["msg"]), result["msg"]
    assert "MODULE FAILURE" not in result["msg"] and not (tmp_path / "ca").exists()
