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
5. node-z1 serves a client as soon as that command ended;
6. in the fleet of three locations, a new app config (/api/v3/connect) names the least-loaded
   healthy node first: node-x1 loaded with two clients, node-y1 with one, the order is z1, y1, x1;
7. failover, measured from the client host (a ping through the tunnel every 0.2 s): a client of a
   node whose OpenVPN stops passes traffic through another node within 5 s; the stopped node is
   in no new config while both others are, and back in one once it runs again;
8. drain: the node's clients pass traffic through another node within 5 s, it is in no new
   config; undrained with the playbook, new configs name it again;
9. a node gone silent (nftables drops everything to and from the client): traffic through another
   node within 20 s.
Tests 6-9 run after the site playbook runs of 3 and 4 so that those see the fleet as the converge
left it; each of them puts back what it stopped, drained or silenced (in a finally). They print
what they measured; 9 ends with the failover table (seconds).
"""

import base64
import hashlib
import ipaddress
import json
import os
import pathlib
import re
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import lab_portal
import pytest
import yaml
from lab_portal import ADMIN, ALICE, PORTAL, Browser, PortalClient, csrf
from lab_testinfra import INVENTORY, WORK, lab_host, wait_for

PROJECT = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."))
SCENARIO = pathlib.Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", "."))
NODES = {"node-x1": "198.51.100.10", "node-y1": "198.51.100.74", "node-z1": "198.51.100.138"}
INTERNET_ADDRESS = "203.0.113.130"
PROBE_PORT = 8080
# The lab's router (vpnfleet/lab/network.py): the namespace that joins the lab's networks.
ROUTER = "vfl-router"
BLOCK_TABLE = "vfl_test_ssh_block"
CONTROLLER_SETTINGS = "/etc/vpnfleet/controller.yml"

# The inventory once location z joined (test 4 on): molecule's, with the one edit laid over it.
WITH_LOCATION_Z = SCENARIO / "inventory/add_location_z.yml"

testinfra_hosts = ["controller"]


class FleetClient(PortalClient):
    """A portal client that knows node-z1 as well as the lab's nodes."""

    nodes = {**lab_portal.NODES, NODES["node-z1"]: ("node-z1", "z")}


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


def playbook(name, *overlays, extra_vars=()):
    """A playbook of the project as a person runs it, over molecule's inventory and the overlays
    -> (the finished run, seconds)."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    config = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "ansible.cfg"
    if config.exists():
        env["ANSIBLE_CONFIG"] = str(config)
    command = ["ansible-playbook", "-i", str(pathlib.Path(INVENTORY).parent)]
    for overlay in overlays:
        command += ["-i", str(overlay)]
    for extra in extra_vars:
        command += ["-e", extra]
    started = time.monotonic()
    run = subprocess.run(  # noqa: S603 - the project's own playbooks
        [*command, str(PROJECT / "playbooks" / name)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=PROJECT,
    )
    return run, time.monotonic() - started


def site(*overlays):
    """The site playbook -> (output, {host: recap counts}, seconds)."""
    run, seconds = playbook("site.yml", *overlays)
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
        vpn = FleetClient(client, f"routed-{name}", through(config, name)).start()
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
        FleetClient(client, f"spread-{index}", through(config, "node-x1", "udp", ["route-nopull"]))
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


# Seconds of the site.yml runs, for the side-by-side check of the silent node's cost.
RUN_SECONDS: dict[str, float] = {}


def test_with_node_y1_silent_the_others_converge_and_the_run_names_it(settings_before):
    block_ssh("node-y1")
    try:
        output, recap, seconds = site()
    finally:
        unblock_ssh("node-y1")
    RUN_SECONDS["node-y1 silent"] = seconds
    assert recap["node-y1"]["unreachable"] == 1, output
    assert "Not converged in this run (unreachable or failed): node-y1." in " ".join(output.split()), output
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
    # The silent node cost the run before at most its SSH timeouts (ansible.cfg: connect 10 s), not
    # a hang: side by side with this run, which does more (a whole new node). Not a fixed bound in
    # seconds: on a loaded machine both runs take twice as long.
    silent = RUN_SECONDS.get("node-y1 silent")
    print(f"site.yml with node-y1 silent: {silent} s; with location z added: {seconds:.0f} s")
    assert silent is None or silent <= seconds + 30, (silent, seconds)
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
    vpn = FleetClient(client, "zed", through(config, "node-z1", "udp", ["route-nopull"])).start()
    try:
        vpn.wait_connected()
        address = vpn.interface()
        assert address.ip in ipaddress.ip_network("198.18.0.128/26"), address
        client.check_output(f"ping -c 2 -W 2 {address.network.network_address + 1}")
    finally:
        vpn.stop()


# ----------------------------------------------------------------------------- 6-9. choice, drain, failover

CONTROLLER_CLI = (
    "runuser -u vpnfleet-controller -- /opt/vpnfleet/controller/bin/vpnfleet-controller"
    f" --settings {CONTROLLER_SETTINGS}"
)
# Users of these tests' own: the earlier tests' users hold configs up to the limit of three.
LOAD_USER = ("loadtest", "lab-loadtest-password-11")
MOVER = ("mover", "lab-mover-password-11")
CLIENT_ADDRESS = "203.0.113.70"
# Reached through the tunnel: the full tunnel routes it over the node, which masquerades it.
TARGET = "203.0.113.10"
DEVICE = "vflfo"  # the measured client's tun device: the pings leave through it or not at all
HEALTH_TTL = 5  # the controller's node_health_ttl_seconds (its default)
SILENT_TABLE = "vfl_silent"
PING_LOG = f"{WORK}/failover-ping.log"
PING_PID = f"{WORK}/failover-ping.pid"
# A ping through the tunnel device every 0.2 s, each line "<unix time> ok|fail".
PING_LOOP = f"""echo $$ > {PING_PID}
while :; do
  t=$(date +%s.%N)
  if timeout 0.5 ping -n -q -c 1 -W 1 -I {DEVICE} {TARGET} >/dev/null 2>&1
  then echo "$t ok"
  else echo "$t fail"
  fi
  sleep 0.2
