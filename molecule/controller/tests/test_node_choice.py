"""Node choice, drain and failover on the converged fleet (issue 11): node-x1 in location x,
node-y1 in location y, real clients on the client host.

- A new app config (/api/v3/connect) names the least-loaded healthy node first: node-x1 is
  loaded with clients, and node-y1 comes first.
- Failover, measured from the client host (a ping through the tunnel every 0.2 s): a client of a
  node whose OpenVPN stops, of a node drained by the admin, and of a node gone silent (nftables
  drops everything to and from the client) passes traffic through the other node within 5, 5
  and 20 s. A node that is down or drained is in no new config; undrained it is again.
The tests run in file order, after test_controller.py, and share one story (``state``); the
module's fixture puts every node back as it found it, whatever failed.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from lab_portal import ADMIN, ALICE, NODES, PORTAL, Browser, PortalClient, csrf
from lab_testinfra import WORK, lab_host, wait_for

testinfra_hosts = ["controller"]

CONTROLLER_CLI = (
    "runuser -u vpnfleet-controller -- /opt/vpnfleet/controller/bin/vpnfleet-controller"
    " --settings /etc/vpnfleet/controller.yml"
)
ADDRESS_OF = {name: address for address, (name, _) in NODES.items()}
CLIENT_ADDRESS = "203.0.113.70"
# Reached through the tunnel: the full tunnel routes it over the node, which masquerades it.
TARGET = "203.0.113.10"
DEVICE = "vflfo"  # the measured client's tun device: the pings leave through it or not at all
LOAD_USER = ("loadtest", "lab-loadtest-password-11")
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
def tls_context():
    ca_pem = lab_host("controller").file("/var/lib/vpnfleet/ca/ca.crt").content_string
    return ssl.create_default_context(cadata=ca_pem)


@pytest.fixture(scope="module")
def state():
    return {}


# The measured seconds also go to a file, for the report (pytest shows prints of failed tests only).
TIMINGS = os.path.join(tempfile.gettempdir(), "vpnfleet-node-choice-timings.json")


@pytest.fixture(autouse=True)
def _timed(request, state):
    started = time.monotonic()
    yield
    state.setdefault("durations", {})[request.node.name] = round(time.monotonic() - started, 1)
    with open(TIMINGS, "w") as timings:
        json.dump({"failover": state.get("failover", {}), "durations": state["durations"]}, timings)


@pytest.fixture(scope="module", autouse=True)
def restore_the_lab(client, state):
    """Afterwards: every OpenVPN process runs, no node is drained or silent, the clients stop."""
    yield
    for name in ADDRESS_OF:
        node = lab_host(name)
        node.run(f"nft delete table inet {SILENT_TABLE}")
        node.run(f"systemctl start {' '.join(_units(node))}")
        lab_host("controller").run(f"{CONTROLLER_CLI} node-maintenance {name} --no-drain")
    client.run(f"test -s {PING_PID} && kill $(cat {PING_PID})")
    for vpn in state.get("clients", []):
        vpn.stop()
    lab_host("controller").run(f"{CONTROLLER_CLI} user {LOAD_USER[0]} --disabled")


def _units(node):
    plan = json.loads(node.file("/etc/vpnfleet/openvpn-plan.json").content_string)
    return [process["unit"] for profile in plan["profiles"] for process in profile["processes"]]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the app's redirect URI is the app itself: read the code from Location


def _app_token(browser, tls_context):
    """What an eduVPN app does: PKCE, the user approves in the portal, the code for a token."""
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
    _, _, page = browser.get(f"/oauth/authorize?{query}")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=tls_context),
        urllib.request.HTTPCookieProcessor(browser.jar),
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


def _connect(state, tls_context, profile="office"):
    """An app's /api/v3/connect, once the controller's view of the nodes is fresh; its remotes."""
    time.sleep(HEALTH_TTL + 1)
    request = urllib.request.Request(  # noqa: S310
        f"{PORTAL}/api/v3/connect",
        data=urllib.parse.urlencode({"profile_id": profile}).encode(),
        headers={"Authorization": f"Bearer {state['token']}", "Accept": "application/x-openvpn-profile"},
    )
    with urllib.request.urlopen(request, context=tls_context, timeout=60) as answer:  # noqa: S310
        return re.findall(r"^remote (\S+) (\d+) (\S+)$", answer.read().decode(), re.MULTILINE)


def _nodes_named(remotes):
    return [NODES[address][0] for address, _, _ in remotes]


def _portal_config(browser, profile, name):
    _, _, home = browser.get("/")
    _, _, config = browser.post(
        "/configs", {"csrf_token": csrf(home), "profile_id": profile, "display_name": name}
    )
    return config


def _only_node(config, address):
    """A config of the load clients: the remotes of one node, and no pushed routes (they share
    the client host with the measured client, whose routes must stay its own)."""
    lines = [line for line in config.splitlines() if not line.startswith("remote ") or f" {address} " in line]
    return "\n".join(lines) + "\nroute-nopull\n"


def test_a_new_app_config_names_the_least_loaded_healthy_node_first(client, tls_context, state):
    controller = lab_host("controller")
    controller.run_expect(
        [0], f"echo '{LOAD_USER[1]}' | {CONTROLLER_CLI} user {LOAD_USER[0]} --password-stdin"
    )
    admin = Browser(tls_context)
    admin.login(*ADMIN)
    state.update(admin=admin, token=_app_token(admin, tls_context), clients=[])
    idle = _connect(state, tls_context)
    # One entry point per node and protocol, both nodes, UDP first.
    assert sorted(set(_nodes_named(idle))) == ["node-x1", "node-y1"], idle
    assert [proto for _, _, proto in idle] == sorted((p for _, _, p in idle), key=lambda p: p != "udp")

    loader = Browser(tls_context)
    loader.login(*LOAD_USER)
    for index in range(3):
        config = _only_node(_portal_config(loader, "office", f"load-{index}"), ADDRESS_OF["node-x1"])
        vpn = PortalClient(client, f"load-{index}", config).start()
        state["clients"].append(vpn)
    for vpn in state["clients"]:
        vpn.wait_connected()
    loaded = _connect(state, tls_context)
    print(f"\nidle: first remote {_nodes_named(idle)[0]}; node-x1 with 3 clients: {_nodes_named(loaded)[0]}")
    assert _nodes_named(loaded)[0] == "node-y1", loaded
    _, _, page = admin.get("/admin/nodes")
    row = re.search(r'<tr id="node-node-x1">(.*?)</form>', page, re.DOTALL).group(1)
    assert re.search(r'<td class="clients">3</td>', row), row
    for vpn in state["clients"]:
        vpn.stop()
    state["clients"] = []


def _start_measured_client(client, tls_context, state):
    alice = state.get("alice")
    if alice is None:
        alice = state["alice"] = Browser(tls_context)
        alice.login(*ALICE)
        config = _portal_config(alice, "internet", "failover")
        state["config"] = config.replace("dev tun\n", f"dev {DEVICE}\ndev-type tun\n")
        assert (
            len({address for address, _, _ in re.findall(r"^remote (\S+) (\d+) (\S+)$", config, re.M)}) == 2
        )
        vpn = PortalClient(client, "failover", state["config"]).start()
        state["clients"].append(vpn)
        state["vpn"] = vpn
        vpn.wait_connected()
        client.check_output(
            f"echo {base64.b64encode(PING_LOOP.encode()).decode()} | base64 -d > {WORK}/ping.sh"
        )
        client.check_output(f"rm -f {PING_LOG}; setsid -f sh {WORK}/ping.sh > {PING_LOG} 2>&1 < /dev/null")
    return state["vpn"]


def _measure(client, vpn, event_at, other, limit):
    """Seconds from the event until the client passed traffic through ``other`` again."""

    def recovered():
        if vpn.node()[0] != other:
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

    seconds = wait_for(recovered, f"traffic through {other}:\n{vpn.log_text()[-3000:]}", timeout=limit + 30)
    return seconds


def test_failover_when_a_nodes_openvpn_stops(client, tls_context, state):
    vpn = _start_measured_client(client, tls_context, state)
    node, _ = vpn.node()
    other = "node-y1" if node == "node-x1" else "node-x1"
    wait_for(lambda: client.run(f"tail -n 3 {PING_LOG}").stdout.count(" ok") == 3, "pings through the tunnel")
    stopped = lab_host(node)
    units = _units(stopped)
    event_at = time.time()
    stopped.check_output(f"systemctl stop {' '.join(units)}")
    seconds = _measure(client, vpn, event_at, other, 5)
    state.setdefault("failover", {})["graceful"] = seconds
    print(f"\nfailover, {node}'s OpenVPN stopped: traffic through {other} after {seconds:.1f} s")
    assert seconds < 5, vpn.log_text()[-3000:]
    # A node whose processes do not answer is in no new config.
    down = _connect(state, tls_context)
    assert node not in _nodes_named(down) and _nodes_named(down), down
    stopped.check_output(f"systemctl start {' '.join(units)}")
    again = _connect(state, tls_context)
    assert node in _nodes_named(again), again


def _drain_playbook(node, *extra):
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")
    return subprocess.run(  # noqa: S603 - a fixed command line
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            f"{project}/playbooks/drain.yml",
            "-e",
            f"vpnfleet_drain_node={node}",
            *extra,
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_drain_moves_the_clients_on_and_undrain_brings_the_node_back(client, tls_context, state):
    vpn = _start_measured_client(client, tls_context, state)
    node, _ = vpn.node()
    other = "node-y1" if node == "node-x1" else "node-x1"
    # The only node of its location: the playbook refuses without force and says why.
    refused = _drain_playbook(node)
    assert refused.returncode != 0 and "last node of location" in refused.stdout + refused.stderr, (
        refused.stdout
    )
    admin = state["admin"]
    _, _, page = admin.get("/admin/nodes")
    event_at = time.time()
    status, _, after = admin.post(
        f"/admin/nodes/{node}/maintenance",
        {"csrf_token": csrf(page), "on": "yes", "force": "yes"},
        "/admin/nodes",
    )
    assert status == 200 and "told to move on" in after, after
    seconds = _measure(client, vpn, event_at, other, 5)
    state.setdefault("failover", {})["drain"] = seconds
    print(f"\ndrain of {node}: traffic through {other} after {seconds:.1f} s")
    assert seconds < 5
    assert "pushed by server ('[N]')" in vpn.log_text()
    drained = _connect(state, tls_context)
    assert node not in _nodes_named(drained), drained
    undrained = _drain_playbook(node, "-e", "vpnfleet_drain=false")
    assert undrained.returncode == 0, undrained.stdout + undrained.stderr
    assert "takes new clients" in undrained.stdout
    back = _connect(state, tls_context)
    assert node in _nodes_named(back), back


def test_failover_when_a_node_goes_silent(client, tls_context, state):
    vpn = _start_measured_client(client, tls_context, state)
    node, _ = vpn.node()
    other = "node-y1" if node == "node-x1" else "node-x1"
    silent = lab_host(node)
    rules = (
        f"add table inet {SILENT_TABLE}; "
        f"add chain inet {SILENT_TABLE} input {{ type filter hook input priority -50; policy accept; }}; "
        f"add chain inet {SILENT_TABLE} output {{ type filter hook output priority -50; policy accept; }}; "
        f"add rule inet {SILENT_TABLE} input ip saddr {CLIENT_ADDRESS} drop; "
        f"add rule inet {SILENT_TABLE} output ip daddr {CLIENT_ADDRESS} drop"
    )
    event_at = time.time()
    silent.check_output(f"nft '{rules}'")
    seconds = _measure(client, vpn, event_at, other, 20)
    state.setdefault("failover", {})["silent"] = seconds
    print(f"\nfailover, {node} silent: traffic through {other} after {seconds:.1f} s")
    assert seconds < 20, vpn.log_text()[-3000:]
    silent.check_output(f"nft delete table inet {SILENT_TABLE}")
    print("failover table (seconds):", json.dumps({k: round(v, 1) for k, v in state["failover"].items()}))
