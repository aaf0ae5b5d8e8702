"""The hooks' resident worker (`vpnfleet-hook serve`): the shim hands it each event over a unix
socket, so a reconnect storm starts no Python process per client.

One HTTP/1.0 request per event on the socket, the body OpenVPN's variables form-encoded
(``curl --data-urlencode``, see the shim in cli.py):

    POST /connect      answers "1" (allow) or "0" (deny) once decided, at the latest after
                       timeout_seconds + DEADLINE_MARGIN_SECONDS (then decided as with no answer)
    POST /disconnect   answers "queued" at once; the report goes out in the background, so a
                       stopping OpenVPN process never waits for the controller

The shim writes the byte into OpenVPN's deferred file itself: that file lives in the OpenVPN
unit's private /tmp, out of the worker's reach. Whatever is not one of these answers (no worker,
a worker that dies mid-request) makes the shim fall back to the one-shot Python run, which decides
by the same rules.

The socket comes from systemd (``vpnfleet-hooks.socket``, LISTEN_FDS: only OpenVPN's group may
connect) or from ``--socket PATH`` (made 0660 for ``--socket-group``).
"""

from __future__ import annotations

import grp
import http.server
import os
import signal
import socket
import socketserver
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from urllib.parse import parse_qsl

from . import node_api
from .hook import (
    CONNECT,
    DEADLINE_MARGIN_SECONDS,
    DISCONNECT,
    ClientEvent,
    Decision,
    DecisionLog,
    late_decision,
    log_connect,
    run_disconnect,
    safe_decision,
)
from .settings import HookSettings

SYSTEMD_FIRST_FD = 3
# Calls to the controller at once; also the pooled keep-alive connections. A storm's connects
# queue here for a few milliseconds each rather than open a TLS session per client.
DEFAULT_CONCURRENCY = 16
MAX_EVENT_BYTES = 16 * 1024
# OpenVPN's variables a hook reads (ClientEvent.from_environment); everything else is dropped.
EVENT_VARIABLES = frozenset(
    {
        "script_type",
        "common_name",
        "ifconfig_pool_remote_ip",
        "ifconfig_pool_remote_ip6",
        "trusted_ip",
        "trusted_ip6",
        "bytes_received",
        "bytes_sent",
        "VPNFLEET_PROFILE",
    }
)


class HookWorker:
    def __init__(self, settings: HookSettings, concurrency: int = DEFAULT_CONCURRENCY):
        self.settings = settings
        self.log = DecisionLog(settings.syslog)
        self.pool = node_api.ConnectionPool(settings, concurrency)
        self.calls = ThreadPoolExecutor(concurrency, thread_name_prefix="controller")
        threading.Thread(target=self.pool.keep_warm, name="keep-warm", daemon=True).start()

    def connect(self, environment: dict) -> bool:
        started = time.monotonic()
        event = ClientEvent.from_environment(environment, self.settings)
        future = self.calls.submit(self._decide, event, time.monotonic())
        try:
            decision, queued, opened = future.result(
                timeout=self.settings.timeout_seconds + DEADLINE_MARGIN_SECONDS
            )
            # Where a slow check's time went: waiting for a free call, or a TLS handshake first.
            detail = f"queued {queued:.3f} s, {'new' if opened else 'pooled'} connection"
        except FutureTimeout:
            # Still queued behind other calls: decided now, so the controller need not be asked.
            future.cancel()
            decision, detail = late_decision(self.settings), None
        log_connect(self.log, self.settings, event, decision, time.monotonic() - started, detail)
        return decision.allow

    def _decide(self, event: ClientEvent, submitted: float) -> tuple[Decision, float, bool]:
        began = time.monotonic()
        decision = safe_decision(self.settings, event, self.pool.post)
        return decision, began - submitted, self.pool.opened_a_connection()

    def disconnect(self, environment: dict) -> None:
        event = ClientEvent.from_environment(environment, self.settings)
        self.calls.submit(run_disconnect, self.settings, event, self.log, self.pool.post)

    def close(self) -> None:
        self.calls.shutdown(wait=False, cancel_futures=True)
        self.pool.close()


class _EventHandler(http.server.BaseHTTPRequestHandler):
    server: _EventServer
    # One event per connection: the shim's curl sends one request and goes.
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        kind = self.path.strip("/")
        expected = {"connect": CONNECT, "disconnect": DISCONNECT}.get(kind)
        length = int(self.headers.get("Content-Length") or 0)
        if expected is None or not 0 < length <= MAX_EVENT_BYTES:
            self._answer(400, b"bad event\n")
            return
        environment = {
            name: value
            for name, value in parse_qsl(self.rfile.read(length).decode("utf-8", "replace"))
            if name in EVENT_VARIABLES
        }
        if environment.get("script_type") != expected:
            self._answer(400, b"script_type does not match\n")
            return
        if expected == CONNECT:
            self._answer(200, b"1" if self.server.worker.connect(environment) else b"0")
        else:
            self.server.worker.disconnect(environment)
            self._answer(202, b"queued")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 - http.server's signature
        """Each decision is logged once, by the worker; no access log."""


class _EventServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # A storm's shims connect at once; the kernel queues them until the worker accepts.
    request_queue_size = 512

    def __init__(self, listener: socket.socket, worker: HookWorker):
        super().__init__("", _EventHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.worker = worker


def systemd_listener() -> socket.socket | None:
    """The socket systemd passed (socket activation), or None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS") or 0) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=SYSTEMD_FIRST_FD)


def bound_listener(path: Path, group: str | None) -> socket.socket:
    """A socket of our own at ``path``: 0660, so that only ``group`` (OpenVPN's) may connect."""
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o117)
    try:
        listener.bind(str(path))
    finally:
        os.umask(previous)
    if group is not None:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    listener.listen(_EventServer.request_queue_size)
    return listener


def serve(settings: HookSettings, listener: socket.socket, concurrency: int = DEFAULT_CONCURRENCY) -> int:
    worker = HookWorker(settings, concurrency)
    server = _EventServer(listener, worker)

    def stop(signum, frame) -> None:
        # shutdown() waits for serve_forever, which runs in this thread: ask from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.log.line(
        f"worker ready: node {settings.node_name}, {settings.node_api_url}, {concurrency} calls at once"
    )
    try:
        server.serve_forever()
    finally:
        # Connects still in flight lose their connection: their shims fall back to a run of their own.
        server.server_close()
        worker.close()
    return 0
