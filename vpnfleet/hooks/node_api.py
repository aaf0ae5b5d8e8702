"""The controller's node API, as the hooks call it: one HTTPS POST with a short timeout."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
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
    body = json.dumps({key: value for key, value in fields.items() if value not in (None, "")}).encode()
    status, payload = _exchange(settings, "POST", call, body, "application/json", MAX_ANSWER_BYTES)
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


def get_crl(settings: HookSettings) -> bytes:
    """GET <node API>/crl: the controller's current CRL (checked by whoever installs it)."""
    status, payload = _exchange(settings, "GET", "crl", None, "application/x-pem-file", MAX_CRL_BYTES)
    if status != 200:
        raise ControllerUnavailable(f"HTTP {status}")
    return payload


def _exchange(
    settings: HookSettings, method: str, call: str, body: bytes | None, accept: str, limit: int
) -> tuple[int, bytes]:
    url = urlsplit(f"{settings.node_api_url}/{call}")
    credentials = base64.b64encode(f"{settings.node_name}:{settings.token}".encode()).decode()
    # HookSettings refuses a controller_url without a host name.
    connection = http.client.HTTPSConnection(
        cast(str, url.hostname),
        url.port or 443,
        timeout=settings.timeout_seconds,
        context=tls_context(settings),
    )
    headers = {
        "Authorization": f"Basic {credentials}",
        "Accept": accept,
        "User-Agent": USER_AGENT,
        "Connection": "close",
    }
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, url.path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read(limit + 1)
        status = response.status
    except ssl.SSLError as exc:
        raise ControllerUnavailable(f"TLS failure: {exc.reason or exc}") from None
    except TimeoutError:
        raise ControllerUnavailable(f"no answer within {settings.timeout_seconds:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ControllerUnavailable(_network_reason(exc)) from None
    finally:
        connection.close()
    if len(payload) > limit:
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
