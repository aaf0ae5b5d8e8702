"""The hooks' resident worker (`vpnfleet-hook serve`): the shim hands it each event over a unix
socket, so a reconnect storm starts no Python process per client.

One HTTP/1.0 request per event on the socket, the body OpenVPN's variables form-encoded
(``curl --data-urlencode``, see the shim in cli.py):

    POST /connect      answers "1" (allow) or "0" (deny) once decided, at the latest after
                       timeout_seconds + DEADLINE_MARGIN_SECONDS (then decided as with no answer)
    POST /disconnect   answers "queued" at once; the report goes out in the background, so a
                       stopping OpenVPN process never waits for the controller

Connect checks go out batched: up to DEFAULT_CONCURRENCY calls at once, each taking every check
queued when it starts (at most MAX_BATCH_CHECKS) to the controller's /connect_batch, so a storm
costs the controller one query and one commit per batch; a check that finds a call free goes
alone to /connect at once. A controller without /connect_batch (404) gets single calls for
BATCH_RETRY_SECONDS.

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
import queue
import signal
import socket
import socketserver
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
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
    connect_fields,
    decision_of,
    late_decision,
    log_connect,
    refusal_before_asking,
    run_disconnect,
    safe_decision,
    without_answer,
)
from .settings import HookSettings

SYSTEMD_FIRST_FD = 3
# Calls to the controller at once; also the pooled keep-alive connections. A storm's connects
# queue here for a few milliseconds each rather than open a TLS session per client.
DEFAULT_CONCURRENCY = 16
# The controller's /connect_batch limit (vpnfleet.controller.node_api.MAX_BATCH_CHECKS).
MAX_BATCH_CHECKS = 256
# After a 404 from /connect_batch (a controller older than it), single calls for this long.
BATCH_RETRY_SECONDS = 300.0
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


@dataclass
class _Check:
    """One client's connect check, queued until a call takes it."""

    event: ClientEvent
    queued_at: float = field(default_factory=time.monotonic)
    # The decision and where its time went, for the log line.
    outcome: Future[tuple[Decision, str]] = field(default_factory=Future)


class ConnectChecks:
    """The worker's calls to the controller for connect checks: ``concurrency`` threads, each
    sending what is queued when it is free (see the module's docstring)."""

    def __init__(self, settings: HookSettings, pool: node_api.ConnectionPool, concurrency: int):
        self.settings = settings
        self.pool = pool
        self._queue: queue.SimpleQueue[_Check | None] = queue.SimpleQueue()
        self._singles_until = 0.0
        self._senders = [
            threading.Thread(target=self._send_queued, name=f"controller-{index}", daemon=True)
            for index in range(concurrency)
        ]
        for sender in self._senders:
            sender.start()

    def submit(self, event: ClientEvent) -> Future[tuple[Decision, str]]:
        check = _Check(event)
        self._queue.put(check)
        return check.outcome

    def close(self) -> None:
        for _sender in self._senders:
            self._queue.put(None)

    def _send_queued(self) -> None:
        while (first := self._queue.get()) is not None:
            checks = [first]
            limit = 1 if time.monotonic() < self._singles_until else MAX_BATCH_CHECKS
            while len(checks) < limit:
                try:
                    check = self._queue.get_nowait()
                except queue.Empty:
                    break
                if check is None:
                    self._queue.put(None)  # another sender's stop
                    break
                checks.append(check)
            # A check past its deadline was decided by the worker already (and cancelled).
            checks = [check for check in checks if check.outcome.set_running_or_notify_cancel()]
            if checks:
                self._decide(checks)

    def _decide(self, checks: list[_Check]) -> None:
        began = time.monotonic()
        how = f"batch of {len(checks)}"
        try:
            decisions = self._batch_decisions(checks) if len(checks) > 1 else None
            if decisions is None:
                decisions = [safe_decision(self.settings, check.event, self.pool.post) for check in checks]
                how = "single call"
        except Exception as exc:  # noqa: BLE001 - a bug must refuse the clients, never leave them deferred
            decisions = [Decision(False, f"hook failed: {type(exc).__name__}: {exc}")] * len(checks)
        connection = "new" if self.pool.opened_a_connection() else "pooled"
        for check, decision in zip(checks, decisions, strict=True):
            check.outcome.set_result(
                (decision, f"queued {began - check.queued_at:.3f} s, {how}, {connection} connection")
            )

    def _batch_decisions(self, checks: list[_Check]) -> list[Decision] | None:
        """Each check's decision from one /connect_batch, or None: ask each alone."""
        try:
            answer = self.pool.post(
                self.settings, "connect_batch", {"checks": [connect_fields(check.event) for check in checks]}
            )
        except node_api.ControllerUnavailable as exc:
            return [without_answer(self.settings, f"controller unavailable ({exc})")] * len(checks)
        if answer.status == 404:
            self._singles_until = time.monotonic() + BATCH_RETRY_SECONDS
        if answer.status >= 300:
            # No batch call, or one check the controller refuses to read (400 for the whole
            # batch): each check alone gets its own answer.
            return None
        answers = answer.body.get("answers")
        if not isinstance(answers, list) or len(answers) != len(checks):
            why = f"controller unavailable (HTTP {answer.status}: not an answer to {len(checks)} checks)"
            return [without_answer(self.settings, why)] * len(checks)
        return [self._decision_in(each) for each in answers]

    def _decision_in(self, answer: object) -> Decision:
        if not isinstance(answer, dict):
            return without_answer(self.settings, "not a controller answer (a batch answer not an object)")
        status = answer.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status < 500:
            return without_answer(self.settings, "not a controller answer (a batch answer without a status)")
        return decision_of(self.settings, node_api.Answer(status, answer))


class HookWorker:
    def __init__(self, settings: HookSettings, concurrency: int = DEFAULT_CONCURRENCY):
        self.settings = settings
        self.log = DecisionLog(settings.syslog)
        self.pool = node_api.ConnectionPool(settings, concurrency)
        self.checks = ConnectChecks(settings, self.pool, concurrency)
        self.reports = ThreadPoolExecutor(concurrency, thread_name_prefix="report")
        threading.Thread(target=self.pool.keep_warm, name="keep-warm", daemon=True).start()

    def connect(self, environment: dict) -> bool:
        started = time.monotonic()
        event = ClientEvent.from_environment(environment, self.settings)
        detail = None
        decision = refusal_before_asking(event)
        if decision is None:
            outcome = self.checks.submit(event)
            try:
                decision, detail = outcome.result(
                    timeout=self.settings.timeout_seconds + DEADLINE_MARGIN_SECONDS
                )
            except FutureTimeout:
                # Still queued, or its call still waits: decided now (a queued check is then not sent).
                outcome.cancel()
                decision = late_decision(self.settings)
        log_connect(self.log, self.settings, event, decision, time.monotonic() - started, detail)
        return decision.allow

    def disconnect(self, environment: dict) -> None:
        event = ClientEvent.from_environment(environment, self.settings)
        self.reports.submit(run_disconnect, self.settings, event, self.log, self.pool.post)

    def close(self) -> None:
        self.checks.close()
        self.reports.shutdown(wait=False, cancel_futures=True)
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
