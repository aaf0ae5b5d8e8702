"""The CRL from the controller's database, on every node within seconds of a revocation.

The CRL lists the revoked configs that have not expired (and the node certificates revoked in
the CA's index): its size follows the revocations of the last session lifetime, never what was
ever issued. It is signed again on every revocation and once half its lifetime is gone, pushed to
every node's daemon (POST /crl, docs/daemon.md) and pulled by every node's timer through the node
API (GET /node-api/v1/crl), so a node that missed a push catches up within a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vpnfleet.controller.models import PublishedCrl, VpnConfig, utcnow
from vpnfleet.controller.state import Controller

ROW_ID = 1
# Renewed when less than this share of its lifetime is left: a node that pulls every minute
# always holds one with most of its lifetime ahead.
RENEW_AT = 0.5
# thisUpdate lies this far back, so that a node whose clock is a little behind does not take
# the CRL for "not yet valid" (OpenSSL would then refuse every client).
CLOCK_SKEW = timedelta(minutes=1)


@dataclass(frozen=True)
class Crl:
    pem: str
    crl_number: int
    this_update: datetime
    next_update: datetime
    revoked_count: int

    @classmethod
    def of(cls, row: PublishedCrl) -> Crl:
        return cls(row.pem, row.crl_number, row.this_update, row.next_update, row.revoked_count)


def publish_crl(controller: Controller, db: Session) -> Crl:
    """Sign a CRL of the revocations committed so far, store it and commit.

    The row is locked while signing (an UPDATE, as configs.lock_user explains), so two workers
    sign one after the other and the later CRL, with the higher number, lists everything the
    earlier one did."""
    db.execute(
        update(PublishedCrl)
        .where(PublishedCrl.id == ROW_ID)
        .values(id=PublishedCrl.id)
        .execution_options(synchronize_session=False)
    )
    row = db.get(PublishedCrl, ROW_ID, populate_existing=True)
    if row is None:
        raise RuntimeError("the published_crl row is missing: run vpnfleet-controller migrate")
    now = utcnow()
    revoked = [
        (serial, revoked_at or now)
        for serial, revoked_at in db.execute(
            # WireGuard configs have no certificate: their peers are removed instead.
            select(VpnConfig.serial_number, VpnConfig.revoked_at).where(
                VpnConfig.revoked_at.is_not(None),
                VpnConfig.expires_at > now,
                VpnConfig.serial_number.is_not(None),
            )
        )
        if serial is not None
    ]
    # thisUpdate never goes back, even if the clock stepped back.
    this_update = max(now - CLOCK_SKEW, row.this_update + timedelta(microseconds=1))
    next_update = now + controller.settings.crl_lifetime
    pem = controller.issuer.sign_crl(revoked, this_update, next_update).decode()
    row.pem, row.this_update, row.next_update = pem, this_update, next_update
    # The signer numbers it (at least thisUpdate in microseconds, above any CRL of the CA before).
    crl = x509.load_pem_x509_crl(pem.encode())
    row.crl_number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    row.revoked_count = len(revoked)
    db.commit()
    return Crl.of(row)


def current_crl(controller: Controller, db: Session) -> tuple[Crl, bool]:
    """The CRL to hand out, signed anew when none was or half its lifetime is gone; and whether
    it was signed now (then the nodes should hear of it)."""
    row = db.get(PublishedCrl, ROW_ID, populate_existing=True)
    lifetime = controller.settings.crl_lifetime
    if row is not None and row.pem and row.next_update - utcnow() > lifetime * RENEW_AT:
        return Crl.of(row), False
    return publish_crl(controller, db), True


def revoke_on_nodes(controller: Controller, db: Session, common_names: list[str]) -> list[str]:
    """After a revocation was committed: a new CRL to every node, then the revoked clients
    disconnected there. Returns the nodes that could not be told; they catch up at their next pull."""
    if not common_names:
        return []
    return push(controller, publish_crl(controller, db), common_names)


def push(controller: Controller, crl: Crl, common_names: list[str]) -> list[str]:
    """Every node at once, each given crl_push_timeout_seconds for the CRL before its disconnects."""
    answers = controller.daemons.push_crl_and_disconnect(crl.pem.encode(), common_names)
    return [answer.node.name for answer in answers if not answer.ok]