done
"""


@pytest.fixture(scope="module")
def own_users():
    controller = lab_host("controller")
    for name, password in (LOAD_USER, MOVER):
        controller.run_expect([0], f"echo '{password}' | {CONTROLLER_CLI} user {name} --password-stdin")
    yield
    # Disabled, their configs are revoked and their clients dropped.
    for name, _ in (LOAD_USER, MOVER):
        controller.run(f"{CONTROLLER_CLI} user {name} --disabled")


@pytest.fixture(scope="module")
def admin(tls_context):
    browser = Browser(tls_context)
    browser.login(*ADMIN)
    return browser


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the app's redirect URI is the app itself: read the code from Location


@pytest.fixture(scope="module")
def app_token(admin, tls_context):
    """What an eduVPN app does: PKCE, the user (admin) approves in the portal, the code for a token."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = "http://127.0.0.1:41234/callback"
    query = urllib.parse.urlencode(
        {
            "client_id": "org.eduvpn.app.linux",
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": "config",
            "state": "s-11",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    _, _, page = admin.get(f"/oauth/authorize?{query}")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=tls_context),
        urllib.request.HTTPCookieProcessor(admin.jar),
        _NoRedirect,
    )
    approval = urllib.request.Request(  # noqa: S310 - PORTAL is a fixed https URL
        f"{PORTAL}/oauth/authorize?{query}",
        data=urllib.parse.urlencode({"csrf_token": csrf(page), "decision": "approve"}).encode(),
        headers={"Referer": f"{PORTAL}/oauth/authorize?{query}"},
    )
    with pytest.raises(urllib.error.HTTPError) as redirected:
        opener.open(approval, timeout=30)
    location = redirected.value.headers["Location"]
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    exchange = urllib.request.Request(  # noqa: S310
        f"{PORTAL}/oauth/token",
        data=urllib.parse.urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": "org.eduvpn.app.linux",
                "code_verifier": verifier,
            }
        ).encode(),
    )
    with urllib.request.urlopen(exchange, context=tls_context, timeout=30) as answer:  # noqa: S310
        return json.load(answer)["access_token"]


