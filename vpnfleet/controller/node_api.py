"""The node API: the OpenVPN hooks on the nodes report client connect and disconnect.

Each node authenticates with HTTP Basic: its name and its secret token. The settings hold only
the token's SHA-256, compared in constant time. On connect the controller decides; the hook
lets the client in only on an explicit {"allow": true}.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from dataclasses import dataclass
from typing import cast

from flask import Blueprint, Response, current_app, g, jsonify, request
from sqlalchemy import Table, bindparam, insert, select

from vpnfleet.controller import metrics
from vpnfleet.controller.crl import current_crl
from vpnfleet.controller.models import ConnectionLogEntry, User, VpnConfig, utcnow
from vpnfleet.controller.settings import Node
from vpnfleet.controller.state import controller, db

blueprint = Blueprint("node_api", __name__)

# Compared against when the node name is unknown, so that a wrong name takes as long as a wrong token.
_NO_NODE_HASH = "0" * 64


_BYTE_COUNT = re.compile(r"[0-9]{1,19}")
_BIGINT_MAX = 2**63 - 1


# Every check of every client of the fleet runs these two: the columns the check decides on
# (with the user) and the log row, as statements built once, with the ORM's objects, identity
# map and flush left out; per request they cost more than the database did.
_CHECKED_COLUMNS = (
    VpnConfig.user_id,
    VpnConfig.profile_id,
    VpnConfig.revoked_at,
    VpnConfig.expires_at,
    User.username,
    User.is_disabled,
)
_CONFIG_TO_CHECK = (
    select(*_CHECKED_COLUMNS)
    .join(User, User.id == VpnConfig.user_id)
    .where(VpnConfig.common_name == bindparam("common_name"))
)
_LOG_TABLE = cast(Table, ConnectionLogEntry.__table__)
_LOG_CONNECT = insert(_LOG_TABLE).returning(_LOG_TABLE.c.id)
# The batch's rows in one statement, the ids in the order of the rows.
_LOG_CONNECTS = insert(_LOG_TABLE).returning(_LOG_TABLE.c.id, sort_by_parameter_order=True)


class BadField(ValueError):
    pass


@blueprint.before_request
def authenticate_node():
    auth = request.authorization
    node = controller().settings.node(auth.username or "") if auth and auth.type == "basic" else None
    presented = hashlib.sha256((auth.password or "").encode() if auth else b"").hexdigest()
    expected = node.api_token_sha256 if node else _NO_NODE_HASH
    if not hmac.compare_digest(presented, expected) or node is None:
        response = jsonify(error="node authentication failed")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="vpnfleet node API"'
        return response
    g.node = node
    return None


def _fields() -> dict:
    if not request.is_json:
        return request.form
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        raise BadField("the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadField("the body must be a JSON object")
    return data


def _text(data, name: str, *, limit: int = 64) -> str | None:
    value = data.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadField(f'"{name}" must be a string')
    if len(value) > limit:
        raise BadField(f'"{name}" is too long')
    if not value.isprintable() or not _encodable(value):
        raise BadField(f'"{name}" holds a control character or an unpaired surrogate')
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _required_text(data, name: str) -> str:
    value = _text(data, name)
    if value is None:
        raise BadField(f'missing "{name}"')
    return value


def _address(data, name: str) -> str | None:
    value = _text(data, name)
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise BadField(f'"{name}" is not an IP address: {value!r}') from None


def _count(data, name: str) -> int | None:
    value = _text(data, name, limit=20)
    if value is None:
        return None
    # ASCII digits only (str.isdigit() takes "²" and "١"), and what a BIGINT column holds.
    if not _BYTE_COUNT.fullmatch(value) or int(value) > _BIGINT_MAX:
        raise BadField(f'"{name}" must be a whole number of bytes, at most {_BIGINT_MAX}')
    return int(value)


@blueprint.errorhandler(BadField)
def bad_field(error: BadField) -> Response:
    response = jsonify(error=str(error))
    response.status_code = 400
    return response


MAX_BATCH_CHECKS = 256

# The same check, for the batch: one IN query for all its certificates.
_CONFIGS_TO_CHECK = (
    select(VpnConfig.common_name, *_CHECKED_COLUMNS)
    .join(User, User.id == VpnConfig.user_id)
    .where(VpnConfig.common_name.in_(bindparam("common_names", expanding=True)))
)


@dataclass(frozen=True)
class Check:
    """One connect check's fields, validated."""

    common_name: str
    profile_id: str
    ipv4: str | None
    ipv6: str | None
    real_address: str | None

    @classmethod
    def of(cls, data) -> Check:
        return cls(
            _required_text(data, "common_name"),
            _required_text(data, "profile_id"),
            _address(data, "ipv4"),
            _address(data, "ipv6"),
            _address(data, "real_address"),
        )


def connect_decision(check: Check, config, node: Node, now) -> str | None:
    """The one rule set of a connect check: None allows, else the reason for refusing."""
    if config is None:
        return "unknown certificate"
    if config.revoked_at is not None:
        return "certificate revoked"
    if now >= config.expires_at:
        return "certificate expired"
    if config.is_disabled:
        return "user disabled"
    if config.profile_id != check.profile_id or not node.processes_of(check.profile_id):
        return f"config is for profile {config.profile_id}, not {check.profile_id} on this node"
    return None


def _log_row(check: Check, config, node: Node, now) -> dict:
    return {
        "user_id": config.user_id,
        "username": config.username,
        "common_name": check.common_name,
        "profile_id": check.profile_id,
        "node": node.name,
        "location": node.location,
        "process": _process_of(node, check.ipv4 or check.ipv6),
        "ipv4": check.ipv4,
        "ipv6": check.ipv6,
        "real_address": check.real_address,
        "connected_at": now,
    }


