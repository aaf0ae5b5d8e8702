"""node-x1's WireGuard for real: wireguard-go interfaces, the real daemon with its /w/ calls, and a
real WireGuard client that brings up the config the controller hands out.

Beside controller_node_lab's node-x1 (its OpenVPN servers): a server namespace holds node-x1's
WireGuard interfaces (userspace wireguard-go, as this kernel has no WireGuard), one per
WireGuard profile, each with the node's own address, the first host of its slice; a client
namespace holds the client's interface. A second real daemon on 127.0.0.1 serves those
interfaces and node-x1's OpenVPN processes too (their management sockets are files), so one
node answers for both protocols. Names start with "vfw-c" (interfaces "vfwc<token>..."); the
underlay repeats node-x1's addresses, in namespaces of its own.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from controller_node_lab import CLIENT_ADDRESS, NODE_X1_ADDRESS, UNDERLAY_PREFIX, NodeLab, start_daemon
from openvpn_netlab import Namespaces, run

from vpnfleet.daemon.server import DaemonHTTPServer

NAME_PREFIX = "vfw-c"
# node-x1's slices of the WireGuard profiles' ranges, as the fleet plan gives them (the node's
# address: the first host). office offers both protocols, wgonly WireGuard alone (split tunnel).
SLICES = {
    "office": {"port": 51820, "ipv4_range": "198.19.96.0/28", "ipv6_range": "2001:db8:f3::/112"},
    "wgonly": {"port": 51821, "ipv4_range": "198.19.97.0/24", "ipv6_range": "2001:db8:f4::/112"},
}
WGONLY_ROUTES = ["203.0.113.0/24"]


def wg(namespace: str | None, *arguments: str) -> str:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, "wg", *arguments], capture_output=True, text=True, check=True).stdout


def key_pair() -> tuple[str, str]:
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True)
    return private, public.stdout.strip()


@dataclass
class WireguardNode:
    workdir: Path
    namespaces: Namespaces
    interfaces: dict[str, str] = field(default_factory=dict)  # profile id -> interface name
    public_keys: dict[str, str] = field(default_factory=dict)
    daemon: DaemonHTTPServer | None = None
    listener_port: int = 0
    _listener: socket.socket | None = None

    @property
    def client_interface(self) -> str:
        return f"vfwc{self.namespaces.token}c"

    @property
    def daemon_port(self) -> int:
        assert self.daemon is not None
        return self.daemon.server_address[1]

    def _bring_up(self, namespace: str, name: str, private_key: str, port: int | None = None) -> None:
        run("ip", "netns", "exec", namespace, "wireguard-go", name)
        key_file = self.workdir / f"{name}.key"
        key_file.write_text(private_key + "\n")
        key_file.chmod(0o600)
        wg(
            namespace,
            "set",
            name,
            "private-key",
            str(key_file),
            *(("listen-port", str(port)) if port else ()),
        )
        run("ip", "-n", namespace, "link", "set", name, "up")

    def start_interface(self, profile_id: str, private_key: str | None = None) -> None:
        """node-x1's interface of the profile, with no peers, as the node's unit starts it."""
        name = f"vfwc{self.namespaces.token}{profile_id[0]}"
        self.interfaces[profile_id] = name
        if private_key is None:
            private_key, self.public_keys[profile_id] = key_pair()
            (self.workdir / f"{profile_id}.private").write_text(private_key)
        self._bring_up(self.namespaces.server, name, private_key, SLICES[profile_id]["port"])
        for text in (SLICES[profile_id]["ipv4_range"], SLICES[profile_id]["ipv6_range"]):
            network = ipaddress.ip_network(text)
            address = f"{network.network_address + 1}/{network.prefixlen}"
            run("ip", "-n", self.namespaces.server, "addr", "add", address, "dev", name)

    def restart_interface(self, profile_id: str) -> None:
        """What a node restart does to the interface: gone with its peers, back empty, same key."""
        run("ip", "-n", self.namespaces.server, "link", "del", self.interfaces[profile_id])
        self.start_interface(profile_id, (self.workdir / f"{profile_id}.private").read_text())

    def peers(self, profile_id: str) -> dict[str, str]:
        """The interface's peers as wg itself shows them: public key -> allowed ips."""
        lines = wg(self.namespaces.server, "show", self.interfaces[profile_id], "allowed-ips").splitlines()
        return dict(line.split("\t", 1) for line in lines if line)

    def remove_peer(self, profile_id: str, public_key: str) -> None:
        wg(self.namespaces.server, "set", self.interfaces[profile_id], "peer", public_key, "remove")

    def add_stranger(self, profile_id: str, public_key: str, address: str) -> None:
        """A peer the controller does not know (a change made behind its back)."""
        wg(
            self.namespaces.server,
            "set",
            self.interfaces[profile_id],
            "peer",
            public_key,
            "allowed-ips",
            address,
        )

    def client_up(self, config: str, private_key: str | None = None) -> None:
        """The client's interface from the wg-quick config, as wg-quick would set it up: its own
        PrivateKey (a portal config) or the app's, the addresses, the peer, a route per AllowedIPs."""
        namespace, name = self.namespaces.client, self.client_interface
        self.client_down()
        values = dict(re.findall(r"^(\w+) = (.+)$", config, re.MULTILINE))
        self._bring_up(namespace, name, private_key or values["PrivateKey"])
        wg(
            namespace,
            "set",
            name,
            "peer",
            values["PublicKey"],
            "endpoint",
            values["Endpoint"],
            "allowed-ips",
            values["AllowedIPs"].replace(" ", ""),
            "persistent-keepalive",
            "1",
        )
        for address in values["Address"].split(", "):
            run("ip", "-n", namespace, "addr", "add", address, "dev", name)
        for network in values["AllowedIPs"].split(", "):
            run("ip", "-n", namespace, "route", "replace", network, "dev", name)

    def client_down(self) -> None:
        subprocess.run(
            ["ip", "-n", self.namespaces.client, "link", "del", self.client_interface], capture_output=True
        )

    def client_reaches(self, address: str) -> bool:
        """A TCP connection from the client to node-x1's listener at ``address`` (over the tunnel:
        the node's address on its WireGuard interface), made within a second."""
        probe = self.namespaces.socket_in(self.namespaces.client)
        probe.settimeout(1)
        try:
            probe.connect((address, self.listener_port))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def _serve(self) -> None:
        """Accept and close node-x1's connections: the probe only needs the handshake."""
        listener = self.namespaces.listening_socket(self.namespaces.server, "0.0.0.0")  # noqa: S104 - in the lab's namespace
        self.listener_port = listener.getsockname()[1]

        def accept() -> None:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                connection.close()

        self._listener = listener
        threading.Thread(target=accept, name="vfw-c-listener", daemon=True).start()

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.shutdown()
            self.daemon.server_close()
        if self._listener is not None:
            self._listener.close()
        for name in [*self.interfaces.values(), self.client_interface]:
            for namespace in (self.namespaces.server, self.namespaces.client):
                subprocess.run(["ip", "-n", namespace, "link", "del", name], capture_output=True)
        self.namespaces.remove()
        shutil.rmtree(self.workdir, ignore_errors=True)


