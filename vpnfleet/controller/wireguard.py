"""WireGuard peers: the address a config holds on its node, the wg-quick config, and the node's
peer list kept equal to what the controller knows.

A WireGuard node checks nothing at connect time: a peer it lists is a client it admits. So the
controller adds a peer before it hands out the config, removes it the moment its config ends
(deleted, revoked, expired, its user disabled: ``release``) and puts the nodes' lists right
where they drifted (a node that restarted lost its peers, a removal that did not reach a node:
``reconcile``, run on the timer and when the node health shows a node back or with a peer count
other than the controller's).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from vpnfleet.controller.daemons import NodeAnswer, NodeHealth
from vpnfleet.controller.models import ConnectionLogEntry, User, VpnConfig, WireguardPeer, utcnow
from vpnfleet.controller.settings import WIREGUARD, Node, Profile, Settings, WireguardSlice
from vpnfleet.controller.state import Controller

log = logging.getLogger(__name__)

KEY_BYTES = 32
_Result = TypeVar("_Result")


class BadPublicKey(ValueError):
    """A public_key that is not a WireGuard key; the message says why."""


class NoAddressFree(Exception):
    """Every client address of the node's slice is held."""


def check_public_key(text: str) -> str:
    """A WireGuard public key: standard base64 of 32 bytes (44 characters, one '=')."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadPublicKey("public_key is not base64") from None
    if len(raw) != KEY_BYTES:
        raise BadPublicKey(f"public_key must be {KEY_BYTES} bytes, got {len(raw)}")
    if base64.b64encode(raw).decode() != text:
        raise BadPublicKey("public_key is not in its canonical base64 form")
    return text


def make_key_pair() -> tuple[str, str]:
    """A new X25519 key pair (private, public) in WireGuard's base64, for a portal config: the
    user gets the private key once, in the config; the controller keeps only the public one."""
    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw_private).decode(), base64.b64encode(raw_public).decode()


def _node_address(network: ipaddress.IPv4Network | ipaddress.IPv6Network, given: str | None):
    return ipaddress.ip_address(given) if given else next(network.hosts())


def allocate(db: Session, node: Node, interface: WireguardSlice) -> tuple[str, str | None]:
    """A free client address of the node's slice, and the IPv6 address at the same offset.

    Free: no unreleased peer of the node holds it. The unique index on (node, ipv4) of unreleased
    peers turns a race between two allocations into an IntegrityError (the caller retries)."""
    taken = set(
        db.scalars(
            select(WireguardPeer.ipv4).where(
                WireguardPeer.node == node.name, WireguardPeer.released_at.is_(None)
            )
        )
    )
    network = ipaddress.ip_network(interface.ipv4_range)
    taken.add(str(_node_address(network, interface.ipv4_address)))
    for address in network.hosts():
        if str(address) not in taken:
            break
    else:
        raise NoAddressFree(
            f"no free WireGuard address on node {node.name} for profile {interface.profile_id}"
        )
    if not interface.ipv6_range:
        return str(address), None
    network6 = ipaddress.ip_network(interface.ipv6_range)
    offset = int(address) - int(network.network_address)
    return str(address), str(network6.network_address + offset)


def record_peer(
    db: Session, config: VpnConfig, user: User, node: Node, public_key: str, ipv4: str, ipv6: str | None
) -> WireguardPeer:
    """The peer row and its connection-log row, from now until its release (not committed)."""
    peer = WireguardPeer(
        config_id=config.id,
        node=node.name,
        profile_id=config.profile_id,
        public_key=public_key,
        ipv4=ipv4,
        ipv6=ipv6,
        allocated_at=config.created_at,
    )
    db.add(peer)
    db.add(
        ConnectionLogEntry(
            user_id=user.id,
            username=user.username,
            common_name=config.common_name,
            profile_id=config.profile_id,
            node=node.name,
            location=node.location,
            ipv4=ipv4,
            ipv6=ipv6,
            connected_at=config.created_at,
            protocol=WIREGUARD,
        )
    )
    return peer


def ip_nets(peer: WireguardPeer) -> list[str]:
    """What the node's interface routes to the peer (its AllowedIPs on the node)."""
    return [f"{peer.ipv4}/32"] + ([f"{peer.ipv6}/128"] if peer.ipv6 else [])


