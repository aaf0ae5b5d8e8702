"""The controller's Prometheus metrics (docs/controller.md, "Metrics").

Two kinds, because gunicorn runs several worker processes:
- events (connect checks, their latency, configs issued, failed logins) are counters and a
  histogram that each worker records; with PROMETHEUS_MULTIPROC_DIR set (the unit sets it)
  prometheus_client keeps them in files that any worker adds up at scrape time;
- the fleet's state (clients, capacity, free addresses, nodes up, maintenance, the CRL) is
  measured at scrape time by FleetCollector, from the nodes' daemons and the CA directory, so
  every worker answers the same and nothing goes stale between scrapes.

The names follow what ops teams already scrape: openvpn_exporter's
openvpn_server_connected_clients, eduVPN's eduvpn_active_connections, eduvpn_max_connections and
eduvpn_free_ips per profile (and protocol: udp and tcp for OpenVPN, wireguard); our own names
start with vpnfleet_. A WireGuard interface is labelled like a process (process: its name).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from flask import Blueprint, Response, abort, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select

from vpnfleet.controller.daemons import NodeHealth
from vpnfleet.controller.models import WireguardPeer
from vpnfleet.controller.settings import WIREGUARD, Node, Settings
from vpnfleet.controller.state import Controller, controller
from vpnfleet.shared.instances import instance_name

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"

CONNECT_CHECKS = Counter(
    "vpnfleet_connect_checks",
    "Connect checks the node hooks asked for, by profile and result (allowed or denied).",
    ["profile", "result"],
)
# The hooks give up after a few seconds; the buckets show how close checks come to that.
CONNECT_CHECK_SECONDS = Histogram(
    "vpnfleet_connect_check_duration_seconds",
    "Time the controller took to answer a node's connect check.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONFIGS_ISSUED = Counter(
    "vpnfleet_configs_issued",
    "VPN configs (client certificates) issued, by profile and by where (portal or api).",
    ["profile", "via"],
)
LOGINS_FAILED = Counter(
    "vpnfleet_logins_failed",
    "Portal logins that failed, by login method and reason (invalid, throttled, ...).",
    ["method", "reason"],
)


def connect_checked(profile_id: str, allowed: bool, seconds: float) -> None:
    CONNECT_CHECKS.labels(profile=profile_id, result="allowed" if allowed else "denied").inc()
    CONNECT_CHECK_SECONDS.observe(seconds)


def config_issued(profile_id: str, via: str) -> None:
    CONFIGS_ISSUED.labels(profile=profile_id, via=via).inc()


def login_failed(method: str, reason: str) -> None:
    LOGINS_FAILED.labels(method=method, reason=reason).inc()


def token_allowed(settings: Settings, authorization: str | None) -> bool:
    """Whether an Authorization header carries the scrape token whose SHA-256 the settings hold."""
    if settings.metrics_token_sha256 is None or not authorization:
        return False
    scheme, unused_space, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    return hmac.compare_digest(digest, settings.metrics_token_sha256)


def scrape(controller: Controller) -> bytes:
    """The exposition text: the events of every worker and the fleet measured now."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROCESS_ENVIRONMENT):
        multiprocess.MultiProcessCollector(registry)
    else:
        # One process (the development server, the tests): the events are in its own registry.
        registry.register(_EventsOf(REGISTRY))
    registry.register(FleetCollector(controller))
    return generate_latest(registry)


class _EventsOf(Collector):
    def __init__(self, source: CollectorRegistry):
        self.source = source

    def collect(self) -> Iterator[Metric]:
        names = {"vpnfleet_connect_checks", "vpnfleet_connect_check_duration_seconds"}
        names |= {"vpnfleet_configs_issued", "vpnfleet_logins_failed"}
        for metric in self.source.collect():
            if metric.name in names:
                yield metric


@dataclass(frozen=True)
class ProcessCount:
    """One OpenVPN process, or one WireGuard interface (protocol wireguard; process: the
    interface's name, its one "process"), of a node that answered."""

    node: Node
    profile_id: str
    process: str
    protocol: str
    max_clients: int | None
    clients: int | None  # connected now; None: the process (interface) did not answer
    # Addresses in use: an OpenVPN client holds one while connected, a WireGuard config from its
    # allocation to its release, connected or not (eduVPN's free WireGuard IPs count so too).
    in_use: int | None
    peers: int | None = None  # WireGuard: the peers the interface holds, as its node counts them


