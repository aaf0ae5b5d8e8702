"""`vpnfleet-lab` on this machine: up twice, every host booted, down leaves nothing behind.

Runs as root under the lab's session lock (scripts/test holds it for this directory).
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
INVENTORY = REPO / "inventories" / "lab"
LAB = [sys.executable, "-m", "vpnfleet.lab.cli", "--inventory", str(INVENTORY)]
HOSTS = ["node-x1", "client"]


def lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=900, check=False)


def traces_of_the_lab() -> dict[str, list[str]]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return {
        "links": [line for line in links.splitlines() if any(p in line for p in ("vfl-", "vfr-", "vb-"))],
        "namespaces": [line for line in namespaces.splitlines() if line.startswith("vfl-")],
        "mounts": [line for line in mounts.splitlines() if "vpnfleet-lab" in line],
        "processes": [
            line for line in processes.splitlines() if "systemd-nspawn" in line and "vpnfleet-lab" in line
        ],
    }


@pytest.fixture(scope="module")
def lab_up():
    lab("down")
    first = lab("up", "--hosts", ",".join(HOSTS))
    yield first
    lab("down")


def test_up_boots_every_host_with_systemd_running(lab_up):
    assert lab_up.returncode == 0, lab_up.stdout + lab_up.stderr
    for host in HOSTS:
        state = lab("exec", host, "--", "systemctl", "is-system-running")
        assert state.stdout.strip() == "running", lab("exec", host, "--", "systemctl", "--failed").stdout


def test_second_up_finds_everything_up(lab_up):
    again = lab("up", "--hosts", ",".join(HOSTS))
    assert again.returncode == 0
    assert "every host is already up" in again.stdout
    assert "networks: already up" in again.stdout


def test_hosts_reach_each_other_through_the_router_and_nothing_else(lab_up):
    reach = lab("exec", "client", "--", "ping", "-c1", "-W2", "198.51.100.10")
    assert reach.returncode == 0, reach.stdout
    # The router has no default route: an address outside the lab is unreachable at once.
    routes = subprocess.run(
        ["ip", "-n", "vfl-router", "route", "show", "default"], capture_output=True, text=True, check=True
    )
    assert routes.stdout.strip() == ""


def test_control_machine_routes_only_the_lab_hosts(lab_up):
    # Whole lab networks would also catch the registries this machine reaches in the same ranges.
    routes = subprocess.run(
        ["ip", "route", "show", "dev", "vfl-uplink"], capture_output=True, text=True, check=True
    )
    via_router = [line.split()[0] for line in routes.stdout.splitlines() if " via " in line]
    assert via_router, routes.stdout
    assert all("/" not in destination for destination in via_router), via_router


def test_status_prints_a_table(lab_up):
    status = lab("status")
    header, *rows = status.stdout.splitlines()
    assert header.split()[:3] == ["HOST", "ROLE", "ADDRESS"]
    running = {row.split()[0] for row in rows if " running " in f" {row} "}
    assert set(HOSTS) <= running


def test_down_leaves_nothing_behind(lab_up):
    down = lab("down")
    assert down.returncode == 0, down.stderr
    assert traces_of_the_lab() == {"links": [], "namespaces": [], "mounts": [], "processes": []}
