"""The node's WireGuard interfaces, one per profile, read and changed through `wg` (wireguard-tools).

`wg` speaks netlink to the kernel's WireGuard and the UAPI socket (/run/wireguard/<name>.sock) to
wireguard-go, so the daemon does not care which of the two the node runs. The interfaces come up
with the node (the node role's units) without peers: the peers live only in the running interface,
added and removed here at the controller's request, and a restarted interface gets them back from
the controller's reconcile (docs/node.md).

Which interface a peer belongs to follows from its addresses: each interface holds the node's
part of one profile's WireGuard ranges, and a peer's addresses must lie in exactly one of them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import subprocess
import threading
from dataclasses import dataclass

# A peer that made no handshake for this long is not connected: WireGuard renews its session
# every 2 minutes while packets flow, and gives a session up after 3.
CONNECTED_WITHIN_SECONDS = 180
WG_TIMEOUT_SECONDS = 5.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WireGuardError(Exception):
    """`wg` could not read or change an interface; the message is shown to the controller."""


class PeerRefused(ValueError):
    """A peer the daemon does not add; ``conflict`` when it clashes with a peer already there."""

    def __init__(self, reason: str, conflict: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


@dataclass(frozen=True)
class Interface:
    """One profile's WireGuard interface on this node, as the node role's settings describe it."""

    profile_id: str
    name: str
    port: int
    ipv4_range: ipaddress.IPv4Network
    ipv6_range: ipaddress.IPv6Network | None = None

    @property
    def ranges(self) -> list[Network]:
        return [network for network in (self.ipv4_range, self.ipv6_range) if network is not None]

    def holds(self, network: Network) -> bool:
        return any(
            network.version == own.version and network.subnet_of(own)  # type: ignore[arg-type]
            for own in self.ranges
        )

    def reserved(self, network: Network) -> bool:
        """The part's network address, the node's own address (the first host) and IPv4's broadcast
        address go to no peer."""
        own = next(own for own in self.ranges if own.version == network.version)
        taken = {own.network_address, own.network_address + 1}
        if own.version == 4:
            taken.add(own.broadcast_address)
        return network.network_address in taken


@dataclass(frozen=True)
class Peer:
    interface: Interface
    public_key: str
    allowed_ips: tuple[str, ...]
    # Unix time of the latest handshake; 0 when there was none.
    latest_handshake: int
    bytes_received: int
    bytes_sent: int

    def connected(self, now: float) -> bool:
        return self.latest_handshake > 0 and now - self.latest_handshake <= CONNECTED_WITHIN_SECONDS


@dataclass(frozen=True)
class InterfaceReport:
    """What one interface said: its key and peers, or why it could not be asked."""

    interface: Interface
    public_key: str | None = None
    peers: tuple[Peer, ...] = ()
    error: str | None = None


def check_public_key(text: str) -> str:
    """A WireGuard public key: 32 bytes in standard base64 (44 characters)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(text) != 44 or len(raw) != 32:
        raise PeerRefused(f"public_key {text!r} is not a WireGuard key (32 bytes in base64, 44 characters)")
    return text


def check_peer_networks(texts: list[str]) -> list[Network]:
    """A peer's addresses: each one host (/32 or /128), at most one of each IP version."""
    networks = []
    for text in texts:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise PeerRefused(f"ip_net {text!r} is not a CIDR network: {exc}") from None
        if network.prefixlen != network.max_prefixlen:
            raise PeerRefused(
                f"ip_net {text!r}: a peer gets single addresses (/32, /128), "
                f"not a network of {network.num_addresses}"
            )
        networks.append(network)
    versions = [network.version for network in networks]
    if not networks:
        raise PeerRefused("ip_net is required (the peer's /32 and, with IPv6, its /128)")
    if len(set(versions)) != len(versions):
        raise PeerRefused("ip_net names more than one address of one IP version: %s" % ", ".join(texts))
    return networks