def _endpoint(node: Node, port: int) -> str:
    host = node.public_address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_config(
    profile: Profile,
    node: Node,
    interface: WireguardSlice,
    server_public_key: str,
    peer: WireguardPeer,
    private_key: str | None = None,
) -> str:
    """The wg-quick config, as eduVPN hands it out: the app puts its own PrivateKey in (it sent
    only the public one); a portal config carries the key the portal made."""
    network = ipaddress.ip_network(interface.ipv4_range)
    addresses = [f"{peer.ipv4}/{network.prefixlen}"]
    slices = [str(network)]
    if peer.ipv6 and interface.ipv6_range:
        network6 = ipaddress.ip_network(interface.ipv6_range)
        addresses.append(f"{peer.ipv6}/{network6.prefixlen}")
        slices.append(str(network6))
    # A full tunnel takes IPv6 too, with or without an IPv6 range, so that nothing leaks around
    # it; a split tunnel its routes and the slices (the node's own address, its DNS maybe).
    allowed = ["0.0.0.0/0", "::/0"] if profile.default_gateway else [*slices, *profile.routes]
    lines = [f"# {profile.display_name}", "[Interface]"]
    if private_key:
        lines.append(f"PrivateKey = {private_key}")
    lines.append(f"Address = {', '.join(addresses)}")
    if profile.dns:
        lines.append(f"DNS = {', '.join([*profile.dns, *profile.dns_search])}")
    lines += [
        "",
        "[Peer]",
        f"PublicKey = {server_public_key}",
        f"AllowedIPs = {', '.join(dict.fromkeys(allowed))}",
        f"Endpoint = {_endpoint(node, interface.port)}",
    ]
    return "\n".join(lines) + "\n"


def remove_on_nodes(controller: Controller, removals: Iterable[tuple[str, str]]) -> list[str]:
    """POST /w/remove_peer for each (node name, public key), every node at once; the nodes that
    could not be told (the reconcile removes the peers there once they answer)."""
    settings = controller.settings
    by_node: dict[str, list[str]] = {}
    for name, key in removals:
        by_node.setdefault(name, []).append(key)
    nodes = [(node, by_node[node.name]) for node in settings.nodes if node.name in by_node]
    if not nodes:
        return []

    def on(item: tuple[Node, list[str]]) -> str | None:
        node, keys = item
        failed = [key for key in keys if not controller.daemons.remove_peer(node, key).ok]
        return node.name if failed else None

    with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
        return sorted(name for name in pool.map(on, nodes) if name)


def release(controller: Controller, db: Session, common_names: Iterable[str], reason: str) -> list[str]:
    """End the peers of these configs (those that are WireGuard ones): released in the database
    and their log rows closed, committed, then removed on their nodes. Returns the nodes that
    could not be told."""
    names = list(common_names)
    if not names:
        return []
    peers = list(
        db.scalars(
            select(WireguardPeer)
            .join(VpnConfig, VpnConfig.id == WireguardPeer.config_id)
            .where(VpnConfig.common_name.in_(names), WireguardPeer.released_at.is_(None))
        )
    )
    return _release_peers(controller, db, [(peer, reason) for peer in peers])


def _release_peers(controller: Controller, db: Session, peers: list[tuple[WireguardPeer, str]]) -> list[str]:
    if not peers:
        return []
    now = utcnow()
    for peer, reason in peers:
        mark_released(db, peer, reason, now)
    db.commit()
    return remove_on_nodes(controller, [(peer.node, peer.public_key) for peer, unused_reason in peers])


def mark_released(db: Session, peer: WireguardPeer, reason: str, now: datetime) -> None:
    """The peer's address and key free from now, its log row closed (not committed)."""
    peer.released_at = now
    db.execute(
        update(ConnectionLogEntry)
        .where(
            ConnectionLogEntry.common_name == peer.config.common_name,
            ConnectionLogEntry.protocol == WIREGUARD,
            ConnectionLogEntry.disconnected_at.is_(None),
        )
        .values(disconnected_at=now, close_reason=reason)
    )


def _why_ended(config: VpnConfig, now: datetime) -> str | None:
    if config.revoked_at is not None:
        return "revoked"
    if config.user.is_disabled:
        return "user disabled"
    if config.expires_at <= now:
        return "expired"
    return None


