"""The CRL from the controller's database, on every node within seconds of a revocation.

The CRL lists the revoked configs that have not expired (and the node certificates revoked in
the CA's index): its size follows the revocations of the last session lifetime, never what was
ever issued. It is signed again on every revocation and once half its lifetime is gone, pushed to
every node's daemon (POST /crl, docs/daemon.md) and pulled by every node's timer through the node
API (GET /node-api/v1/crl), so a node that missed a push catches up within a minute.

A config that an app's /connect replaces is revoked in the same transaction that makes the new
one (the node API refuses it from that commit on), but its CRL and disconnect leave through
RevocationPusher, in the background: an app's /connect does not wait for a signature and every
node, and revocations that arrive while one push is under way share the next CRL. The pushers
sign at a pace (PACE): a CRL lists every revocation of the last session lifetime (33,000 entries
after 50,000 configs: a third of a second to sign, as long again to read and push), and signed
one after another as /connects replace configs it took the machine from those /connects.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vpnfleet.controller.models import PublishedCrl, VpnConfig, utcnow

if TYPE_CHECKING:  # state.py holds a RevocationPusher: no import at run time
    from vpnfleet.controller.state import Controller

log = logging.getLogger(__name__)

ROW_ID = 1
# Renewed when less than this share of its lifetime is left: a node that pulls every minute
# always holds one with most of its lifetime ahead.
RENEW_AT = 0.5
# thisUpdate lies this far back, so that a node whose clock is a little behind does not take
# the CRL for "not yet valid" (OpenSSL would then refuse every client).
CLOCK_SKEW = timedelta(minutes=1)
# A pusher signs again only once PACE times what the stored CRL (by any worker) cost has passed
# since it was signed, so CRLs take at most about 1/(PACE+1) of the machine; never later than
# MAX_PACE_SECONDS. What waits is refused by the node API already. A CRL's cost is its whole
# round: reading the revocations, the signature, pushing it to every node (whose daemon checks
# and writes it, and whose OpenVPN processes read it again): the signature alone was under half
# of it, so pacing by the signature let a burst spend a third of the machine on CRLs. It is
# estimated per entry (the last round this process made; before that SECONDS_PER_ENTRY, a 2-core
# machine's), so every worker reads the same pause from the stored row.
PACE = 9.0
MAX_PACE_SECONDS = 5.0
# Nor sooner than this after the last: under a burst of revocations (a storm of replaced
# configs) every signature is a push to every node, and a fleet of many nodes would take
# several a second; at most two a second keeps them to one batch each, well inside the window.
MIN_PACE_SECONDS = 0.5
SECONDS_PER_ENTRY = 30e-6
# A signature of fewer entries is mostly the signer's fixed cost (its round trip, the key's
# signature): learned from, it would pace small CRLs by seconds where nothing needs pacing and
# widen the window in which a node without the controller admits a revoked config.
LEARN_FROM_ENTRIES = 1000


@dataclass(frozen=True)
class Crl:
    pem: str
    crl_number: int
    this_update: datetime
    next_update: datetime
    revoked_count: int
    # How long reading the revocations and signing took, when this call signed it; None: the
    # stored one.
    signing_seconds: float | None = None

    @classmethod
    def of(cls, row: PublishedCrl, signing_seconds: float | None = None) -> Crl:
        return cls(
            row.pem, row.crl_number, row.this_update, row.next_update, row.revoked_count, signing_seconds
        )


@dataclass(frozen=True)
class TooSoon:
    """publish_crl's answer at a pace: the stored CRL is younger than the pause; try again then."""

    seconds: float


def publish_crl(controller: Controller, db: Session, *, unless_listing: list[str] | None = None) -> Crl:
    """Sign a CRL of the revocations committed so far, store it and commit.

    Signing takes its turn (signing_turn), so two workers sign one after the other and the
    later CRL, with the higher number, lists everything the earlier one did. With
    ``unless_listing`` (common names of configs revoked and committed before the call), the
    stored CRL is kept when it lists them all already: another worker signed it while this one
    waited for its turn."""
    answer = _publish(controller, db, unless_listing, None)
    if isinstance(answer, TooSoon):  # only a paced call is answered so
        raise AssertionError("an unpaced publish_crl answered TooSoon")
    return answer


def publish_crl_at_pace(
    controller: Controller, db: Session, batch: list[str], seconds_per_entry: float
) -> Crl | TooSoon:
    """publish_crl(unless_listing=batch) for the pushers: TooSoon rather than a signature while
    the stored CRL is younger than PACE times its estimated round. Decided in the turn,
    so the workers that waited behind one signature do not sign right after it."""
    return _publish(controller, db, batch, seconds_per_entry)


def _publish(
    controller: Controller, db: Session, unless_listing: list[str] | None, seconds_per_entry: float | None
) -> Crl | TooSoon:
    serials = (
        {
            int(serial, 16)
            for serial in db.scalars(
                select(VpnConfig.serial_number).where(VpnConfig.common_name.in_(unless_listing))
            )
            if serial is not None  # a WireGuard config has no certificate
        }
        if unless_listing
        else set()
    )
    db.commit()  # SQLite: the lock below begins a transaction of its own, not a read's upgrade
    with signing_turn(db):
        return _sign_in_turn(controller, db, serials, seconds_per_entry)


