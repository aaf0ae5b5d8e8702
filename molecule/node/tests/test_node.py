"""The node role on real lab hosts: every process, a real OpenVPN client through each, NAT and
split tunnel, the VPN daemon over mutual TLS, WireGuard (wireguard-go: the lab's kernel has no
WireGuard) with a peer the daemon adds, and scaling the process count up and down.

The tests run in file order: the scaling test converges the node again and comes last.
"""

import http.client
import ipaddress
import json
import os
import pathlib
import re
import socket
import ssl
import subprocess
import urllib.parse

import pytest
import yaml
from lab_testinfra import INVENTORY, VpnClient, lab_host, wait_for

PKI = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "pki"
SCENARIO = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
NODE_ADDRESS = "198.51.100.10"
CLIENT_ADDRESS = "203.0.113.70"
INTERNET_ADDRESS = "203.0.113.130"
PROBE_PORT = 8080
DAEMON_PORT = 41194

testinfra_hosts = ["node-x1"]


@pytest.fixture(scope="module")
def node():
    return lab_host("node-x1")


def read_plan(node):
    return json.loads(node.file("/etc/vpnfleet/openvpn-plan.json").content_string)


def processes_of(plan):
    return [(profile, process) for profile in plan["profiles"] for process in profile["processes"]]


@pytest.fixture(scope="module")
def internet():
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
    """The source address the internet host saw for a request of ``path``."""
    for line in internet.file("/run/vfl-probe.log").content_string.splitlines():
        if f"GET {path} " in line:
            return ipaddress.ip_address(line.split()[0].removeprefix("::ffff:"))
    return None


class ProcessClient(VpnClient):
    """A client of one planned process, with a config made here from the scenario's PKI."""

    def __init__(self, host, profile_id, process, common_name="alice"):
        self.process = process
        proto = "udp" if process["proto"] == "udp" else "tcp-client"
        inline = {
            "ca": (PKI / "ca/ca.crt").read_text(),
            "cert": (PKI / f"{common_name}.crt").read_text(),
            "key": (PKI / f"{common_name}.key").read_text(),
            "tls-crypt": (PKI / f"ca/tls-crypt-{profile_id}.key").read_text(),
        }
        config = [
            "client",
            "dev tun",
            f"proto {proto}",
            f"remote {NODE_ADDRESS} {process['port']}",
            "nobind",
            "remote-cert-tls server",
            "tls-version-min 1.3",
            "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
            "connect-retry-max 2",
            "verb 3",
        ]
        if proto == "udp":
            # Tell the server when the client stops, or it lists the client until its ping timeout.
            config.append("explicit-exit-notify 1")
        config += [f"<{tag}>\n{text.strip()}\n</{tag}>" for tag, text in inline.items()]
        super().__init__(host, process["name"], "\n".join(config))

    def start(self):
        return super().start().wait_connected()

    def address(self, family):
        out = self.host.check_output(f"ip -{family} -json address show dev {self.device()} scope global")
        info = json.loads(out)[0]["addr_info"][0]
        return ipaddress.ip_address(info["local"])


@pytest.fixture
def connected(client):
    started = []

    def connect(profile_id, process, common_name="alice"):
        vpn = ProcessClient(client, profile_id, process, common_name).start()
        started.append(vpn)
        return vpn

    yield connect
    for vpn in started:
        vpn.stop()


def daemon_request(method, path, cert=None, body=None):
    """An HTTPS request to the node's daemon from the control machine, as the controller makes it."""
    context = ssl.create_default_context(cafile=str(PKI / "ca/ca.crt"))
    context.check_hostname = False  # the lab reaches the node by address; the chain is checked
    if cert:
        context.load_cert_chain(str(PKI / f"{cert}.crt"), str(PKI / f"{cert}.key"))
    connection = http.client.HTTPSConnection(NODE_ADDRESS, DAEMON_PORT, context=context, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


# ----------------------------------------------------------------------------- the node itself


def test_every_process_runs_and_listens_on_its_planned_port(node):
    plan = read_plan(node)
    assert [profile["profile_id"] for profile in plan["profiles"]] == ["internet", "office"]
    internet = plan["profiles"][0]
    assert internet["listeners"] == ["udp/1194", "tcp/1194"]
    for _, process in processes_of(plan):
        assert node.service(process["unit"]).is_running, process["unit"]
        listening = node.check_output(f"ss -H -ln{process['proto'][0]}p sport = :{process['port']}")
        assert "openvpn" in listening, (
            f"{process['name']} does not listen on {process['proto']}/{process['port']}"
        )


def test_each_process_runs_on_the_cpu_its_index_plans(node):
    usable = node.check_output("python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))'")
    cpus = [int(cpu) for cpu in usable.split()]
    for _, process in processes_of(read_plan(node)):
        pid = node.check_output(f"systemctl show --value -p MainPID {process['unit']}")
        status = node.file(f"/proc/{pid}/status").content_string
        allowed = re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.M)[1]
        assert allowed == str(cpus[process["index"] % len(cpus)]), process["unit"]


