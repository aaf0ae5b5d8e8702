"""What is happening on the nodes now, joined with what the database knows about it."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from vpnfleet.controller.daemons import NodeAnswer, NodeHealth
from vpnfleet.controller.models import VpnConfig
from vpnfleet.controller.settings import OPENVPN, WIREGUARD, EntryPoint, Node, NodeProcess, Settings
from vpnfleet.controller.state import Controller
from vpnfleet.shared.node_facts import CLIENTS_PER_PROCESS

if TYPE_CHECKING:
    from vpnfleet.controller.wireguard import LivePeer


@dataclass(frozen=True)
class LiveConnection:
    node: Node
    common_name: str
    ipv4: str | None
    ipv6: str | None
    details: dict  # everything else the daemon reported (real address, bytes, since, ...)
    config: VpnConfig | None  # None: a certificate this controller does not know


@dataclass(frozen=True)
class FleetView:
    connections: list[LiveConnection]
    answered: list[Node]
    unreachable: list[NodeAnswer]


def live_connections(controller: Controller, db: Session) -> FleetView:
    answers = controller.daemons.connection_lists()
    reported = [(answer.node, entry) for answer in answers if answer.ok for entry in answer.data]
    names = {str(entry.get("common_name", "")) for unused_name, entry in reported}
    configs = {
        config.common_name: config
        for config in db.scalars(select(VpnConfig).where(VpnConfig.common_name.in_(names)))
    }
    connections = [
        LiveConnection(
            node=node,
            common_name=str(entry.get("common_name", "")),
            ipv4=entry.get("ip_four"),
            ipv6=entry.get("ip_six"),
            details={
                key: value for key, value in entry.items() if key not in ("common_name", "ip_four", "ip_six")
            },
            config=configs.get(str(entry.get("common_name", ""))),
        )
        for node, entry in reported
    ]
    return FleetView(
        connections=connections,
        answered=[a.node for a in answers if a.ok],
        unreachable=[a for a in answers if not a.ok],
    )


@dataclass(frozen=True)
class CapacityRow:
    profile_id: str
    location: str
    protocol: str  # OPENVPN or WIREGUARD
    # OpenVPN: clients connected now; WireGuard: configs holding an address of the node, connected
    # or not (what a WireGuard slice runs out of).
    clients: int
    capacity: int | None  # None when a process of it has no known maximum
    nodes_unreachable: int


def capacity_table(
    settings: Settings, view: FleetView, peers: list[LivePeer], peers_unreachable: list[NodeAnswer]
) -> list[CapacityRow]:
    """Clients now against capacity, per profile, location and protocol (the nodes' lists of
    OpenVPN clients and of WireGuard peers)."""
    rows = []
    for profile in settings.profiles:
        for location in profile_locations(settings, profile.id):
            here = [node for node in settings.nodes if node.location == location]
            openvpn = [node for node in here if node.processes_of(profile.id)]
            if openvpn:
                processes = [process for node in openvpn for process in node.processes_of(profile.id)]
                limits = [process.max_clients for process in processes]
                known = [limit for limit in limits if limit is not None]
                rows.append(
                    CapacityRow(
                        profile.id,
                        location,
                        OPENVPN,
                        clients=_clients_of(profile.id, location, view.connections),
                        capacity=sum(known) if len(known) == len(limits) else None,
                        nodes_unreachable=_unreachable({node.name for node in openvpn}, view.unreachable),
                    )
                )
            slices = {node.name: slice_ for node in here if (slice_ := node.wireguard_of(profile.id))}
            if slices:
                rows.append(
                    CapacityRow(
                        profile.id,
                        location,
                        WIREGUARD,
                        clients=_clients_of(profile.id, location, peers),
                        capacity=sum(slice_.client_addresses for slice_ in slices.values()),
                        nodes_unreachable=_unreachable(slices.keys(), peers_unreachable),
                    )
                )
    return rows


def _clients_of(profile_id: str, location: str, entries: Sequence[LiveConnection | LivePeer]) -> int:
    """The entries (clients or peers) at the location whose config is of the profile."""
    return sum(
        1
        for entry in entries
        if entry.node.location == location and entry.config and entry.config.profile_id == profile_id
    )


def _unreachable(node_names: Iterable[str], answers: list[NodeAnswer]) -> int:
    return len(set(node_names) & {answer.node.name for answer in answers})


# --- Node choice: which nodes a new config names, in which order (docs/controller.md) ---

AUTOMATIC = ""  # the location a user who did not choose one gets: every location of the profile


class NoNodeAvailable(Exception):
    """No node of the profile (in the chosen locations) answers and takes new clients now."""


@dataclass(frozen=True)
class Candidate:
    """A node that may take a new client of a profile: up, not in maintenance, and with at least
    one process of the profile that answered its daemon."""

    node: Node
    load: float  # clients over capacity of the profile's answering processes + rel_load/100
    # By protocol, where clients should connect: the node's public ports of the profile where it
    # has them (nftables spreads them over the processes), else its least full process first.
    entry_points: dict[str, list[EntryPoint | NodeProcess]]


def profile_locations(settings: Settings, profile_id: str) -> list[str]:
    return sorted(
        {
            node.location
            for node in settings.nodes
            if node.processes_of(profile_id) or node.wireguard_of(profile_id)
        }
    )


def candidates(settings: Settings, profile_id: str, health: dict[str, NodeHealth]) -> list[Candidate]:
    """The nodes that may take a new client of the profile now, in the settings' order."""
    found = []
    for node in settings.nodes:
        state = health.get(node.name)
        if state is None or not state.up or state.maintenance:
            continue
        answering = state.answering(profile_id)
        processes = [
            (process, answering[name]) for name, process in _named(node, profile_id) if name in answering
        ]
        if not processes:
            continue
        points = _entry_points(processes)
        public = node.entry_points_of(profile_id)
        if public:
            # Only the protocols some process of which answered: a public port leads to them.
            points = {proto: [entry for entry in public if entry.proto == proto] for proto in points}
            points = {proto: entries for proto, entries in points.items() if entries}
        found.append(Candidate(node, _load(processes, state.rel_load), points))
    return found


