"""The daemon suite's part of the lab: its addresses, PKI, hand-written OpenVPN configs, an HTTPS client.

The namespaces, processes and waiting come from the shared ``openvpn_netlab``. Every name starts
with "vfd-", the underlay is 198.51.100.128/26.
"""

import datetime
import http.client
import json
import socket
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path

from openvpn_netlab import WAIT_SECONDS, Credentials, Namespaces, issue_files, without_tun_setup
from vpnfleet.shared import files
from vpnfleet.shared.pki import authority, keys

NAME_PREFIX = "vfd"
UNDERLAY_PREFIX = 26
SERVER_UNDERLAY_ADDRESS = "198.51.100.129"
CLIENT_UNDERLAY_ADDRESS = "198.51.100.130"
DAEMON_PORT = 41194
# The daemon's /metrics listener (metrics_listen_port), for the monitoring host.
METRICS_PORT = 9194
OPENVPN_PORT = 1194


def create_namespaces() -> Namespaces:
    return Namespaces.create(NAME_PREFIX, SERVER_UNDERLAY_ADDRESS, CLIENT_UNDERLAY_ADDRESS, UNDERLAY_PREFIX)


@dataclass
class LabPki:
    """One vpnfleet CA for everything (VPN and daemon), plus a stranger CA, made by vpnfleet.shared.pki."""

    directory: Path
    ca_certificate: Path
    tls_crypt_key: Path
    _ca: authority.CertificateAuthority
    _stranger_ca: authority.CertificateAuthority
    _issued: dict = field(default_factory=dict)

    @classmethod
    def create(cls, directory: Path) -> "LabPki":
        ca = authority.CertificateAuthority.create(str(directory / "ca"), common_name="vfd test CA")
        stranger = authority.CertificateAuthority.create(
            str(directory / "stranger-ca"), common_name="vfd stranger CA"
        )
        tls_crypt_key = directory / "tls-crypt.key"
        files.write_file_atomic(tls_crypt_key, keys.make_tls_crypt_key(), 0o600)
        return cls(
            directory=directory,
            ca_certificate=Path(ca.cert_path),
            tls_crypt_key=tls_crypt_key,
            _ca=ca,
            _stranger_ca=stranger,
        )

    def credentials(
        self, common_name: str, purpose: str, ip_addresses=(), stranger: bool = False
    ) -> Credentials:
        """Issue (once) and write a key and certificate; ``stranger`` issues from the other CA."""
        key = (common_name, purpose, stranger)
        if key not in self._issued:
            ca = self._stranger_ca if stranger else self._ca
            stem = self.directory / f"{'stranger-' if stranger else ''}{common_name}-{purpose}"
            self._issued[key] = issue_files(ca, stem, common_name, purpose, ip_addresses, lifetime_days=365)
        return self._issued[key]

    @property
    def crl(self) -> Path:
        return Path(self._ca.crl_path)

    def revoke(self, credentials: Credentials) -> None:
        self._ca.revoke(credentials.serial, "key_compromise")

    def sign_crl(self, number: int, valid_for=datetime.timedelta(hours=1), extra=(), stranger=False) -> str:
        """A CRL as the controller signs it: what the CA revoked, plus ``extra`` credentials."""
        ca = self._stranger_ca if stranger else self._ca
        now = keys.utcnow()
        revoked = self._ca.revoked_records(now) + [(keys.serial_hex(c.serial), now) for c in extra]
        return ca.sign_crl(revoked, now - datetime.timedelta(minutes=1), now + valid_for, number).decode()


@dataclass(frozen=True)
class ServerInstance:
    """One planned OpenVPN process: profile-index, protocol and its slice of the client ranges."""

    name: str
    protocol: str
    ipv4_network: str
    ipv4_netmask: str
    ipv6_network: str


def openvpn_server_config(
    instance: ServerInstance, lab_pki: LabPki, credentials: Credentials, socket_path: Path
) -> str:
    return "\n".join(
        [
            "mode server",
            "tls-server",
            "dev tun",
            "topology subnet",
            f"proto {'tcp-server' if instance.protocol == 'tcp' else 'udp'}",
            f"local {SERVER_UNDERLAY_ADDRESS}",
            f"port {OPENVPN_PORT}",
            f"server {instance.ipv4_network} {instance.ipv4_netmask}",
            f"server-ipv6 {instance.ipv6_network}",
            f"ca {lab_pki.ca_certificate}",
            f"cert {credentials.certificate}",
            f"key {credentials.private_key}",
            "dh none",
            f"tls-crypt {lab_pki.tls_crypt_key}",
            "keepalive 10 60",
            f"management {socket_path} unix",
            "verb 3",
            "",
        ]
    )


