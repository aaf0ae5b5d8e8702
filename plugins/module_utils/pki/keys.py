"""Keys, certificate signing requests, certificates and their vpnfleet purposes, on ``cryptography``.

No Ansible in it: the modules (``ca``, ``certificate``, ``csr``) and the services (controller,
node daemon, imported as ``vpnfleet.shared.pki.keys``) use the same code. The CA that signs
lives in ``pki.authority``, the decision to reissue in ``pki.reissue``.

``cryptography`` is imported guarded, so this file imports on a host without it (or with one too
old); the modules ask ``_cryptography_dep`` before they call anything here.

Public interface
----------------
Constants
    KEY_TYPES           ("ecdsa-p256", "ed25519", "rsa3072"); ecdsa-p256 is the default.
    PURPOSES            ("server", "client", "vpn_server", "daemon_server", "daemon_client").
    VPNFLEET_OID_ARC    "2.25.153677918813723533877896230736416013330": the integer of a UUID
                        generated once for this project (RFC 4122 / X.667 ``2.25`` arc).
    PURPOSE_OID_STRINGS daemon_server = <arc>.1, daemon_client = <arc>.2, vpn_server = <arc>.3;
                        purpose_oids() gives them as x509.ObjectIdentifier.
    VPN_SERVER_OID      <arc>.3: what VPN clients require of a node (``remote-cert-eku``).

Exceptions
    PkiError            every refusal (bad input, wrong CA, not PEM) raises this.

Keys, requests, certificates
    make_private_key(key_type), key_type_of(key), key_of_type(key, key_type)
    make_csr(key, common_name, dns_names, ip_addresses)
    csr_facts(csr), csr_matches(csr, key, common_name, dns_names, ip_addresses)
    same_public_key(a, b), public_key_sha256(key)
    certificate_purpose(cert) -> one of PURPOSES | "ca" | "unknown"
    certificate_facts(cert) -> dict (serial, common_name, purpose, not_before, not_after, sha256, ...)
    serial_hex(serial), fingerprint_sha256(cert), not_after(cert), not_before(cert), utcnow()
    load_certificate(pem), load_csr(pem), load_private_key(pem), certificate_pem(cert),
    csr_pem(csr), private_key_pem(key)
    read_pem(path, loader) -> what ``loader`` makes of the file, or None (missing, not PEM)

Building blocks for ``pki.authority``
    x509_name(common_name), signature_hash(key), subject_alt_names(dns_names, ip_addresses),
    extended_key_usages(purpose), key_usage(...), normalised_ips(ip_addresses),
    isoformat(moment), utc_isoformat(moment)

OpenVPN
    make_tls_crypt_key() -> str (OpenVPN Static key V1, 2048 bits), is_tls_crypt_key(text) -> bool
"""

import datetime
import functools
import hashlib
import ipaddress
import re
import secrets

from ..files import read_bytes

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    pass  # _cryptography_dep tells the modules; the services require it in their packaging

KEY_TYPES = ("ecdsa-p256", "ed25519", "rsa3072")
DEFAULT_KEY_TYPE = "ecdsa-p256"
PURPOSES = ("server", "client", "vpn_server", "daemon_server", "daemon_client")
SERVER_PURPOSES = ("server", "vpn_server", "daemon_server")

VPNFLEET_OID_ARC = "2.25.153677918813723533877896230736416013330"
PURPOSE_OID_STRINGS = {
    "daemon_server": VPNFLEET_OID_ARC + ".1",
    "daemon_client": VPNFLEET_OID_ARC + ".2",
    # A node's OpenVPN server: plain serverAuth would let any TLS server certificate of the CA
    # (the controller's web certificate, say) stand in for a node.
    "vpn_server": VPNFLEET_OID_ARC + ".3",
}
VPN_SERVER_OID = PURPOSE_OID_STRINGS["vpn_server"]
TLS_CRYPT_BEGIN = "-----BEGIN OpenVPN Static key V1-----"
TLS_CRYPT_END = "-----END OpenVPN Static key V1-----"
TLS_CRYPT_BYTES = 256
TLS_CRYPT_LINE_HEX = 32


@functools.cache
def purpose_oids():
    """purpose -> x509.ObjectIdentifier. Made on first use, not at import: a cryptography older
    than _cryptography_dep's minimum cannot even build these (arcs over 64 bits), and the
    modules must get to say so."""
    return {purpose: x509.ObjectIdentifier(dotted) for purpose, dotted in PURPOSE_OID_STRINGS.items()}


class PkiError(Exception):
    """A PKI request that cannot be carried out; the message says why."""


# ----------------------------------------------------------------------------- small helpers


def utcnow():
    return datetime.datetime.now(datetime.UTC)


def not_after(cert):
    """The end of validity as an aware UTC datetime."""
    return cert.not_valid_after_utc


def not_before(cert):
    return cert.not_valid_before_utc


def isoformat(moment):
    """2026-01-31T12:00:00Z (a naive moment is local time, as astimezone takes it)."""
    if moment.tzinfo is not datetime.UTC:
        moment = moment.astimezone(datetime.UTC)
    return utc_isoformat(moment)


def utc_isoformat(moment):
    """isoformat of a moment in UTC already, naive or aware. Not strftime, and no astimezone or
    replace: a quarter of the time, which for a CRL's tens of thousands of entries is a tenth of
    a second."""
    return moment.isoformat(timespec="seconds")[:19] + "Z"


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


def key_of_type(key, key_type):
    """``key`` when it is of ``key_type``, else None: a key of another type is to be replaced."""
    return key if key is not None and key_type_of(key) == key_type else None


def signature_hash(key):
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


def read_pem(path, loader):
    """What ``loader`` (one of the load_* above) makes of the file at ``path``; None when there is
    no such file or it holds something else, so that the caller makes it anew."""
    pem = read_bytes(path)
    if pem is None:
        return None
    try:
        return loader(pem)
    except PkiError:
        return None


# ----------------------------------------------------------------------------- names, extensions


def x509_name(common_name):
    if not common_name:
        raise PkiError("a common name is required")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _common_name(name):
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attributes[0].value if attributes else None


def subject_alt_names(dns_names, ip_addresses):
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


def normalised_ips(ip_addresses):
    try:
        return sorted(str(ipaddress.ip_address(address)) for address in ip_addresses or ())
    except ValueError as exc:
        raise PkiError(str(exc)) from None


def key_usage(digital_signature=False, key_encipherment=False, cert_sign=False):
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


def extended_key_usages(purpose):
    if purpose not in PURPOSES:
        raise PkiError("unknown purpose %r; choose one of %s" % (purpose, ", ".join(PURPOSES)))
    usages = [
        ExtendedKeyUsageOID.SERVER_AUTH if purpose in SERVER_PURPOSES else ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    if purpose in purpose_oids():
        usages.append(purpose_oids()[purpose])
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
    for purpose, oid in purpose_oids().items():
        if oid in usages and set(extended_key_usages(purpose)) <= usages:
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
        "not_before": isoformat(not_before(cert)),
        "not_after": isoformat(not_after(cert)),
        "sha256": fingerprint_sha256(cert),
        "dns_names": dns_names,
        "ip_addresses": ip_addresses,
    }


def make_csr(key, common_name, dns_names=(), ip_addresses=()):
    """A CSR for a key made on the host that keeps it; the CA decides the usages, not the CSR."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509_name(common_name))
    alt_names = subject_alt_names(dns_names, ip_addresses)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(key, signature_hash(key))


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
        and facts["ip_addresses"] == normalised_ips(ip_addresses)
    )


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