def test_the_firewall_opens_exactly_the_planned_ports_and_masquerades_the_full_tunnel(node):
    ruleset = node.check_output("nft list table inet vpnfleet")
    plan = read_plan(node)
    listeners = [listener for profile in plan["profiles"] for listener in profile["listeners"]]
    udp = sorted({int(item.split("/")[1]) for item in listeners if item.startswith("udp/")})
    tcp = sorted({int(item.split("/")[1]) for item in listeners if item.startswith("tcp/")})
    assert f"udp dport {{ {', '.join(map(str, udp))} }} accept" in ruleset
    assert f"tcp dport {{ {', '.join(map(str, tcp))} }} accept" in ruleset
    assert "tcp dport 41194 accept" in ruleset and "203.0.113.252/30" in ruleset
    assert 'ip saddr 198.18.0.0/24 oifname != "tun-*" oifname != "wg-*" masquerade' in ruleset
    assert "udp dport 51820 accept" in ruleset  # nft prints a one-element set bare
    assert 'ip saddr 198.18.4.0/24 oifname != "tun-*" oifname != "wg-*" masquerade' in ruleset
    assert "198.18.1.0/24 oifname" not in ruleset, "the split-tunnel profile is not masqueraded"
    assert node.check_output("sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding").split() == [
        "1",
        "1",
    ]


def test_the_keys_stay_on_the_node_with_tight_modes(node):
    for path, owner in (
        ("/etc/openvpn/server/pki/server.key", "root"),
        ("/etc/vpnfleet/daemon/daemon.key", "vpnfleet-daemon"),
        ("/etc/openvpn/server/pki/tls-crypt-internet.key", "root"),
        ("/etc/vpnfleet/wireguard/wg-internet.key", "root"),
    ):
        key = node.file(path)
        assert (key.user, key.mode) == (owner, 0o600), path
    assert not list(PKI.glob("ca/hosts/*.key")), "no node key on the CA host"


# ----------------------------------------------------------------------------- real clients


def test_a_real_client_connects_to_every_process_and_gets_an_address_of_its_slice(node, connected):
    for profile, process in processes_of(read_plan(node)):
        vpn = connected(profile["profile_id"], process)
        address = vpn.address(4)
        assert address in ipaddress.ip_network(process["ipv4"]), f"{process['name']}: {address}"
        assert vpn.address(6) in ipaddress.ip_network(process["ipv6"])
        vpn.host.check_output(f"ping -c 2 -W 2 {process['ipv4_gateway']}")
        vpn.host.check_output(f"ping -6 -c 2 -W 2 {process['ipv6_gateway']}")
        vpn.stop()


def test_full_tunnel_reaches_the_internet_host_through_the_nodes_nat(node, connected, internet):
    internet_v6 = json.loads(internet.check_output("ip -6 -json address show dev host0 scope global"))[0]
    internet_v6 = internet_v6["addr_info"][0]["local"]
    node_v6 = json.loads(node.check_output("ip -6 -json address show dev host0 scope global"))[0]
    node_v6 = ipaddress.ip_address(node_v6["addr_info"][0]["local"])
    for profile, process in processes_of(read_plan(node)):
        if profile["profile_id"] != "internet":
            continue
        vpn = connected("internet", process)
        route = vpn.host.check_output(f"ip route get {INTERNET_ADDRESS}")
        assert f"dev {vpn.device()}" in route, route
        path = f"/full-{process['name']}"
        vpn.host.check_output(
            f"curl -s -o /dev/null --max-time 10 http://{INTERNET_ADDRESS}:{PROBE_PORT}{path}"
        )
        assert seen_by_probe(internet, path) == ipaddress.ip_address(NODE_ADDRESS)
        vpn.host.check_output(
            f"curl -6 -s -o /dev/null --max-time 10 http://[{internet_v6}]:{PROBE_PORT}{path}-v6"
        )
        assert seen_by_probe(internet, f"{path}-v6") == node_v6
        vpn.stop()


