"""A small lab for the daemon tests: network namespaces, real OpenVPN processes, an HTTPS client.

Everything here is real: the namespaces and veth pair are kernel objects, the servers and
clients are Debian's `openvpn`, and the daemon runs as its own process. Every name starts
with "vfd-" and every process is stopped by the PID we started it with.
"""

import ctypes
import http.client
import json
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vpnfleet.shared import pki

UNDERLAY_PREFIX = 26
SERVER_UNDERLAY_ADDRESS = "198.51.100.129"
CLIENT_UNDERLAY_ADDRESS = "198.51.100.130"
DAEMON_PORT = 41194
OPENVPN_PORT = 1194
# Waiting for a process to come up or go away; generous, because a 2-core CI machine is slow.
WAIT_SECONDS = 45.0

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_SECONDS):
    """Poll until ``condition()`` returns something truthy and return it; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Namespaces:
    """Two network namespaces joined by a veth pair on the underlay 198.51.100.128/26."""

    server: str
    client: str
    token: str

    @classmethod
    def create(cls) -> "Namespaces":
        token = secrets.token_hex(3)
        namespaces = cls(server=f"vfd-s{token}", client=f"vfd-c{token}", token=token)
        try:
            namespaces._build()
        except BaseException:
            namespaces.remove()
            raise
        return namespaces

    def _build(self) -> None:
        server_link, client_link = f"vfd-{self.token}s", f"vfd-{self.token}c"
        run("ip", "netns", "add", self.server)
        run("ip", "netns", "add", self.client)
        run("ip", "link", "add", server_link, "type", "veth", "peer", "name", client_link)
        run("ip", "link", "set", server_link, "netns", self.server)
        run("ip", "link", "set", client_link, "netns", self.client)
        for namespace, link, address in (
            (self.server, server_link, SERVER_UNDERLAY_ADDRESS),
            (self.client, client_link, CLIENT_UNDERLAY_ADDRESS),
        ):
            run("ip", "-n", namespace, "addr", "add", f"{address}/{UNDERLAY_PREFIX}", "dev", link)
            run("ip", "-n", namespace, "link", "set", link, "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")

    def remove(self) -> None:
        # Deleting a namespace deletes the veth end inside it, and with it the peer.
        for namespace in (self.server, self.client):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)

    def socket_in(self, namespace: str) -> socket.socket:
        """A TCP socket that lives in ``namespace``, made by a short-lived thread that joins it.

        setns() moves only the calling thread, and a socket stays in the namespace it was made
        in, so the test process itself never leaves its own namespace.
        """
        made: dict = {}

        def make() -> None:
            try:
                with open(f"/run/netns/{namespace}") as handle:
                    if _libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {namespace}")
                made["socket"] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as exc:
                made["error"] = exc

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        return made["socket"]


@dataclass
class Credentials:
    """The files of one TLS identity."""

    certificate: Path
    private_key: Path
    serial: int


@dataclass
class LabPki:
    """One vpnfleet CA for everything (VPN and daemon), plus a stranger CA, made by vpnfleet.shared.pki."""

    directory: Path
    ca_certificate: Path
    tls_crypt_key: Path
    _ca: pki.CertificateAuthority
    _stranger_ca: pki.CertificateAuthority
    _issued: dict = field(default_factory=dict)

    @classmethod
    def create(cls, directory: Path) -> "LabPki":
        ca = pki.CertificateAuthority.create(str(directory / "ca"), common_name="vfd test CA")
        stranger = pki.CertificateAuthority.create(
            str(directory / "stranger-ca"), common_name="vfd stranger CA"
        )
        tls_crypt_key = directory / "tls-crypt.key"
        pki.write_file_atomic(tls_crypt_key, pki.make_tls_crypt_key(), 0o600)
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
            private_key, certificate = ca.issue(common_name, purpose, ip_addresses=ip_addresses)
            stem = self.directory / f"{'stranger-' if stranger else ''}{common_name}-{purpose}"
            pki.write_file_atomic(f"{stem}.crt", pki.certificate_pem(certificate))
            pki.write_file_atomic(f"{stem}.key", pki.private_key_pem(private_key), 0o600)
            self._issued[key] = Credentials(
                Path(f"{stem}.crt"), Path(f"{stem}.key"), serial=certificate.serial_number
            )
        return self._issued[key]

    @property
    def crl(self) -> Path:
        return Path(self._ca.crl_path)

    def revoke(self, credentials: Credentials) -> None:
        self._ca.revoke(credentials.serial, "key_compromise")


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
        # Several clients share one namespace; leaving their tun devices unconfigured keeps
        # their pushed addresses from clashing. The server assigns and reports them all the same.
        "ifconfig-noexec",
        "route-noexec",
        "verb 3",
    ]
    if protocol == "udp":
        # Tell the server at once when the test stops the client, so no stale entry lingers.
        lines.append("explicit-exit-notify 1")
    return "\n".join(lines) + "\n"


@dataclass
class OpenVpnProcess:
    """A running `openvpn` and its log file."""

    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, namespace: str, config_text: str, config_path: Path) -> "OpenVpnProcess":
        config_path.write_text(config_text)
        log_path = config_path.with_suffix(".log")
        # `ip netns exec` execs openvpn in place, so the PID we hold is openvpn's own.
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                "openvpn",
                "--config",
                str(config_path),
                "--log",
                str(log_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return cls(process, log_path)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_until_up(self) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"openvpn exited with {self.process.returncode}:\n{self.log()}")
            return "Initialization Sequence Completed" in self.log()

        wait_for(up, f"openvpn to come up ({self.log_path})")

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class DaemonResponse:
    status: int
    payload: dict
    headers: dict


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

    def connect(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        sock = self._namespaces.socket_in(self._namespaces.client)
        sock.settimeout(WAIT_SECONDS)
        try:
            sock.connect((SERVER_UNDERLAY_ADDRESS, DAEMON_PORT))
            return context.wrap_socket(sock, server_hostname=SERVER_UNDERLAY_ADDRESS)
        except BaseException:
            sock.close()
            raise

    def raw_exchange(self, context: ssl.SSLContext, request: bytes) -> DaemonResponse:
        with self.connect(context) as tls_socket:
            tls_socket.sendall(request)
            response = http.client.HTTPResponse(tls_socket)
            response.begin()
            body = response.read()
            return DaemonResponse(
                response.status, json.loads(body) if body else {}, dict(response.getheaders())
            )

    def request(
        self,
        method: str,
        path: str,
        credentials: Credentials | None,
        form: str | None = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> DaemonResponse:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {SERVER_UNDERLAY_ADDRESS}:{DAEMON_PORT}",
            "Connection: close",
        ]
        body = (form or "").encode()
        if form is not None:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        return self.raw_exchange(self.tls_context(credentials), request)

    def refusal(self, context: ssl.SSLContext) -> str:
        """How the daemon refused this TLS client; fails when it answered an HTTP request instead."""
        request = (
            f"GET /i/node HTTP/1.1\r\nHost: {SERVER_UNDERLAY_ADDRESS}\r\nConnection: close\r\n\r\n".encode()
        )
        try:
            response = self.raw_exchange(context, request)
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
    return [sys.executable, "-m", "vpnfleet.daemon", "--config", str(config_path)]
