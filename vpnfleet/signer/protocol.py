"""The signer's wire format, shared by the service and its client (the controller).

One request per connection: a JSON object on one line, ``{"op": ..., ...}``; the answer is one
JSON line, ``{"ok": true, ...}`` or ``{"ok": false, "error": "<reason>"}``.

    ca_certificate                                   -> certificate (PEM), the two bounds below
    issue_client   public_key (PEM), common_name (32 hex digits), not_after (ISO 8601, UTC)
                                                     -> certificate (PEM)
    sign_crl       revoked ([[serial hex, ISO 8601], ...]), this_update, next_update (ISO 8601)
                                                     -> crl (PEM)
"""

from __future__ import annotations

import json
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vpnfleet.shared.pki import keys

OPERATIONS = {
    "ca_certificate": (),
    "issue_client": ("public_key", "common_name", "not_after"),
    "sign_crl": ("revoked", "this_update", "next_update"),
}
# A CRL request for 100,000 revoked configs is about 6 MB; anything past this is not ours.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class SignerError(Exception):
    """The signer refused a request (the message is its reason) or could not be reached."""


def format_time(moment: datetime) -> str:
    # The controller's database keeps naive UTC.
    return keys.utc_isoformat(moment) if moment.tzinfo is None else keys.isoformat(moment)


# The shape format_time writes; fromisoformat then checks the values. strptime took 8 us a time, most
# of a CRL request's checks with tens of thousands of entries.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def parse_time(text: object, name: str) -> datetime:
    if not isinstance(text, str):
        raise SignerError(f"{name} must be a time like 2026-01-31T12:00:00Z, got {type(text).__name__}")
    try:
        if not _TIME.fullmatch(text):
            raise ValueError(text)
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise SignerError(f"{name} must be a time like 2026-01-31T12:00:00Z, got {text[:40]!r}") from None


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def read_message(connection: socket.socket) -> dict[str, Any]:
    """Read one JSON line (at most MAX_MESSAGE_BYTES) and decode it into an object."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = connection.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_MESSAGE_BYTES:
            raise SignerError(f"message longer than {MAX_MESSAGE_BYTES} bytes")
        if chunk.endswith(b"\n"):
            break
    data = b"".join(chunks)
    if not data.strip():
        raise SignerError("empty message")
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        raise SignerError("message is not JSON") from None
    if not isinstance(message, dict):
        raise SignerError("message must be a JSON object")
    return message


def call(socket_path: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the signer and return its answer; SignerError on a refusal."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        try:
            connection.connect(str(socket_path))
            connection.sendall(encode(request))
            connection.shutdown(socket.SHUT_WR)
            answer = read_message(connection)
        except OSError as error:
            raise SignerError(f"cannot reach the signer at {socket_path}: {error}") from None
    if answer.get("ok") is not True:
        raise SignerError(str(answer.get("error") or "the signer gave no reason"))
    return answer
