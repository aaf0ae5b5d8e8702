"""The node's nftables file as the role renders it from the fleet plan, checked by nft itself and,
where this machine lets the test make a network namespace, loaded there and sent to: new flows to
one public port land on every process of its protocol in turn."""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
import yaml
from role_play import ANSIBLE_PLAYBOOK, REPO, run_play
from vpnfleet.shared import fleet

NFT = shutil.which("nft")
LAB_PROFILES = yaml.safe_load((REPO / "inventories/lab/group_vars/all/profiles.yml").read_text())[
    "vpnfleet_profiles"
]

pytestmark = pytest.mark.skipif(not (ANSIBLE_PLAYBOOK and NFT), reason="needs ansible-playbook and nft")

PLAYBOOK = """
- name: Render the node's firewall
  hosts: node-x1
  connection: local
  gather_facts: false
  tasks:
    - name: Render it
      ansible.builtin.template:
        src: "{{ repo }}/roles/node/templates/nftables.conf.j2"
        dest: "{{ out }}"
        mode: "0600"
"""


def node_view(**internet):
    profiles = [dict(LAB_PROFILES[0], **internet), LAB_PROFILES[1]]
    groups = {
        "vpnfleet_controllers": ["controller"],
        "vpnfleet_nodes": ["node-x1"],
        "vpnfleet_location_x": ["node-x1"],
    }
    hosts = {
        "controller": fleet.HostInput(
            "controller", ("vpnfleet_controllers",), {"vpnfleet_profiles": profiles}
        ),
        "node-x1": fleet.HostInput(
            "node-x1",
            ("vpnfleet_nodes", "vpnfleet_location_x"),
            {"vpnfleet_profiles": profiles, "vpnfleet_location": "x"},
            2,
        ),
    }
    return fleet.plan_fleet(hosts, groups).as_dict()["nodes"]["node-x1"]


def render(tmp_path, view):
    variables = {
        "repo": str(REPO),
        "out": str(tmp_path / "nftables.conf"),
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "__node_view": view,
        # As openvpn_instances returns them: the profiles with OpenVPN processes.
        "__node_plans": [served["plan"] for served in view["profiles"] if served["plan"]],
        "node_ssh_allowed_sources": [],
        "node_ssh_port": 22,
        "node_daemon_allowed_sources": ["203.0.113.10"],
        "node_daemon_port": 41194,
        "node_lan_prefixes": [],
        "node_metrics_enabled": False,
        "ansible_host": "127.0.0.1",
    }
    answer = run_play(tmp_path, PLAYBOOK, inventory="node-x1,", variables=variables)
    assert (tmp_path / "nftables.conf").exists(), answer.stdout + answer.stderr
    return tmp_path / "nftables.conf"


def test_public_ports_redirect_to_the_processes_of_their_protocol_in_turn(tmp_path):
    view = node_view(
        processes=4, public_ports=["udp/1190", "tcp/443"], udp_port_base=1200, tcp_port_base=1200
    )
    text = render(tmp_path, view).read_text()
    assert "udp dport 1190 redirect to :numgen inc mod 3 map { 0 : 1200, 1 : 1201, 2 : 1202 }" in text
    assert "tcp dport 443 redirect to :1200" in text
    # The processes keep their own ports: per-process remotes go on working.
    assert "udp dport { 1200, 1201, 1202, 1294 } accept" in text
    subprocess.run([NFT, "--check", "--file", str(tmp_path / "nftables.conf")], check=True)


def test_without_public_ports_there_is_no_redirect(tmp_path):
    text = render(tmp_path, node_view()).read_text()
    assert "chain prerouting" not in text and "redirect to" not in text
    subprocess.run([NFT, "--check", "--file", str(tmp_path / "nftables.conf")], check=True)


def test_wireguard_ports_are_opened_and_their_ranges_forwarded_and_masqueraded(tmp_path):
    view = node_view(
        protocols=["wireguard"],
        ipv4_range=None,
        ipv6_range=None,
        processes=None,
        wireguard_ipv4_range="198.18.4.0/24",
        wireguard_ipv6_range="2001:db8:104::/64",
        wireguard_port=51830,
    )
    text = render(tmp_path, view).read_text()
    assert "udp dport { 51830 } accept" in text
    # The OpenVPN ports are the office profile's alone: internet has no processes.
    assert "udp dport { 1294 } accept" in text
    assert "ip saddr 198.18.4.0/24 accept" in text and "ip6 saddr 2001:db8:104::/64 accept" in text
    assert 'ip saddr 198.18.4.0/24 oifname != "tun-*" oifname != "wg-*" masquerade' in text
    assert "198.18.0.0/24" not in text
    subprocess.run([NFT, "--check", "--file", str(tmp_path / "nftables.conf")], check=True)


def _netns(*command, namespace, **options):
    return subprocess.run(["ip", "netns", "exec", namespace, *command], check=True, **options)


