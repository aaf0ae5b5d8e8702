"""The controller's node API, as the hooks call it: one HTTPS POST with a short timeout."""

from __future__ import annotations

import base64
import http.client
import json
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from .settings import HookSettings

USER_AGENT = "vpnfleet-hook/1"
# Answers are a small JSON object; anything larger is not our controller.
MAX_ANSWER_BYTES = 64 * 1024
MAX_CRL_BYTES = 4 * 1024 * 1024


class ControllerUnavailable(Exception):
    """No usable answer: unreachable, timed out, TLS failure, 5xx or a broken answer."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict


def tls_context(settings: HookSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def post(settings: HookSettings, call: str, fields: dict) -> Answer:
    """POST ``fields`` as JSON to ``<node API>/<call>``. Returns 2xx and 4xx answers; raises
    ControllerUnavailable for everything else. Redirects are not followed: a redirect would
    carry the node's credentials somewhere else."""
    body = _json_body(fields)
    return _answer_of(_exchange(settings, "POST", call, body, "application/json", MAX_ANSWER_BYTES))


def get_crl(settings: HookSettings) -> bytes:
    """GET <node API>/crl: the controller's current CRL (checked by whoever installs it)."""
    status, payload = _exchange(settings, "GET", "crl", None, "application/x-pem-file", MAX_CRL_BYTES)
    if status != 200:
        raise ControllerUnavailable(f"HTTP {status}")
    return payload


class ConnectionPool:
    """Keep-alive HTTPS connections to the controller for the resident worker: a storm of
    connects costs one TLS handshake per pooled connection, not one per client. ``post`` has the
    same answers and errors as the module's ``post``; thread-safe.

    ``keep_warm`` (the worker calls it in a thread of its own) retires connections idle longer
    than IDLE_SECONDS, before the controller's front closes them (nginx: 75 s after a request),
    so that a storm after a quiet minute does not first meet closed connections and retry each.
    It opens none of its own: a connection that never carried a request is one nginx waits for
    when it stops (up to its stop's 5 s), which held every controller stop and restart 5 s
    (molecule/controller's revocation test). The pool fills with the calls themselves."""

    # Below nginx's keepalive_timeout (75 s) default.
    IDLE_SECONDS = 40.0

    def __init__(self, settings: HookSettings, size: int):
        self.settings = settings
        self.size = size
        # (connection, when it was last opened or used); the newest on top.
        self._idle: queue.LifoQueue[tuple[http.client.HTTPSConnection, float]] = queue.LifoQueue()
        self._context = tls_context(settings)
        self._calls = threading.local()
        self._closed = threading.Event()

    def post(self, settings: HookSettings, call: str, fields: dict) -> Answer:
        body = _json_body(fields)
        try:
            connection, retry = self._idle.get_nowait()[0], True
            self._calls.opened = False
        except queue.Empty:
            connection, retry = self._opened(settings), False
        while True:
            try:
                exchanged = _request(
                    connection, settings, "POST", call, body, "application/json", MAX_ANSWER_BYTES
                )
            except _StaleConnection as exc:
                connection.close()
                if not retry:
                    raise ControllerUnavailable(_network_reason(exc.cause)) from None
                # The controller closed an idle connection before it read our request: once more
                # on a new one (nothing reached the controller, so nothing is asked twice).
                connection, retry = self._opened(settings), False
                continue
            except ControllerUnavailable:
                connection.close()
                raise
            self._give_back(connection)
            return _answer_of(exchanged)

    def opened_a_connection(self) -> bool:
        """Whether this thread's last ``post`` had to open a connection (a TLS handshake)."""
        return getattr(self._calls, "opened", False)

    def keep_warm(self, every: float = IDLE_SECONDS / 4) -> None:
        """Until ``close``: retire the pooled connections idle too long (see the class)."""
        while not self._closed.is_set():
            self._refresh()
            self._closed.wait(every)

    def _refresh(self) -> None:
        kept: list[tuple[http.client.HTTPSConnection, float]] = []
        while True:
            try:
                connection, since = self._idle.get_nowait()
            except queue.Empty:
                break
            if time.monotonic() - since > self.IDLE_SECONDS:
                connection.close()
            else:
                kept.append((connection, since))
        # The oldest first back in, so that calls take the freshest.
        for entry in sorted(kept, key=lambda entry: entry[1]):
            self._idle.put(entry)

    def _opened(self, settings: HookSettings) -> http.client.HTTPSConnection:
        self._calls.opened = True
        return _connection(settings, self._context)

    def _give_back(self, connection: http.client.HTTPSConnection) -> None:
        if connection.sock is None or self._idle.qsize() >= self.size or self._closed.is_set():
            connection.close()
        else:
            self._idle.put((connection, time.monotonic()))

    def close(self) -> None:
        self._closed.set()
        while True:
            try:
                self._idle.get_nowait()[0].close()
            except queue.Empty:
                return


class _StaleConnection(Exception):
    """The connection broke before any answer came: the controller closed it while idle."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


def _json_body(fields: dict) -> bytes:
    return json.dumps({key: value for key, value in fields.items() if value not in (None, "")}).encode()


def _answer_of(exchanged: tuple[int, bytes]) -> Answer:
    status, payload = exchanged
    if status >= 500 or status < 200 or 300 <= status < 400:
        raise ControllerUnavailable(f"HTTP {status}")
    try:
        data = json.loads(payload) if payload else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if status >= 400:
            data = {}
        else:
            raise ControllerUnavailable(f"HTTP {status} without a JSON object")
    return Answer(status, data)


def _connection(settings: HookSettings, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    url = urlsplit(settings.node_api_url)
    # HookSettings refuses a controller_url without a host name.
    return http.client.HTTPSConnection(
        cast(str, url.hostname), url.port or 443, timeout=settings.timeout_seconds, context=context
    )


def _exchange(
    settings: HookSettings, method: str, call: str, body: bytes | None, accept: str, limit: int
) -> tuple[int, bytes]:
    connection = _connection(settings, tls_context(settings))
    try:
        return _request(connection, settings, method, call, body, accept, limit, keep_alive=False)
    except _StaleConnection as exc:
        raise ControllerUnavailable(_network_reason(exc.cause)) from None
    finally:
        connection.close()


def _request(
    connection: http.client.HTTPSConnection,
    settings: HookSettings,
    method: str,
    call: str,
    body: bytes | None,
    accept: str,
    limit: int,
    keep_alive: bool = True,
) -> tuple[int, bytes]:
    credentials = base64.b64encode(f"{settings.node_name}:{settings.token}".encode()).decode()
    headers = {
        "Authorization": f"Basic {credentials}",
        "Accept": accept,
        "User-Agent": USER_AGENT,
        "Connection": "keep-alive" if keep_alive else "close",
    }
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        path = f"{urlsplit(settings.node_api_url).path}/{call}"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read(limit + 1)
        status = response.status
        if response.will_close:
            connection.close()
    except ssl.SSLError as exc:
        raise ControllerUnavailable(f"TLS failure: {exc.reason or exc}") from None
    except TimeoutError:
        raise ControllerUnavailable(f"no answer within {settings.timeout_seconds:g} s") from None
    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
        raise _StaleConnection(exc) from None
    except (OSError, http.client.HTTPException) as exc:
        raise ControllerUnavailable(_network_reason(exc)) from None
    if len(payload) > limit:
        connection.close()
        raise ControllerUnavailable(f"HTTP {status} with an oversized answer")
    return status, payload


def _network_reason(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the controller's name: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"