@contextlib.contextmanager
def signing_turn(db: Session):
    """One CRL signed at a time, until the caller's commit. PostgreSQL: the CRL row's lock (an
    UPDATE, as configs.lock_user explains), which holds up no one else. SQLite's write lock is
    the whole database's: held for a signature (most of a second for a CRL of thousands) it would
    stop every /connect and connect check, so a file lock beside the database instead."""
    bind = db.get_bind()
    database = bind.engine.url.database if bind.dialect.name == "sqlite" else None
    if database and database != ":memory:":
        with open(f"{database}.crl-lock", "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            yield
        return
    db.execute(
        update(PublishedCrl)
        .where(PublishedCrl.id == ROW_ID)
        .values(id=PublishedCrl.id)
        .execution_options(synchronize_session=False)
    )
    yield


def _sign_in_turn(
    controller: Controller, db: Session, serials: set[int], seconds_per_entry: float | None
) -> Crl | TooSoon:
    row = db.get(PublishedCrl, ROW_ID, populate_existing=True)
    if row is None:
        raise RuntimeError("the published_crl row is missing: run vpnfleet-controller migrate")
    if serials and row.pem and _lists(row, serials):
        db.commit()  # the lock goes, the CRL stays
        return Crl.of(row)
    now = utcnow()
    if seconds_per_entry is not None and row.pem:
        pause = min(MAX_PACE_SECONDS, max(MIN_PACE_SECONDS, PACE * seconds_per_entry * row.revoked_count))
        age = (now - CLOCK_SKEW - row.this_update).total_seconds()
        if 0 <= age < pause:
            db.commit()
            return TooSoon(pause - age)
    started = time.monotonic()
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
    global _listed
    # What it lists (and the CA's revoked node certificates, left out here: at worst a re-signing).
    _listed = (row.crl_number, frozenset(int(serial, 16) for serial, unused_revoked_at in revoked))
    signing_seconds = time.monotonic() - started
    db.commit()
    return Crl.of(row, signing_seconds)


# The serials of the last CRL this process read or signed, by its number: reading them takes
# 0.4 s for 33,000 entries, and the pushers ask at every batch and every TooSoon.
_listed: tuple[int, frozenset[int]] = (-1, frozenset())


def _lists(row: PublishedCrl, serials: set[int]) -> bool:
    global _listed
    number, listed = _listed
    if number != row.crl_number:
        # One pass over the entries: a lookup by serial scans them all (23 ms a serial in a CRL
        # of 33,000), which for a pusher's batch of a hundred held its worker for seconds.
        listed = frozenset(entry.serial_number for entry in x509.load_pem_x509_crl(row.pem.encode()))
        _listed = (row.crl_number, listed)
    return serials <= listed


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


class RevocationPusher:
    """What revoke_on_nodes does, for revocations already committed, by one thread of this process.

    A batch is whatever was submitted while the previous one was signed and pushed, so under
    load one CRL and one round of pushes serve many revocations, and an idle controller tells
    the nodes at once; a CRL another worker signed meanwhile that lists the batch is pushed
    as it is rather than signed again, and one this process pushed already is not pushed again
    (only the disconnects). A batch waits for the pace (PACE) first, gathering what comes
    meanwhile. What is submitted is already revoked in the database: the node API
    refuses those configs whatever happens here. If a push is lost (the process killed before
    it ran, a node down), housekeeping disconnects what is connected without an active config
    and the nodes' pull timer brings the next CRL.
    """

    def __init__(self, controller: Controller):
        self._controller = controller
        self._changed = threading.Condition()
        self._pending: list[str] = []
        self._busy = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._seconds_per_entry = SECONDS_PER_ENTRY  # learned from this pusher's signatures
        self._pushed_number: int | None = None  # the last CRL this pusher pushed
        self.batches = 0  # pushes made, for the tests and the logs

    def submit(self, common_names: list[str]) -> None:
        if not common_names:
            return
        with self._changed:
            self._pending.extend(common_names)
            # Started on first use, in the process that uses it (gunicorn forks its workers).
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="revocations", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
            self._changed.notify_all()

    @property
    def waiting(self) -> int:
        """Revocations submitted that no push has taken up yet."""
        with self._changed:
            return len(self._pending)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted was pushed (or failed and was logged); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending))
                self._busy = True
            batch: list[str] = []
            try:
                crl = None
                while crl is None:
                    with self._changed:
                        batch, self._pending = batch + self._pending, []
                    db = self._controller.sessions()
                    try:
                        # The other workers push their own: one CRL for all of them where it can be.
                        answer = publish_crl_at_pace(self._controller, db, batch, self._seconds_per_entry)
                    finally:
                        db.close()
                    if isinstance(answer, TooSoon):
                        time.sleep(answer.seconds)  # what comes meanwhile joins this batch
                    else:
                        crl = answer
                if crl.crl_number == self._pushed_number:
                    unreachable = disconnect_everywhere(self._controller, batch)
                else:
                    pushed = time.monotonic()
                    unreachable = push(self._controller, crl, batch)
                    self._pushed_number = crl.crl_number
                    # A node that did not answer took its timeout, not the CRL's cost.
                    signed = crl.signing_seconds
                    if signed is not None and not unreachable and crl.revoked_count >= LEARN_FROM_ENTRIES:
                        round_seconds = signed + time.monotonic() - pushed
                        self._seconds_per_entry = round_seconds / crl.revoked_count
                if unreachable:
                    log.warning(
                        "%d revocation(s) not told to node(s) %s: they catch up at their next CRL pull",
                        len(batch),
                        ", ".join(unreachable),
                    )
            except Exception:
                log.exception("pushing %d revocation(s) failed; housekeeping drops their clients", len(batch))
            finally:
                with self._changed:
                    self.batches += 1
                    self._busy = False
                    self._changed.notify_all()


def disconnect_everywhere(controller: Controller, common_names: list[str]) -> list[str]:
    """The disconnects alone, on every node at once; the nodes not told."""
    answers = controller.daemons.disconnect(common_names)
    return [answer.node.name for answer in answers if not answer.ok]