def app_config(tls_context, token, profile="internet"):
    """An app's /api/v3/connect, once the controller's view of the nodes is fresh -> the remotes'
    nodes and protocols, in the config's order."""
    time.sleep(HEALTH_TTL + 1)
    request = urllib.request.Request(  # noqa: S310
        f"{PORTAL}/api/v3/connect",
        data=urllib.parse.urlencode({"profile_id": profile}).encode(),
        headers={"Authorization": f"Bearer {token}", "Accept": "application/x-openvpn-profile"},
    )
    with urllib.request.urlopen(request, context=tls_context, timeout=60) as answer:  # noqa: S310
        return remotes_of(answer.read().decode())


def remotes_of(config):
    """The nodes and protocols of a config's remotes, in its order."""
    remotes = re.findall(r"^remote (\S+) \d+ (\S+)$", config, re.MULTILINE)
    return [(FleetClient.nodes[address][0], proto) for address, proto in remotes]


def named(remotes):
    return sorted({node for node, _ in remotes})


def units(name):
    """The node's OpenVPN units, every profile's."""
    return " ".join(
        process["unit"] for profile in node_plan(name)["profiles"] for process in profile["processes"]
    )


def test_a_new_app_config_names_the_least_loaded_healthy_node_first(
    client, tls_context, admin, app_token, own_users
):
    idle = app_config(tls_context, app_token)
    # One entry point per node and protocol, every node of the three locations, UDP first.
    assert named(idle) == sorted(NODES) and [proto for _, proto in idle] == ["udp"] * 3 + ["tcp"] * 3, idle

    load = {"node-x1": 2, "node-y1": 1}
    loaders = []
    try:
        for name, count in load.items():
            for index in range(count):
                config = new_config(tls_context, LOAD_USER, "internet", f"load-{name}-{index}")
                vpn = FleetClient(
                    client, f"load-{name}-{index}", through(config, name, "udp", ["route-nopull"])
                )
                loaders.append(vpn.start())
        for vpn in loaders:
            vpn.wait_connected()
        loaded = app_config(tls_context, app_token)
        order = [node for node, proto in loaded if proto == "udp"]
        print(f"\nidle: first remote {idle[0][0]}; node-x1 with 2 clients, node-y1 with 1: {order}")
        assert order == ["node-z1", "node-y1", "node-x1"], loaded
        _, _, page = admin.get("/admin/nodes")
        for name, count in {**load, "node-z1": 0}.items():
            row = re.search(rf'<tr id="node-{name}">(.*?)</form>', page, re.DOTALL).group(1)
            assert f'<td class="clients">{count}</td>' in row, row
    finally:
        for vpn in loaders:
            vpn.stop()


@pytest.fixture(scope="module")
def measured(client, tls_context, own_users):
    """A client with a portal config that names every node, and a ping through its tunnel every
    0.2 s; the failover tests move it from node to node in turn."""
    config = new_config(tls_context, MOVER, "internet", "failover")
    assert named(remotes_of(config)) == sorted(NODES), config
    config = config.replace("dev tun\n", f"dev {DEVICE}\ndev-type tun\n")
    vpn = FleetClient(client, "failover", config).start()
    try:
        vpn.wait_connected()
        client.check_output(
            f"echo {base64.b64encode(PING_LOOP.encode()).decode()} | base64 -d > {WORK}/ping.sh"
        )
        client.check_output(f"rm -f {PING_LOG}; setsid -f sh {WORK}/ping.sh > {PING_LOG} 2>&1 < /dev/null")
        yield vpn
    finally:
        client.run(f"test -s {PING_PID} && kill $(cat {PING_PID})")
        vpn.stop()


@pytest.fixture(scope="module")
def failover():
    """The seconds measured, by event."""
    return {}


def where(client, vpn):
    """The node the client passes traffic through now, and the others, once its pings pass."""
    wait_for(lambda: client.run(f"tail -n 3 {PING_LOG}").stdout.count(" ok") == 3, "pings through the tunnel")
    node, _ = vpn.node()
    return node, sorted(set(NODES) - {node})


