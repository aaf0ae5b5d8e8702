"""A fleet across locations, on one converge of locations x and y; the tests build on each other
in this order:

1. the routed profile (no NAT): node-x1 and node-y1 hand out disjoint parts of its ranges, and
   the internet host's answers reach a client of each (the lab's router has a route to each part);
2. three clients on node-x1's one public UDP port land on its three UDP processes, one each, as
   the node's daemon counts them;
3. with node-y1's SSH blocked, the site playbook converges the controller and node-x1 and names
   node-y1 in under two minutes; the controller keeps node-y1's plan;
4. unblocked, location z is added with the README's command (one inventory file, then the site
   playbook): node-z1 and the controller change, node-x1 and node-y1 (converged again) do not;
5. node-z1 serves a client as soon as that command ended.
"""

import ipaddress
import json
import os
import pathlib
import re
import ssl
import subprocess
import time

import pytest
import yaml
from lab_portal import ADMIN, ALICE, Browser, PortalClient, csrf
from lab_testinfra import INVENTORY, lab_host, wait_for

PROJECT = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."))
SCENARIO = pathlib.Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", "."))
NODES = {"node-x1": "198.51.100.10", "node-y1": "198.51.100.74", "node-z1": "198.51.100.138"}
INTERNET_ADDRESS = "203.0.113.130"
PROBE_PORT = 8080
# The lab's router (vpnfleet/lab/network.py): the namespace that joins the lab's networks.
ROUTER = "vfl-router"
BLOCK_TABLE = "vfl_test_ssh_block"
CONTROLLER_SETTINGS = "/etc/vpnfleet/controller.yml"

testinfra_hosts = ["controller"]


@pytest.fixture(scope="module")
def tls_context():
    ca_pem = lab_host("controller").file("/var/lib/vpnfleet/ca/ca.crt").content_string
    return ssl.create_default_context(cadata=ca_pem)


def new_config(tls_context, user, profile_id, name):
    browser = Browser(tls_context)
    home = browser.login(*user)
    _, _, text = browser.post(
        "/configs", {"csrf_token": csrf(home), "profile_id": profile_id, "display_name": name}
    )
    assert "remote " in text, text
    return text


def through(config, node, proto=None, extra=()):
    """The config with only the remotes of one node (and protocol): the test picks the node."""
    lines = [
        line
        for line in config.splitlines()
        if not line.startswith("remote ")
        or (line.split()[1] == NODES[node] and (proto is None or line.split()[3] == proto))
    ]
    return "\n".join([*lines, *extra]) + "\n"


def node_plan(name):
    return json.loads(lab_host(name).file("/etc/vpnfleet/openvpn-plan.json").content_string)


def part_of(name, profile_id):
    plan = next(plan for plan in node_plan(name)["profiles"] if plan["profile_id"] == profile_id)
    return ipaddress.ip_network(plan["ipv4_range"])


def daemon_node_info(name):
    """/i/node with client counts from the node's daemon, asked as the controller asks it."""
    answer = lab_host("controller").check_output(
        "curl -sf --max-time 10 --cacert /var/lib/vpnfleet/ca/ca.crt "
        "--cert /etc/vpnfleet/controller/daemon-client.crt --key /etc/vpnfleet/controller/daemon-client.key "
        f"'https://{NODES[name]}:41194/i/node?include_client_peer_count=yes'"
    )
    return json.loads(answer)


