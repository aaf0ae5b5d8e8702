"""Client certificates for VPN configs, issued by the controller's CA (the shared PKI code)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vpnfleet.shared.pki import authority, keys


@dataclass(frozen=True)
class IssuedClientCertificate:
    common_name: str
    serial_number: str
    certificate_pem: str
    private_key_pem: str
    expires_at: datetime  # naive UTC, like the database


class ClientCertificateIssuer:
    """Issues the certificates in users' configs and signs the CRL; loads the CA once per process."""

    def __init__(self, ca_dir: Path):
        self.ca_dir = ca_dir
        self._ca: authority.CertificateAuthority | None = None

    @property
    def ca(self) -> authority.CertificateAuthority:
        if self._ca is None:
            self._ca = authority.CertificateAuthority.load(str(self.ca_dir))
        return self._ca

    def ca_certificate_pem(self) -> str:
        return _text(keys.certificate_pem(self.ca.cert))

    def issue(self, expires_at: datetime, now: datetime) -> IssuedClientCertificate:
        # The common name says nothing about the user: it travels in clear in TLS 1.2 handshakes.
        common_name = secrets.token_hex(16)
        lifetime_days = (expires_at - now).total_seconds() / 86400
        key, cert = self.ca.issue(common_name, "client", lifetime_days=lifetime_days)
        return IssuedClientCertificate(
            common_name=common_name,
            serial_number=keys.serial_hex(cert.serial_number),
            certificate_pem=_text(keys.certificate_pem(cert)),
            private_key_pem=_text(keys.private_key_pem(key)),
            expires_at=keys.not_after(cert).replace(tzinfo=None),
        )

    def sign_crl(
        self, revoked: list[tuple[str, datetime]], this_update: datetime, next_update: datetime
    ) -> bytes:
        """The CRL (PEM) of these revoked configs (serial hex, revoked_at; naive UTC) and of the
        node certificates revoked in the CA's own index; the only place a CRL is signed here.

        Its number is thisUpdate in microseconds: it grows with every CRL the controller signs
        (they are signed one at a time, see crl.publish_crl), and the nodes refuse a lower one."""
        listed: dict[str, tuple] = {serial: (serial, revoked_at) for serial, revoked_at in revoked}
        for serial, revoked_at, reason in self.ca.revoked_records(this_update):
            listed.setdefault(serial, (serial, revoked_at, reason))
        number = int(this_update.replace(tzinfo=UTC).timestamp() * 1_000_000)
        return self.ca.sign_crl(sorted(listed.values()), this_update, next_update, number)


def _text(pem: bytes | str) -> str:
    return pem.decode() if isinstance(pem, bytes) else pem