def test_split_tunnel_pushes_only_its_routes_and_leaves_the_internet_host_outside(node, connected, internet):
    for profile, process in processes_of(read_plan(node)):
        if profile["profile_id"] != "office":
            continue
        vpn = connected("office", process)
        device = vpn.device()
        tunnel_routes = vpn.host.check_output(f"ip route show dev {device}")
        assert "198.51.100.64/26" in tunnel_routes
        assert "0.0.0.0/1" not in tunnel_routes and "default" not in tunnel_routes, tunnel_routes
        assert "2001:db8:1f00:12::/64" in vpn.host.check_output(f"ip -6 route show dev {device}")
        assert f"dev {device}" not in vpn.host.check_output(f"ip route get {INTERNET_ADDRESS}")
        path = f"/split-{process['name']}"
        vpn.host.check_output(
            f"curl -s -o /dev/null --max-time 10 http://{INTERNET_ADDRESS}:{PROBE_PORT}{path}"
        )
        assert seen_by_probe(internet, path) == ipaddress.ip_address(CLIENT_ADDRESS)
        vpn.stop()


# ----------------------------------------------------------------------------- the VPN daemon


def test_the_daemon_lists_the_connected_client_and_disconnects_it(node, connected):
    plan = read_plan(node)
    process = plan["profiles"][0]["processes"][0]
    vpn = connected("internet", process)
    address = str(vpn.address(4))

    def alice_listed_once():
        status, answer = daemon_request("GET", "/o/connection_list", cert="controller")
        assert status == 200, answer
        listed = [entry for entry in answer["connection_list"] if entry["common_name"] == "alice"]
        return listed if len(listed) == 1 else None

    # Earlier tests' clients have stopped; the servers drop them as they notice.
    # A client gone without a word is dropped at the server's ping timeout (2 minutes).
    mine = wait_for(alice_listed_once, "the daemon to list alice's one connection", timeout=150)
    assert (mine[0]["ip_four"], mine[0]["profile_id"], mine[0]["process"]) == (
        address,
        "internet",
        process["name"],
    )
    assert mine[0]["real_address"].startswith(CLIENT_ADDRESS)

    status, info = daemon_request("GET", "/i/node?include_client_peer_count=yes", cert="controller")
    assert status == 200 and info["o_client_count"] == 1, info
    assert len(info["o_process_list"]) == len(processes_of(plan))

    body = urllib.parse.urlencode({"common_name": "alice"})
    status, answer = daemon_request("POST", "/o/disconnect_client", cert="controller", body=body)
    assert (status, answer["disconnected_count"]) == (200, 1), answer
    wait_for(lambda: not vpn.running(), "the client to stop after the disconnect")
    assert "Halt command was pushed by server" in vpn.log_text() or "HALT" in vpn.log_text()


@pytest.mark.parametrize("cert", [None, "stranger", "alice"], ids=["no-cert", "other-ca", "client-purpose"])
def test_the_daemon_refuses_everyone_but_the_controller(cert):
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, socket.timeout, OSError)):
        status, answer = daemon_request("GET", "/o/connection_list", cert=cert)
        pytest.fail(f"answered {status} {answer} to {cert or 'no certificate'}")


# ----------------------------------------------------------------------------- WireGuard

WIREGUARD_CLIENT = "vfw-client"
# node-x1 (vpnfleet_slice 0) hands out the first quarter of the profile's WireGuard ranges.
WIREGUARD_CLIENT_ADDRESSES = ("198.18.4.5/32", "2001:db8:104::5/128")