def site(*overlays):
    """The site playbook as a person runs it, over molecule's inventory (and the overlays) ->
    (output, {host: recap counts}, seconds)."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    config = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "ansible.cfg"
    if config.exists():
        env["ANSIBLE_CONFIG"] = str(config)
    command = ["ansible-playbook", "-i", str(pathlib.Path(INVENTORY).parent)]
    for overlay in overlays:
        command += ["-i", str(overlay)]
    started = time.monotonic()
    run = subprocess.run(
        [*command, str(PROJECT / "playbooks/site.yml")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=PROJECT,
    )
    seconds = time.monotonic() - started
    output = run.stdout + run.stderr
    recap = {
        host: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counts)}
        for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", run.stdout, re.MULTILINE)
    }
    print(f"site.yml {' '.join(map(str, overlays))}: {seconds:.0f} s, {recap}")
    return output, recap, seconds


def lab_exec(host, *command):
    return subprocess.run(
        ["vpnfleet-lab", "exec", host, "--", *command],
        cwd=PROJECT,
        check=True,
        capture_output=True,
        text=True,
    )


# ----------------------------------------------------------------------------- 1. routed, no NAT


@pytest.fixture(scope="module")
def probe():
    """An HTTP server on the internet host whose log shows the source address of every request."""
    host = lab_host("internet")
    host.run("systemctl stop vfl-probe; systemctl reset-failed vfl-probe; rm -f /run/vfl-probe.log")
    host.check_output(
        "systemd-run --unit vfl-probe -p StandardError=file:/run/vfl-probe.log "
        f"python3 -m http.server {PROBE_PORT} --bind ::"
    )
    wait_for(lambda: host.socket(f"tcp://:::{PROBE_PORT}").is_listening, "the probe on the internet host")
    yield host
    host.run("systemctl stop vfl-probe")


def seen_by_probe(internet, path):
    for line in internet.file("/run/vfl-probe.log").content_string.splitlines():
        if f"GET {path} " in line:
            return ipaddress.ip_address(line.split()[0].removeprefix("::ffff:"))
    return None


@pytest.fixture(scope="module")
def routes_to_the_parts():
    """The lab router learns where each node's part of the routed profile lives, as a site's
    routers would (statically or by a routing protocol)."""
    parts = {name: part_of(name, "routed") for name in ("node-x1", "node-y1")}
    for name, part in parts.items():
        subprocess.run(["ip", "-n", ROUTER, "route", "replace", str(part), "via", NODES[name]], check=True)
    yield parts
    for part in parts.values():
        subprocess.run(["ip", "-n", ROUTER, "route", "del", str(part)], check=False)


def test_nodes_of_a_routed_profile_hand_out_disjoint_parts_and_the_internet_reaches_each_client(
    client, tls_context, probe, routes_to_the_parts
):
    parts = routes_to_the_parts
    assert not parts["node-x1"].overlaps(parts["node-y1"]), parts
    config = new_config(tls_context, ADMIN, "routed", "routed")
    for name in ("node-x1", "node-y1"):
        vpn = PortalClient(client, f"routed-{name}", through(config, name)).start()
        try:
            wait_for(
                lambda vpn=vpn: "Initialization Sequence Completed" in vpn.log_text(),
                f"a routed client through {name}:\n{vpn.log_text()}",
                timeout=45,
            )
            address = vpn.interface().ip
            assert address in parts[name], (name, address, parts)
            # The probe answers 404 for the path: an answer all the same (no --fail).
            client.check_output(
                f"curl -s -o /dev/null --max-time 10 http://{INTERNET_ADDRESS}:{PROBE_PORT}/{name}"
            )
            # No NAT: the internet host saw the client's own address, and its answer found the node.
            assert seen_by_probe(probe, f"/{name}") == address
            print(f"routed client through {name}: {address} in {parts[name]}, answered by the internet host")
        finally:
            vpn.stop()


# ----------------------------------------------------------------------------- 2. one public port


def test_clients_on_the_one_public_port_land_on_every_process_of_the_node(client, tls_context):
    plan = next(plan for plan in node_plan("node-x1")["profiles"] if plan["profile_id"] == "internet")
    udp = [process["name"] for process in plan["processes"] if process["proto"] == "udp"]
    assert len(udp) == 3, plan
    configs = [new_config(tls_context, ALICE, "internet", f"spread-{index}") for index in range(len(udp))]
    remotes = {line for line in configs[0].splitlines() if line.startswith("remote ")}
    # One remote per node and protocol, on the public ports, not one per process.
    assert remotes == {
        f"remote {NODES[name]} {port} {proto}"
        for name in ("node-x1", "node-y1")
        for port, proto in (("1194", "udp"), ("443", "tcp"))
    }
    clients = [
        PortalClient(client, f"spread-{index}", through(config, "node-x1", "udp", ["route-nopull"]))
        for index, config in enumerate(configs)
    ]
    try:
        for vpn in clients:
            vpn.start()
        for vpn in clients:
            vpn.wait_connected()

        def counted_all():
            info = daemon_node_info("node-x1")
            return (
                info if sum(p["client_count"] or 0 for p in info["o_process_list"]) >= len(clients) else None
            )

        info = wait_for(counted_all, "the daemon of node-x1 to count the three clients")
        counts = {
            p["process"]: p["client_count"] for p in info["o_process_list"] if p["profile_id"] == "internet"
        }
        print(f"clients per process of node-x1 behind udp/1194: {counts}")
        assert {name: counts[name] for name in udp} == dict.fromkeys(udp, 1), counts
    finally:
        for vpn in clients:
            vpn.stop()


# ----------------------------------------------------------------------------- 3-5. add z, node down


@pytest.fixture(scope="module")
def settings_before():
    return yaml.safe_load(lab_host("controller").file(CONTROLLER_SETTINGS).content_string)


def block_ssh(name):
    lab_exec(name, "nft", "add", "table", "inet", BLOCK_TABLE)
    lab_exec(
        name,
        "nft",
        "add chain inet %s input { type filter hook input priority -10; policy accept; }" % BLOCK_TABLE,
    )
    lab_exec(name, "nft", "add", "rule", "inet", BLOCK_TABLE, "input", "tcp", "dport", "22", "drop")


def unblock_ssh(name):
    subprocess.run(
        ["vpnfleet-lab", "exec", name, "--", "nft", "delete", "table", "inet", BLOCK_TABLE],
        cwd=PROJECT,
        check=False,
        capture_output=True,
    )


def test_with_node_y1_silent_the_others_converge_and_the_run_names_it(settings_before):
    block_ssh("node-y1")
    try:
        output, recap, seconds = site()
    finally:
        unblock_ssh("node-y1")
    assert recap["node-y1"]["unreachable"] == 1, output
    assert "Not converged in this run (unreachable or failed): node-y1." in " ".join(output.split()), output
    assert seconds < 120, f"the run took {seconds:.0f} s with node-y1 silent"
    for name in ("controller", "node-x1"):
        assert (recap[name]["failed"], recap[name]["unreachable"]) == (0, 0), (name, output)
        assert recap[name]["ok"] > 10, (name, recap)
    # The controller kept what it knew of node-y1 instead of asking it: its settings are unchanged.
    after = yaml.safe_load(lab_host("controller").file(CONTROLLER_SETTINGS).content_string)
    assert after["nodes"] == settings_before["nodes"]


def test_location_z_joins_with_one_command_and_node_y1_is_converged_again(settings_before):
    output, recap, seconds = site(SCENARIO / "inventory/add_location_z.yml")
    for name in ("controller", "node-x1", "node-y1", "node-z1"):
        assert (recap[name]["failed"], recap[name]["unreachable"]) == (0, 0), (name, output)
    assert "Every host of the run converged." in output
    assert recap["controller"]["changed"] > 0 and recap["node-z1"]["changed"] > 0, recap
    # No existing node changes when a location is added, node-y1 (down a run ago) included.
    assert (recap["node-x1"]["changed"], recap["node-y1"]["changed"]) == (0, 0), output
    after = yaml.safe_load(lab_host("controller").file(CONTROLLER_SETTINGS).content_string)
    nodes = {node["name"]: node for node in after["nodes"]}
    assert sorted(nodes) == ["node-x1", "node-y1", "node-z1"]
    before = {node["name"]: node for node in settings_before["nodes"]}
    for name in ("node-x1", "node-y1"):
        assert nodes[name] == before[name], name
    assert [part["ipv4"] for part in nodes["node-z1"]["slices"]] == ["198.18.0.128/26", "198.18.2.128/26"]


def test_node_z1_serves_clients_as_soon_as_the_command_ended(client, tls_context):
    config = new_config(tls_context, ADMIN, "internet", "zed")
    vpn = PortalClient(client, "zed", through(config, "node-z1", "udp", ["route-nopull"])).start()
    try:
        vpn.wait_connected()
        address = vpn.interface()
        assert address.ip in ipaddress.ip_network("198.18.0.128/26"), address
        client.check_output(f"ping -c 2 -W 2 {address.network.network_address + 1}")
    finally:
        vpn.stop()
