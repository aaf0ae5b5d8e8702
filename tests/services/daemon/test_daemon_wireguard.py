"""The daemon's WireGuard calls against real wireguard-go interfaces: the node's two interfaces
(one per profile) in one namespace, a real WireGuard client in another, a handshake and traffic
through the tunnel once the daemon added the peer, none once it removed it."""

import base64
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from daemon_lab import (
    CLIENT_UNDERLAY_ADDRESS,
    METRICS_PORT,
    SERVER_UNDERLAY_ADDRESS,
    UNDERLAY_PREFIX,
    DaemonClient,
    LabPki,
    daemon_command,
)
from metrics_text import samples
from openvpn_netlab import Credentials, Namespaces, require_lab, run, stop_process, wait_for

# The node's parts of two profiles' WireGuard ranges, as the fleet plan gives them.
INTERNET = {
    "profile_id": "internet",
    "port": 51820,
    "ipv4_range": "198.18.40.0/26",
    "ipv6_range": "2001:db8:140::/112",
}
OFFICE = {
    "profile_id": "office",
    "port": 51821,
    "ipv4_range": "198.18.41.0/28",
    "ipv6_range": "2001:db8:141::/112",
}
CLIENT_ADDRESSES = ["198.18.40.5/32", "2001:db8:140::5/128"]
TUNNEL_PORT = 8080


def wg(namespace: str, *arguments: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, "wg", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def key_pair() -> tuple[str, str]:
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True)
    return private, public.stdout.strip()


@dataclass
class WireGuardLab:
    namespaces: Namespaces
    workdir: Path
    interfaces: dict[str, str]  # profile id -> interface name on the node
    node_public_keys: dict[str, str]
    client_interface: str
    client_private_key: str
    client_public_key: str

    def bring_up(self, namespace: str, name: str, private_key: str, port: int | None = None) -> None:
        """A wireguard-go interface, as the node role's unit makes it (userspace: this kernel has none)."""
        run("ip", "netns", "exec", namespace, "wireguard-go", name)
        key_file = self.workdir / f"{name}.key"
        key_file.write_text(private_key + "\n")
        key_file.chmod(0o600)
        arguments = ["set", name, "private-key", str(key_file)]
        if port is not None:
            arguments += ["listen-port", str(port)]
        wg(namespace, *arguments)
        run("ip", "-n", namespace, "link", "set", name, "up")

    def remove(self) -> None:
        for namespace, name in [(self.namespaces.server, n) for n in self.interfaces.values()] + [
            (self.namespaces.client, self.client_interface)
        ]:
            subprocess.run(["ip", "-n", namespace, "link", "del", name], capture_output=True)
        self.namespaces.remove()


@pytest.fixture(scope="module")
def wireguard_lab(workdir: Path) -> Iterator[WireGuardLab]:
    require_lab("the WireGuard daemon lab")
    if not shutil.which("wireguard-go") or not shutil.which("wg"):
        pytest.skip("the WireGuard daemon lab needs wireguard-go and wg (wireguard-tools)")
    namespaces = Namespaces.create("vfw", SERVER_UNDERLAY_ADDRESS, CLIENT_UNDERLAY_ADDRESS, UNDERLAY_PREFIX)
    token = namespaces.token
    # Interface names are global through wireguard-go's sockets (/run/wireguard/<name>.sock):
    # each carries the namespaces' token.
    client_private, client_public = key_pair()
    lab = WireGuardLab(
        namespaces,
        workdir,
        {"internet": f"vfw{token}i", "office": f"vfw{token}o"},
        {},
        f"vfw{token}c",
        client_private,
        client_public,
    )
    try:
        for profile in (INTERNET, OFFICE):
            name = lab.interfaces[profile["profile_id"]]
            private, public = key_pair()
            lab.bring_up(namespaces.server, name, private, profile["port"])
            lab.node_public_keys[profile["profile_id"]] = public
            for text in (profile["ipv4_range"], profile.get("ipv6_range")):
                if text:
                    # The node's own address: the first host of its part, as the plan has it.
                    network = ipaddress.ip_network(text)
                    address = f"{network.network_address + 1}/{network.prefixlen}"
                    run("ip", "-n", namespaces.server, "addr", "add", address, "dev", name)
        lab.bring_up(namespaces.client, lab.client_interface, client_private)
        for address in CLIENT_ADDRESSES:
            run("ip", "-n", namespaces.client, "addr", "add", address, "dev", lab.client_interface)
        run(
            "ip", "-n", namespaces.client, "route", "add", INTERNET["ipv4_range"], "dev", lab.client_interface
        )
        # The client's hand-made side of the tunnel: the node's key, its endpoint, the profile's range.
        wg(
            namespaces.client,
            "set",
            lab.client_interface,
            "peer",
            lab.node_public_keys["internet"],
            "endpoint",
            f"{SERVER_UNDERLAY_ADDRESS}:{INTERNET['port']}",
            "allowed-ips",
            INTERNET["ipv4_range"],
            "persistent-keepalive",
            "1",
        )
        yield lab
    finally:
        lab.remove()

    def leftover() -> list[str]:
        names = [*lab.interfaces.values(), lab.client_interface]
        return [name for name in names if Path(f"/run/wireguard/{name}.sock").exists()]

    # wireguard-go removes its socket as it exits, a moment after its interface went (longer on a
    # busy machine): what counts is that it goes, not how fast.
    try:
        wait_for(lambda: not leftover(), "wireguard-go to exit", timeout=15)
    except AssertionError:
        raise AssertionError(f"wireguard-go left sockets behind: {leftover()}") from None


