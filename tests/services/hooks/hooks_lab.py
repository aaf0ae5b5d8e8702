"""The hook suite's part of the lab: its addresses, and the real controller app served over HTTPS
inside the server namespace behind a front that records, holds or fails the node-API calls.

The namespaces, the OpenVPN server and clients come from the shared ``openvpn_netlab``. Every name
starts with "vfk-", the underlay is 198.51.100.192/27, the VPN range 198.19.128.0/24 and
2001:db8:f1::/64.
"""

from __future__ import annotations

import io
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from openvpn_netlab import WAIT_SECONDS, Namespaces
from werkzeug.serving import make_server

NAME_PREFIX = "vfk"
UNDERLAY_PREFIX = 27
SERVER_ADDRESS = "198.51.100.193"
CLIENT_ADDRESS = "198.51.100.194"
OPENVPN_PORT = 1194
VPN_IPV4_RANGE = "198.19.128.0/24"
VPN_IPV6_RANGE = "2001:db8:f1::/64"


def create_namespaces() -> Namespaces:
    return Namespaces.create(NAME_PREFIX, SERVER_ADDRESS, CLIENT_ADDRESS, UNDERLAY_PREFIX)


@dataclass
class ControllerFront:
    """WSGI middleware in front of the real controller app. It records every node-API call in
    order, can hold the connect of chosen common names until released, and can answer 5xx
    (a controller whose app server is broken)."""

    app: Callable
    events: list = field(default_factory=list)
    held: dict = field(default_factory=dict)
    fail_status: str | None = None
    fail_body: bytes | None = None  # a JSON body to send with fail_status instead of an HTML page
    missing_calls: set = field(default_factory=set)  # answered 404, as a controller without them would
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
        if call in self.missing_calls:
            self.record(f"{call} {common_name} answered 404 Not Found")
            start_response("404 Not Found", [("Content-Type", "text/html")])
            return [b"<html><body>Not Found</body></html>"]
        gate = self.held.get(common_name) if call == "connect" else None
        if gate is not None:
            gate.wait(WAIT_SECONDS)
        if self.fail_status:
            self.record(f"{call} {common_name} answered {self.fail_status}")
            if self.fail_body is not None:
                start_response(self.fail_status, [("Content-Type", "application/json")])
                return [self.fail_body]
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


def hook_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "vpnfleet-hook[" in line]