SERVER = """
import json, select, socket, sys
servers = {}
for port in (1200, 1201, 1202):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::", port))
    servers[sock] = port
print("ready", flush=True)
seen = {}
while True:
    ready, _, _ = select.select(list(servers), [], [], 3)
    if not ready:
        break
    for sock in ready:
        data, peer = sock.recvfrom(100)
        seen.setdefault(str(peer[1]), []).append(servers[sock])
print(json.dumps(seen), flush=True)
"""
CLIENT = """
import socket, time
clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for unused in range(6)]
for packet in (b"first", b"second"):
    for sock in clients:
        sock.sendto(packet, ("198.51.100.250", 1190))
        time.sleep(0.05)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="making network namespaces needs root")
def test_new_flows_to_the_public_port_land_on_every_process_in_turn(tmp_path):
    """Three UDP "processes" (listeners on their own ports) in a namespace with the rendered
    ruleset, a client in another; six flows to the public port: two on each process, and each
    flow's second packet on the process its first went to."""
    view = node_view(processes=4, public_ports=["udp/1190"], udp_port_base=1200, tcp_port_base=1200)
    path = render(tmp_path, view)
    suffix = uuid.uuid4().hex[:6]
    node, client = "vfl-n-" + suffix, "vfl-c-" + suffix
    for namespace in (node, client):
        subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                "vn" + suffix,
                "netns",
                node,
                "type",
                "veth",
                "peer",
                "vc" + suffix,
                "netns",
                client,
            ],
            check=True,
        )
        for namespace, device, address in ((node, "vn", "198.51.100.250"), (client, "vc", "198.51.100.249")):
            _netns("ip", "address", "add", address + "/30", "dev", device + suffix, namespace=namespace)
            _netns("ip", "link", "set", device + suffix, "up", namespace=namespace)
            _netns("ip", "link", "set", "lo", "up", namespace=namespace)
        _netns(NFT, "--file", str(path), namespace=node)
        server = subprocess.Popen(
            ["ip", "netns", "exec", node, sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout.readline().strip() == "ready"
            _netns(sys.executable, "-c", CLIENT, namespace=client, timeout=30)
            seen = json.loads(server.stdout.readline())
        finally:
            server.kill()
            server.wait()
    finally:
        for namespace in (node, client):
            subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert len(seen) == 6, seen
    assert sorted(ports[0] for ports in seen.values()) == [1200, 1200, 1201, 1201, 1202, 1202]
    assert all(ports == [ports[0]] * 2 for ports in seen.values()), seen


def test_a_routed_profile_opens_to_new_flows_from_outside_only_when_it_says_so(tmp_path):
    closed = render(tmp_path, node_view(nat=False)).read_text()
    assert "accept_inbound" not in closed
    (tmp_path / "nftables.conf").unlink()
    opened = render(tmp_path, node_view(nat=False, accept_inbound=True)).read_text()
    # Not from another VPN range: clients still reach each other only where client_to_client says.
    assert (
        "ip saddr != { 198.18.0.0/24, 198.18.4.0/24, 198.18.1.0/24 } ip daddr 198.18.0.0/24 accept comment "
        '"internet: new flows from outside the VPN (accept_inbound)"' in opened
    )
    # Its WireGuard range alike.
    wireguard_rule = "ip saddr != { 198.18.0.0/24, 198.18.4.0/24, 198.18.1.0/24 } ip daddr 198.18.4.0/24"
    assert wireguard_rule + " accept" in opened
    subprocess.run([NFT, "--check", "--file", str(tmp_path / "nftables.conf")], check=True)


LISTENER = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 5001))
sock.settimeout(3)
print("ready", flush=True)
try:
    print(sock.recvfrom(100)[0].decode(), flush=True)
except socket.timeout:
    print("nothing", flush=True)
"""
SENDER = """
import socket, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    sock.sendto(b"from outside", ("198.18.0.66", 5001))
    time.sleep(0.1)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="making network namespaces needs root")
@pytest.mark.parametrize("accept_inbound", [False, True])
def test_a_host_outside_reaches_a_routed_client_only_with_accept_inbound(tmp_path, accept_inbound):
    """Three namespaces: a host outside, the node forwarding with the rendered ruleset, and a
    client holding an address of the routed profile's range (as its tunnel would). The outside
    host opens a new UDP flow to the client: dropped by default, delivered with accept_inbound."""
    path = render(tmp_path, node_view(nat=False, accept_inbound=accept_inbound))
    suffix = uuid.uuid4().hex[:6]
    outside, node, client = ("vfl-o-" + suffix, "vfl-n-" + suffix, "vfl-c-" + suffix)
    for namespace in (outside, node, client):
        subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for far, near, end in ((outside, "o", "no"), (client, "c", "nc")):
            subprocess.run(
                [
                    "ip",
                    "link",
                    "add",
                    end + suffix,
                    "netns",
                    node,
                    "type",
                    "veth",
                    "peer",
                    near + suffix,
                    "netns",
                    far,
                ],
                check=True,
            )
        steps = [
            (outside, "ip address add 203.0.113.249/30 dev o{s}"),
            (node, "ip address add 203.0.113.250/30 dev no{s}"),
            (node, "ip address add 198.51.100.254/32 dev nc{s}"),
            (client, "ip address add 198.18.0.66/32 dev c{s}"),
        ]
        for namespace in (outside, node, client):
            device = {outside: "o", node: "no", client: "c"}[namespace]
            steps += [(namespace, "ip link set lo up"), (namespace, f"ip link set {device}{{s}} up")]
        steps += [
            (node, "ip link set nc{s} up"),
            (node, "ip route add 198.18.0.66/32 dev nc{s}"),
            (node, "sysctl -q -w net.ipv4.ip_forward=1"),
            (client, "ip route add 198.51.100.254/32 dev c{s}"),
            (client, "ip route add default via 198.51.100.254 dev c{s} onlink"),
            (outside, "ip route add default via 203.0.113.250"),
        ]
        for namespace, command in steps:
            _netns(*command.format(s=suffix).split(), namespace=namespace)
        _netns(NFT, "--file", str(path), namespace=node)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", client, sys.executable, "-c", LISTENER, "198.18.0.66"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.stdout.readline().strip() == "ready"
            _netns(sys.executable, "-c", SENDER, namespace=outside, timeout=30)
            heard = listener.stdout.readline().strip()
        finally:
            listener.kill()
            listener.wait()
    finally:
        for namespace in (outside, node, client):
            subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert heard == ("from outside" if accept_inbound else "nothing")
