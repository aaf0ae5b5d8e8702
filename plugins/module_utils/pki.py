"""The vpnfleet PKI: a small file-based CA on ``cryptography``, with no Ansible in it.

The Ansible modules (``ca``, ``certificate``, ``csr``) and the services (controller, node
daemon) share this file, imported as ``vpnfleet.shared.pki`` by the services.

Public interface
----------------
Constants
    KEY_TYPES           ("ecdsa-p256", "ed25519", "rsa3072"); ecdsa-p256 is the default.
    PURPOSES            ("server", "client", "daemon_server", "daemon_client").
    VPNFLEET_OID_ARC    "2.25.153677918813723533877896230736416013330": the integer of a UUID
                        generated once for this project (RFC 4122 / X.667 ``2.25`` arc).
    PURPOSE_OIDS        purpose -> x509.ObjectIdentifier for the two daemon purposes:
                        daemon_server = <arc>.1, daemon_client = <arc>.2
                        (PURPOSE_OID_STRINGS: the same as dotted strings).
    REVOCATION_REASONS  names of x509.ReasonFlags accepted by revoke().
    MINIMUM_CRYPTOGRAPHY_VERSION, HAS_CRYPTOGRAPHY, CRYPTOGRAPHY_VERSION, CRYPTOGRAPHY_IMPORT_ERROR

Exceptions
    PkiError            every refusal (bad input, wrong CA, unreadable file) raises this.

The CA (one directory)
    CertificateAuthority.create(directory, common_name, key_type, lifetime_days, crl_lifetime_days)
    CertificateAuthority.load(directory)
    CertificateAuthority.exists(directory)
    ca.issue(common_name, purpose, dns_names, ip_addresses, lifetime_days, key_type) -> (key, cert)
    ca.sign_public_key(public_key, common_name, purpose, dns_names, ip_addresses, lifetime_days) -> cert
    ca.sign_csr(csr, purpose, common_name, dns_names, ip_addresses, lifetime_days) -> cert
    ca.revoke(serial, reason) -> bool (False when it was revoked already)
    ca.is_revoked(serial), ca.issued_by_me(cert), ca.records(), ca.record(serial)
    ca.crl() -> x509.CertificateRevocationList, ca.refresh_crl(min_remaining_days) -> bool
    ca.facts() -> dict

Certificates, keys, requests
    make_private_key(key_type), key_type_of(key), make_csr(key, common_name, dns_names, ip_addresses)
    csr_facts(csr), csr_matches(csr, key, common_name, dns_names, ip_addresses)
    same_public_key(a, b), public_key_sha256(key)
    certificate_purpose(cert) -> "server" | "client" | "daemon_server" | "daemon_client" | "ca" | "unknown"
    certificate_facts(cert) -> dict (serial, common_name, purpose, not_before, not_after, sha256, ...)
    certificate_mismatches(cert, ca, common_name, purpose, dns_names, ip_addresses, renew_before_days)
        -> list of reasons why the certificate must be (re)issued; empty when it is fine.
    serial_hex(serial), fingerprint_sha256(cert), not_after(cert), not_before(cert)
    load_certificate(pem), load_csr(pem), load_private_key(pem), certificate_pem(cert),
    csr_pem(csr), private_key_pem(key)
    write_file_atomic(path, data, mode), read_file(path)

OpenVPN
    make_tls_crypt_key() -> str (OpenVPN Static key V1, 2048 bits), is_tls_crypt_key(text) -> bool

Directory layout of a CA: ``ca.key`` (0600), ``ca.crt``, ``crl.pem``, ``index.json`` (the serial and
revocation database), ``issued/<SERIAL>.pem`` (a copy of each issued certificate), ``.lock``.
"""

import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import tempfile
import traceback

# The one guard for the collection: the modules check HAS_CRYPTOGRAPHY and fail with
# missing_required_lib; this file itself still imports where cryptography is missing.
try:
    import cryptography
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_VERSION = None
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()  # type: str | None
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_VERSION = cryptography.__version__
    CRYPTOGRAPHY_IMPORT_ERROR = None

# Debian 12 ships 38.0; everything used here exists there.
MINIMUM_CRYPTOGRAPHY_VERSION = "38.0"

KEY_TYPES = ("ecdsa-p256", "ed25519", "rsa3072")
DEFAULT_KEY_TYPE = "ecdsa-p256"
PURPOSES = ("server", "client", "daemon_server", "daemon_client")
SERVER_PURPOSES = ("server", "daemon_server")