class WireGuard:
    """The node's WireGuard interfaces. Changes are made one at a time, so two requests cannot
    hand one address to two peers between the check and the change."""

    def __init__(self, interfaces: tuple[Interface, ...], command: str = "wg"):
        self.interfaces = interfaces
        self.command = command
        self._changing = threading.Lock()

    # ------------------------------------------------------------------ reading

    def reports(self) -> list[InterfaceReport]:
        return [self.report(interface) for interface in self.interfaces]

    def report(self, interface: Interface) -> InterfaceReport:
        try:
            dump = self._wg("show", interface.name, "dump")
        except WireGuardError as exc:
            return InterfaceReport(interface, error=str(exc))
        lines = dump.splitlines()
        if not lines:
            return InterfaceReport(interface, error=f"wg show {interface.name} dump said nothing")
        # The first line is the interface's own: private key, public key, port, fwmark. The
        # private key is dropped here and goes nowhere.
        own = lines[0].split("\t")
        public_key = own[1] if len(own) > 1 and own[1] != "(none)" else None
        peers = []
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) < 8:
                return InterfaceReport(interface, public_key, error=f"unexpected line from wg: {line!r}")
            key, unused_psk, unused_endpoint, allowed, handshake, received, sent = fields[:7]
            allowed_ips = tuple(item for item in allowed.split(",") if item and item != "(none)")
            try:
                peers.append(Peer(interface, key, allowed_ips, int(handshake), int(received), int(sent)))
            except ValueError:
                return InterfaceReport(interface, public_key, error=f"unexpected line from wg: {line!r}")
        return InterfaceReport(interface, public_key, tuple(peers))

    def interface_of(self, networks: list[Network]) -> Interface:
        """The one interface whose part holds every address of the peer."""
        holders = {
            interface for network in networks for interface in self.interfaces if interface.holds(network)
        }
        outside = [str(network) for network in networks if not any(i.holds(network) for i in self.interfaces)]
        if outside:
            known = "; ".join(
                "%s (%s): %s" % (i.name, i.profile_id, ", ".join(map(str, i.ranges))) for i in self.interfaces
            )
            raise PeerRefused(
                "ip_net %s lies in no WireGuard range of this node (%s)"
                % (", ".join(outside), known or "none")
            )
        if len(holders) > 1:
            raise PeerRefused(
                "ip_net lies in the ranges of more than one profile (%s): a peer belongs to one"
                % ", ".join(sorted(i.profile_id for i in holders))
            )
        [interface] = holders
        reserved = [str(network) for network in networks if interface.reserved(network)]
        if reserved:
            raise PeerRefused(
                "ip_net %s is the network's, the node's own or the broadcast address of %s"
                % (", ".join(reserved), interface.name)
            )
        return interface

    # ------------------------------------------------------------------ changing

    def add_peer(self, public_key: str, networks: list[Network]) -> Interface:
        """Add (or update) the peer on the interface its addresses belong to. An address another
        peer holds is refused (WireGuard would move it silently, cutting that peer off); the same
        key on another interface is taken off there: a key is one peer of the node."""
        interface = self.interface_of(networks)
        wanted = {str(network) for network in networks}
        with self._changing:
            reports = self.reports()
            for report in reports:
                if report.error and report.interface == interface:
                    raise WireGuardError(f"{interface.name}: {report.error}")
                for peer in report.peers:
                    if peer.public_key == public_key:
                        continue
                    clash = wanted & set(peer.allowed_ips)
                    if clash:
                        raise PeerRefused(
                            "ip_net %s belongs to another peer (%s) of %s: remove that peer first"
                            % (", ".join(sorted(clash)), peer.public_key, peer.interface.name),
                            conflict=True,
                        )
            for report in reports:
                if report.interface != interface and any(p.public_key == public_key for p in report.peers):
                    self._wg("set", report.interface.name, "peer", public_key, "remove")
            self._wg("set", interface.name, "peer", public_key, "allowed-ips", ",".join(sorted(wanted)))
        return interface

    def remove_peer(self, public_key: str) -> Peer | None:
        """Take the peer off whichever interface has it -> the peer as it was (its byte counts), or
        None when no interface has it."""
        with self._changing:
            found = None
            for report in self.reports():
                for peer in report.peers:
                    if peer.public_key == public_key:
                        self._wg("set", peer.interface.name, "peer", public_key, "remove")
                        found = found or peer
            return found

    def _wg(self, *arguments: str) -> str:
        try:
            result = subprocess.run(
                [self.command, *arguments],
                capture_output=True,
                text=True,
                timeout=WG_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WireGuardError(f"{self.command} {arguments[0]} {arguments[1]}: {exc}") from None
        if result.returncode != 0:
            message = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
            raise WireGuardError(f"wg {arguments[0]} {arguments[1]}: {message[0]}")
        return result.stdout
