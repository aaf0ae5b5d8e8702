"""What is happening on the nodes now, joined with what the database knows about it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from vpnfleet.controller.daemons import NodeAnswer
from vpnfleet.controller.models import VpnConfig
from vpnfleet.controller.settings import Node, Settings
from vpnfleet.controller.state import Controller


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
    clients: int
    capacity: int | None  # None when a process of it has no known maximum
    nodes_unreachable: int


def capacity_table(settings: Settings, view: FleetView) -> list[CapacityRow]:
    """Clients now against capacity, per profile and location."""
    unreachable = {answer.node.name for answer in view.unreachable}
    rows = []
    for profile in settings.profiles:
        locations = sorted({node.location for node in settings.nodes if node.processes_of(profile.id)})
        for location in locations:
            nodes = [
                node for node in settings.nodes if node.location == location and node.processes_of(profile.id)
            ]
            limits = [process.max_clients for node in nodes for process in node.processes_of(profile.id)]
            clients = sum(
                1
                for connection in view.connections
                if connection.node.location == location
                and connection.config is not None
                and connection.config.profile_id == profile.id
            )
            rows.append(
                CapacityRow(
                    profile_id=profile.id,
                    location=location,
                    clients=clients,
                    capacity=None if None in limits else sum(limit for limit in limits if limit is not None),
                    nodes_unreachable=sum(1 for node in nodes if node.name in unreachable),
                )
            )
    return rows