def test_the_wireguard_interface_runs_in_userspace_with_the_nodes_addresses_and_port(node):
    unit = node.file("/etc/systemd/system/vpnfleet-wg-internet.service")
    assert "ExecStart=wireguard-go --foreground wg-internet" in unit.content_string, "the kernel has none"
    assert node.service("vpnfleet-wg-internet").is_running
    assert node.check_output("wg show wg-internet listen-port") == "51820"
    addresses = node.check_output("ip -brief address show dev wg-internet")
    assert "198.18.4.1/26" in addresses and "2001:db8:104::1/66" in addresses, addresses
    socket_file = node.file("/run/wireguard/wg-internet.sock")
    assert (socket_file.group, socket_file.mode) == ("vpnfleet-daemon", 0o660)


def test_the_daemon_tells_the_controller_the_interfaces_public_key(node):
    status, info = daemon_request("GET", "/i/node?include_client_peer_count=yes", cert="controller")
    assert status == 200, info
    assert info["wireguard"] == [
        {
            "profile_id": "internet",
            "interface": "wg-internet",
            "public_key": node.check_output("wg show wg-internet public-key"),
            "port": 51820,
            # Asked with the client counts: the interface's peers (none on this node yet).
            "peer_count": 0,
            "configured_peer_count": 0,
        }
    ]
    assert info["unreachable_interface_list"] == []


@pytest.fixture(scope="module")
def wireguard_client():
    """The client host's hand-made WireGuard side (wireguard-go and wg), its key made there."""
    host = lab_host("client")
    host.run(f"ip link del {WIREGUARD_CLIENT}")
    host.check_output(
        f"install -d -m 0700 /etc/{WIREGUARD_CLIENT} && wg genkey > /etc/{WIREGUARD_CLIENT}/key"
    )
    public_key = host.check_output(f"wg pubkey < /etc/{WIREGUARD_CLIENT}/key")
    yield host, public_key
    host.run(f"ip link del {WIREGUARD_CLIENT}")


def bring_up_wireguard_client(host, node_public_key, internet_v6):
    """wireguard-go and a config written by hand; the client's key stays in its file on the client."""
    config = "\n".join(
        [
            "[Peer]",
            f"PublicKey = {node_public_key}",
            f"Endpoint = {NODE_ADDRESS}:51820",
            # The internet host alone through the tunnel: the client's SSH stays on its own line.
            f"AllowedIPs = {INTERNET_ADDRESS}/32, {internet_v6}/128",
        ]
    )
    directory = f"/etc/{WIREGUARD_CLIENT}"
    host.check_output(f"printf '%s\\n' '{config}' > {directory}/peer.conf")
    host.check_output(f"wireguard-go {WIREGUARD_CLIENT}")
    host.check_output(f"wg setconf {WIREGUARD_CLIENT} {directory}/peer.conf")
    host.check_output(f"wg set {WIREGUARD_CLIENT} private-key {directory}/key")
    for address in WIREGUARD_CLIENT_ADDRESSES:
        host.check_output(f"ip address add {address} dev {WIREGUARD_CLIENT}")
    host.check_output(f"ip link set {WIREGUARD_CLIENT} up")
    host.check_output(f"ip route add {INTERNET_ADDRESS}/32 dev {WIREGUARD_CLIENT}")
    host.check_output(f"ip -6 route add {internet_v6}/128 dev {WIREGUARD_CLIENT}")