def _named(node: Node, profile_id: str) -> list[tuple[str, NodeProcess]]:
    """The profile's processes of the node with the names their daemon reports them by."""
    return [
        (process.name or f"{profile_id}-{index}", process)
        for index, process in enumerate(node.processes_of(profile_id))
    ]


def _load(processes: list[tuple[NodeProcess, int]], rel_load: int | None) -> float:
    """Address slots in use plus CPU in use, each as a fraction: a node full of clients and a
    node busy with a few heavy ones both go to the back. Slots count only where every process
    has a known maximum."""
    limits = [process.max_clients for process, unused_clients in processes]
    slots = 0.0
    if None not in limits and sum(limit or 0 for limit in limits) > 0:
        slots = sum(clients for unused_process, clients in processes) / sum(limit or 0 for limit in limits)
    return slots + (rel_load or 0) / 100


def _entry_points(processes: list[tuple[NodeProcess, int]]) -> dict[str, list[EntryPoint | NodeProcess]]:
    def fullness(item: tuple[NodeProcess, int]) -> float:
        process, clients = item
        return clients / process.max_clients if process.max_clients else float(clients)

    points: dict[str, list[EntryPoint | NodeProcess]] = {}
    for item in sorted(processes, key=fullness):
        points.setdefault(item[0].proto, []).append(item[0])
    return points


def rank_now(found: list[Candidate], location: str = AUTOMATIC) -> list[Candidate]:
    """For a config made at every connection (the apps): the chosen location first, then the
    least loaded node first."""
    return sorted(
        found, key=lambda c: (location != AUTOMATIC and c.node.location != location, c.load, c.node.name)
    )


def rank_for_months(
    found: list[Candidate], location: str = AUTOMATIC, rng: random.Random | None = None
) -> list[Candidate]:
    """For a config that lives for months (the portal): the chosen location first, in random
    order within a location's group, so that configs spread over the nodes evenly rather than
    all naming the node that happened to be least loaded on the day they were made."""
    shuffled = list(found)
    (rng or random.SystemRandom()).shuffle(shuffled)
    return sorted(shuffled, key=lambda c: location != AUTOMATIC and c.node.location != location)


def remote_lines(ranked: list[Candidate], fallback_nodes: int, prefer_tcp: bool = False) -> list[str]:
    """The config's remotes: the first node, then up to ``fallback_nodes`` more, one entry point
    per node and protocol, UDP first (TCP first if asked).

    Protocol before node: a client told to move on ("RESTART,[N]": drain, or a UDP process that
    stops) takes the next remote, and that must be another node, not the same node's other
    protocol. One entry point per node and protocol: a second one on the same node would be
    where a client of a drained node lands next.
    """
    chosen = ranked[: 1 + fallback_nodes]
    order = ("tcp", "udp") if prefer_tcp else ("udp", "tcp")
    return [
        f"remote {candidate.node.public_address} {candidate.entry_points[proto][0].port} {proto}"
        for proto in order
        for candidate in chosen
        if candidate.entry_points.get(proto)
    ]


def choose_remotes(
    settings: Settings,
    profile_id: str,
    health: dict[str, NodeHealth],
    *,
    lives_for_months: bool,
    location: str = AUTOMATIC,
    prefer_tcp: bool = False,
) -> list[str]:
    """The remote lines of a new config, or NoNodeAvailable naming why there are none."""
    found = candidates(settings, profile_id, health)
    ranked = _ranked(settings, profile_id, found, lives_for_months, location)
    return remote_lines(ranked, settings.config_fallback_nodes, prefer_tcp)


def _ranked(
    settings: Settings, profile_id: str, found: list[Candidate], lives_for_months: bool, location: str
) -> list[Candidate]:
    if location != AUTOMATIC:
        if location not in profile_locations(settings, profile_id):
            raise ValueError(f"profile {profile_id} is not served in location {location}")
    if not found:
        raise NoNodeAvailable(f"no node serving profile {profile_id} takes new clients now; try again later")
    return rank_for_months(found, location) if lives_for_months else rank_now(found, location)