VPNFLEET_OID_ARC = "2.25.153677918813723533877896230736416013330"
PURPOSE_OID_STRINGS = {
    "daemon_server": VPNFLEET_OID_ARC + ".1",
    "daemon_client": VPNFLEET_OID_ARC + ".2",
}
PURPOSE_OIDS = (
    {purpose: x509.ObjectIdentifier(dotted) for purpose, dotted in PURPOSE_OID_STRINGS.items()}
    if HAS_CRYPTOGRAPHY
    else {}
)

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
ISSUED_DIR = "issued"
LOCK_FILE = ".lock"

# Clocks of the hosts differ a little; a certificate valid from "now" would be refused by a
# peer that is a few seconds behind.
BACKDATE = datetime.timedelta(minutes=5)

TLS_CRYPT_BEGIN = "-----BEGIN OpenVPN Static key V1-----"
TLS_CRYPT_END = "-----END OpenVPN Static key V1-----"
TLS_CRYPT_BYTES = 256
TLS_CRYPT_LINE_HEX = 32


class PkiError(Exception):
    """A PKI request that cannot be carried out; the message says why."""


# ----------------------------------------------------------------------------- small helpers


def utcnow():
    return datetime.datetime.now(datetime.UTC)


def _as_utc(value):
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def not_after(cert):
    """The end of validity as an aware UTC datetime (cryptography < 42 only has naive ones)."""
    return _as_utc(getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after)


def not_before(cert):
    return _as_utc(getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before)


def _isoformat(moment):
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def serial_hex(serial):
    """Serial numbers are kept as upper-case hex strings: JSON-safe and the way openssl prints them."""
    if isinstance(serial, str):
        try:
            serial = int(serial.replace(":", ""), 16)
        except ValueError:
            raise PkiError("not a hexadecimal serial number: %r" % serial) from None
    return "%X" % serial