def test_a_peer_the_daemon_adds_reaches_the_internet_host_through_the_nodes_nat(
    node, internet, wireguard_client
):
    client, public_key = wireguard_client
    body = urllib.parse.urlencode(
        {"public_key": public_key, "ip_net": WIREGUARD_CLIENT_ADDRESSES}, doseq=True
    )
    status, answer = daemon_request("POST", "/w/add_peer", cert="controller", body=body)
    assert (status, answer["interface"]) == (200, "wg-internet"), answer
    internet_v6 = json.loads(internet.check_output("ip -6 -json address show dev host0 scope global"))[0]
    internet_v6 = internet_v6["addr_info"][0]["local"]
    bring_up_wireguard_client(client, node.check_output("wg show wg-internet public-key"), internet_v6)
    client.check_output(f"curl -s -o /dev/null --max-time 10 http://{INTERNET_ADDRESS}:{PROBE_PORT}/wg-full")
    assert seen_by_probe(internet, "/wg-full") == ipaddress.ip_address(NODE_ADDRESS)
    client.check_output(
        f"curl -6 -s -o /dev/null --max-time 10 http://[{internet_v6}]:{PROBE_PORT}/wg-full-v6"
    )
    node_v6 = json.loads(node.check_output("ip -6 -json address show dev host0 scope global"))[0]
    assert seen_by_probe(internet, "/wg-full-v6") == ipaddress.ip_address(node_v6["addr_info"][0]["local"])

    status, listed = daemon_request("GET", "/w/peer_list", cert="controller")
    [peer] = [entry for entry in listed["peer_list"] if entry["public_key"] == public_key]
    assert sorted(peer["ip_net"]) == sorted(WIREGUARD_CLIENT_ADDRESSES)
    assert "last_handshake_time" in peer and peer["bytes_in"] > 0 and peer["bytes_out"] > 0
    status, info = daemon_request("GET", "/i/node?include_client_peer_count=yes", cert="controller")
    assert info["w_peer_count"] == 1, info


# ----------------------------------------------------------------------------- scaling


def converge_with_internet_processes(count):
    profiles_file = (
        pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "inventories/lab/group_vars/all/profiles.yml"
    )
    profiles = yaml.safe_load(profiles_file.read_text())["vpnfleet_profiles"]
    for profile in profiles:
        if profile["id"] == "internet":
            profile["processes"] = count
    extra = SCENARIO / f".scale-{count}.json"
    extra.write_text(json.dumps({"vpnfleet_profiles": profiles}))
    try:
        subprocess.run(
            [
                "ansible-playbook",
                "-i",
                INVENTORY,
                "-l",
                "node-x1",
                str(SCENARIO / "converge.yml"),
                "-e",
                f"@{extra}",
            ],
            cwd=os.environ["MOLECULE_PROJECT_DIRECTORY"],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        raise AssertionError(
            f"converge with {count} processes failed:\n{exc.stdout[-4000:]}{exc.stderr[-2000:]}"
        ) from None
    finally:
        extra.unlink()


def test_changing_the_process_count_adds_and_removes_processes_ports_and_openings(node):
    converge_with_internet_processes(3)
    plan = read_plan(node)
    assert plan["profiles"][0]["listeners"] == ["udp/1194", "udp/1195", "tcp/1194"]
    assert node.service("openvpn-server@internet-2").is_running
    assert "openvpn" in node.check_output("ss -H -lnup sport = :1195")
    assert "udp dport { 1194, 1195, 1294" in node.check_output("nft list table inet vpnfleet")

    converge_with_internet_processes(2)
    plan = read_plan(node)
    assert plan["profiles"][0]["listeners"] == ["udp/1194", "tcp/1194"]
    assert not node.file("/etc/openvpn/server/internet-2.conf").exists
    assert not node.service("openvpn-server@internet-2").is_running
    assert node.check_output("ss -H -lnup sport = :1195") == ""
    assert "1195" not in node.check_output("nft list table inet vpnfleet")


def test_converging_again_leaves_the_peers_the_daemon_added(node, wireguard_client, internet):
    """The two converges above rewrote the OpenVPN processes and the firewall; the WireGuard
    interface and the peer the daemon added (test above) stayed."""
    client, public_key = wireguard_client
    assert public_key in node.check_output("wg show wg-internet peers").split()
    client.check_output(f"curl -s -o /dev/null --max-time 10 http://{INTERNET_ADDRESS}:{PROBE_PORT}/wg-again")
    assert seen_by_probe(internet, "/wg-again") == ipaddress.ip_address(NODE_ADDRESS)

    body = urllib.parse.urlencode({"public_key": public_key})
    status, answer = daemon_request("POST", "/w/remove_peer", cert="controller", body=body)
    assert status == 200 and answer["bytes_in"] > 0, answer
    assert node.check_output("wg show wg-internet peers") == ""
    assert (
        client.run(f"curl -s -o /dev/null --max-time 3 http://{INTERNET_ADDRESS}:{PROBE_PORT}/wg-gone").rc
        != 0
    )
    assert seen_by_probe(internet, "/wg-gone") is None
