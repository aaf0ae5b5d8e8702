"""The HTTPS server: a TLS handshake per connection, the purpose check, then the API.

The standard library's threading HTTP server is enough for three calls from one controller,
and keeps the daemon free of dependencies on the nodes (see docs/daemon.md).
"""

import json
import logging
import socket
import socketserver
import ssl
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from vpnfleet.settings_file import SettingsError

from . import metrics
from .api import ROUTES, ApiError, NodeState, Parameters, Route
from .crl import MAX_CRL_BYTES, CrlFile
from .management import ProcessFleet
from .settings import DaemonSettings
from .tls import (
    metrics_server_context,
    peer_common_name,
    peer_refusal,
    pinned_fingerprints,
    pinned_peer_refusal,
    server_context,
)
from .wireguard import WireGuard

log = logging.getLogger("vpnfleet.daemon")

# A client that cannot finish a handshake or send its request in this time is not our controller.
HANDSHAKE_TIMEOUT = 10.0
REQUEST_IDLE_TIMEOUT = 30.0
MAX_FORM_BYTES = 4096
MAX_FORM_FIELDS = 16
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
CRL_CONTENT_TYPES = ("application/x-pem-file", "application/pkix-crl")


class DaemonRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vpnfleet-daemon"
    sys_version = ""
    timeout = REQUEST_IDLE_TIMEOUT
    server: "DaemonHTTPServer"

    def do_GET(self) -> None:  # the name http.server dispatches to
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def __getattr__(self, name: str):
        # Any other method gets a JSON 405 from _dispatch rather than http.server's HTML 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server calls this for requests it cannot parse; answer those in JSON too."""
        self.close_connection = True
        # An unparsable request line leaves http.server thinking HTTP/0.9, which has no status
        # line or headers; the caller deserves a real HTTP answer.
        self.request_version = self.protocol_version
        self._send_json(code, {"error": message or HTTPStatus(code).phrase})

    def log_message(self, format: str, *args) -> None:
        log.info("%s (%s) %s", self.client_address[0], peer_common_name(self.connection), format % args)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        route = self.server.routes.get(url.path)
        try:
            if route is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no such call: {url.path}")
            if self.command != route.method:
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{url.path} takes {route.method} only")
            if route.body == "crl":
                payload = route.call(self.server.state, self._read_crl())  # type: ignore[arg-type]
            else:
                parameters = self._read_form() if route.method == "POST" else _parse_fields(url.query)
                payload = route.call(self.server.state, parameters)  # type: ignore[arg-type]
            if isinstance(payload, bytes):
                self._send(HTTPStatus.OK, payload, metrics.CONTENT_TYPE)
                return
        except ApiError as refusal:
            self.close_connection = True
            self._send_json(refusal.status, {"error": refusal.reason})
            return
        except Exception:  # noqa: BLE001 - a bug must cost one request a 500, never the daemon
            log.exception("%s %s failed", self.command, url.path)
            self.close_connection = True
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error, see the daemon's log"}
            )
            return
        self._send_json(HTTPStatus.OK, payload)

    def _read_crl(self) -> bytes:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in CRL_CONTENT_TYPES:
            raise ApiError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the CRL as {' or '.join(CRL_CONTENT_TYPES)}"
            )
        return self._read_body(MAX_CRL_BYTES)

    def _read_body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if int(length) > limit:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body may be {limit} bytes at most")
        return self.rfile.read(int(length))

    def _read_form(self) -> Parameters:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != FORM_CONTENT_TYPE:
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the parameters as {FORM_CONTENT_TYPE}")
        body = self._read_body(MAX_FORM_BYTES)
        try:
            return _parse_fields(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "the form is not UTF-8") from None

    def _send_json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", self.server.routes[urlsplit(self.path).path].method)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _parse_fields(text: str) -> Parameters:
    try:
        return parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"more than {MAX_FORM_FIELDS} parameters") from None


class DaemonHTTPServer(ThreadingHTTPServer):
    """The API for the controller; the same server class, with other routes, a port, a
    certificate and a peer check of its own, serves /metrics to the monitoring host
    (``metrics``, None when off)."""

    daemon_threads = True
    routes: dict[str, Route] = ROUTES
    metrics: "MetricsHTTPServer | None" = None

    def __init__(
        self,
        settings: DaemonSettings,
        tls_context: ssl.SSLContext,
        state: NodeState,
        port: int | None = None,
    ):
        self.address_family = socket.AF_INET6 if ":" in settings.listen_address else socket.AF_INET
        self.tls_context = tls_context
        self.state = state
        super().__init__((settings.listen_address, port or settings.listen_port), DaemonRequestHandler)

    def peer_refusal(self, tls_socket: ssl.SSLSocket) -> str | None:
        return peer_refusal(tls_socket, self.state.crl)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # "::" serves IPv4 too, whatever the host's net.ipv6.bindv6only says.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind would resolve our own name, which hangs where DNS is unreachable.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    # A TCP server's requests are its accepted sockets, never the datagrams the base class allows.
    def finish_request(self, request: socket.socket, client_address) -> None:  # type: ignore[override]
        """Runs in the connection's own thread, so a slow handshake never blocks accepting others."""
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls_socket = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.warning("refused %s: TLS handshake failed: %s", client_address[0], exc)
            return
        try:
            # Decided before a single byte of the request is read.
            refusal = self.peer_refusal(tls_socket)
            if refusal:
                log.warning("refused %s (%s): %s", client_address[0], peer_common_name(tls_socket), refusal)
                return
            DaemonRequestHandler(tls_socket, client_address, self)
        finally:
            tls_socket.close()

    def server_close(self) -> None:
        super().server_close()
        if self.metrics is not None:
            self.metrics.server_close()
        self.state.fleet.close()


class MetricsHTTPServer(DaemonHTTPServer):
    routes = {"/metrics": Route("GET", lambda state, query: metrics.render(state.fleet, state.wireguard))}

    def __init__(self, settings: DaemonSettings, state: NodeState):
        assert settings.metrics_client_certificates is not None and settings.metrics_listen_port
        self.fingerprints = pinned_fingerprints(settings.metrics_client_certificates)
        super().__init__(settings, metrics_server_context(settings), state, settings.metrics_listen_port)

    def peer_refusal(self, tls_socket: ssl.SSLSocket) -> str | None:
        return pinned_peer_refusal(tls_socket, self.fingerprints)

    def server_close(self) -> None:
        # The fleet is the API server's, which closes it.
        ThreadingHTTPServer.server_close(self)


def create_server(settings: DaemonSettings) -> DaemonHTTPServer:
    """The app factory: everything the daemon needs, from its settings; raises SettingsError."""
    tls_context = server_context(settings)
    fleet = ProcessFleet(
        settings.management_socket_glob, settings.management_timeout, settings.maintenance_flag_file
    )
    crl = CrlFile(settings.tls_crl, settings.tls_ca) if settings.tls_crl is not None else None
    state = NodeState(fleet, crl, WireGuard(settings.wireguard, settings.wireguard_command))
    port = settings.listen_port
    try:
        server = DaemonHTTPServer(settings, tls_context, state)
        if settings.metrics_listen_port is not None:
            port = settings.metrics_listen_port
            try:
                server.metrics = MetricsHTTPServer(settings, state)
            except BaseException:
                server.socket.close()
                raise
        return server
    except OSError as exc:
        fleet.close()
        setting = "listen_port" if port == settings.listen_port else "metrics_listen_port"
        raise SettingsError(
            f"listen_address/{setting}: cannot listen on [{settings.listen_address}]:"
            f"{port}: {exc.strerror or exc}"
        ) from None
