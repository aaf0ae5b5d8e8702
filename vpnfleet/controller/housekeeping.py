"""Housekeeping, run by a timer: drop what must not stay connected, close stale log rows,
purge old rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vpnfleet.controller import wireguard
from vpnfleet.controller.crl import current_crl, disconnect_everywhere, push
from vpnfleet.controller.database import delete_rows
from vpnfleet.controller.directory_users import check_ldap_users
from vpnfleet.controller.fleet import live_connections
from vpnfleet.controller.models import ConnectionLogEntry, OAuthCode, PortalSession, utcnow
from vpnfleet.controller.settings import OPENVPN
from vpnfleet.controller.state import Controller


@dataclass
class HousekeepingReport:
    disconnected: int = 0
    log_rows_closed: int = 0
    log_rows_purged: int = 0
    login_failures_purged: int = 0
    sessions_purged: int = 0
    codes_purged: int = 0
    nodes_unreachable: tuple[str, ...] = ()
    crl_renewed: bool = False
    nodes_without_crl: tuple[str, ...] = ()
    directory: dict | None = None  # the LDAP check: who was disabled, which profiles were lost
    wireguard: dict | None = None  # the reconcile (wireguard.ReconcileReport), where nodes have WireGuard

    def as_dict(self) -> dict:
        return asdict(self)


def run_housekeeping(controller: Controller, db: Session) -> HousekeepingReport:
    report = HousekeepingReport()
    if controller.settings.ldap is not None:
        # First, so that a user the directory dropped is revoked and disconnected in this run.
        report.directory = asdict(check_ldap_users(controller, db))
    # First the CRL: it must not lapse on the nodes (they would admit no client without the
    # controller's yes), and configs that expired leave it.
    crl, report.crl_renewed = current_crl(controller, db)
    if report.crl_renewed:
        report.nodes_without_crl = tuple(push(controller, crl, []))
    now = utcnow()
    view = live_connections(controller, db)
    report.nodes_unreachable = tuple(answer.node.name for answer in view.unreachable)

    # OpenVPN checks a certificate only at connect and renegotiation: one that expired (or was
    # revoked, or whose user was disabled) while connected is dropped here.
    not_allowed = sorted(
        {
            connection.common_name
            for connection in view.connections
            if connection.config is None
            or not connection.config.is_active(now)
            or connection.config.user.is_disabled
        }
    )
    if not_allowed:
        disconnect_everywhere(controller, not_allowed)
    report.disconnected = len(not_allowed)

    # A process that crashed never ran its disconnect hook: close rows the node no longer lists.
    # (WireGuard rows span a peer's allocation; the reconcile below closes those that ended.)
    live = {(connection.node.name, connection.common_name) for connection in view.connections}
    answered = [node.name for node in view.answered]
    for entry in db.scalars(
        select(ConnectionLogEntry).where(
            ConnectionLogEntry.disconnected_at.is_(None),
            ConnectionLogEntry.node.in_(answered),
            ConnectionLogEntry.protocol == OPENVPN,
        )
    ):
        if (entry.node, entry.common_name) not in live:
            entry.disconnected_at = now
            entry.close_reason = "not connected (housekeeping)"
            report.log_rows_closed += 1

    db.commit()
    if wireguard.serves(controller.settings):
        report.wireguard = wireguard.reconcile(controller, db).as_dict()

    retention_start = now - controller.settings.connection_log_retention
    report.log_rows_purged = delete_rows(
        db, delete(ConnectionLogEntry).where(ConnectionLogEntry.disconnected_at < retention_start)
    )
    report.codes_purged = delete_rows(db, delete(OAuthCode).where(OAuthCode.expires_at < now))
    report.sessions_purged = delete_rows(db, delete(PortalSession).where(PortalSession.expires_at < now))
    db.commit()
    report.login_failures_purged = controller.throttle.purge(db, now)
    return report