@pytest.fixture(scope="module")
def wireguard_daemon(
    wireguard_lab: WireGuardLab, lab_pki: LabPki, workdir: Path, monitoring: Credentials
) -> Iterator[DaemonClient]:
    credentials = lab_pki.credentials(
        "vfw-node-daemon", "daemon_server", ip_addresses=[SERVER_UNDERLAY_ADDRESS]
    )
    metrics_credentials = lab_pki.credentials(
        "vfw-node-daemon", "server", ip_addresses=[SERVER_UNDERLAY_ADDRESS]
    )
    (workdir / "wg-no-openvpn").mkdir(exist_ok=True)
    config_path = workdir / "daemon-wireguard.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "listen_address": SERVER_UNDERLAY_ADDRESS,
                "tls_certificate": str(credentials.certificate),
                "tls_private_key": str(credentials.private_key),
                "tls_ca": str(lab_pki.ca_certificate),
                "management_socket_glob": f"{workdir}/wg-no-openvpn/*.sock",
                "maintenance_flag_file": str(workdir / "wg-maintenance"),
                "wireguard": [
                    {**profile, "interface": wireguard_lab.interfaces[profile["profile_id"]]}
                    for profile in (INTERNET, OFFICE)
                ],
                "wireguard_command": shutil.which("wg"),
                "metrics_listen_port": METRICS_PORT,
                "metrics_client_certificates": str(monitoring.certificate),
                "metrics_tls_certificate": str(metrics_credentials.certificate),
                "metrics_tls_private_key": str(metrics_credentials.private_key),
            }
        )
    )
    log_path = workdir / "daemon-wireguard.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", wireguard_lab.namespaces.server, *daemon_command(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the daemon exited with {process.returncode}:\n{log_path.read_text()}")
        return "listening on" in log_path.read_text()

    try:
        wait_for(listening, "the WireGuard daemon to listen")
        yield DaemonClient(wireguard_lab.namespaces, lab_pki)
    finally:
        stop_process(process)


@pytest.fixture
def client(wireguard_daemon, controller):
    """Calls as the controller makes them; every peer a test added is gone after it."""

    def call(method: str, path: str, **form):
        if method == "GET":
            return wireguard_daemon.request("GET", path + ("?" + urlencode(form) if form else ""), controller)
        return wireguard_daemon.request("POST", path, controller, urlencode(form, doseq=True))

    yield call
    for peer in call("GET", "/w/peer_list").payload["peer_list"]:
        call("POST", "/w/remove_peer", public_key=peer["public_key"])


def reaches_the_node(lab: WireGuardLab, timeout: float = 3.0) -> bool:
    """A TCP exchange from the client to the node's address on the tunnel (198.18.40.1)."""
    listener = lab.namespaces.listening_socket(lab.namespaces.server, "198.18.40.1")
    try:
        port = listener.getsockname()[1]
        sender = lab.namespaces.socket_in(lab.namespaces.client)
        sender.settimeout(timeout)
        try:
            sender.connect(("198.18.40.1", port))
            sender.sendall(b"through the tunnel")
            listener.settimeout(timeout)
            accepted, unused_address = listener.accept()
            with accepted:
                accepted.settimeout(timeout)
                return accepted.recv(64) == b"through the tunnel"
        except OSError:
            return False
        finally:
            sender.close()
    finally:
        listener.close()


def test_node_info_names_each_interface_with_its_public_key_and_port(client, wireguard_lab):
    info = client("GET", "/i/node", include_client_peer_count="yes").payload
    assert info["wireguard"] == [
        {
            "profile_id": "internet",
            "interface": wireguard_lab.interfaces["internet"],
            "public_key": wireguard_lab.node_public_keys["internet"],
            "port": 51820,
            "peer_count": 0,
            "configured_peer_count": 0,
        },
        {
            "profile_id": "office",
            "interface": wireguard_lab.interfaces["office"],
            "public_key": wireguard_lab.node_public_keys["office"],
            "port": 51821,
            "peer_count": 0,
            "configured_peer_count": 0,
        },
    ]
    assert (info["w_peer_count"], info["unreachable_interface_list"]) == (0, [])
    # Without the counts, as upstream: the keys and ports only.
    assert [sorted(entry) for entry in client("GET", "/i/node").payload["wireguard"]] == [
        ["interface", "port", "profile_id", "public_key"]
    ] * 2


def _interface_metrics(wireguard_daemon, monitoring, lab: WireGuardLab) -> dict[str, tuple[float, ...]]:
    """profile -> (peers, connected peers, up) from the daemon's /metrics (the monitoring host's view)."""
    response = wireguard_daemon.request("GET", "/metrics", monitoring, port=METRICS_PORT)
    assert response.status == 200, response
    found = samples(response.text)
    names = ("vpnfleet_wireguard_peers", "vpnfleet_wireguard_connected_peers", "vpnfleet_wireguard_up")
    return {
        profile: tuple(found[(name, (("process", interface), ("profile", profile)))] for name in names)
        for profile, interface in lab.interfaces.items()
    }


def test_the_metrics_and_node_info_count_each_interfaces_peers(
    client, wireguard_daemon, monitoring, wireguard_lab
):
    assert _interface_metrics(wireguard_daemon, monitoring, wireguard_lab) == {
        "internet": (0, 0, 1),
        "office": (0, 0, 1),
    }
    # The client's peer on internet (it makes a handshake), one without a handshake on office.
    client("POST", "/w/add_peer", public_key=wireguard_lab.client_public_key, ip_net=CLIENT_ADDRESSES)
    client("POST", "/w/add_peer", public_key=key_pair()[1], ip_net="198.18.41.12/32")
    wait_for(lambda: reaches_the_node(wireguard_lab), "traffic through the tunnel", timeout=15)
    assert _interface_metrics(wireguard_daemon, monitoring, wireguard_lab) == {
        "internet": (1, 1, 1),
        "office": (1, 0, 1),
    }
    info = client("GET", "/i/node", include_client_peer_count="yes").payload
    counts = [(entry["peer_count"], entry["configured_peer_count"]) for entry in info["wireguard"]]
    assert counts == [(1, 1), (0, 1)]
    assert (info["w_peer_count"], info["w_configured_peer_count"]) == (1, 2)


def test_a_peer_added_through_the_daemon_gets_a_handshake_and_traffic_and_none_once_removed(
    client, wireguard_lab
):
    assert not reaches_the_node(wireguard_lab, timeout=1.0)
    added = client("POST", "/w/add_peer", public_key=wireguard_lab.client_public_key, ip_net=CLIENT_ADDRESSES)
    assert added.status == 200, added.payload
    assert (added.payload["profile_id"], added.payload["interface"]) == (
        "internet",
        wireguard_lab.interfaces["internet"],
    )
    # On the interface itself, as `wg` shows it: the peer and its addresses, nothing more.
    shown = wg(wireguard_lab.namespaces.server, "show", wireguard_lab.interfaces["internet"], "allowed-ips")
    assert shown.split("\t") == [wireguard_lab.client_public_key, " ".join(sorted(CLIENT_ADDRESSES))]

    # The client retries its handshake every 5 s (WireGuard's REKEY_TIMEOUT) until the node knows it.
    wait_for(lambda: reaches_the_node(wireguard_lab), "traffic through the tunnel", timeout=15)
    [peer] = client("GET", "/w/peer_list").payload["peer_list"]
    assert peer["public_key"] == wireguard_lab.client_public_key
    assert sorted(peer["ip_net"]) == sorted(CLIENT_ADDRESSES)
    assert peer["last_handshake_time"].endswith("Z") and peer["bytes_in"] > 0 and peer["bytes_out"] > 0
    assert client("GET", "/i/node", include_client_peer_count="yes").payload["w_peer_count"] == 1

    removed = client("POST", "/w/remove_peer", public_key=wireguard_lab.client_public_key)
    assert removed.status == 200, removed.payload
    assert removed.payload["bytes_in"] >= peer["bytes_in"] > 0
    assert client("GET", "/w/peer_list").payload["peer_list"] == []
    assert not reaches_the_node(wireguard_lab, timeout=1.0)
    again = client("POST", "/w/remove_peer", public_key=wireguard_lab.client_public_key)
    assert again.status == 404 and "has peer" in again.payload["error"]


def test_a_peer_without_a_handshake_is_listed_without_its_time_and_not_counted_as_connected(client):
    unused_private, public = key_pair()
    assert client("POST", "/w/add_peer", public_key=public, ip_net="198.18.41.9/32").status == 200
    [peer] = client("GET", "/w/peer_list").payload["peer_list"]
    assert (peer["profile_id"], peer["ip_net"], peer["bytes_in"]) == ("office", ["198.18.41.9/32"], 0)
    assert "last_handshake_time" not in peer
    assert client("GET", "/w/peer_list", show_all="no").payload["peer_list"] == []
    info = client("GET", "/i/node", include_client_peer_count="yes").payload
    assert (info["w_peer_count"], info["w_configured_peer_count"]) == (0, 1)


def test_a_key_added_again_with_another_profiles_address_moves_there(client, wireguard_lab):
    unused_private, public = key_pair()
    client("POST", "/w/add_peer", public_key=public, ip_net="198.18.40.20/32")
    moved = client("POST", "/w/add_peer", public_key=public, ip_net="198.18.41.10/32")
    assert moved.payload["profile_id"] == "office"
    assert [(p["profile_id"], p["ip_net"]) for p in client("GET", "/w/peer_list").payload["peer_list"]] == [
        ("office", ["198.18.41.10/32"])
    ]


A_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    ("form", "status", "reason"),
    [
        ({"ip_net": "198.18.40.7/32"}, 400, "public_key is required"),
        ({"public_key": "not-a-key", "ip_net": "198.18.40.7/32"}, 400, "is not a WireGuard key"),
        ({"public_key": base64.b64encode(b"short").decode(), "ip_net": "198.18.40.7/32"}, 400, "32 bytes"),
        ({"public_key": A_KEY}, 400, "ip_net is required"),
        ({"public_key": A_KEY, "ip_net": "198.18.40.7"}, 200, ""),  # a bare address is its /32
        ({"public_key": A_KEY, "ip_net": "198.18.40.0/28"}, 400, "a peer gets single addresses"),
        ({"public_key": A_KEY, "ip_net": "198.18.40.7/24"}, 400, "is not a CIDR network"),
        ({"public_key": A_KEY, "ip_net": "198.18.99.7/32"}, 400, "lies in no WireGuard range of this node"),
        ({"public_key": A_KEY, "ip_net": "198.18.40.1/32"}, 400, "the node's own"),
        ({"public_key": A_KEY, "ip_net": "198.18.40.63/32"}, 400, "broadcast address"),
        (
            {"public_key": A_KEY, "ip_net": ["198.18.40.7/32", "2001:db8:141::7/128"]},
            400,
            "more than one profile",
        ),
        ({"public_key": A_KEY, "ip_net": ["198.18.40.7/32", "198.18.40.8/32"]}, 400, "more than one address"),
    ],
)
def test_a_bad_peer_is_refused_with_a_reason(client, form, status, reason):
    response = client("POST", "/w/add_peer", **form)
    assert response.status == status, response.payload
    if reason:
        assert reason in response.payload["error"]