def process_counts(
    settings: Settings, health: list[NodeHealth], allocated: dict[tuple[str, str], int]
) -> list[ProcessCount]:
    """Every planned process and WireGuard interface of every node that answered, with the
    clients (peers) its daemon counted; ``allocated``: the controller's unreleased WireGuard
    peers by (node, profile)."""
    counts = []
    for node_health in health:
        if not node_health.up:
            continue
        reported = {process.name: process.clients for process in node_health.processes}
        node = node_health.node
        for profile in settings.profiles:
            for index, planned in enumerate(node.processes_of(profile.id)):
                name = planned.name or instance_name(profile.id, index)
                clients = reported.get(name)
                counts.append(
                    ProcessCount(node, profile.id, name, planned.proto, planned.max_clients, clients, clients)
                )
            interface = node.wireguard_of(profile.id)
            if interface is not None:
                peers, connected = node_health.wireguard_counts(interface.interface)
                held = allocated.get((node.name, profile.id), 0) if connected is not None else None
                counts.append(
                    ProcessCount(
                        node,
                        profile.id,
                        interface.interface,
                        WIREGUARD,
                        interface.client_addresses,
                        connected,
                        held,
                        peers,
                    )
                )
    return counts


class FleetCollector(Collector):
    """The fleet's state at scrape time: the nodes are asked afresh for every scrape, and the
    WireGuard addresses in use are the controller's database's.

    Not from the cache that node choice reads: each gunicorn worker keeps its own, so two
    scrapes answered by two workers would tell the same moment twice differently and a gauge
    would go back and forth. A scrape costs one /i/node per node, and its answers refresh that
    worker's cache for node choice too.
    """

    def __init__(self, controller: Controller):
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        settings = self.controller.settings
        health = list(self.controller.daemons.health.get(max_age=0).values())
        yield from _node_metrics(health)
        allocated = _allocated_wireguard(self.controller) if any(n.wireguard for n in settings.nodes) else {}
        counts = process_counts(settings, health, allocated)
        yield from _process_metrics(counts)
        yield from _wireguard_metrics(counts)
        yield from _profile_metrics(settings, counts)
        yield from _crl_metrics(settings.ca_dir / "crl.pem")


def _allocated_wireguard(controller: Controller) -> dict[tuple[str, str], int]:
    db = controller.sessions()
    try:
        rows = db.execute(
            select(WireguardPeer.node, WireguardPeer.profile_id, func.count())
            .where(WireguardPeer.released_at.is_(None))
            .group_by(WireguardPeer.node, WireguardPeer.profile_id)
        ).all()
    finally:
        db.close()
    return {(node, profile): count for node, profile, count in rows}


_NODE_LABELS = ["node", "location"]
_PROCESS_LABELS = ["node", "location", "profile", "process", "protocol"]
_PROFILE_LABELS = ["profile", "protocol"]


def _node_metrics(health: list[NodeHealth]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "vpnfleet_node_up", "1 when the node's daemon answered the controller.", labels=_NODE_LABELS
    )
    maintenance = GaugeMetricFamily(
        "vpnfleet_node_maintenance",
        "1 when the node's daemon reports maintenance mode (no new connections).",
        labels=_NODE_LABELS,
    )
    for node_health in health:
        labels = [node_health.node.name, node_health.node.location]
        up.add_metric(labels, 1 if node_health.up else 0)
        if node_health.up:
            maintenance.add_metric(labels, 1 if node_health.maintenance else 0)
    yield up
    yield maintenance


def _labels(count: ProcessCount) -> list[str]:
    return [count.node.name, count.node.location, count.profile_id, count.process, count.protocol]


def _process_metrics(counts: list[ProcessCount]) -> Iterator[Metric]:
    clients = GaugeMetricFamily(
        "openvpn_server_connected_clients",
        "Clients connected to one OpenVPN process (as openvpn_exporter names it).",
        labels=_PROCESS_LABELS,
    )
    limit = GaugeMetricFamily(
        "vpnfleet_process_max_clients",
        "Clients one OpenVPN process (or WireGuard interface) can take: the addresses of its slice.",
        labels=_PROCESS_LABELS,
    )
    free = GaugeMetricFamily(
        "vpnfleet_process_free_addresses",
        "Client addresses of one OpenVPN process (or WireGuard interface) not in use.",
        labels=_PROCESS_LABELS,
    )
    for count in counts:
        labels = _labels(count)
        if count.clients is not None and count.protocol != WIREGUARD:
            clients.add_metric(labels, count.clients)
        if count.max_clients is not None:
            limit.add_metric(labels, count.max_clients)
            if count.in_use is not None:
                free.add_metric(labels, max(0, count.max_clients - count.in_use))
    yield clients
    yield limit
    yield free


