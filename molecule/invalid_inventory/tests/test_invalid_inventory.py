"""Broken inventories against the real lab hosts: each run of playbooks/site.yml fails in its
first play with the mistake named (host, variable, reason), and afterwards nothing has changed
on the hosts (their vpnfleet, OpenVPN and systemd files, their packages) nor on the control
machine (no CA directory, nothing in the run's temporary directory)."""

import copy
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml
from lab_testinfra import lab_host

PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
LAB = PROJECT / "inventories/lab"
HOSTS = ["controller", "node-x1"]
# What the roles write on a host; a failed run must leave every entry as it was.
WATCHED = "/etc/vpnfleet /etc/openvpn /opt/vpnfleet /var/lib/vpnfleet /var/lib/vpnfleet-controller "
WATCHED += "/etc/nftables.conf /etc/sysctl.d /etc/systemd/system /etc/nginx /usr/local/libexec"
# Where the roles write on the control machine: the CA of a local CA host (the old default).
CONTROL_WATCHED = pathlib.Path("/var/lib/vpnfleet")


def host_state(host):
    listing = host.run(
        "find %s -xdev -printf '%%p %%y %%m %%u %%g %%s %%T@\\n' 2>/dev/null | sort; "
        "find %s -xdev -type f -exec sha256sum {} + 2>/dev/null | sort; "
        "dpkg-query -W -f '${Package} ${Version} ${Status}\\n'" % (WATCHED, WATCHED)
    )
    return listing.stdout


def control_state():
    if not CONTROL_WATCHED.exists():
        return None
    return sorted((str(path), path.stat().st_mtime) for path in CONTROL_WATCHED.rglob("*"))


@pytest.fixture(scope="module")
def before():
    """The hosts as create left them, and the control machine, before the first broken run."""
    hosts = {name: lab_host(name) for name in HOSTS}
    states = {name: host_state(host) for name, host in hosts.items()}
    # The base image's OpenVPN: the listing really reads the watched places and the packages.
    assert all("/etc/openvpn " in state and "\nopenvpn " in state for state in states.values()), states
    return hosts, states, control_state()


def lab_inventory():
    """The lab's inventory for the scenario's hosts: groups, host variables and group_vars."""
    hosts = yaml.safe_load((LAB / "hosts.yml").read_text())["all"]["children"]
    controller = hosts["vpnfleet_controllers"]["hosts"]["controller"]
    node = hosts["vpnfleet_nodes"]["children"]["vpnfleet_location_x"]["hosts"]["node-x1"]
    group_vars = {
        path.relative_to(LAB / "group_vars").as_posix(): yaml.safe_load(path.read_text())
        for path in (LAB / "group_vars").rglob("*.yml")
    }
    return {
        "hosts": {
            "all": {
                "children": {
                    "vpnfleet_controllers": {"hosts": {"controller": copy.deepcopy(controller)}},
                    "vpnfleet_nodes": {
                        "children": {
                            "vpnfleet_location_x": {"hosts": {"node-x1": copy.deepcopy(node)}},
                            "vpnfleet_location_y": {"hosts": {}},
                        }
                    },
                }
            }
        },
        "group_vars": group_vars,
    }


def profile(inventory, profile_id):
    [found] = [
        p for p in inventory["group_vars"]["all/profiles.yml"]["vpnfleet_profiles"] if p["id"] == profile_id
    ]
    return found


def drop_location_of_x(inventory):
    del inventory["group_vars"]["vpnfleet_location_x.yml"]


def processes_four(inventory):
    profile(inventory, "office")["processes"] = "four"


def no_controller(inventory):
    inventory["hosts"]["all"]["children"]["vpnfleet_controllers"]["hosts"] = {}


def overlapping_ranges(inventory):
    profile(inventory, "office")["ipv4_range"] = "198.18.0.0/23"


def unknown_location(inventory):
    nodes = inventory["hosts"]["all"]["children"]["vpnfleet_nodes"]["children"]
    nodes["vpnfleet_location_x"]["hosts"]["node-x1"]["vpnfleet_location"] = "z"


def port_clash(inventory):
    profile(inventory, "office").update(udp_port_base=1194, tcp_port_base=1194)


CASES = [
    (
        drop_location_of_x,
        "host node-x1: vpnfleet_location: is not set, though the host is in group vpnfleet_location_x: "
        "set vpnfleet_location: x in that group's variables",
    ),
    (
        processes_four,
        "host controller: vpnfleet_profiles[1] (office).processes: must be a whole number, got 'four'",
    ),
    (
        no_controller,
        "host node-x1: vpnfleet_ca_host: the inventory has no controller (group vpnfleet_controllers is",
    ),
    (
        overlapping_ranges,
        "host controller: vpnfleet_profiles[1] (office).ipv4_range: 198.18.0.0/23 overlaps 198.18.0.0/24",
    ),
    (unknown_location, "host node-x1: vpnfleet_location: 'z' is not a known location (x, y)"),
    (
        port_clash,
        "host node-x1: vpnfleet_profiles[1] (office).tcp_port_base: profile office: tcp/1194, udp/1194",
    ),
]


def write_inventory(inventory, directory):
    directory.mkdir()
    (directory / "hosts.yml").write_text(yaml.safe_dump(inventory["hosts"]))
    for relative, content in inventory["group_vars"].items():
        path = directory / "group_vars" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content))


@pytest.mark.parametrize(("change", "message"), CASES, ids=[case[0].__name__ for case in CASES])
def test_a_broken_inventory_fails_first_and_changes_nothing(before, tmp_path, change, message):
    hosts, hosts_before, control_before = before
    inventory = lab_inventory()
    change(inventory)
    write_inventory(inventory, tmp_path / "inventory")
    scratch_tmp = tmp_path / "tmp"
    scratch_tmp.mkdir()
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(PROJECT / "collections"),
        # Whatever the roles would build on the control machine (the wheels) lands here.
        TMPDIR=str(scratch_tmp),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
    )
    run = subprocess.run(
        ["ansible-playbook", "-i", str(tmp_path / "inventory/hosts.yml"), "playbooks/site.yml"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0, output[-3000:]
    assert " ".join(message.split()) in output, output[-3000:]
    # The first play stopped the run: no later play started, no task changed anything.
    assert "PLAY [Every vpnfleet host]" not in output
    assert re.findall(r"changed=(\d+)", output) and set(re.findall(r"changed=(\d+)", output)) == {"0"}
    for name, host in hosts.items():
        assert host_state(host) == hosts_before[name], f"{name} changed"
    assert control_state() == control_before
    assert list(scratch_tmp.iterdir()) == []
    shutil.rmtree(tmp_path / "inventory")


def test_the_comparison_sees_a_change_on_a_host(before):
    hosts, hosts_before, unused_control = before
    node = hosts["node-x1"]
    node.check_output("mkdir /etc/vpnfleet && touch /etc/vpnfleet/host.yml")
    try:
        assert host_state(node) != hosts_before["node-x1"]
    finally:
        node.check_output("rm -r /etc/vpnfleet")
    assert host_state(node) == hosts_before["node-x1"]
