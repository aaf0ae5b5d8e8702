"""GET /metrics on the daemon: the node's own view in Prometheus' text format (docs/daemon.md).

Measured when Prometheus asks, from the same management sockets and WireGuard interfaces the API
reads, so the daemon keeps no state of its own. The controller's /metrics adds what only it knows
(protocols, capacity, free addresses); the node's figures still come when the controller is down.
"""

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import node
from .management import ProcessFleet
from .wireguard import WireGuard

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PROCESS_LABELS = ["profile", "process"]


class NodeCollector(Collector):
    def __init__(self, fleet: ProcessFleet, wireguard: WireGuard):
        self.fleet = fleet
        self.wireguard = wireguard

    def collect(self) -> Iterator[Metric]:
        reports = self.fleet.connection_reports()
        clients = GaugeMetricFamily(
            "openvpn_server_connected_clients",
            "Clients connected to one OpenVPN process (as openvpn_exporter names it).",
            labels=_PROCESS_LABELS,
        )
        up = GaugeMetricFamily(
            "vpnfleet_process_up",
            "1 when the OpenVPN process answered on its management socket.",
            labels=_PROCESS_LABELS,
        )
        for report in reports:
            labels = [report.process.profile_id, report.process.name]
            up.add_metric(labels, 0 if report.error else 1)
            if not report.error:
                clients.add_metric(labels, len(report.clients))
        yield clients
        yield up
        yield from _wireguard_metrics(self.wireguard)
        load = node.load_average()
        if load:
            load1 = GaugeMetricFamily("vpnfleet_node_load1", "The node's 1-minute load average.")
            load1.add_metric([], load[0])
            yield load1
        cores = GaugeMetricFamily("vpnfleet_node_cpu_count", "CPU cores of the node.")
        cores.add_metric([], node.cpu_count())
        yield cores


def _wireguard_metrics(wireguard: WireGuard) -> Iterator[Metric]:
    """Each interface's peers, labelled like a process (process: the interface's name)."""
    reports = wireguard.reports()
    if not reports:
        return
    peers = GaugeMetricFamily(
        "vpnfleet_wireguard_peers", "Peers one WireGuard interface holds.", labels=_PROCESS_LABELS
    )
    connected = GaugeMetricFamily(
        "vpnfleet_wireguard_connected_peers",
        "Peers of one WireGuard interface with a handshake in the last 3 minutes.",
        labels=_PROCESS_LABELS,
    )
    up = GaugeMetricFamily(
        "vpnfleet_wireguard_up", "1 when `wg` could read the WireGuard interface.", labels=_PROCESS_LABELS
    )
    now = time.time()
    for report in reports:
        labels = [report.interface.profile_id, report.interface.name]
        up.add_metric(labels, 0 if report.error else 1)
        if not report.error:
            peers.add_metric(labels, len(report.peers))
            connected.add_metric(labels, sum(peer.connected(now) for peer in report.peers))
    yield peers
    yield connected
    yield up


def render(fleet: ProcessFleet, wireguard: WireGuard) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(fleet, wireguard))
    return generate_latest(registry)