@dataclass
class ReconcileReport:
    released: int = 0  # peers whose config ended without their release (expiry above all)
    added: int = 0  # peers a node lacked
    removed: int = 0  # peers a node had that the controller does not hold for it
    nodes_unreachable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def release_ended(controller: Controller, db: Session) -> ReconcileReport:
    """Release the peers whose config ended without their release (expiry above all: every other
    end releases at once) and remove them from their nodes."""
    now = utcnow()
    candidates = db.scalars(
        select(WireguardPeer)
        .join(VpnConfig, VpnConfig.id == WireguardPeer.config_id)
        .join(User, User.id == VpnConfig.user_id)
        .where(
            WireguardPeer.released_at.is_(None),
            or_(VpnConfig.revoked_at.is_not(None), VpnConfig.expires_at <= now, User.is_disabled.is_(True)),
        )
    )
    ended = [(peer, reason) for peer in candidates if (reason := _why_ended(peer.config, now))]
    return ReconcileReport(released=len(ended), nodes_unreachable=_release_peers(controller, db, ended))


def next_expiry(db: Session) -> datetime | None:
    """When the next config that holds a peer expires (in the past: one to release now)."""
    return db.scalar(
        select(func.min(VpnConfig.expires_at))
        .join(WireguardPeer, WireguardPeer.config_id == VpnConfig.id)
        .where(WireguardPeer.released_at.is_(None), VpnConfig.revoked_at.is_(None))
    )


def reconcile(
    controller: Controller, db: Session, node_names: Iterable[str] | None = None
) -> ReconcileReport:
    """Make each WireGuard node's peers those the controller holds for it, no more, no fewer.

    Each node's list is read before the database: a peer that /connect adds meanwhile is in the
    database before it is on the node, so it is never taken for one the controller does not know."""
    report = release_ended(controller, db)
    wanted = set(node_names) if node_names is not None else None
    nodes = [
        node
        for node in controller.settings.nodes
        if node.wireguard and (wanted is None or node.name in wanted)
    ]
    if not nodes:
        return report
    with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
        listed = dict(zip(nodes, pool.map(controller.daemons.peer_list, nodes), strict=True))
    # Plain values: the nodes are asked in threads, and a session is not for sharing between them.
    held: dict[str, dict[str, list[str]]] = {}
    for peer in db.scalars(select(WireguardPeer).where(WireguardPeer.released_at.is_(None))):
        held.setdefault(peer.node, {})[peer.public_key] = sorted(ip_nets(peer))
    db.rollback()  # no transaction stays open while the nodes are asked

    def on(node: Node) -> tuple[int, int, bool]:
        answer = listed[node]
        if not answer.ok:
            return 0, 0, False
        present = {str(entry.get("public_key")): entry for entry in answer.data}
        mine = held.get(node.name, {})
        added = removed = 0
        ok = True
        # Strangers go first: one may hold the address of a peer the controller holds (a removal
        # the node missed), and the node refuses that peer (409) while it does.
        for key in present.keys() - mine.keys():
            ok = controller.daemons.remove_peer(node, key).ok and ok
            removed += 1
        for key, nets in mine.items():
            entry = present.get(key)
            if entry is None or sorted(entry.get("ip_net") or []) != nets:
                ok = controller.daemons.add_peer(node, key, nets).ok and ok
                added += 1
        return added, removed, ok

    with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
        for node, (added, removed, ok) in zip(nodes, pool.map(on, nodes), strict=True):
            report.added += added
            report.removed += removed
            if not ok and node.name not in report.nodes_unreachable:
                report.nodes_unreachable.append(node.name)
    if report.added or report.removed or report.released:
        log.info("WireGuard reconcile: %s", report.as_dict())
    return report


@dataclass(frozen=True)
class LivePeer:
    """A peer as its node lists it, with the config the controller holds for its key."""

    node: Node
    public_key: str
    ip_nets: list[str]
    last_handshake: str | None
    bytes_in: int | None
    bytes_out: int | None
    config: VpnConfig | None  # None: a peer the controller does not know (the reconcile removes it)