def fingerprint_sha256(cert):
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def read_file(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise PkiError("cannot read %s: %s" % (path, exc.strerror)) from None


def write_file_atomic(path, data, mode=0o644):
    """Write via a temporary file in the same directory so readers never see half a file,
    and so a key file never exists with wider permissions than ``mode``."""
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise


# ----------------------------------------------------------------------------- keys, PEM


def make_private_key(key_type=DEFAULT_KEY_TYPE):
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise PkiError("unknown key type %r; choose one of %s" % (key_type, ", ".join(KEY_TYPES)))


def key_type_of(key):
    """The key type name of a private or public key, or None when it is none of ours."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ecdsa-p256" if isinstance(key.curve, ec.SECP256R1) else None
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa3072" if key.key_size == 3072 else None
    return None


def _signature_hash(key):
    # Ed25519 signs the message itself; it takes no separate hash.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def private_key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def csr_pem(csr):
    return csr.public_bytes(serialization.Encoding.PEM)


def _load(loader, data, what):
    if isinstance(data, str):
        data = data.encode()
    try:
        return loader(data)
    except (ValueError, TypeError) as exc:
        raise PkiError("not a PEM %s: %s" % (what, exc)) from None


def load_certificate(pem):
    return _load(x509.load_pem_x509_certificate, pem, "certificate")


def load_csr(pem):
    return _load(x509.load_pem_x509_csr, pem, "certificate signing request")


def load_private_key(pem):
    return _load(lambda data: serialization.load_pem_private_key(data, password=None), pem, "private key")


# ----------------------------------------------------------------------------- names, extensions


def _name(common_name):
    if not common_name:
        raise PkiError("a common name is required")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _common_name(name):
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attributes[0].value if attributes else None


def _subject_alt_names(dns_names, ip_addresses):
    names = [x509.DNSName(name) for name in dns_names or ()]
    for address in ip_addresses or ():
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise PkiError("not an IP address: %r" % address) from None
    return names


def _san_lists(extensions):
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return (
        sorted(san.get_values_for_type(x509.DNSName)),
        sorted(str(address) for address in san.get_values_for_type(x509.IPAddress)),
    )


def _normalise_ips(ip_addresses):
    try:
        return sorted(str(ipaddress.ip_address(address)) for address in ip_addresses or ())
    except ValueError as exc:
        raise PkiError(str(exc)) from None


def _key_usage(digital_signature=False, key_encipherment=False, cert_sign=False):
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _purpose_extended_key_usages(purpose):
    if purpose not in PURPOSES:
        raise PkiError("unknown purpose %r; choose one of %s" % (purpose, ", ".join(PURPOSES)))
    usages = [
        ExtendedKeyUsageOID.SERVER_AUTH if purpose in SERVER_PURPOSES else ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    if purpose in PURPOSE_OIDS:
        usages.append(PURPOSE_OIDS[purpose])
    return usages


def certificate_purpose(cert):
    """Read the vpnfleet purpose back from a certificate (object or PEM).

    The daemon OIDs win over the plain TLS usages, so a daemon certificate is never taken for an
    OpenVPN one. Returns "ca" for a CA certificate and "unknown" when nothing matches.
    """
    if isinstance(cert, (bytes, str)):
        cert = load_certificate(cert)
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "ca"
    except x509.ExtensionNotFound:
        pass
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return "unknown"
    for purpose, oid in PURPOSE_OIDS.items():
        if oid in usages and set(_purpose_extended_key_usages(purpose)) <= usages:
            return purpose
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages:
        return "client"
    return "unknown"


def certificate_facts(cert):
    """What the modules return and the services show about a certificate; never key material."""
    dns_names, ip_addresses = _san_lists(cert.extensions)
    return {
        "serial": serial_hex(cert.serial_number),
        "common_name": _common_name(cert.subject),
        "issuer": _common_name(cert.issuer),
        "purpose": certificate_purpose(cert),
        "key_type": key_type_of(cert.public_key()),
        "not_before": _isoformat(not_before(cert)),
        "not_after": _isoformat(not_after(cert)),
        "sha256": fingerprint_sha256(cert),
        "dns_names": dns_names,
        "ip_addresses": ip_addresses,
    }


def make_csr(key, common_name, dns_names=(), ip_addresses=()):
    """A CSR for a key made on the host that keeps it; the CA decides the usages, not the CSR."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name))
    alt_names = _subject_alt_names(dns_names, ip_addresses)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(key, _signature_hash(key))


def csr_facts(csr):
    dns_names, ip_addresses = _san_lists(csr.extensions)
    return {
        "common_name": _common_name(csr.subject),
        "key_type": key_type_of(csr.public_key()),
        "dns_names": dns_names,
        "ip_addresses": ip_addresses,
    }


def _public_key_der(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_public_key(first, second):
    return _public_key_der(first) == _public_key_der(second)


def public_key_sha256(key):
    """Tells keys apart in logs and results without showing them."""
    public_key = key.public_key() if hasattr(key, "public_key") else key
    return hashlib.sha256(_public_key_der(public_key)).hexdigest()


def csr_matches(csr, key, common_name, dns_names=(), ip_addresses=()):
    """True when ``csr`` asks for ``key`` with this common name and these alternative names."""
    facts = csr_facts(csr)
    return (
        same_public_key(csr.public_key(), key.public_key())
        and facts["common_name"] == common_name
        and facts["dns_names"] == sorted(dns_names)
        and facts["ip_addresses"] == _normalise_ips(ip_addresses)
    )


# ----------------------------------------------------------------------------- the CA


class CertificateAuthority:
    """A CA kept in one directory; every change to its database happens under a file lock, so
    the controller service and an Ansible run can issue at the same time."""

    def __init__(self, directory, key, cert):
        self.directory = directory
        self.key = key
        self.cert = cert

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
        os.makedirs(os.path.join(directory, ISSUED_DIR), mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        key = make_private_key(key_type)
        now = utcnow()
        public_key = key.public_key()
        key_id = x509.SubjectKeyIdentifier.from_public_key(public_key)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=lifetime_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(key_id, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id), critical=False
            )
            .sign(key, _signature_hash(key))
        )
        write_file_atomic(os.path.join(directory, CA_KEY_FILE), private_key_pem(key), 0o600)
        ca = cls(directory, key, cert)
        with ca._locked():
            ca._write_index({"crl_number": 0, "crl_lifetime_days": crl_lifetime_days, "certificates": {}})
            ca._write_crl(ca._read_index())
        # The certificate goes last: its presence is what marks the CA as complete.
        write_file_atomic(os.path.join(directory, CA_CERT_FILE), certificate_pem(cert), 0o644)
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
            crl_next_update=_isoformat(self._crl_next_update()),
        )
        return facts

    # -- the database

    @contextlib.contextmanager
    def _locked(self):
        with open(os.path.join(self.directory, LOCK_FILE), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self):
        return json.loads(read_file(os.path.join(self.directory, INDEX_FILE)))

    def _write_index(self, index):
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        write_file_atomic(os.path.join(self.directory, INDEX_FILE), text, 0o600)

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
        except AttributeError:  # cryptography < 40 has no verify_directly_issued_by
            return self._verify_signature(cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _verify_signature(self, cert):
        public_key = self.cert.public_key()
        try:
            if isinstance(public_key, ed25519.Ed25519PublicKey):
                public_key.verify(cert.signature, cert.tbs_certificate_bytes)
            elif isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(
                    cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
                )
            else:
                public_key.verify(
                    cert.signature,
                    cert.tbs_certificate_bytes,
                    padding.PKCS1v15(),
                    cert.signature_hash_algorithm,
                )
        except InvalidSignature:
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
        self, public_key, common_name, purpose, dns_names=(), ip_addresses=(), lifetime_days=365
    ):
        """Certify a key that exists already (a renewal that keeps the key)."""
        if key_type_of(public_key) is None:
            raise PkiError("unsupported key; use one of %s" % ", ".join(KEY_TYPES))
        usages = _purpose_extended_key_usages(purpose)
        now = utcnow()
        valid_until = now + datetime.timedelta(days=lifetime_days)
        # A certificate outliving its CA would be refused by every peer from that day on.
        valid_until = min(valid_until, not_after(self.cert))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(valid_until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # RSA key exchange needs keyEncipherment; EC and Ed25519 keys only sign.
                _key_usage(digital_signature=True, key_encipherment=isinstance(public_key, rsa.RSAPublicKey)),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        alt_names = _subject_alt_names(dns_names, ip_addresses)
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self.key, _signature_hash(self.key))
        serial = serial_hex(cert.serial_number)
        with self._locked():
            index = self._read_index()
            index["certificates"][serial] = {
                "common_name": common_name,
                "purpose": purpose,
                "not_after": _isoformat(not_after(cert)),
                "sha256": fingerprint_sha256(cert),
                "revoked_at": None,
                "revocation_reason": None,
            }
            write_file_atomic(
                os.path.join(self.directory, ISSUED_DIR, serial + ".pem"), certificate_pem(cert)
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
            record["revoked_at"] = _isoformat(utcnow())
            record["revocation_reason"] = reason
            self._write_index(index)
            self._write_crl(index)
        return True

    def crl(self):
        return x509.load_pem_x509_crl(read_file(self.crl_path))

    def _crl_next_update(self):
        crl = self.crl()
        return _as_utc(getattr(crl, "next_update_utc", None) or crl.next_update)

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

    def _write_crl(self, index):
        """Called with the lock held; bumps the CRL number in ``index`` and saves both."""
        now = utcnow()
        index["crl_number"] += 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - BACKDATE)
            .next_update(now + datetime.timedelta(days=index["crl_lifetime_days"]))
            .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        for serial, record in sorted(index["certificates"].items()):
            if not record["revoked_at"]:
                continue
            revoked_at = datetime.datetime.strptime(record["revoked_at"], "%Y-%m-%dT%H:%M:%SZ")
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(revoked_at.replace(tzinfo=datetime.UTC))
                .add_extension(x509.CRLReason(x509.ReasonFlags[record["revocation_reason"]]), critical=False)
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self.key, _signature_hash(self.key))
        self._write_index(index)
        write_file_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)