def openvpn_client_config(protocol: str, lab_pki: LabPki, credentials: Credentials) -> str:
    lines = [
        "client",
        "dev tun",
        f"proto {'tcp-client' if protocol == 'tcp' else 'udp'}",
        f"remote {SERVER_UNDERLAY_ADDRESS} {OPENVPN_PORT}",
        "nobind",
        f"ca {lab_pki.ca_certificate}",
        f"cert {credentials.certificate}",
        f"key {credentials.private_key}",
        f"tls-crypt {lab_pki.tls_crypt_key}",
        "remote-cert-tls server",
        "verb 3",
    ]
    if protocol == "udp":
        # Tell the server at once when the test stops the client, so no stale entry lingers.
        lines.append("explicit-exit-notify 1")
    # Several clients share the client namespace.
    return without_tun_setup("\n".join(lines))


@dataclass
class DaemonResponse:
    status: int
    payload: dict
    headers: dict
    text: str = ""  # the body, when it is not JSON (/metrics)


class DaemonClient:
    """Talks HTTPS to the daemon from the client namespace, as the controller would from afar."""

    def __init__(self, namespaces: Namespaces, lab_pki: LabPki):
        self._namespaces = namespaces
        self._pki = lab_pki

    def tls_context(
        self, credentials: Credentials | None, tls_version=ssl.TLSVersion.TLSv1_3
    ) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=self._pki.ca_certificate)
        context.minimum_version = context.maximum_version = tls_version
        if credentials is not None:
            context.load_cert_chain(credentials.certificate, credentials.private_key)
        return context

    def connect(self, context: ssl.SSLContext, port: int = DAEMON_PORT) -> ssl.SSLSocket:
        sock = self._namespaces.socket_in(self._namespaces.client)
        sock.settimeout(WAIT_SECONDS)
        try:
            sock.connect((SERVER_UNDERLAY_ADDRESS, port))
            return context.wrap_socket(sock, server_hostname=SERVER_UNDERLAY_ADDRESS)
        except BaseException:
            sock.close()
            raise

    def raw_exchange(
        self, context: ssl.SSLContext, request: bytes, port: int = DAEMON_PORT
    ) -> DaemonResponse:
        with self.connect(context, port) as tls_socket:
            tls_socket.sendall(request)
            response = http.client.HTTPResponse(tls_socket)
            response.begin()
            body = response.read()
            headers = dict(response.getheaders())
            if headers.get("Content-Type", "").startswith("text/plain"):
                return DaemonResponse(response.status, {}, headers, body.decode())
            return DaemonResponse(response.status, json.loads(body) if body else {}, headers)

    def request(
        self,
        method: str,
        path: str,
        credentials: Credentials | None,
        form: str | None = None,
        content_type: str = "application/x-www-form-urlencoded",
        port: int = DAEMON_PORT,
    ) -> DaemonResponse:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {SERVER_UNDERLAY_ADDRESS}:{port}",
            "Connection: close",
        ]
        body = (form or "").encode()
        if form is not None:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        return self.raw_exchange(self.tls_context(credentials), request, port)

    def refusal(self, context: ssl.SSLContext, port: int = DAEMON_PORT) -> str:
        """How the daemon refused this TLS client; fails when it answered an HTTP request instead."""
        request = (
            f"GET /i/node HTTP/1.1\r\nHost: {SERVER_UNDERLAY_ADDRESS}\r\nConnection: close\r\n\r\n".encode()
        )
        try:
            response = self.raw_exchange(context, request, port)
        except (ssl.SSLError, OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        raise AssertionError(f"the daemon answered a client it should refuse: {response}")


def silent_management_socket(path: Path) -> socket.socket:
    """A unix socket that accepts connections into its backlog but never says a word: a hung process."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    return listener


def stale_management_socket(path: Path) -> None:
    """The socket file a crashed OpenVPN leaves behind: connecting to it is refused."""
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()


def daemon_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "vpnfleet.daemon", "--settings", str(config_path)]
