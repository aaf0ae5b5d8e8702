"""Mutual TLS for the daemon: TLS 1.3 only, and only the controller's `daemon_client` certificate."""

import ssl
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from vpnfleet.settings_file import SettingsError
from vpnfleet.shared.pki import keys

from .crl import CrlFile
from .settings import DaemonSettings

ACCEPTED_CLIENT_PURPOSE = "daemon_client"


def server_context(settings: DaemonSettings) -> ssl.SSLContext:
    return _mutual_tls_context(
        (settings.tls_certificate, "tls_certificate"),
        (settings.tls_private_key, "tls_private_key"),
        (settings.tls_ca, "tls_ca"),
    )


def _mutual_tls_context(certificate, private_key, trusted) -> ssl.SSLContext:
    """TLS 1.3 with a client certificate required; each argument is (path, its setting's name)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    # No session tickets: every connection proves its client certificate afresh.
    context.num_tickets = 0
    try:
        context.load_cert_chain(certificate[0], private_key[0])
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"{certificate[1]}/{private_key[1]}: cannot use {certificate[0]} with {private_key[0]}: {exc}"
        ) from None
    try:
        context.load_verify_locations(cafile=trusted[0])
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"{trusted[1]}: cannot load {trusted[0]}: {exc}") from None
    return context


def peer_refusal(tls_socket: ssl.SSLSocket, crl: CrlFile | None = None) -> str | None:
    """Why the peer of a completed handshake may not talk to us, or None when it may.

    OpenSSL has checked the chain to our CA already; the purpose is ours to check, because a
    VPN user's `client` certificate from the same CA must not be able to disconnect others.
    """
    der = tls_socket.getpeercert(binary_form=True)
    if der is None:
        return "no client certificate"
    certificate = x509.load_der_x509_certificate(der)
    purpose = keys.certificate_purpose(certificate)
    if purpose != ACCEPTED_CLIENT_PURPOSE:
        return f"certificate purpose is {purpose}, not {ACCEPTED_CLIENT_PURPOSE}"
    # Checked here rather than by OpenSSL, which would refuse every peer once the CRL is past
    # its nextUpdate: the controller must still reach a node whose CRL went stale, to renew it.
    if crl is not None and certificate.serial_number in crl.revoked_serials():
        return "certificate revoked (on the node's CRL)"
    return None


def peer_common_name(tls_socket: ssl.SSLSocket) -> str:
    # ssl's getpeercert() gives the subject as RDNs of (key, value) pairs.
    subject = cast(
        "tuple[tuple[tuple[str, str], ...], ...]", (tls_socket.getpeercert() or {}).get("subject", ())
    )
    names = [value for rdn in subject for key, value in rdn if key == "commonName"]
    return names[0] if names else "?"


def metrics_server_context(settings: DaemonSettings) -> ssl.SSLContext:
    """For /metrics: the node's `server` certificate, and clients pinned by metrics_client_certificates.

    Its own certificate, not daemon_server's: Prometheus is a Go client, and Go refuses a
    certificate whose extended key usage holds an OID it cannot parse (our purposes' 2.25 arcs).
    No CRL here: the pinned certificates are the trust anchors themselves (self-signed by the
    monitoring host), so removing one from the file is how one is revoked.
    """
    assert settings.metrics_client_certificates is not None
    assert settings.metrics_tls_certificate is not None and settings.metrics_tls_private_key is not None
    return _mutual_tls_context(
        (settings.metrics_tls_certificate, "metrics_tls_certificate"),
        (settings.metrics_tls_private_key, "metrics_tls_private_key"),
        (settings.metrics_client_certificates, "metrics_client_certificates"),
    )


def pinned_fingerprints(path: Path) -> frozenset[bytes]:
    """SHA-256 of every certificate in the PEM file."""
    return frozenset(
        certificate.fingerprint(hashes.SHA256())
        for certificate in x509.load_pem_x509_certificates(path.read_bytes())
    )


def pinned_peer_refusal(tls_socket: ssl.SSLSocket, fingerprints: frozenset[bytes]) -> str | None:
    """OpenSSL accepts any certificate that a pinned one signed; only the pinned ones themselves may in."""
    der = tls_socket.getpeercert(binary_form=True)
    if der is None:
        return "no client certificate"
    if x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()) not in fingerprints:
        return "certificate is not one of metrics_client_certificates"
    return None
