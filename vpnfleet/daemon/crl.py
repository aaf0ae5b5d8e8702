"""The node's CRL file, the one OpenVPN's ``crl-verify`` reads: checked, then replaced atomically.

Two writers keep it current: the daemon's ``POST /crl`` (the controller pushes every new CRL) and
the node's pull timer (``vpnfleet-hook fetch-crl``). Both go through ``CrlFile.install``, which
takes only a CRL signed by the node's CA, not expired, and not older than the one in place (by
CRL number), so a replayed old CRL cannot bring a revoked certificate back.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vpnfleet.shared.pki import keys

# A CRL whose thisUpdate lies further ahead than this was made by a host with a wrong clock.
MAX_CLOCK_AHEAD = datetime.timedelta(minutes=5)
MAX_CRL_BYTES = 4 * 1024 * 1024


class CrlRefused(Exception):
    """A CRL that is not installed; ``conflict`` when it is valid but older than the one in place."""

    def __init__(self, reason: str, conflict: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


@dataclass(frozen=True)
class CrlFacts:
    crl_number: int
    this_update: datetime.datetime
    next_update: datetime.datetime
    revoked_count: int

    def as_dict(self, now: datetime.datetime) -> dict:
        return {
            "crl_number": self.crl_number,
            "this_update": keys.isoformat(self.this_update),
            "next_update": keys.isoformat(self.next_update),
            "revoked_count": self.revoked_count,
            "stale": self.next_update <= now,
        }


def _dates(crl: x509.CertificateRevocationList) -> tuple[datetime.datetime, datetime.datetime | None]:
    """thisUpdate and nextUpdate, aware; cryptography before 42 (where the hooks may run on a
    distribution's own) has only the naive properties."""
    if hasattr(crl, "next_update_utc"):
        return crl.last_update_utc, crl.next_update_utc
    utc = datetime.UTC
    next_update = crl.next_update
    return crl.last_update.replace(tzinfo=utc), next_update.replace(tzinfo=utc) if next_update else None


def next_update_of(crl: x509.CertificateRevocationList) -> datetime.datetime | None:
    return _dates(crl)[1]


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CrlRefused("not a CRL (PEM or DER)") from None


class CrlFile:
    """The CRL at ``path``, issued by the CA in ``ca_path``."""

    def __init__(self, path: Path, ca_path: Path):
        self.path = path
        self.ca = keys.load_certificate(ca_path.read_bytes())
        self._guard = threading.Lock()
        self._cached: tuple[tuple[int, int], frozenset[int]] | None = None

    def check(self, data: bytes, now: datetime.datetime) -> tuple[x509.CertificateRevocationList, CrlFacts]:
        """The CRL and its facts when it is one our CA signed and it has not expired."""
        crl = load_crl(data)
        facts = self._facts(crl)
        if facts.next_update <= now:
            raise CrlRefused("the CRL has expired (nextUpdate passed)")
        if facts.this_update > now + MAX_CLOCK_AHEAD:
            raise CrlRefused("the CRL's thisUpdate lies in the future")
        return crl, facts

    def _facts(self, crl: x509.CertificateRevocationList) -> CrlFacts:
        if crl.issuer != self.ca.subject or not crl.is_signature_valid(self.ca.public_key()):
            raise CrlRefused("not signed by this node's CA")
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            raise CrlRefused("the CRL has no CRL number") from None
        this_update, next_update = _dates(crl)
        if next_update is None:
            raise CrlRefused("the CRL has no nextUpdate")
        return CrlFacts(number, this_update, next_update, len(crl))

    def installed(self) -> CrlFacts | None:
        """The facts of the CRL in place (of any age), or None when there is none our CA signed."""
        try:
            return self._facts(load_crl(self.path.read_bytes()))
        except (OSError, CrlRefused):
            return None

    def install(self, data: bytes, now: datetime.datetime | None = None) -> tuple[bool, CrlFacts]:
        """Put the CRL in place; (False, facts) when it is the one in place already.

        Raises CrlRefused. Atomic: OpenVPN sees the old file or the new one, never half of it."""
        now = now or keys.utcnow()
        crl, facts = self.check(data, now)
        pem = crl.public_bytes(serialization.Encoding.PEM)
        with self._guard, self._file_lock():
            current = self.installed()
            if current is not None:
                if facts.crl_number < current.crl_number:
                    raise CrlRefused(
                        f"CRL number {facts.crl_number} is older than the installed {current.crl_number}",
                        conflict=True,
                    )
                if facts.crl_number == current.crl_number:
                    if self.path.read_bytes() == pem:
                        return False, current
                    raise CrlRefused(
                        f"another CRL with the installed number {current.crl_number}", conflict=True
                    )
            self._replace(pem)
        return True, facts

    def revoked_serials(self) -> frozenset[int]:
        """The serials on the CRL in place, whatever its age (re-read when the file changed)."""
        try:
            stat = self.path.stat()
        except OSError:
            return frozenset()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        crl = None
        with contextlib.suppress(OSError, CrlRefused):
            crl = load_crl(self.path.read_bytes())
        serials = frozenset(entry.serial_number for entry in crl) if crl is not None else frozenset()
        self._cached = (key, serials)
        return serials

    @contextlib.contextmanager
    def _file_lock(self):
        # The daemon and the pull timer's process may install at the same moment.
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _replace(self, pem: bytes) -> None:
        # OpenVPN reloads the CRL when its mtime (in whole seconds) or size changed since it last
        # read it: two CRLs of one size within one second would leave the first in force.
        try:
            previous_mtime = self.path.stat().st_mtime
        except OSError:
            previous_mtime = 0.0
        mtime = max(time.time(), int(previous_mtime) + 1)
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(descriptor, 0o644)  # OpenVPN reads it after dropping its privileges
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            os.utime(temporary, (mtime, mtime))
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