def node_settings(node: WireguardNode) -> list[dict]:
    """node-x1's `wireguard` entries in the controller's settings, as the fleet plan makes them."""
    entries = []
    for profile_id, interface in node.interfaces.items():
        ipv4, ipv6 = (ipaddress.ip_network(SLICES[profile_id][key]) for key in ("ipv4_range", "ipv6_range"))
        entries.append(
            {
                "profile": profile_id,
                "interface": interface,
                "port": SLICES[profile_id]["port"],
                "ipv4_range": str(ipv4),
                "ipv6_range": str(ipv6),
                "ipv4_address": str(ipv4.network_address + 1),
                "ipv6_address": str(ipv6.network_address + 1),
            }
        )
    return entries


def _start_daemon(node: WireguardNode, node_lab: NodeLab) -> None:
    node.daemon = start_daemon(
        node_lab,
        node.workdir / "maintenance",
        wireguard=[
            {
                "profile_id": profile_id,
                "interface": interface,
                "port": SLICES[profile_id]["port"],
                "ipv4_range": SLICES[profile_id]["ipv4_range"],
                "ipv6_range": SLICES[profile_id]["ipv6_range"],
            }
            for profile_id, interface in node.interfaces.items()
        ],
    )
    threading.Thread(target=node.daemon.serve_forever, name="vpnfleet-wg-daemon", daemon=True).start()


def start_wireguard_node(node_lab: NodeLab) -> WireguardNode:
    workdir = Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}-"))
    namespaces = Namespaces.create(NAME_PREFIX, NODE_X1_ADDRESS, CLIENT_ADDRESS, UNDERLAY_PREFIX)
    node = WireguardNode(workdir, namespaces)
    try:
        for profile_id in SLICES:
            node.start_interface(profile_id)
        node._serve()
        _start_daemon(node, node_lab)
        return node
    except BaseException:
        node.stop()
        raise
