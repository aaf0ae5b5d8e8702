"""The vpnfleet CA: one directory with its key, certificate, index (serials, revocations) and CRL.

No Ansible in it: the ``ca`` and ``certificate`` modules and the controller (imported as
``vpnfleet.shared.pki.authority``) issue and revoke through the same code.

Public interface
----------------
    REVOCATION_REASONS  names of x509.ReasonFlags accepted by revoke().
    CertificateAuthority.create(directory, common_name, key_type, lifetime_days, crl_lifetime_days)
    CertificateAuthority.load(directory)
    CertificateAuthority.exists(directory)
    ca.issue(common_name, purpose, dns_names, ip_addresses, lifetime_days, key_type) -> (key, cert)
    ca.sign_public_key(public_key, common_name, purpose, dns_names, ip_addresses, lifetime_days,
                       record=True, valid_until=None) -> cert
    ca.sign_csr(csr, purpose, common_name, dns_names, ip_addresses, lifetime_days) -> cert
    ca.revoke(serial, reason) -> bool (False when it was revoked already)
    ca.is_revoked(serial), ca.issued_by_me(cert), ca.records(), ca.record(serial)
    ca.crl() -> x509.CertificateRevocationList, ca.crl_needs_refresh(days), ca.refresh_crl(days) -> bool
    ca.revoked_records(now) -> [(serial, revoked_at)] of revoked certificates not yet expired
    ca.sign_crl(revoked, this_update, next_update, number) -> PEM bytes (signs only what it is given)
    ca.publish_crl(client_revoked, this_update, next_update) -> PEM bytes (the CA's CRL: the index's
                       revocations and these users' client certificates, whose record is the controller's)
    ca.facts() -> dict

Directory layout: ``ca.key`` (0600), ``ca.crt``, ``crl.pem``, ``index.json`` (the serial and
revocation database of the certificates Ansible issues: hosts, daemons), ``issued/<SERIAL>.pem``
(a copy of each of those), ``client-revoked.json`` (the revoked client certificates the last
``publish_crl`` was given, so that every re-signing of the CRL keeps them), ``.lock``.

Users' client certificates (``record=False``) are in neither the index nor ``issued/``: the
controller's database holds them, and an issuance costs the same with a million issued before.

Run as root (Ansible), every file written here goes to the directory's owner, so that the signer
service that owns the CA can keep using it.
"""

import contextlib
import datetime
import fcntl
import json
import os

from ..files import read_file, write_file_atomic
from .keys import (
    DEFAULT_KEY_TYPE,
    KEY_TYPES,
    PkiError,
    certificate_facts,
    certificate_pem,
    csr_facts,
    extended_key_usages,
    fingerprint_sha256,
    isoformat,
    key_type_of,
    key_usage,
    load_certificate,
    load_csr,
    load_private_key,
    make_private_key,
    not_after,
    private_key_pem,
    same_public_key,
    serial_hex,
    signature_hash,
    subject_alt_names,
    utcnow,
    x509_name,
)

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
except ImportError:
    pass  # see pki.keys

# Names of x509.ReasonFlags members.
REVOCATION_REASONS = (
    "unspecified",
    "key_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
)

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
CRL_FILE = "crl.pem"
INDEX_FILE = "index.json"
CLIENT_REVOKED_FILE = "client-revoked.json"
ISSUED_DIR = "issued"
LOCK_FILE = ".lock"

# Clocks of the hosts differ a little; a certificate valid from "now" would be refused by a
# peer that is a few seconds behind.
BACKDATE = datetime.timedelta(minutes=5)


