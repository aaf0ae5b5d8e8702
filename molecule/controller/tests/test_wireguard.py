"""WireGuard beside OpenVPN on the converged fleet (issue 13), through eduVPN's own client library.

- eduvpn-common (the library inside the official apps) adds the controller as a server through
  its OAuth flow (the portal's login and approve pages driven over HTTP) and gets a WireGuard
  config of the internet profile, which offers WireGuard first; the client host brings it up
  with wireguard-go and `wg` and reaches the controller beyond the node, which sees the node's
  address (its NAT). The same library asking with prefer_tcp gets OpenVPN from that profile
  (last: at alice's config limit that new config replaces her oldest app config).
- The node's WireGuard interface restarted (peers gone) has its peers back within 30 s, from the
  controller's reconcile, without a playbook run.
- Deleting the config in the portal removes the peer from its node within 2 s; traffic stops.
- A split-tunnel WireGuard profile (branch, this scenario's inventory) routes only its routes: the
  controller's network goes through the tunnel (the controller sees the client's tunnel address),
  the default route and everything else stay on the client's own line.
The tests share one story (``state``) in file order; the module's fixture takes the client's
tunnel and the probe down whatever failed.
"""

import ipaddress
import json
import os
import re
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import eduvpn_app
import pytest
from lab_portal import ADMIN, ALICE, NODES, PORTAL, Browser, csrf
from lab_testinfra import WORK, lab_host, wait_for

from vpnfleet.lab.spec import ROUTER_NAMESPACE

testinfra_hosts = ["controller"]

DEVICE = "vfw-eduvpn"  # the client's WireGuard interface
# Beyond the node for the client: the full tunnel takes it there; a probe on it logs who asks.
TARGET = "203.0.113.10"
PROBE_PORT = 18613
PROBE_LOG = f"{WORK}/wireguard-probe.log"
PROBE_PID = f"{WORK}/wireguard-probe.pid"
REMOVED_WITHIN = 2.0
BACK_WITHIN = 30.0
# The measured seconds also go to a file, for the report (pytest shows prints of failed tests only).
TIMINGS = os.path.join(tempfile.gettempdir(), "vpnfleet-wireguard-timings.json")


@pytest.fixture(scope="module")
def ca_file():
    pem = lab_host("controller").file("/var/lib/vpnfleet/ca/ca.crt").content_string
    with tempfile.NamedTemporaryFile("w", suffix=".crt", delete=False) as handle:
        handle.write(pem)
    yield handle.name
    os.unlink(handle.name)


@pytest.fixture(scope="module")
def state(client):
    found: dict = {"timings": {}}
    controller = lab_host("controller")
    # A probe that logs the source address of every request, IPv4 and IPv6 (the controller has
    # no firewall).
    controller.check_output(
        f"mkdir -p {WORK} && cd {WORK} && (setsid python3 -m http.server --bind :: {PROBE_PORT} "
        f"> {PROBE_LOG} 2>&1 & echo $! > {PROBE_PID})"
    )
    yield found
    controller.run(f"test -s {PROBE_PID} && kill $(cat {PROBE_PID})")
    client.run(f"ip link del {DEVICE}")
    with open(TIMINGS, "w") as timings:
        json.dump(found["timings"], timings)


@pytest.fixture(autouse=True)
def _timed(request, state):
    """Each test's seconds, for what this file adds to the scenario's run."""
    started = time.monotonic()
    yield
    state["timings"].setdefault("durations", {})[request.node.name] = round(time.monotonic() - started, 1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the app's redirect URI is the library's listener: the test visits it


def _approver(ca_file):
    """The person at the browser: alice logs in and approves the app; the redirect's URL."""
    context = ssl.create_default_context(cafile=ca_file)
    browser = Browser(context)
    browser.login(*ALICE)

    def approve(url):
        assert url.startswith(f"{PORTAL}/oauth/authorize?"), url
        path = url.removeprefix(PORTAL)
        _, _, page = browser.get(path)
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context),
            urllib.request.HTTPCookieProcessor(browser.jar),
            _NoRedirect,
        )
        approval = urllib.request.Request(  # noqa: S310 - PORTAL is a fixed https URL
            url,
            data=urllib.parse.urlencode({"csrf_token": csrf(page), "decision": "approve"}).encode(),
            headers={"Referer": url},
        )
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(approval, timeout=30)
        return redirected.value.headers["Location"]

    return browser, approve


def _config_values(text):
    return dict(re.findall(r"^(\w+) = (.+)$", text, re.MULTILINE))


# What `wg setconf` takes of a wg-quick config; the rest (Address, DNS, MTU, ...) is wg-quick's.
_WG_KEYS = ("[Interface]", "[Peer]", "PrivateKey", "ListenPort", "PublicKey", "AllowedIPs", "Endpoint")