def seconds_until_through(client, vpn, event_at, others, limit):
    """Seconds from the event until the client passed traffic through one of ``others`` again."""

    def recovered():
        if vpn.node()[0] not in others:
            return None
        lines = [line.split() for line in client.run(f"cat {PING_LOG}").stdout.splitlines()]
        after = [
            (float(t), result)
            for t, result in (line for line in lines if len(line) == 2)
            if float(t) > event_at
        ]
        fails = [index for index, (_, result) in enumerate(after) if result == "fail"]
        start = fails[-1] + 1 if fails else 0
        oks = [t for t, result in after[start:] if result == "ok"]
        if not oks:
            return None
        # No failed ping at all: the move was quicker than one ping; the first answer after it counts.
        return oks[0] - event_at

    return wait_for(recovered, f"traffic through {others}:\n{vpn.log_text()[-3000:]}", timeout=limit + 30)


def test_failover_when_a_nodes_openvpn_stops(client, tls_context, app_token, measured, failover):
    node, others = where(client, measured)
    stopped = lab_host(node)
    every_unit = units(node)
    try:
        event_at = time.time()
        stopped.check_output(f"systemctl stop {every_unit}")
        seconds = failover["graceful"] = seconds_until_through(client, measured, event_at, others, 5)
        print(f"\nfailover, {node}'s OpenVPN stopped: through {measured.node()[0]} after {seconds:.1f} s")
        assert seconds < 5, measured.log_text()[-3000:]
        # A node whose processes do not answer is in no new config; the two others both are.
        down = app_config(tls_context, app_token)
        assert named(down) == others, down
    finally:
        stopped.check_output(f"systemctl start {every_unit}")
    assert node in named(app_config(tls_context, app_token))


def test_drain_moves_the_clients_on_and_undrain_brings_the_node_back(
    client, tls_context, admin, app_token, measured, failover
):
    node, others = where(client, measured)
    # The only node of its location: the playbook refuses without force and says why.
    refused, _ = playbook("drain.yml", WITH_LOCATION_Z, extra_vars=[f"vpnfleet_drain_node={node}"])
    assert refused.returncode != 0 and "last node of location" in refused.stdout + refused.stderr, (
        refused.stdout
    )
    try:
        _, _, page = admin.get("/admin/nodes")
        event_at = time.time()
        status, _, after = admin.post(
            f"/admin/nodes/{node}/maintenance",
            {"csrf_token": csrf(page), "on": "yes", "force": "yes"},
            "/admin/nodes",
        )
        assert status == 200 and "told to move on" in after, after
        seconds = failover["drain"] = seconds_until_through(client, measured, event_at, others, 5)
        print(f"\ndrain of {node}: traffic through {measured.node()[0]} after {seconds:.1f} s")
        assert seconds < 5
        assert "pushed by server ('[N]')" in measured.log_text()
        drained = app_config(tls_context, app_token)
        assert named(drained) == others, drained
        undrained, _ = playbook(
            "drain.yml", WITH_LOCATION_Z, extra_vars=[f"vpnfleet_drain_node={node}", "vpnfleet_drain=false"]
        )
        assert undrained.returncode == 0, undrained.stdout + undrained.stderr
        assert "takes new clients" in undrained.stdout
    finally:
        lab_host("controller").run(f"{CONTROLLER_CLI} node-maintenance {node} --no-drain")
    assert node in named(app_config(tls_context, app_token))


def test_failover_when_a_node_goes_silent(client, measured, failover):
    node, others = where(client, measured)
    silent = lab_host(node)
    rules = (
        f"add table inet {SILENT_TABLE}; "
        f"add chain inet {SILENT_TABLE} input {{ type filter hook input priority -50; policy accept; }}; "
        f"add chain inet {SILENT_TABLE} output {{ type filter hook output priority -50; policy accept; }}; "
        f"add rule inet {SILENT_TABLE} input ip saddr {CLIENT_ADDRESS} drop; "
        f"add rule inet {SILENT_TABLE} output ip daddr {CLIENT_ADDRESS} drop"
    )
    try:
        event_at = time.time()
        silent.check_output(f"nft '{rules}'")
        seconds = failover["silent"] = seconds_until_through(client, measured, event_at, others, 20)
        print(f"\nfailover, {node} silent: traffic through {measured.node()[0]} after {seconds:.1f} s")
        assert seconds < 20, measured.log_text()[-3000:]
    finally:
        silent.run(f"nft delete table inet {SILENT_TABLE}")
        print("failover table (seconds):", json.dumps({k: round(v, 1) for k, v in failover.items()}))