# ----------------------------------------------------------------------------- deciding to reissue


def certificate_mismatches(
    cert,
    ca,
    common_name,
    purpose,
    dns_names=(),
    ip_addresses=(),
    renew_before_days=30,
    now=None,
):
    """Why ``cert`` does not do what is asked; an empty list means keep it.

    The modules' idempotence rests on this: it compares what is there with what is wanted,
    the same way in check mode and in a real run.
    """
    reasons = []
    if not ca.issued_by_me(cert):
        reasons.append("not issued by this CA")
    elif ca.is_revoked(cert.serial_number):
        reasons.append("revoked")
    facts = certificate_facts(cert)
    if facts["common_name"] != common_name:
        reasons.append("common name is %r, wanted %r" % (facts["common_name"], common_name))
    if facts["purpose"] != purpose:
        reasons.append("purpose is %s, wanted %s" % (facts["purpose"], purpose))
    if facts["dns_names"] != sorted(dns_names or ()):
        reasons.append("DNS names differ")
    if facts["ip_addresses"] != _normalise_ips(ip_addresses):
        reasons.append("IP addresses differ")
    remaining = not_after(cert) - (now or utcnow())
    if remaining < datetime.timedelta(days=renew_before_days):
        reasons.append("less than %d days of validity left" % renew_before_days)
    return reasons


# ----------------------------------------------------------------------------- OpenVPN tls-crypt


def make_tls_crypt_key():
    """A tls-crypt key in the format ``openvpn --genkey secret`` writes (2048 random bits)."""
    hex_text = secrets.token_bytes(TLS_CRYPT_BYTES).hex()
    lines = [hex_text[i : i + TLS_CRYPT_LINE_HEX] for i in range(0, len(hex_text), TLS_CRYPT_LINE_HEX)]
    return "\n".join([TLS_CRYPT_BEGIN, *lines, TLS_CRYPT_END]) + "\n"


_TLS_CRYPT_PATTERN = re.compile(
    r"\A(?:#[^\n]*\n)*%s\n(?:[0-9a-f]{32}\n){16}%s\n?\Z"
    % (re.escape(TLS_CRYPT_BEGIN), re.escape(TLS_CRYPT_END))
)


def is_tls_crypt_key(text):
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return bool(_TLS_CRYPT_PATTERN.match(text.replace("\r\n", "\n")))