def test_an_address_another_peer_holds_is_a_conflict(client):
    unused_private, first = key_pair()
    unused_private, second = key_pair()
    assert client("POST", "/w/add_peer", public_key=first, ip_net="198.18.40.30/32").status == 200
    response = client("POST", "/w/add_peer", public_key=second, ip_net="198.18.40.30/32")
    assert response.status == 409 and first in response.payload["error"]


def test_the_calls_take_their_own_method_only(client):
    assert client("GET", "/w/add_peer").status == 405
    assert client("POST", "/w/peer_list").status == 405
    assert client("GET", "/w/peer_list", show_all="maybe").status == 400


def test_a_peer_survives_nothing_but_the_interface_itself(client, wireguard_lab):
    """What a node restart does to peers: the interface comes back empty (the controller's
    reconcile adds them again); the daemon reports the gap meanwhile instead of failing."""
    unused_private, public = key_pair()
    client("POST", "/w/add_peer", public_key=public, ip_net="198.18.41.11/32")
    name = wireguard_lab.interfaces["office"]
    run("ip", "-n", wireguard_lab.namespaces.server, "link", "del", name)
    wait_for(lambda: not Path(f"/run/wireguard/{name}.sock").exists(), "wireguard-go to exit")
    info = client("GET", "/i/node").payload
    [gone] = info["unreachable_interface_list"]
    assert gone["interface"] == name and gone["profile_id"] == "office"
    assert client("POST", "/w/add_peer", public_key=public, ip_net="198.18.41.11/32").status == 503
    private, public_key = key_pair()
    wireguard_lab.bring_up(wireguard_lab.namespaces.server, name, private, OFFICE["port"])
    wireguard_lab.node_public_keys["office"] = public_key
    assert client("GET", "/w/peer_list").payload["peer_list"] == []
    assert client("GET", "/i/node").payload["unreachable_interface_list"] == []
