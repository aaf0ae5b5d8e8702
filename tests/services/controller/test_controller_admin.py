"""Admin pages: refused to users; connections now with a node down; disable; the log search;
housekeeping."""

from __future__ import annotations

from datetime import datetime

from controller_helpers import NODE_TOKENS, add_user, csrf_token, log_in, log_rows, portal_config, run_sql
from sqlalchemy import select, update

from vpnfleet.controller.housekeeping import run_housekeeping
from vpnfleet.controller.models import ConnectionLogEntry, VpnConfig, utcnow
from vpnfleet.controller.state import EXTENSION_KEY, controller, db

ADMIN_PAGES = ["/admin/", "/admin/nodes", "/admin/users", "/admin/users/1", "/admin/log"]
NODE_X1 = ("node-x1", NODE_TOKENS["node-x1"])


def test_admin_pages_refused_to_users_and_strangers(client, app):
    add_user(app, "alice")
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 302, path  # to the login page
    log_in(client, "alice")
    for path in ADMIN_PAGES:
        response = client.get(path)
        assert response.status_code == 403, path
        assert "for administrators" in response.get_data(as_text=True)
    token = csrf_token(client.get("/").get_data(as_text=True))
    assert client.post("/admin/users/1/disable", data={"csrf_token": token}).status_code == 403


def test_connections_now_and_a_node_that_does_not_answer(client, app, stand_in_daemon):
    common_name = portal_config(client, app)
    stand_in_daemon.connections.append(
        {
            "common_name": common_name,
            "ip_four": "198.18.0.2",
            "ip_six": "2001:db8:10::1000",
            "real_address": "203.0.113.99",
        }
    )
    add_user(app, "root", admin=True)
    log_in(client, "root")
    page = client.get("/admin/").get_data(as_text=True)
    assert "alice" in page and "198.18.0.2" in page and "node-x1" in page and "location-x" in page
    assert "Node node-y1 (location-y) did not answer" in page
    # office in location-x: 1 client against 3 processes of 60.
    assert "<td>office</td><td>location-x</td><td>1</td>" in page.replace("\n", "").replace("      ", "")
    nodes = client.get("/admin/nodes").get_data(as_text=True)
    assert "cpu_count: 2" in nodes and "not answering" in nodes


def test_disable_user_revokes_disconnects_and_blocks_login(client, app, stand_in_daemon):
    common_name = portal_config(client, app)
    add_user(app, "root", admin=True)
    admin = app.test_client()
    log_in(admin, "root")
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "alice" in page
    token = csrf_token(admin.get("/admin/users/1").get_data(as_text=True))
    assert admin.post("/admin/users/1/disable", data={"csrf_token": token}).status_code == 302
    assert common_name in stand_in_daemon.disconnected
    assert client.get("/").status_code == 302  # alice's session ended with it
    assert log_in(client, "alice").status_code == 403
    response = client.post(
        "/node-api/v1/connect", auth=NODE_X1, data={"common_name": common_name, "profile_id": "office"}
    )
    assert response.status_code == 403


def test_log_search_who_had_an_address_at_a_time(client, app):
    common_name = portal_config(client, app)
    client.post(
        "/node-api/v1/connect",
        auth=NODE_X1,
        data={"common_name": common_name, "profile_id": "office", "ipv4": "198.18.0.7"},
    )
    client.post("/node-api/v1/disconnect", auth=NODE_X1, data={"common_name": common_name})
    with app.app_context():
        run_sql(
            app,
            update(ConnectionLogEntry).values(
                connected_at=datetime(2025, 3, 1, 14), disconnected_at=datetime(2025, 3, 1, 15)
            ),
        )
    add_user(app, "root", admin=True)
    admin = app.test_client()
    log_in(admin, "root")
    during = admin.get("/admin/log", query_string={"address": "198.18.0.7", "at": "2025-03-01 14:30"})
    assert during.status_code == 200 and "<td>alice</td>" in during.get_data(as_text=True)
    after = admin.get("/admin/log", query_string={"address": "198.18.0.7", "at": "2025-03-01T16:00:00Z"})
    assert "<td>alice</td>" not in after.get_data(as_text=True)
    bad = admin.get("/admin/log", query_string={"address": "nonsense"})
    assert bad.status_code == 400 and "not an IP address" in bad.get_data(as_text=True)
    bad_time = admin.get("/admin/log", query_string={"at": "yesterday"})
    assert bad_time.status_code == 400


def test_housekeeping(client, app, stand_in_daemon):
    common_name = portal_config(client, app)
    client.post(
        "/node-api/v1/connect", auth=NODE_X1, data={"common_name": common_name, "profile_id": "office"}
    )
    # The process crashed: the node lists nothing, but the log row is open.
    stand_in_daemon.connections.append({"common_name": "f" * 32, "ip_four": "198.18.0.9", "ip_six": ""})
    with app.app_context():
        report = run_housekeeping(controller(), db())
    assert report.log_rows_closed == 1 and report.nodes_unreachable == ("node-y1",)
    assert report.disconnected == 1 and stand_in_daemon.disconnected == ["f" * 32]  # unknown certificate
    [row] = log_rows(app)
    assert row.close_reason == "not connected (housekeeping)"

    # A config that expired while connected is dropped; rows past retention are purged.
    stand_in_daemon.connections.append({"common_name": common_name, "ip_four": "198.18.0.2", "ip_six": ""})
    with app.app_context():
        run_sql(app, update(VpnConfig).values(expires_at=utcnow()))
        run_sql(app, update(ConnectionLogEntry).values(disconnected_at=datetime(2000, 1, 1)))
        report = run_housekeeping(controller(), db())
        assert report.disconnected == 1 and report.log_rows_purged == 1
        assert db().scalars(select(ConnectionLogEntry)).all() == []
    assert stand_in_daemon.connections == []
    assert app.extensions[EXTENSION_KEY]
