"""bench/deploy: how long a deploy takes, from freshly booted lab hosts to a client passing traffic,
a second run, and a location added.

    python -m bench.deploy [--quick] [--inventory DIR]

Phases, each timed on the wall clock (see docs/bench.md):

1. boot: ``vpnfleet-lab up`` of the inventory's hosts from the cached images;
2. deploy: ``ansible-playbook playbooks/site.yml`` on those fresh hosts;
3. serving: a user logs in to the portal over HTTPS, downloads a config, and the real OpenVPN
   client on the client host passes a ping through the tunnel to the internet host;
4. re-run: ``site.yml`` again, which must change nothing: the changed count is reported with every
   task that changed (not asserted: the molecule scenarios assert it);
5. location added: a copy of the inventory with one more location (z, its node node-z1 on the
   lab's third location network), the new node booted, then ``site.yml`` with that copy, as the
   README's "Adding a location" says; the changes per host are reported (the existing nodes should
   change nothing).

For every run of site.yml it lists the slowest tasks (the most a task took on one host, from
ansible-core's own JUnit callback). ``--quick`` stops after phase 3.

It holds the lab's session lock for the whole run, starts from a clean lab and takes the lab down
at the end, also on failure. It prints a table and writes bench/results/deploy-<timestamp>.json and
bench/results/deploy-latest.json.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path

import yaml

import bench.lab
from bench.lab import (
    BenchError,
    Processes,
    interrupt_on_sigterm,
    lab,
    put,
    result_stamp,
    say,
    session_lock,
    sh_on,
    site_playbook,
    start_daemon,
    take_lab_arguments,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "molecule"))
from lab_portal import ALICE, Browser, csrf  # noqa: E402 - the scenarios' portal user, shared

INTERNET_ADDRESS = "203.0.113.130"
CLIENT_DIR = "/root/vfl-bench-deploy"
# The location the full run adds: the lab's third location network (inventories/lab's lab.yml)
# and the next part of every profile's ranges (node-x1 has 0, node-y1 1), as molecule/fleet adds it.
NEW_LOCATION = {
    "group": "vpnfleet_location_z",
    "vars": {"vpnfleet_location": "z"},
    "host": "node-z1",
    "hostvars": {"ansible_host": "198.51.100.138", "vpnfleet_lab_network": "location-z", "vpnfleet_slice": 2},
}


def connect_a_client(procs: Processes) -> float:
    """Alice's config from the portal, the real client up and a ping through the tunnel; seconds."""
    started = time.monotonic()
    ca_file = Path(tempfile.mkstemp(suffix=".crt")[1])
    try:
        ca_file.write_text(sh_on("controller", "cat /var/lib/vpnfleet/ca/ca.crt"))
        browser = Browser(ssl.create_default_context(cafile=str(ca_file)))
        home = browser.login(*ALICE)
        _, _, config = browser.post(
            "/configs", {"csrf_token": csrf(home), "profile_id": "internet", "display_name": "bench-deploy"}
        )
    finally:
        ca_file.unlink()
    # The control machine (the lab's uplink) stays outside the tunnel, or the lab loses the client host.
    config = config.rstrip("\n") + "\nroute 203.0.113.252 255.255.255.252 net_gateway\n"
    put("client", f"{CLIENT_DIR}/alice.ovpn", config, 0o600)
    log = f"{CLIENT_DIR}/alice.log"
    start_daemon(
        procs,
        "client",
        f"openvpn --config {CLIENT_DIR}/alice.ovpn --daemon vfl-bench-deploy "
        f"--writepid {CLIENT_DIR}/alice.pid --log {log}",
        f"{CLIENT_DIR}/alice.pid",
        "the client's openvpn",
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        device = sh_on(
            "client", f"sed -n 's/.*TUN\\/TAP device \\([^ ]*\\) opened.*/\\1/p' {log}", check=False
        )
        device = device.strip()
        if (
            device
            and sh_on(
                "client", f"ping -c1 -W1 -I {device} {INTERNET_ADDRESS} >/dev/null && echo up", check=False
            ).strip()
            == "up"
        ):
            return time.monotonic() - started
        time.sleep(0.5)
    raise BenchError(
        "the client passed no traffic within 90 s:\n" + sh_on("client", f"tail -n 30 {log}", check=False)
    )


def inventory_with_a_location(inventory: Path, directory: Path) -> Path:
    """A copy of ``inventory`` (a directory, as inventories/lab) in ``directory``, its hosts.yml
    edited as an admin adds a location: the location's group under vpnfleet_nodes, with its node."""
    copy = directory / "inventory"
    shutil.copytree(inventory, copy)
    hosts_file = copy / "hosts.yml"
    hosts = yaml.safe_load(hosts_file.read_text())
    nodes = hosts["all"]["children"]["vpnfleet_nodes"].setdefault("children", {})
    if NEW_LOCATION["group"] in nodes:
        raise BenchError(f"{hosts_file}: {NEW_LOCATION['group']} is there already; nothing to add")
    nodes[NEW_LOCATION["group"]] = {
        "vars": NEW_LOCATION["vars"],
        "hosts": {NEW_LOCATION["host"]: NEW_LOCATION["hostvars"]},
    }
    hosts_file.write_text(yaml.safe_dump(hosts, sort_keys=False))
    return copy


def add_a_location(junit_dir: Path) -> dict:
    """Phase 5: the new node booted, then site.yml with the edited copy of the inventory."""
    with tempfile.TemporaryDirectory(prefix="vpnfleet-bench-location-") as scratch:
        # The inventory the run was given (--inventory sets it after import).
        inventory = inventory_with_a_location(bench.lab.INVENTORY, Path(scratch))
        began = time.monotonic()
        say(f"booting {NEW_LOCATION['host']}, the new location's node")
        lab("up", "--hosts", NEW_LOCATION["host"], timeout=1800, inventory=inventory)
        boot_seconds = round(time.monotonic() - began, 1)
        say(f"site.yml with {NEW_LOCATION['host']} in the inventory")
        added = site_playbook(junit_dir, inventory=inventory)
    return {"node": NEW_LOCATION["host"], "boot_seconds": boot_seconds, **added}


def run(arguments) -> dict:
    procs = Processes()
    results: dict = {"benchmark": "deploy", "quick": arguments.quick}
    junit_dir = Path(tempfile.mkdtemp(prefix="vpnfleet-bench-junit-"))
    with session_lock():
        try:
            say("starting from a clean lab (vpnfleet-lab down)")
            lab("down")
            began = time.monotonic()
            say("booting the lab")
            lab("up", timeout=1800)
            results["boot_seconds"] = round(time.monotonic() - began, 1)
            say("site.yml on the fresh hosts")
            results["deploy"] = site_playbook(junit_dir)
            say("a client connects through the portal's config")
            results["client_seconds"] = round(connect_a_client(procs), 1)
            results["fresh_to_serving_seconds"] = round(time.monotonic() - began, 1)
            procs.stop_all()
            if not arguments.quick:
                say("site.yml again (changes nothing)")
                results["rerun"] = site_playbook(junit_dir)
                results["location_added"] = add_a_location(junit_dir)
        finally:
            procs.stop_all()
            say("taking the lab down")
            lab("down", check=False)
            for leftover in junit_dir.glob("*"):
                leftover.unlink()
            junit_dir.rmdir()
    return results


def print_table(results: dict) -> None:
    runs = [("fresh deploy", results["deploy"])]
    rows = [
        ("boot (vpnfleet-lab up)", results["boot_seconds"], ""),
        ("site.yml, fresh hosts", results["deploy"]["seconds"], f"changed {_changed(results['deploy'])}"),
        ("a client passes traffic", results["client_seconds"], "portal login, config, tunnel, ping"),
        ("fresh lab to serving", results["fresh_to_serving_seconds"], "boot + deploy + client"),
    ]
    if "rerun" in results:
        runs.append(("re-run", results["rerun"]))
        rows.append(
            ("site.yml, re-run", results["rerun"]["seconds"], f"changed {_changed(results['rerun'])}")
        )
    if "location_added" in results:
        added = results["location_added"]
        runs.append(("location added", added))
        rows += [
            (f"boot ({added['node']})", added["boot_seconds"], "the new location's node"),
            ("site.yml, location added", added["seconds"], _changed_per_host(added)),
        ]
    print(f"{'phase':<28}{'seconds':>9}  note")
    print("-" * 72)
    for name, seconds, note in rows:
        print(f"{name:<28}{seconds:>9}  {note}")
    for title, run_result in runs:
        print(f"\nslowest tasks, {title} (longest on one host):")
        for task in run_result["slowest_tasks"]:
            print(f"  {task['seconds']:>6} s  {task['task']}")
    if "rerun" in results:
        # The re-run must change nothing: whatever did is named, with its hosts.
        changed = results["rerun"]["changed_tasks"]
        print(f"\nchanged in the re-run: {'nothing' if not changed else ''}".rstrip())
        for task in changed:
            print(f"  {task['task']}  ({', '.join(task['hosts'])})")


def _changed(run_result: dict) -> int:
    return sum(host["changed"] for host in run_result["recap"].values())


def _changed_per_host(run_result: dict) -> str:
    hosts = run_result["recap"].items()
    return "changed " + ", ".join(f"{host} {counts['changed']}" for host, counts in hosts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deploy", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="stop once a client is served (no re-run, no location added)"
    )
    parser.add_argument("--inventory", type=Path, help="the lab's inventory (default: inventories/lab)")
    arguments = parser.parse_args(argv)
    take_lab_arguments(parser, arguments)
    interrupt_on_sigterm()
    try:
        results = run(arguments)
    except BenchError as error:
        say(f"failed: {error}")
        return 1
    print_table(results)
    results["when"] = stamp = result_stamp()
    write_results("deploy", results, stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