def wireguard_candidates(
    settings: Settings, profile_id: str, health: dict[str, NodeHealth]
) -> list[Candidate]:
    """The nodes that may take a new WireGuard peer of the profile now: up, not in maintenance,
    and reporting the public key of the profile's interface (no key: the interface is not up)."""
    found = []
    for node in settings.nodes:
        interface = node.wireguard_of(profile_id)
        state = health.get(node.name)
        if interface is None or state is None or not state.up or state.maintenance:
            continue
        if state.wireguard_key(interface.interface) is None:
            continue
        share = (state.wireguard_connected or 0) / max(1, interface.client_addresses)
        load = share + (state.rel_load or 0) / 100
        found.append(Candidate(node, load, {}))
    return found


def choose_wireguard_node(
    settings: Settings,
    profile_id: str,
    health: dict[str, NodeHealth],
    *,
    lives_for_months: bool,
    location: str = AUTOMATIC,
) -> Node:
    """The node of a new WireGuard config (one endpoint: WireGuard has no list of remotes), as
    for OpenVPN: the chosen location first, then the least loaded (an app) or at random (the portal)."""
    found = wireguard_candidates(settings, profile_id, health)
    return _ranked(settings, profile_id, found, lives_for_months, location)[0].node


# --- Maintenance (drain) ---


class DrainRefused(Exception):
    """The node was not put into (or out of) maintenance; the message says why."""

    def __init__(self, message: str, needs_force: bool = False):
        super().__init__(message)
        self.needs_force = needs_force  # only a forced drain would do it


@dataclass(frozen=True)
class MaintenanceChange:
    node: Node
    on: bool
    changed: bool
    moved: int  # clients told to move on to another node
    warning: str | None  # set when a forced drain left a location without service


def last_in_location(settings: Settings, node: Node, health: dict[str, NodeHealth]) -> list[str]:
    """The profiles for which ``node`` is the last node of its location taking new clients."""
    alone = []
    for profile in settings.profiles:
        if not node.processes_of(profile.id):
            continue
        others = [
            candidate
            for candidate in candidates(settings, profile.id, health)
            if candidate.node.location == node.location and candidate.node.name != node.name
        ]
        if not others:
            alone.append(profile.id)
    return alone


def set_maintenance(controller: Controller, name: str, on: bool, force: bool = False) -> MaintenanceChange:
    """Drain (on) or undrain a node through its daemon. Draining the last node of a location
    that takes clients of a profile is refused unless forced."""
    settings = controller.settings
    node = settings.node(name)
    if node is None:
        raise DrainRefused(f"no such node: {name}")
    warning = None
    if on:
        alone = last_in_location(settings, node, controller.daemons.health.get())
        if alone:
            warning = (
                f"{node.name} is the last node of location {node.location} that takes new clients "
                f"of profile(s) {', '.join(alone)}: draining it leaves the location without them"
            )
            if not force:
                raise DrainRefused(warning + "; drain it with force to do so anyway", needs_force=True)
    answer = controller.daemons.set_maintenance(node, on)
    if not answer.ok or not isinstance(answer.data, dict):
        raise DrainRefused(f"{node.name} did not take the change: {answer.error or 'unreadable answer'}")
    return MaintenanceChange(
        node=node,
        on=on,
        changed=bool(answer.data.get("changed")),
        moved=int(answer.data.get("moved_count") or 0),
        warning=warning,
    )


# --- The admin's node table ---


@dataclass(frozen=True)
class ProcessRow:
    name: str
    profile_id: str
    entry: str  # proto/port
    clients: int | None  # None: did not answer
    address_slots: int | None  # the process's max-clients, from the plan


@dataclass(frozen=True)
class NodeRow:
    health: NodeHealth
    processes: list[ProcessRow]
    address_slots: int | None  # sum of the processes' max-clients; None where one is unknown
    cpu_estimate: int | None  # cores x CLIENTS_PER_PROCESS, as playbooks/capacity.yml counts
    clients: int | None

    @property
    def node(self) -> Node:
        return self.health.node


def node_rows(settings: Settings, health: dict[str, NodeHealth]) -> list[NodeRow]:
    rows = []
    for node in settings.nodes:
        state = health[node.name]
        reported = {process.name: process for process in state.processes}
        processes = []
        for profile in settings.profiles:
            for name, process in _named(node, profile.id):
                seen = reported.get(name)
                processes.append(
                    ProcessRow(
                        name=name,
                        profile_id=profile.id,
                        entry=f"{process.proto}/{process.port}",
                        clients=seen.clients if seen else None,
                        address_slots=process.max_clients,
                    )
                )
        limits = [process.address_slots for process in processes]
        cores = state.info.get("cpu_count") if state.info else None
        counted = [process.clients for process in processes]
        rows.append(
            NodeRow(
                health=state,
                processes=processes,
                address_slots=None if None in limits else sum(limit or 0 for limit in limits),
                cpu_estimate=cores * CLIENTS_PER_PROCESS if isinstance(cores, int) else None,
                clients=None if not state.up else sum(count or 0 for count in counted),
            )
        )
    return rows