def _wireguard_metrics(counts: list[ProcessCount]) -> Iterator[Metric]:
    interfaces = [count for count in counts if count.protocol == WIREGUARD]
    if not interfaces:
        return
    peers = GaugeMetricFamily(
        "vpnfleet_wireguard_peers",
        "Peers one WireGuard interface holds, as its node counts them.",
        labels=_PROCESS_LABELS,
    )
    connected = GaugeMetricFamily(
        "vpnfleet_wireguard_connected_peers",
        "Peers of one WireGuard interface with a handshake in the last 3 minutes.",
        labels=_PROCESS_LABELS,
    )
    for count in interfaces:
        if count.peers is not None:
            peers.add_metric(_labels(count), count.peers)
        if count.clients is not None:
            connected.add_metric(_labels(count), count.clients)
    yield peers
    yield connected


def _profile_metrics(settings: Settings, counts: list[ProcessCount]) -> Iterator[Metric]:
    """eduVPN's per-profile names, over the processes and interfaces that answered, one series per
    protocol the profile's nodes serve (udp, tcp, wireguard): sum by (profile) is eduVPN's figure."""
    active = GaugeMetricFamily(
        "eduvpn_active_connections",
        "Clients connected to the profile (WireGuard: a handshake in the last 3 minutes), fleet-wide.",
        labels=_PROFILE_LABELS,
    )
    maximum = GaugeMetricFamily(
        "eduvpn_max_connections",
        "Clients the profile's answering processes and interfaces can take, fleet-wide.",
        labels=_PROFILE_LABELS,
    )
    free = GaugeMetricFamily(
        "eduvpn_free_ips", "Client addresses of the profile not in use, fleet-wide.", labels=_PROFILE_LABELS
    )
    for profile in settings.profiles:
        protocols = sorted({count.protocol for count in counts if count.profile_id == profile.id})
        for protocol in protocols:
            labels = [profile.id, protocol]
            mine = [
                count
                for count in counts
                if (count.profile_id, count.protocol) == (profile.id, protocol) and count.clients is not None
            ]
            active.add_metric(labels, sum(count.clients or 0 for count in mine))
            if all(count.max_clients is not None for count in mine):
                capacity = sum(count.max_clients or 0 for count in mine)
                maximum.add_metric(labels, capacity)
                free.add_metric(labels, max(0, capacity - sum(count.in_use or 0 for count in mine)))
    yield active
    yield maximum
    yield free


def _crl_metrics(path: Path) -> Iterator[Metric]:
    """The CRL's own dates: an alert on nextUpdate - time() catches a CRL nobody renews."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        return
    this_update = GaugeMetricFamily(
        "vpnfleet_crl_this_update_timestamp_seconds", "When the CA's CRL was issued (thisUpdate)."
    )
    this_update.add_metric([], crl.last_update_utc.timestamp())
    yield this_update
    if crl.next_update_utc is not None:
        next_update = GaugeMetricFamily(
            "vpnfleet_crl_next_update_timestamp_seconds",
            "When the CA's CRL stops being valid (nextUpdate).",
        )
        next_update.add_metric([], crl.next_update_utc.timestamp())
        yield next_update


blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def metrics_page() -> Response:
    """Only for the scrape token: the page shows the fleet's size and load to whoever reads it."""
    settings = controller().settings
    if settings.metrics_token_sha256 is None:
        abort(404, "metrics are not enabled (metrics_token_sha256 is not set)")
    if not token_allowed(settings, request.headers.get("Authorization")):
        response = Response("a valid bearer token is required\n", status=401, mimetype="text/plain")
        response.headers["WWW-Authenticate"] = 'Bearer realm="vpnfleet metrics"'
        return response
    return Response(scrape(controller()), content_type=CONTENT_TYPE)