class CertificateAuthority:
    """A CA kept in one directory; every change to its database happens under a file lock, so
    the controller service and an Ansible run can issue at the same time."""

    def __init__(self, directory, key, cert):
        self.directory = directory
        self.key = key
        self.cert = cert
        # The entries of the CRL signed last, built: the next CRL of a long-lived signer lists
        # nearly the same revocations, and building an entry costs more than its share of the
        # signature (for the controller's tens of thousands, most of a second).
        self._crl_entries = {}

    # -- making and loading

    @staticmethod
    def exists(directory):
        return os.path.exists(os.path.join(directory, CA_CERT_FILE))

    @classmethod
    def create(
        cls,
        directory,
        common_name="vpnfleet CA",
        key_type=DEFAULT_KEY_TYPE,
        lifetime_days=3650,
        crl_lifetime_days=365,
    ):
        if cls.exists(directory):
            raise PkiError("a CA exists in %s already" % directory)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
            os.chmod(directory, 0o700)  # makedirs' mode is cut by the umask
        # A directory made ready beforehand (owner, group, mode) is left as it is: its owner is
        # the CA's (the signer service), see _adopt.
        key = make_private_key(key_type)
        now = utcnow()
        public_key = key.public_key()
        key_id = x509.SubjectKeyIdentifier.from_public_key(public_key)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509_name(common_name))
            .issuer_name(x509_name(common_name))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=lifetime_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(cert_sign=True), critical=True)
            .add_extension(key_id, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id), critical=False
            )
            .sign(key, signature_hash(key))
        )
        ca = cls(directory, key, cert)
        issued = os.path.join(directory, ISSUED_DIR)
        os.makedirs(issued, mode=0o700, exist_ok=True)
        ca._adopt(issued)
        ca._write(os.path.join(directory, CA_KEY_FILE), private_key_pem(key), 0o600)
        with ca._locked():
            ca._write_index({"crl_number": 0, "crl_lifetime_days": crl_lifetime_days, "certificates": {}})
            ca._write_crl(ca._read_index())
        # The certificate goes last: its presence is what marks the CA as complete.
        ca._write(os.path.join(directory, CA_CERT_FILE), certificate_pem(cert), 0o644)
        return ca

    @classmethod
    def load(cls, directory):
        if not cls.exists(directory):
            raise PkiError("no CA in %s" % directory)
        key = load_private_key(read_file(os.path.join(directory, CA_KEY_FILE)))
        cert = load_certificate(read_file(os.path.join(directory, CA_CERT_FILE)))
        if not same_public_key(key.public_key(), cert.public_key()):
            raise PkiError("%s does not belong to %s" % (CA_KEY_FILE, CA_CERT_FILE))
        return cls(directory, key, cert)

    @property
    def cert_path(self):
        return os.path.join(self.directory, CA_CERT_FILE)

    @property
    def crl_path(self):
        return os.path.join(self.directory, CRL_FILE)

    def facts(self):
        facts = certificate_facts(self.cert)
        facts.update(
            directory=self.directory,
            cert_path=self.cert_path,
            crl_path=self.crl_path,
            issued=len(self.records()),
            revoked=sum(1 for record in self.records().values() if record["revoked_at"]),
            crl_next_update=isoformat(self._crl_next_update()),
        )
        return facts

    # -- the database

    def _write(self, path, data, mode):
        write_file_atomic(path, data, mode)
        self._adopt(path)

    def _adopt(self, path):
        """Give a file that root wrote to the directory's owner (the signer service's user)."""
        if os.geteuid() != 0:
            return
        owner = os.stat(self.directory)
        info = os.stat(path)
        if (info.st_uid, info.st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(path, owner.st_uid, owner.st_gid)

    @contextlib.contextmanager
    def _locked(self):
        path = os.path.join(self.directory, LOCK_FILE)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as lock:
            self._adopt(path)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self):
        return json.loads(read_file(os.path.join(self.directory, INDEX_FILE)))

    def _write_index(self, index):
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        self._write(os.path.join(self.directory, INDEX_FILE), text, 0o600)

    def records(self):
        """serial -> {common_name, purpose, not_after, sha256, revoked_at, revocation_reason}."""
        return self._read_index()["certificates"]

    def record(self, serial):
        return self.records().get(serial_hex(serial))

    def is_revoked(self, serial):
        record = self.record(serial)
        return bool(record and record["revoked_at"])

    def issued_by_me(self, cert):
        """True when this CA's key signed ``cert`` (checked by signature, not only by name)."""
        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    # -- issuing

    def issue(
        self,
        common_name,
        purpose,
        dns_names=(),
        ip_addresses=(),
        lifetime_days=365,
        key_type=DEFAULT_KEY_TYPE,
    ):
        """Make a key and a certificate for it here, on the CA host (for VPN users' configs)."""
        key = make_private_key(key_type)
        cert = self.sign_public_key(
            key.public_key(), common_name, purpose, dns_names, ip_addresses, lifetime_days
        )
        return key, cert

    def sign_csr(self, csr, purpose, common_name=None, dns_names=None, ip_addresses=None, lifetime_days=365):
        """Sign a CSR made elsewhere, so its key never leaves the host that made it.

        The purpose decides the usages; the CSR only proposes the common name and the
        subject alternative names, and arguments given here override it.
        """
        if isinstance(csr, (bytes, str)):
            csr = load_csr(csr)
        if not csr.is_signature_valid:
            raise PkiError("the CSR's signature is not valid")
        requested = csr_facts(csr)
        if dns_names is None and ip_addresses is None:
            dns_names, ip_addresses = requested["dns_names"], requested["ip_addresses"]
        return self.sign_public_key(
            csr.public_key(),
            common_name or requested["common_name"],
            purpose,
            dns_names or (),
            ip_addresses or (),
            lifetime_days,
        )

    def sign_public_key(
        self,
        public_key,
        common_name,
        purpose,
        dns_names=(),
        ip_addresses=(),
        lifetime_days=365,
        record=True,
        valid_until=None,
    ):
        """Certify a key that exists already (a renewal that keeps the key). ``record=False``
        leaves it out of the index and ``issued/`` (users' certificates: the controller's database
        records them); ``valid_until`` (aware) replaces ``lifetime_days``."""
        if key_type_of(public_key) is None:
            raise PkiError("unsupported key; use one of %s" % ", ".join(KEY_TYPES))
        usages = extended_key_usages(purpose)
        now = utcnow()
        valid_until = valid_until or now + datetime.timedelta(days=lifetime_days)
        # A certificate outliving its CA would be refused by every peer from that day on.
        valid_until = min(valid_until, not_after(self.cert))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(valid_until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # RSA key exchange needs keyEncipherment; EC and Ed25519 keys only sign.
                key_usage(digital_signature=True, key_encipherment=isinstance(public_key, rsa.RSAPublicKey)),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        alt_names = subject_alt_names(dns_names, ip_addresses)
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self.key, signature_hash(self.key))
        if not record:
            return cert
        serial = serial_hex(cert.serial_number)
        with self._locked():
            index = self._read_index()
            index["certificates"][serial] = {
                "common_name": common_name,
                "purpose": purpose,
                "not_after": isoformat(not_after(cert)),
                "sha256": fingerprint_sha256(cert),
                "revoked_at": None,
                "revocation_reason": None,
            }
            self._write(
                os.path.join(self.directory, ISSUED_DIR, serial + ".pem"), certificate_pem(cert), 0o644
            )
            self._write_index(index)
        return cert

    def _authority_key_identifier(self):
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    # -- revocation

    def revoke(self, serial, reason="unspecified"):
        """Revoke an issued certificate and regenerate the CRL; False when it was revoked already."""
        if reason not in REVOCATION_REASONS:
            raise PkiError("unknown revocation reason %r" % reason)
        serial = serial_hex(serial)
        with self._locked():
            index = self._read_index()
            record = index["certificates"].get(serial)
            if record is None:
                raise PkiError("serial %s was not issued by this CA" % serial)
            if record["revoked_at"]:
                return False
            record["revoked_at"] = isoformat(utcnow())
            record["revocation_reason"] = reason
            self._write_index(index)
            self._write_crl(index)
        return True

    def crl(self):
        return x509.load_pem_x509_crl(read_file(self.crl_path))

    def _crl_next_update(self):
        return self.crl().next_update_utc

    def crl_needs_refresh(self, min_remaining_days):
        """An expired CRL makes OpenVPN refuse every client, so it is re-signed well before."""
        return self._crl_next_update() - utcnow() < datetime.timedelta(days=min_remaining_days)

    def refresh_crl(self, min_remaining_days):
        """Re-sign the CRL when less than ``min_remaining_days`` of it is left."""
        if not self.crl_needs_refresh(min_remaining_days):
            return False
        with self._locked():
            self._write_crl(self._read_index())
        return True

    def revoked_records(self, now=None):
        """(serial, revoked_at, reason) of every revoked certificate in the index that has not
        expired: an expired certificate is refused for its dates, so it leaves the CRL."""
        return _unexpired_revocations(self._read_index(), _aware(now or utcnow()))

    def sign_crl(self, revoked, this_update, next_update, number):
        """A CRL (PEM bytes) listing ``revoked``: (serial hex, revoked_at) or (serial hex,
        revoked_at, reason) tuples, the reason a REVOCATION_REASONS name; nothing else is read
        and nothing is saved (publish_crl is the CA's own CRL).

        Its cost grows with the entries given, never with what the CA ever issued."""
        reasons = {}
        built_before, built = self._crl_entries, {}
        for serial, revoked_at, *reason in revoked:
            name = reason[0] if reason else "cessation_of_operation"
            key = (serial, _aware(revoked_at), name)
            entry = built_before.get(key)
            if entry is None:
                if name not in reasons:
                    reasons[name] = x509.CRLReason(x509.ReasonFlags[name])
                entry = (
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(serial, 16))
                    .revocation_date(key[1])
                    .add_extension(reasons[name], critical=False)
                    .build()
                )
            built[key] = entry
        self._crl_entries = built
        entries = list(built.values())
        # All entries given at once: add_revoked_certificate copies the list it has so far, which
        # for the controller's CRLs of tens of thousands cost more than the signature.
        builder = x509.CertificateRevocationListBuilder(
            issuer_name=self.cert.subject,
            last_update=_aware(this_update),
            next_update=_aware(next_update),
            extensions=[
                x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
                x509.Extension(x509.AuthorityKeyIdentifier.oid, False, self._authority_key_identifier()),
            ],
            revoked_certificates=entries,
        )
        crl = builder.sign(self.key, signature_hash(self.key))
        return crl.public_bytes(serialization.Encoding.PEM)

    def publish_crl(self, client_revoked, this_update, next_update):
        """Sign and publish the CA's CRL: the index's own unexpired revocations and these revoked
        client certificates (pairs of serial hex and revocation time, naive is UTC); returns its PEM.

        The client list replaces the one given last and is saved, so that every other re-signing
        (revoke, refresh_crl) keeps listing it: the caller (the controller, from its database)
        decides which client certificates are listed, expired ones leaving it."""
        entries = sorted((serial_hex(serial), _aware(revoked_at)) for serial, revoked_at in client_revoked)
        saved = [(serial, isoformat(revoked_at)) for serial, revoked_at in entries]
        with self._locked():
            index = self._read_index()
            self._write(os.path.join(self.directory, CLIENT_REVOKED_FILE), json.dumps(saved) + "\n", 0o600)
            return self._write_crl(index, entries, _aware(this_update), _aware(next_update))

    def _client_revoked(self):
        """The (serial hex, revoked_at) pairs publish_crl was given last."""
        path = os.path.join(self.directory, CLIENT_REVOKED_FILE)
        if not os.path.exists(path):
            return []
        return [(serial, _parse_time(revoked_at)) for serial, revoked_at in json.loads(read_file(path))]

    def _write_crl(self, index, client_revoked=None, this_update=None, next_update=None):
        """Called with the lock held; bumps the CRL number in ``index``, saves both, returns the PEM.

        A CRL with a thisUpdate of its own (the controller's) is numbered at least by that time in
        microseconds: the controller's CRLs are numbered so (controller/crl.py) and a node refuses
        a lower number than the one it has, whoever signed which."""
        now = utcnow()
        index["crl_number"] += 1
        if this_update is not None:
            index["crl_number"] = max(index["crl_number"], _microseconds(this_update))
        listed = {entry[0]: entry for entry in _unexpired_revocations(index, now)}
        if client_revoked is None:
            client_revoked = self._client_revoked()
        for serial, revoked_at in client_revoked:
            listed.setdefault(serial, (serial, revoked_at, "cessation_of_operation"))
        pem = self.sign_crl(
            sorted(listed.values()),
            this_update or now - BACKDATE,
            next_update or now + datetime.timedelta(days=index["crl_lifetime_days"]),
            index["crl_number"],
        )
        self._write_index(index)
        self._write(self.crl_path, pem, 0o644)
        return pem


def _unexpired_revocations(index, now):
    return [
        (serial, _parse_time(record["revoked_at"]), record["revocation_reason"])
        for serial, record in sorted(index["certificates"].items())
        if record["revoked_at"] and _parse_time(record["not_after"]) > now
    ]


def _parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _aware(moment):
    """Naive datetimes are UTC (the controller's database keeps them so)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _microseconds(moment):
    return int(moment.timestamp() * 1_000_000)
