"""Node API: per-node authentication, the connect decision and the connection log."""

from __future__ import annotations

import re

from controller_helpers import NODE_TOKENS, csrf_token, log_rows, portal_config, run_sql
from sqlalchemy import update

from vpnfleet.controller.models import User, VpnConfig, utcnow

NODE_X1 = ("node-x1", NODE_TOKENS["node-x1"])


def test_node_authentication(client):
    for auth in (
        None,
        ("node-x1", "wrong"),
        ("node-zz", NODE_TOKENS["node-x1"]),
        ("node-y1", NODE_TOKENS["node-x1"]),
    ):
        response = client.post(
            "/node-api/v1/connect", auth=auth, data={"common_name": "x", "profile_id": "office"}
        )
        assert response.status_code == 401, auth
        assert response.get_json() == {"error": "node authentication failed"}


def test_connect_allowed_logged_and_closed(client, app):
    common_name = portal_config(client, app)
    response = client.post(
        "/node-api/v1/connect",
        auth=NODE_X1,
        json={
            "common_name": common_name,
            "profile_id": "office",
            "ipv4": "198.19.64.2",
            "ipv6": "2001:db8:f2::1000",
            "real_address": "203.0.113.99",
        },
    )
    assert response.status_code == 200 and response.get_json()["allow"] is True
    [row] = log_rows(app)
    assert (
        row.username,
        row.node,
        row.location,
        row.ipv4,
        row.ipv6,
        row.real_address,
        row.disconnected_at,
    ) == ("alice", "node-x1", "location-x", "198.19.64.2", "2001:db8:f2::1000", "203.0.113.99", None)
    closed = client.post(
        "/node-api/v1/disconnect",
        auth=NODE_X1,
        data={
            "common_name": common_name,
            "ipv4": "198.19.64.2",
            "bytes_received": "1234",
            "bytes_sent": "5678",
        },
    )
    assert closed.get_json() == {"closed": 1}
    [row] = log_rows(app)
    assert row.disconnected_at is not None and (row.bytes_received, row.bytes_sent) == (1234, 5678)


def test_connect_refusals(client, app):
    common_name = portal_config(client, app)

    def decide(name=common_name, profile="office", auth=NODE_X1):
        response = client.post(
            "/node-api/v1/connect", auth=auth, data={"common_name": name, "profile_id": profile}
        )
        return response.status_code, response.get_json().get("reason")

    assert decide(name="0" * 32) == (403, "unknown certificate")
    assert decide(profile="internet")[0] == 403  # the config is for another profile
    with app.app_context():
        run_sql(app, update(User).values(is_disabled=True))
        assert decide() == (403, "user disabled")
        run_sql(app, update(User).values(is_disabled=False))
        run_sql(app, update(VpnConfig).values(expires_at=utcnow()))
        assert decide() == (403, "certificate expired")
        run_sql(app, update(VpnConfig).values(revoked_at=utcnow()))
        assert decide() == (403, "certificate revoked")
    assert log_rows(app) == []


def test_config_deleted_in_portal_is_refused_at_next_connect(client, app):
    common_name = portal_config(client, app)
    page = client.get("/").get_data(as_text=True)
    config_id = re.search(r"/configs/(\d+)/delete", page).group(1)
    client.post(f"/configs/{config_id}/delete", data={"csrf_token": csrf_token(page)})
    response = client.post(
        "/node-api/v1/connect", auth=NODE_X1, data={"common_name": common_name, "profile_id": "office"}
    )
    assert response.status_code == 403


def test_bad_fields_are_400_with_a_reason(client, app):
    common_name = portal_config(client, app)
    cases = [
        ({"profile_id": "office"}, 'missing "common_name"'),
        (
            {"common_name": common_name, "profile_id": "office", "ipv4": "not-an-ip"},
            '"ipv4" is not an IP address',
        ),
        ({"common_name": "x" * 300, "profile_id": "office"}, '"common_name" is too long'),
    ]
    for form, reason in cases:
        response = client.post("/node-api/v1/connect", auth=NODE_X1, data=form)
        assert response.status_code == 400 and reason in response.get_json()["error"], form
    response = client.post(
        "/node-api/v1/disconnect", auth=NODE_X1, data={"common_name": common_name, "bytes_sent": "-5"}
    )
    assert response.status_code == 400
    broken_json = client.post(
        "/node-api/v1/connect", auth=NODE_X1, data="[1, 2", content_type="application/json"
    )
    assert broken_json.status_code == 400 and "JSON object" in broken_json.get_json()["error"]


def test_connect_batch_answers_each_check_as_connect_would(client, app):
    common_name = portal_config(client, app)
    checks = [
        {"common_name": common_name, "profile_id": "office", "ipv4": "198.19.64.2"},
        {"common_name": "0" * 32, "profile_id": "office"},
        {"common_name": common_name, "profile_id": "internet"},
        {"common_name": common_name, "profile_id": "office", "ipv4": "198.19.64.3"},
    ]
    response = client.post("/node-api/v1/connect_batch", auth=NODE_X1, json={"checks": checks})
    assert response.status_code == 200
    answers = response.get_json()["answers"]
    assert [answer["status"] for answer in answers] == [200, 403, 403, 200]
    assert answers[1]["reason"] == "unknown certificate"
    rows = log_rows(app)
    assert sorted(row.ipv4 for row in rows) == ["198.19.64.2", "198.19.64.3"]
    ids = {row.ipv4: row.id for row in rows}
    assert (answers[0]["connection_id"], answers[3]["connection_id"]) == (
        ids["198.19.64.2"],
        ids["198.19.64.3"],
    )
    single = client.post("/node-api/v1/connect", auth=NODE_X1, json=checks[2])
    assert (single.status_code, single.get_json()["reason"]) == (403, answers[2]["reason"])


def test_connect_batch_refuses_a_bad_batch_whole(client, app):
    common_name = portal_config(client, app)
    good = {"common_name": common_name, "profile_id": "office"}
    for body, reason in (
        ([], "the body must be a JSON object"),
        ({}, '"checks" must be a list'),
        ({"checks": []}, '"checks" must hold 1 to 256 checks, not 0'),
        ({"checks": [good] * 257}, '"checks" must hold 1 to 256 checks, not 257'),
        ({"checks": [good, {"profile_id": "office"}]}, 'check 1: missing "common_name"'),
        ({"checks": [good, "x"]}, "check 1: must be a JSON object"),
    ):
        response = client.post("/node-api/v1/connect_batch", auth=NODE_X1, json=body)
        assert (response.status_code, response.get_json()["error"]) == (400, reason)
    assert log_rows(app) == []