def live_peers(controller: Controller, db: Session) -> tuple[list[LivePeer], list[NodeAnswer]]:
    """Every WireGuard node's peers now, and the nodes that did not answer."""
    nodes = [node for node in controller.settings.nodes if node.wireguard]
    if not nodes:
        return [], []
    with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
        answers = list(pool.map(controller.daemons.peer_list, nodes))
    held = {
        (peer.node, peer.public_key): peer.config
        for peer in db.scalars(select(WireguardPeer).where(WireguardPeer.released_at.is_(None)))
    }
    found = []
    for answer in answers:
        for entry in answer.data if answer.ok else []:
            key = str(entry.get("public_key", ""))
            found.append(
                LivePeer(
                    node=answer.node,
                    public_key=key,
                    ip_nets=[str(net) for net in entry.get("ip_net") or []],
                    last_handshake=entry.get("last_handshake_time"),
                    bytes_in=entry.get("bytes_in"),
                    bytes_out=entry.get("bytes_out"),
                    config=held.get((answer.node.name, key)),
                )
            )
    return found, [answer for answer in answers if not answer.ok]


def peer_counts(db: Session) -> dict[str, int]:
    """The unreleased peers the controller holds per node."""
    return dict(
        db.execute(
            select(WireguardPeer.node, func.count())
            .where(WireguardPeer.released_at.is_(None))
            .group_by(WireguardPeer.node)
        ).all()
    )


def watch_health(controller: Controller) -> None:
    """Reconcile a node, in the background, when the node health sees it answer again (it may
    have restarted and lost its peers) or report a peer count other than the controller's."""
    wireguard_nodes = {node.name for node in controller.settings.nodes if node.wireguard}
    if not wireguard_nodes:
        return
    busy: set[str] = set()
    lock = threading.Lock()

    def run(names: list[str]) -> None:
        db = controller.sessions()
        try:
            reconcile(controller, db, names)
        except Exception:
            log.exception("WireGuard reconcile of %s failed", ", ".join(names))
        finally:
            db.close()
            with lock:
                busy.difference_update(names)

    def on_round(health: dict[str, NodeHealth], came_back: list[str]) -> None:
        due = set(came_back) & wireguard_nodes
        off = [
            name for name in wireguard_nodes if health.get(name) and health[name].wireguard_peers is not None
        ]
        if off:
            db = controller.sessions()
            try:
                held = peer_counts(db)
            finally:
                db.close()
            due |= {name for name in off if health[name].wireguard_peers != held.get(name, 0)}
        with lock:
            names = sorted(due - busy)
            busy.update(names)
        if names:
            threading.Thread(target=run, args=(names,), name="wireguard-reconcile", daemon=True).start()

    controller.daemons.health.on_round = on_round


# A wake a little after the expiry, not a little before: the wait counts on another clock than
# the database's times, and a wake before the expiry finds nothing to release.
_EXPIRY_MARGIN_SECONDS = 0.05


def serve(
    controller: Controller,
    every: float,
    stop: threading.Event,
    told: Callable[[ReconcileReport], None],
) -> None:
    """The reconcile service (``vpnfleet-controller wireguard-reconcile --every``): a whole
    reconcile every ``every`` seconds, and between two rounds a release at each config's expiry,
    so that an expired config's peer leaves its node then, not up to a round later. The next
    expiry is looked up after each round and each wake: what /connect makes in between is seen
    at the next of those. ``told`` gets each round's and each wake's report; a failure is logged
    and the service waits for its next round."""
    while not stop.is_set():
        _guarded(controller, reconcile, told)
        round_ends = time.monotonic() + every
        while (left := round_ends - time.monotonic()) > 0:
            expiry = _guarded(controller, lambda unused, db: next_expiry(db))
            until = (expiry - utcnow()).total_seconds() + _EXPIRY_MARGIN_SECONDS if expiry else left
            if until >= left:
                stop.wait(left)
                break
            if stop.wait(max(0.0, until)):
                return
            if _guarded(controller, release_ended, told) is None:
                stop.wait(max(0.0, round_ends - time.monotonic()))
                break


def _guarded(
    controller: Controller,
    work: Callable[[Controller, Session], _Result],
    told: Callable[[_Result], None] | None = None,
) -> _Result | None:
    """``work`` on a session of its own; None when it failed (logged)."""
    db = controller.sessions()
    try:
        result = work(controller, db)
    except Exception:
        log.exception("WireGuard reconcile failed; trying again at the next round")
        return None
    finally:
        db.close()
    if told is not None:
        told(result)
    return result


def serves(settings: Settings) -> bool:
    """Whether any node has a WireGuard interface (else there is nothing to reconcile)."""
    return any(node.wireguard for node in settings.nodes)
