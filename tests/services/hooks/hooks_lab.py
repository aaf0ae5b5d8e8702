"""A small lab for the hook tests: two network namespaces, a real OpenVPN server running the hooks,
real openvpn clients, and the real controller app served over HTTPS inside the server namespace.

Every name starts with "vfk-", the underlay is 198.51.100.192/27, the VPN range 198.19.128.0/24
and 2001:db8:f1::/64. Every process is stopped by the PID we started it with.
"""

from __future__ import annotations

import ctypes
import io
import json
import re
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.serving import make_server

UNDERLAY_PREFIX = 27
SERVER_ADDRESS = "198.51.100.193"
CLIENT_ADDRESS = "198.51.100.194"
OPENVPN_PORT = 1194
VPN_IPV4_RANGE = "198.19.128.0/24"
VPN_IPV6_RANGE = "2001:db8:f1::/64"
# Waiting for a process to come up or go away; generous, because a 2-core CI machine is slow.
WAIT_SECONDS = 60.0

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
    """A server and a client namespace joined by a veth pair on 198.51.100.192/27."""

    server: str
    client: str
    token: str

    @classmethod
    def create(cls) -> Namespaces:
        token = secrets.token_hex(3)
        namespaces = cls(server=f"vfk-s{token}", client=f"vfk-c{token}", token=token)
        try:
            namespaces._build()
        except BaseException:
            namespaces.remove()
            raise
        return namespaces

    def _build(self) -> None:
        server_link, client_link = f"vfk-{self.token}s", f"vfk-{self.token}c"
        run("ip", "netns", "add", self.server)
        run("ip", "netns", "add", self.client)
        run("ip", "link", "add", server_link, "type", "veth", "peer", "name", client_link)
        run("ip", "link", "set", server_link, "netns", self.server)
        run("ip", "link", "set", client_link, "netns", self.client)
        for namespace, link, address in (
            (self.server, server_link, SERVER_ADDRESS),
            (self.client, client_link, CLIENT_ADDRESS),
        ):
            run("ip", "-n", namespace, "addr", "add", f"{address}/{UNDERLAY_PREFIX}", "dev", link)
            run("ip", "-n", namespace, "link", "set", link, "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")

    def remove(self) -> None:
        # Deleting a namespace deletes the veth end inside it, and with it the peer.
        for namespace in (self.server, self.client):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)

    def socket_in(self, namespace: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """An IPv4 socket that lives in ``namespace``, made by a short-lived thread that joins it
        (setns() moves only the calling thread; a socket stays in the namespace it was made in)."""
        made: dict = {}

        def make() -> None:
            try:
                with open(f"/run/netns/{namespace}") as handle:
                    if _libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {namespace}")
                made["socket"] = socket.socket(socket.AF_INET, kind)
            except OSError as exc:
                made["error"] = exc

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        return made["socket"]

    def listening_socket(self, namespace: str, address: str = "127.0.0.1") -> socket.socket:
        """A listening TCP socket on a free port in ``namespace``."""
        listener = self.socket_in(namespace)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, 0))
        listener.listen(16)
        return listener


@dataclass
class OpenVpnProcess:
    """A running `openvpn` and its log file."""

    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, namespace: str, config_text: str, config_path: Path) -> OpenVpnProcess:
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

    def connected(self) -> bool:
        return "Initialization Sequence Completed" in self.log()

    def wait_until_up(self) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"openvpn exited with {self.process.returncode}:\n{self.log()}")
            return self.connected()

        wait_for(up, f"openvpn to come up ({self.log_path})")

    def wait_until_refused(self) -> None:
        """A client the server refuses hears AUTH_FAILED and exits by itself."""
        wait_for(lambda: self.process.poll() is not None, f"the refused client to exit ({self.log_path})")
        assert "AUTH_FAILED" in self.log(), self.log()
        assert not self.connected(), self.log()

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class ControllerFront:
    """WSGI middleware in front of the real controller app. It records every node-API call in
    order, can hold the connect of chosen common names until released, and can answer 5xx
    (a controller whose app server is broken)."""

    app: Callable
    events: list = field(default_factory=list)
    held: dict = field(default_factory=dict)
    fail_status: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def hold(self, common_name: str) -> threading.Event:
        self.held[common_name] = threading.Event()
        return self.held[common_name]

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        call = environ["PATH_INFO"].rsplit("/", 1)[-1]
        try:
            common_name = json.loads(body).get("common_name")
        except ValueError:
            common_name = None
        self.record(f"{call} {common_name} arrived")
        gate = self.held.get(common_name) if call == "connect" else None
        if gate is not None:
            gate.wait(WAIT_SECONDS)
        if self.fail_status:
            self.record(f"{call} {common_name} answered {self.fail_status}")
            start_response(self.fail_status, [("Content-Type", "text/html")])
            return [b"<html><body>Bad Gateway</body></html>"]
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            return start_response(status, headers, exc_info)

        result = list(self.app(environ, capture))
        self.record(f"{call} {common_name} answered {captured.get('status')}")
        return result


class HttpsController:
    """The front + real app on a werkzeug threaded HTTPS server, on a socket in a namespace."""

    def __init__(self, app, listener: socket.socket, certificate: Path, private_key: Path):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, private_key)
        self.listener = listener
        self.server = make_server(
            "127.0.0.1", 0, app, threaded=True, ssl_context=context, fd=listener.fileno()
        )
        self.port = listener.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="controller", daemon=True)

    def start(self) -> HttpsController:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.listener.close()


def replace_credentials(ovpn: str, certificate_pem: str, key_pem: str) -> str:
    """The same .ovpn with another certificate and key (a certificate the controller never issued)."""
    ovpn = re.sub(
        r"<cert>.*?</cert>", lambda _m: f"<cert>\n{certificate_pem.strip()}\n</cert>", ovpn, flags=re.S
    )
    return re.sub(r"<key>.*?</key>", lambda _m: f"<key>\n{key_pem.strip()}\n</key>", ovpn, flags=re.S)


def hook_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "vpnfleet-hook[" in line]