def _bring_up(client, config, device=DEVICE, routes=(f"{TARGET}/32",)):
    """What wg-quick does with the config, by hand (wireguard-go: the lab's kernel has none): the
    addresses, `wg setconf` with the rest, and the routes. A full tunnel's config takes only
    TARGET through the tunnel, so that the client's SSH stays on its own line."""
    values = _config_values(config)
    setconf = "\n".join(line for line in config.splitlines() if line.startswith(_WG_KEYS))
    client.run(f"ip link del {device}")
    client.check_output(f"install -d -m 0700 {WORK}/{device}")
    # Base64 keys and addresses only: nothing in it needs quoting beyond the single quotes.
    client.check_output(
        f"printf '%s\\n' '{setconf}' > {WORK}/{device}/wg.conf && chmod 0600 {WORK}/{device}/wg.conf"
    )
    client.check_output(f"wireguard-go {device}")
    client.check_output(f"wg setconf {device} {WORK}/{device}/wg.conf")
    for address in values["Address"].split(", "):
        client.check_output(f"ip address add {address} dev {device}")
    client.check_output(f"ip link set {device} up")
    for route in routes:
        client.check_output(f"ip route replace {route} dev {device}")


def _fetch(client, path, seconds=10, host=TARGET):
    url = f"http://[{host}]:{PROBE_PORT}/{path}" if ":" in host else f"http://{host}:{PROBE_PORT}/{path}"
    return client.run(f"curl -g -s -o /dev/null --max-time {seconds} {url}").rc == 0


def _seen_from(path):
    """The source address of the probe's request for ``path``, or None. IPv4 clients of its
    dual-stack socket are logged as ::ffff:a.b.c.d: given as a.b.c.d here."""
    log = lab_host("controller").file(PROBE_LOG).content_string
    found = re.findall(rf"^(\S+) - - \[[^]]+\] \"GET /{re.escape(path)} ", log, re.MULTILINE)
    if not found:
        return None
    address = ipaddress.ip_address(found[-1])
    return str(getattr(address, "ipv4_mapped", None) or address)


def _peers(node_name):
    return lab_host(node_name).check_output("wg show wg-internet peers").split()


def test_eduvpn_common_gets_a_wireguard_config_and_the_tunnel_reaches_beyond_the_node(client, ca_file, state):
    if not eduvpn_app.available():
        pytest.fail("eduvpn-common is not installed: bash scripts/setup (requirements/tools.txt)")
    browser, approve = _approver(ca_file)
    started = time.monotonic()
    got = eduvpn_app.get_config(PORTAL + "/", "internet", approve, ca_file)
    state["timings"]["oauth_and_config_seconds"] = round(time.monotonic() - started, 2)
    assert got.protocol == "wireguard", got.raw
    values = _config_values(got.text)
    endpoint_address, port = values["Endpoint"].rsplit(":", 1)
    node_name = NODES[endpoint_address][0]
    assert port == "51820" and values["AllowedIPs"] == "0.0.0.0/0, ::/0", got.text
    # The library's key pair: its private key in the config, its public key a peer of the node.
    assert values["PrivateKey"] and len(_peers(node_name)) == 1, _peers(node_name)
    state.update(browser=browser, node=node_name, key=_peers(node_name)[0])

    _bring_up(client, got.text)
    wait_for(lambda: _fetch(client, "wg-through-node", 3), "the probe through the tunnel", timeout=20)
    # The node masqueraded it: the controller saw the node's address, not the client's.
    assert _seen_from("wg-through-node") == endpoint_address
    seconds = state["timings"]["oauth_and_config_seconds"]
    print(f"eduvpn-common: WireGuard config through {node_name} in {seconds} s")


def test_a_node_whose_interface_restarted_gets_its_peers_back_within_30_s(client, state):
    node_name, key = state["node"], state["key"]
    node = lab_host(node_name)
    # The reconcile runs whenever the controller does (test_revocation.py stopped and started it).
    assert lab_host("controller").service("vpnfleet-controller-wireguard").is_running
    started = time.monotonic()
    node.check_output("systemctl restart vpnfleet-wg-internet")
    wait_for(lambda: key in _peers(node_name), f"{node_name} to get its peer back", timeout=BACK_WITHIN)
    state["timings"]["peers_back_seconds"] = round(time.monotonic() - started, 2)
    print(f"{node_name}: the peer back {state['timings']['peers_back_seconds']} s after the restart")
    wait_for(lambda: _fetch(client, "wg-after-restart", 3), "the probe through the tunnel again", timeout=20)


