"""Admin pages: refused to users; connections now with a node down; disconnect and disable a user;
the log search; housekeeping. node-x1 is real (controller_node_lab): its daemon lists and drops
real OpenVPN clients that use the configs the controller issued."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from datetime import datetime
from http import HTTPStatus

import pytest
from controller_helpers import (
    NODE_TOKENS,
    add_user,
    csrf_token,
    log_in,
    log_rows,
    portal_config,
    portal_ovpn,
    run_sql,
)
from controller_node_lab import CLIENT_ADDRESS
from openvpn_netlab import replace_credentials
from sqlalchemy import select, update
from vpnfleet.shared.pki import authority, keys

from vpnfleet.controller.housekeeping import run_housekeeping
from vpnfleet.controller.models import ConnectionLogEntry, User, VpnConfig, utcnow
from vpnfleet.controller.state import controller, db
from vpnfleet.daemon.api import ROUTES, ApiError, Route

ADMIN_PAGES = ["/admin/", "/admin/nodes", "/admin/users", "/admin/users/1", "/admin/log"]
NODE_X1 = ("node-x1", NODE_TOKENS["node-x1"])
OFFICE_IPV4 = ipaddress.ip_network("198.19.64.0/20")
OFFICE_IPV6 = ipaddress.ip_network("2001:db8:f2::/64")


def _admin(app):
    add_user(app, "root", admin=True)
    admin = app.test_client()
    log_in(admin, "root")
    return admin


def _user_id(app, username: str) -> int:
    with app.app_context():
        return db().scalar(select(User.id).where(User.username == username))


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


def test_connections_now_and_a_node_that_does_not_answer(client, app, node_lab, vpn_client):
    common_name, ovpn = portal_ovpn(client, app)
    vpn_client(ovpn).wait_until_up()
    [entry] = node_lab.wait_until_listed(common_name)
    assert ipaddress.ip_address(entry["ip_four"]) in OFFICE_IPV4
    assert ipaddress.ip_address(entry["ip_six"]) in OFFICE_IPV6

    admin = _admin(app)
    page = admin.get("/admin/").get_data(as_text=True)
    row = next(line for line in page.split("<tr>") if entry["ip_four"] in line)
    assert ">alice</a>" in row and "<td>laptop</td>" in row and "<td>office</td>" in row
    assert "<td>node-x1</td><td>location-x</td>" in row
    assert entry["ip_six"] in row and f"process: {entry['process']}" in row
    assert f"real_address: {CLIENT_ADDRESS}:" in row
    # node-y1's daemon does not answer: marked, and the page is still served.
    assert "Node node-y1 (location-y) did not answer" in page
    # office in location-x: 1 client against 3 processes of 60.
    capacity = page.replace("\n", "").replace("      ", "")
    assert "<td>office</td><td>location-x</td><td>openvpn</td><td>1</td><td>180</td>" in capacity
    nodes = admin.get("/admin/nodes").get_data(as_text=True)
    assert f"of {os.cpu_count()} cores" in nodes and "not answering" in nodes
    # node-x1's CRL is the CA's own until the controller signs one (365 days, 0 revoked).
    assert re.search(r'<td class="up">fresh until \S+Z \(number \d+, \d+ revoked\)</td>', nodes), nodes


# SQLite only: OpenVPN keeps a halted UDP client listed for 5 s more, too long to pay twice.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_disconnect_user_everywhere_drops_every_client_of_theirs_only(client, app, node_lab, vpn_client):
    # alice on two processes, a UDP and the TCP one; bob next to her.
    alice_laptop, ovpn_laptop = portal_ovpn(client, app, display_name="laptop")
    alice_phone, ovpn_phone = portal_ovpn(client, app, display_name="phone")
    bob_laptop, ovpn_bob = portal_ovpn(app.test_client(), app, username="bob")
    alice_clients = [vpn_client(ovpn_laptop, proto="udp"), vpn_client(ovpn_phone, proto="tcp")]
    bob = vpn_client(ovpn_bob)
    for vpn in (*alice_clients, bob):
        vpn.wait_until_up()
    entries = node_lab.wait_until_listed(alice_laptop, alice_phone, bob_laptop)
    alice_processes = {entry["process"] for entry in entries if entry["common_name"] != bob_laptop}
    assert len(alice_processes) == 2 and "office-2" in alice_processes  # office-2: the TCP process
    # A packet for every client, as the servers' kernel sends at times of its own: each client
    # still hears what comes next.
    node_lab.multicast_to_clients()

    admin = _admin(app)
    user_id = _user_id(app, "alice")
    token = csrf_token(admin.get(f"/admin/users/{user_id}").get_data(as_text=True))
    logged_before = [vpn.log_size() for vpn in (*alice_clients, bob)]
    started = time.monotonic()
    response = admin.post(f"/admin/users/{user_id}/disconnect", data={"csrf_token": token})
    assert response.status_code == 302
    # On node-x1 first: its processes no longer have her, UDP or TCP, within 2 s of the click.
    node_lab.wait_until_only(bob_laptop)
    assert time.monotonic() - started < 2.0, f"dropped after {time.monotonic() - started:.2f} s"
    for vpn, since in zip(alice_clients, logged_before[:2], strict=True):
        vpn.wait_until_dropped(since)
    assert bob.process.poll() is None
    bob_since_then = bob.log()[logged_before[-1] :]
    assert "process restarting" not in bob_since_then and "Halt command" not in bob_since_then, bob.log()
    # Only disconnected: alice may come back at once.
    page = admin.get(f"/admin/users/{user_id}").get_data(as_text=True)
    assert "Disconnected alice on every node." in page and "Not reachable now: node-y1." in page
    vpn_client(ovpn_laptop).wait_until_up()
    # bob's client still hears the server: disconnected in turn, it hears its HALT.
    bob_id, bob_since = _user_id(app, "bob"), bob.log_size()
    token = csrf_token(admin.get(f"/admin/users/{bob_id}").get_data(as_text=True))
    assert admin.post(f"/admin/users/{bob_id}/disconnect", data={"csrf_token": token}).status_code == 302
    bob.wait_until_dropped(bob_since)


def _recording_disconnects(daemon, monkeypatch, batch_call: bool) -> list[tuple[str, list[str]]]:
    """The daemon's disconnect calls, each with its names, as it receives them; without
    ``batch_call`` it answers /o/disconnect_clients 404, as a daemon from before that call."""
    received: list[tuple[str, list[str]]] = []

    def recording(path: str, route: Route) -> Route:
        def call(state, form):
            received.append((path, form.get("common_name", [])))
            if path == "/o/disconnect_clients" and not batch_call:
                raise ApiError(HTTPStatus.NOT_FOUND, "no such call")
            return route.call(state, form)

        return Route(route.method, call, route.body)

    routes = {
        path: recording(path, route) if "disconnect" in path else route for path, route in ROUTES.items()
    }
    monkeypatch.setattr(daemon, "routes", routes)
    return received


@pytest.mark.parametrize("batch_call", [True, False], ids=["batched", "daemon-without-the-batch-call"])
def test_a_users_configs_leave_a_node_in_one_call_or_one_call_each_from_an_older_daemon(
    client, app, node_lab, vpn_client, monkeypatch, batch_call
):
    laptop, ovpn_laptop = portal_ovpn(client, app, display_name="laptop")
    phone, ovpn_phone = portal_ovpn(client, app, display_name="phone")
    clients = [vpn_client(ovpn_laptop, proto="udp"), vpn_client(ovpn_phone, proto="tcp")]
    for vpn in clients:
        vpn.wait_until_up()
    node_lab.wait_until_listed(laptop, phone)
    received = _recording_disconnects(node_lab.daemon, monkeypatch, batch_call)
    admin = _admin(app)
    user_id = _user_id(app, "alice")

    def disconnect_alice() -> None:
        token = csrf_token(admin.get(f"/admin/users/{user_id}").get_data(as_text=True))
        assert admin.post(f"/admin/users/{user_id}/disconnect", data={"csrf_token": token}).status_code == 302

    disconnect_alice()
    node_lab.wait_until_empty()
    names = sorted([laptop, phone])
    singles = [("/o/disconnect_client", [name]) for name in names]
    calls = [(path, sorted(given)) for path, given in received]
    # One call for both names; from an older daemon a 404 for it, then one call per name.
    assert calls[0] == ("/o/disconnect_clients", names), calls
    assert sorted(calls[1:]) == ([] if batch_call else singles), calls
    # Asked again: the controller remembers a daemon without the batch call, and asks per name.
    received.clear()
    disconnect_alice()
    expected = [("/o/disconnect_clients", names)] if batch_call else singles
    assert sorted((path, sorted(given)) for path, given in received) == expected


def test_disable_user_revokes_disconnects_and_blocks_login(client, app, node_lab, vpn_client):
    common_name, ovpn = portal_ovpn(client, app)
    vpn = vpn_client(ovpn)
    vpn.wait_until_up()
    node_lab.wait_until_listed(common_name)
    admin = _admin(app)
    user_id = _user_id(app, "alice")
    assert "alice" in admin.get("/admin/users").get_data(as_text=True)
    token = csrf_token(admin.get(f"/admin/users/{user_id}").get_data(as_text=True))
    assert admin.post(f"/admin/users/{user_id}/disable", data={"csrf_token": token}).status_code == 302
    vpn.wait_until_halted()
    node_lab.wait_until_empty()
    assert client.get("/").status_code == 302  # alice's session ended with it
    # Refused as a wrong password would be: nothing tells that the account exists and is disabled.
    assert log_in(client, "alice").status_code == 401
    response = client.post(
        "/node-api/v1/connect", auth=NODE_X1, data={"common_name": common_name, "profile_id": "office"}
    )
    assert response.status_code == 403
    # The config is revoked in the CA's CRL too: node-x1 itself turns it away now.
    vpn_client(ovpn)
    node_lab.wait_until_refused_by_crl(common_name)


def test_log_search_who_had_an_address_at_a_time(client, app):
    common_name = portal_config(client, app)
    client.post(
        "/node-api/v1/connect",
        auth=NODE_X1,
        data={"common_name": common_name, "profile_id": "office", "ipv4": "198.19.64.7"},
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
    during = admin.get("/admin/log", query_string={"address": "198.19.64.7", "at": "2025-03-01 14:30"})
    assert during.status_code == 200 and "<td>alice</td>" in during.get_data(as_text=True)
    after = admin.get("/admin/log", query_string={"address": "198.19.64.7", "at": "2025-03-01T16:00:00Z"})
    assert "<td>alice</td>" not in after.get_data(as_text=True)
    bad = admin.get("/admin/log", query_string={"address": "nonsense"})
    assert bad.status_code == 400 and "not an IP address" in bad.get_data(as_text=True)
    bad_time = admin.get("/admin/log", query_string={"at": "yesterday"})
    assert bad_time.status_code == 400


def test_housekeeping(client, app, node_lab, vpn_client, pki_dir):
    # A connection reported by the hook whose client is gone without a disconnect report (a
    # crashed process never runs its disconnect hook): node-x1 no longer lists it.
    gone, ovpn_gone = portal_ovpn(client, app, display_name="gone")
    vpn = vpn_client(ovpn_gone)
    vpn.wait_until_up()
    node_lab.wait_until_listed(gone)
    client.post("/node-api/v1/connect", auth=NODE_X1, data={"common_name": gone, "profile_id": "office"})
    vpn.stop()
    node_lab.wait_until_empty()

    # Connected now: a config that stays valid, one that expires, one revoked while node-x1 was
    # unreachable (so its disconnect never arrived), a disabled user's, and a certificate of the
    # right CA that the controller never issued.
    fine, ovpn_fine = portal_ovpn(client, app, display_name="fine")
    expired, ovpn_expired = portal_ovpn(app.test_client(), app, username="bob")
    revoked, ovpn_revoked = portal_ovpn(app.test_client(), app, username="carol")
    disabled, ovpn_disabled = portal_ovpn(app.test_client(), app, username="mallory")
    unknown = "f" * 32
    ca = authority.CertificateAuthority.load(str(pki_dir / "ca"))
    key, certificate = ca.issue(unknown, "client", lifetime_days=1)
    ovpn_unknown = replace_credentials(
        ovpn_fine, keys.certificate_pem(certificate).decode(), keys.private_key_pem(key).decode()
    )
    clients = {
        name: vpn_client(ovpn)
        for name, ovpn in (
            (fine, ovpn_fine),
            (expired, ovpn_expired),
            (revoked, ovpn_revoked),
            (disabled, ovpn_disabled),
            (unknown, ovpn_unknown),
        )
    }
    for vpn in clients.values():
        vpn.wait_until_up()
    node_lab.wait_until_listed(*clients)
    with app.app_context():
        run_sql(app, update(VpnConfig).where(VpnConfig.common_name == expired).values(expires_at=utcnow()))
        run_sql(app, update(VpnConfig).where(VpnConfig.common_name == revoked).values(revoked_at=utcnow()))
        run_sql(app, update(User).where(User.username == "mallory").values(is_disabled=True))
        report = run_housekeeping(controller(), db())
    assert report.nodes_unreachable == ("node-y1",)
    assert report.disconnected == 4
    for name in (expired, revoked, disabled, unknown):
        clients[name].wait_until_halted()
    node_lab.wait_until_only(fine)
    assert clients[fine].process.poll() is None
    assert report.log_rows_closed == 1
    [row] = log_rows(app)
    assert (row.common_name, row.close_reason) == (gone, "not connected (housekeeping)")

    # Rows past retention are purged; nothing left to drop.
    with app.app_context():
        run_sql(app, update(ConnectionLogEntry).values(disconnected_at=datetime(2000, 1, 1)))
        report = run_housekeeping(controller(), db())
        assert report.disconnected == 0 and report.log_rows_purged == 1
        assert db().scalars(select(ConnectionLogEntry)).all() == []
    assert clients[fine].process.poll() is None
