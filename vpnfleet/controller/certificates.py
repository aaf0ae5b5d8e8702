"""Client certificates for VPN configs, signed by the signer service (vpnfleet/signer).

The web app never holds the CA key: it makes the user's key here, sends only the public key and
gets the certificate back. Neither the CA's index nor any other file records the certificate: the
controller's database does (the config's serial), so an issuance costs the same however many
certificates were issued before.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from vpnfleet.shared.pki import keys
from vpnfleet.signer import protocol
from vpnfleet.signer.protocol import SignerError

__all__ = ["ClientCertificateIssuer", "IssuedClientCertificate", "SignerError"]


@dataclass(frozen=True)
class IssuedClientCertificate:
    common_name: str
    serial_number: str
    certificate_pem: str
    private_key_pem: str
    expires_at: datetime  # naive UTC, like the database


class ClientCertificateIssuer:
    """Issues the certificates in users' configs and has the CRL signed, both by asking the signer;
    the CA certificate is fetched once per process."""

    def __init__(self, socket_path: Path):
        self.socket_path = socket_path
        self._ca: dict | None = None

    def _call(self, request: dict) -> dict:
        return protocol.call(self.socket_path, request)

    def _ca_answer(self) -> dict:
        if self._ca is None:
            self._ca = self._call({"op": "ca_certificate"})
        return self._ca

    def ca_certificate_pem(self) -> str:
        return self._ca_answer()["certificate"]

    def issue(self, expires_at: datetime, now: datetime) -> IssuedClientCertificate:
        # The common name says nothing about the user: it travels in clear in TLS 1.2 handshakes.
        common_name = secrets.token_hex(16)
        key = keys.make_private_key()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        answer = self._call(
            {
                "op": "issue_client",
                "public_key": public_pem.decode(),
                "common_name": common_name,
                "not_after": protocol.format_time(expires_at),
            }
        )
        cert = keys.load_certificate(answer["certificate"])
        if not keys.same_public_key(cert.public_key(), key.public_key()):
            raise SignerError("the signer certified another key")
        return IssuedClientCertificate(
            common_name=common_name,
            serial_number=keys.serial_hex(cert.serial_number),
            certificate_pem=answer["certificate"],
            private_key_pem=keys.private_key_pem(key).decode(),
            expires_at=keys.not_after(cert).replace(tzinfo=None),
        )

    def sign_crl(
        self, revoked: list[tuple[str, datetime]], this_update: datetime, next_update: datetime
    ) -> bytes:
        """The CRL (PEM) of these revoked configs (serial hex, revoked_at; naive is UTC) and of the
        node certificates revoked in the CA's own index, signed and published by the signer: the
        only place a CRL is signed.

        Its number is at least thisUpdate in microseconds (authority._write_crl): it grows with
        every CRL the controller signs (one at a time, see crl.publish_crl), and the nodes refuse
        a lower one."""
        answer = self._call(
            {
                "op": "sign_crl",
                "revoked": [[serial, protocol.format_time(moment)] for serial, moment in revoked],
                "this_update": protocol.format_time(this_update),
                "next_update": protocol.format_time(next_update),
            }
        )
        return answer["crl"].encode()
