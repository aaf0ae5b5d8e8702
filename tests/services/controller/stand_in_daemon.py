"""A stand-in for a node's VPN daemon: the vpn-daemon v3 calls over real mutual TLS.

The real daemon needs OpenVPN processes behind it; the controller's side is what is tested
here, so this serves the same calls from a list the test controls, and requires a client
certificate from the test CA just as the real one does.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class StandInDaemon:
    def __init__(self, cert: Path, key: Path, ca: Path):
        self.connections: list[dict] = []
        self.disconnected: list[str] = []
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, payload: dict | None) -> None:
                body = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/o/connection_list":
                    self._answer(200, {"connection_list": list(daemon.connections)})
                elif self.path == "/i/node":
                    self._answer(
                        200,
                        {
                            "rel_load_average": [1, 2, 3],
                            "load_average": [0.01, 0.02, 0.03],
                            "cpu_count": 2,
                            "node_uptime": 100,
                            "v": "stand-in",
                        },
                    )
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if self.path != "/o/disconnect_client" or "common_name" not in form:
                    self._answer(400, {"error": "bad request"})
                    return
                name = form["common_name"][0]
                daemon.disconnected.append(name)
                daemon.connections = [c for c in daemon.connections if c["common_name"] != name]
                self._answer(204, None)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(str(cert), str(key))
        context.load_verify_locations(str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> StandInDaemon:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