def test_deleting_the_config_removes_the_peer_within_2_s_and_traffic_stops(client, state):
    browser, node_name, key = state["browser"], state["node"], state["key"]
    _, _, home = browser.get("/")
    # The app's config, listed among the user's configs with its protocol.
    rows = re.findall(r"<tr>(.*?)</tr>", home, re.DOTALL)
    [action] = [
        re.search(r'action="(/configs/\d+/delete)"', row).group(1)
        for row in rows
        if "<td>wireguard</td>" in row and "/delete" in row
    ]
    started = time.monotonic()
    status, _, _ = browser.post(action, {"csrf_token": csrf(home)})
    assert status == 200
    wait_for(lambda: key not in _peers(node_name), f"{node_name} to drop the peer", timeout=REMOVED_WITHIN)
    state["timings"]["peer_removed_seconds"] = round(time.monotonic() - started, 2)
    print(
        f"{node_name}: the peer gone {state['timings']['peer_removed_seconds']} s after the delete was sent"
    )
    assert not _fetch(client, "wg-after-delete", 3)
    assert _seen_from("wg-after-delete") is None


def test_the_same_library_preferring_tcp_gets_openvpn_from_that_profile(ca_file, state):
    _, approve = _approver(ca_file)
    got = eduvpn_app.get_config(PORTAL + "/", "internet", approve, ca_file, prefer_tcp=True)
    assert got.protocol == "openvpn", got.raw
    assert re.search(r"^remote \S+ \d+ tcp$", got.text, re.MULTILINE), got.text


# ------------------------------------------------------------------ the split tunnel (branch)
SPLIT_DEVICE = "vfw-split"
SPLIT_ROUTES = ["203.0.113.0/26"]  # branch's routes (inventory/group_vars/all/profiles.yml)
# Outside those routes for the client: node-y1 (location y).
OUTSIDE = "198.51.100.74"


@pytest.fixture
def split_tunnel(client):
    """The client's split tunnel and the lab router's way back to the node's part of branch's
    range (not NATed: its clients keep their addresses, as a site's routers know), gone
    afterwards. The full tunnel's device goes first: its route to TARGET is the narrower one."""
    client.run(f"ip link del {DEVICE}")
    router_routes = []
    yield router_routes
    for route in router_routes:
        subprocess.run(["ip", "-n", ROUTER_NAMESPACE, "route", "del", route], check=False)
    client.run(f"ip link del {SPLIT_DEVICE}")


def test_a_split_tunnel_wireguard_profile_carries_only_its_routes(
    client, fleet_tls_context, split_tunnel, state
):
    started = time.monotonic()
    browser = Browser(fleet_tls_context)
    home = browser.login(*ADMIN)
    form = {"csrf_token": csrf(home), "profile_id": "branch", "display_name": "split", "protocol": ""}
    status, headers, config = browser.post("/configs", form)
    assert status == 200 and headers.get_content_type() == "application/x-wireguard-profile", config
    values = _config_values(config)
    allowed = values["AllowedIPs"].split(", ")
    # The profile's routes and its own slices (the node's address on the tunnel), no default.
    address4, address6 = (ipaddress.ip_interface(text) for text in values["Address"].split(", "))
    assert allowed == [str(address4.network), str(address6.network), *SPLIT_ROUTES], config
    # Location x only: node-x1, on the profile's own port.
    node_address, port = values["Endpoint"].rsplit(":", 1)
    assert (NODES[node_address][0], port) == ("node-x1", "51821")
    default_before = client.check_output("ip route show default")
    split_tunnel.append(str(address4.network))
    subprocess.run(
        ["ip", "-n", ROUTER_NAMESPACE, "route", "replace", str(address4.network), "via", node_address],
        check=True,
    )
    # A route per AllowedIPs, as wg-quick sets them: none of them the default.
    _bring_up(client, config, SPLIT_DEVICE, allowed)

    # In the routes: through the tunnel, and the controller sees the client's tunnel address.
    wait_for(lambda: _fetch(client, "split-in-route", 3), "the controller through the tunnel", timeout=20)
    assert _seen_from("split-in-route") == str(address4.ip)
    # Outside them the client's own line carries it: the default route is the client's as before,
    # the way to node-y1 is not the tunnel, and the controller over IPv6 (not in the routes) sees
    # the client's own address.
    assert client.check_output("ip route show default") == default_before
    assert f"dev {SPLIT_DEVICE}" not in client.check_output(f"ip route get {OUTSIDE}")
    controller6 = json.loads(
        lab_host("controller").check_output("ip -6 -json address show dev host0 scope global")
    )[0]["addr_info"][0]["local"]
    route6 = client.check_output(f"ip -6 route get {controller6}")
    own6 = str(ipaddress.ip_address(re.search(r"\bsrc (\S+)", route6).group(1)))
    assert f"dev {SPLIT_DEVICE}" not in route6 and own6 != str(address6.ip), route6
    assert _fetch(client, "split-outside", 3, host=controller6)
    assert _seen_from("split-outside") == own6
    state["timings"]["split_tunnel_seconds"] = round(time.monotonic() - started, 2)
    print(
        f"split tunnel: only its routes through it, checked in {state['timings']['split_tunnel_seconds']} s"
    )