def _log_refusal(check: Check, node: Node, reason: str | None) -> None:
    current_app.logger.info("refused %s on node %s: %s", check.common_name, node.name, reason)


def _count_check(profile_id, allowed: bool, seconds: float) -> None:
    # A label per known profile only: whatever else a node sends must not grow the series.
    known = isinstance(profile_id, str) and controller().settings.profile(profile_id) is not None
    metrics.connect_checked(profile_id if known else "unknown", allowed, seconds)


@blueprint.post("/connect")
def client_connect():
    started = time.perf_counter()
    try:
        response = _client_connect()
        profile_id = _fields().get("profile_id")
    except BadField as error:
        response, profile_id = bad_field(error), None
    _count_check(profile_id, response.status_code == 200, time.perf_counter() - started)
    return response


def _client_connect() -> Response:
    check = Check.of(_fields())
    node: Node = g.node
    session = db()
    now = utcnow()
    config = session.execute(_CONFIG_TO_CHECK, {"common_name": check.common_name}).first()
    reason = connect_decision(check, config, node, now)
    if reason is not None or config is None:  # no config is always a refusal, with its reason
        _log_refusal(check, node, reason)
        response = jsonify(allow=False, reason=reason)
        response.status_code = 403
        return response
    connection_id = session.execute(_LOG_CONNECT, _log_row(check, config, node, now)).scalar_one()
    session.commit()
    current_app.logger.info("allowed %s (%s) on node %s", check.common_name, config.username, node.name)
    return jsonify(allow=True, connection_id=connection_id)


@blueprint.post("/connect_batch")
def client_connect_batch():
    """Up to MAX_BATCH_CHECKS checks in one call: one query, one insert, one commit. Each answer
    is /connect's, with the status /connect would have given."""
    started = time.perf_counter()
    data = _fields()
    checks_data = data.get("checks") if isinstance(data, dict) else None
    if not isinstance(checks_data, list):
        raise BadField('"checks" must be a list')
    if not 1 <= len(checks_data) <= MAX_BATCH_CHECKS:
        raise BadField(f'"checks" must hold 1 to {MAX_BATCH_CHECKS} checks, not {len(checks_data)}')
    checks: list[Check] = []
    for index, fields in enumerate(checks_data):
        try:
            if not isinstance(fields, dict):
                raise BadField("must be a JSON object")
            checks.append(Check.of(fields))
        except BadField as error:
            raise BadField(f"check {index}: {error}") from None
    node: Node = g.node
    session = db()
    now = utcnow()
    names = sorted({check.common_name for check in checks})
    configs = {row.common_name: row for row in session.execute(_CONFIGS_TO_CHECK, {"common_names": names})}
    answers: list[dict] = []
    rows: list[dict] = []
    allowed_at: list[int] = []
    for check in checks:
        config = configs.get(check.common_name)
        reason = connect_decision(check, config, node, now)
        if reason is None:
            allowed_at.append(len(answers))
            rows.append(_log_row(check, config, node, now))
            answers.append({"allow": True, "status": 200})
        else:
            _log_refusal(check, node, reason)
            answers.append({"allow": False, "reason": reason, "status": 403})
    if rows:
        ids = session.scalars(_LOG_CONNECTS, rows).all()
        for index, connection_id in zip(allowed_at, ids, strict=True):
            answers[index]["connection_id"] = connection_id
        session.commit()
    current_app.logger.info("batch of %d checks on node %s: %d allowed", len(checks), node.name, len(rows))
    each = (time.perf_counter() - started) / len(checks)
    for check, answer in zip(checks, answers, strict=True):
        _count_check(check.profile_id, answer["allow"], each)
    return jsonify(answers=answers)


def _process_of(node: Node, address: str | None) -> str | None:
    """The name of the node's process whose slice holds the address the node handed out."""
    holder = controller().settings.holder_of(address) if address else None
    if holder is None:
        return None
    holding_node, process = holder
    if holding_node.name != node.name:
        # Another node's slice: a plan the two do not share; the log keeps what the node said.
        current_app.logger.warning(
            "node %s handed out %s, in %s's slice", node.name, address, holding_node.name
        )
        return None
    return process.name


@blueprint.get("/crl")
def crl():
    """The current CRL, for the node's pull timer (`vpnfleet-hook fetch-crl`)."""
    current, signed = current_crl(controller(), db())
    if signed:
        current_app.logger.info("CRL %d signed for the pull of node %s", current.crl_number, g.node.name)
    return Response(current.pem, mimetype="application/x-pem-file", headers={"Cache-Control": "no-store"})


@blueprint.post("/disconnect")
def client_disconnect():
    data = _fields()
    common_name = _required_text(data, "common_name")
    ipv4 = _address(data, "ipv4")
    bytes_received, bytes_sent = _count(data, "bytes_received"), _count(data, "bytes_sent")
    session = db()
    query = select(ConnectionLogEntry).where(
        ConnectionLogEntry.node == g.node.name,
        ConnectionLogEntry.common_name == common_name,
        ConnectionLogEntry.disconnected_at.is_(None),
    )
    if ipv4:
        query = query.where(ConnectionLogEntry.ipv4 == ipv4)
    open_entries = list(session.scalars(query))
    now = utcnow()
    for entry in open_entries:
        entry.disconnected_at = now
        entry.bytes_received, entry.bytes_sent = bytes_received, bytes_sent
        entry.close_reason = "disconnect"
    session.commit()
    return jsonify(closed=len(open_entries))
