"""Sessions that end, app authorizations a user can revoke, one config limit across portal and
API, the /connect rate limit, one config per authorization under parallel /connect, and a
reused refresh token that ends its authorization."""

from __future__ import annotations

import re

import pytest
from controller_helpers import (
    CLIENT_ID,
    NODE_TOKENS,
    PASSWORD,
    LiveServer,
    add_user,
    app_tokens,
    bearer,
    csrf_token,
    log_in,
    portal_config,
)
from sqlalchemy import func, select

from vpnfleet.controller.models import OAuthAuthorization, PortalSession, User, VpnConfig, utcnow
from vpnfleet.controller.state import EXTENSION_KEY

NODE_X1 = ("node-x1", NODE_TOKENS["node-x1"])
NEW_PASSWORD = "a new password of alice"  # noqa: S105 - a test user's


def _copy_of(app, client):
    """Another browser holding a copy of this client's cookie (a stolen cookie)."""
    thief = app.test_client()
    thief.set_cookie("vpnfleet_session", client.get_cookie("vpnfleet_session").value)
    return thief


def _node_allows(client, common_name: str) -> bool:
    response = client.post(
        "/node-api/v1/connect", auth=NODE_X1, data={"common_name": common_name, "profile_id": "office"}
    )
    return response.status_code == 200


def _query(app, statement):
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        return session.execute(statement).all()
    finally:
        session.close()


def _active_configs(app, username: str = "alice") -> list[tuple]:
    return _query(
        app,
        select(VpnConfig.id, VpnConfig.authorization_id)
        .join(User)
        .where(User.username == username, VpnConfig.revoked_at.is_(None), VpnConfig.expires_at > utcnow())
        .order_by(VpnConfig.id),
    )


def test_logout_makes_a_copied_cookie_useless(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    thief = _copy_of(app, client)
    page = thief.get("/")
    assert page.status_code == 200  # the copy works while the login lasts
    stolen_token = csrf_token(page.get_data(as_text=True))
    token = csrf_token(client.get("/").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    create = thief.post(
        "/configs", data={"profile_id": "office", "display_name": "x", "csrf_token": stolen_token}
    )
    assert create.status_code == 302, create.get_data(as_text=True)[-400:]
    assert _active_configs(app) == []  # to the login page
    assert thief.get("/").status_code == 302


def test_password_change_and_an_admin_end_every_login(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    second_browser = app.test_client()
    log_in(second_browser, "alice")
    thief = _copy_of(app, client)
    add_user(app, "alice", password=NEW_PASSWORD)  # as the CLI the role calls does
    for browser in (client, second_browser, thief):
        assert browser.get("/").status_code == 302

    log_in(client, "alice", NEW_PASSWORD)
    thief = _copy_of(app, client)
    add_user(app, "root", admin=True)
    admin = app.test_client()
    log_in(admin, "root")
    [(user_id,)] = _query(app, select(User.id).where(User.username == "alice"))
    page = admin.get(f"/admin/users/{user_id}").get_data(as_text=True)
    assert "End portal sessions" in page
    ended = admin.post(f"/admin/users/{user_id}/end-sessions", data={"csrf_token": csrf_token(page)})
    assert ended.status_code == 302
    assert "Ended 1 portal session(s) of alice." in admin.get(ended.headers["Location"]).get_data(
        as_text=True
    )
    assert client.get("/").status_code == 302 and thief.get("/").status_code == 302
    assert _query(
        app, select(func.count()).select_from(PortalSession).where(PortalSession.user_id == user_id)
    ) == [(0,)]


def test_user_revokes_an_app_in_the_portal(client, app):
    add_user(app, "alice")
    token = app_tokens(client)
    made = client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"})
    assert made.status_code == 201
    [(config_id, authorization_id)] = _active_configs(app)
    [(common_name,)] = _query(app, select(VpnConfig.common_name).where(VpnConfig.id == config_id))
    assert _node_allows(client, common_name)

    page = client.get("/").get_data(as_text=True)
    assert "eduVPN for Linux" in page and f"/authorizations/{authorization_id}/revoke" in page
    other = app.test_client()
    add_user(app, "mallory")
    log_in(other, "mallory")
    stranger = other.post(
        f"/authorizations/{authorization_id}/revoke",
        data={"csrf_token": csrf_token(other.get("/").get_data(as_text=True))},
    )
    assert stranger.status_code == 404
    revoked = client.post(f"/authorizations/{authorization_id}/revoke", data={"csrf_token": csrf_token(page)})
    assert revoked.status_code == 302
    assert "You have approved no app." in client.get("/").get_data(as_text=True)
    assert client.get("/api/v3/info", headers=bearer(token)).status_code == 401
    assert (
        client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"}).status_code
        == 401
    )
    refreshed = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": token["refresh_token"]},
    )
    assert refreshed.status_code == 400
    assert _active_configs(app) == [] and not _node_allows(client, common_name)


def test_one_limit_across_portal_and_apps(client, app):
    """Three configs at most (the test settings' default): apps replace, the portal refuses."""
    first_portal = portal_config(client, app)
    apps = [app_tokens(app.test_client()) for _ in range(4)]
    for token in apps:
        assert (
            client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"}).status_code
            == 201
        )
    active = _active_configs(app)
    assert len(active) == 3
    # API-made configs are replaced first: the portal's config and the two newest apps' stay.
    assert sum(1 for _, authorization in active if authorization is None) == 1
    assert _node_allows(client, first_portal)
    log_in(client, "alice")
    token = csrf_token(client.get("/").get_data(as_text=True))
    refused = client.post(
        "/configs", data={"profile_id": "office", "display_name": "four", "csrf_token": token}
    )
    assert refused.status_code == 409 and "3 active configs" in refused.get_data(as_text=True)


def test_app_connect_at_the_limit_replaces_the_oldest_portal_config(client, app):
    names = [portal_config(client, app) for _ in range(3)]
    token = app_tokens(app.test_client())
    assert (
        client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"}).status_code
        == 201
    )
    assert len(_active_configs(app)) == 3
    assert [_node_allows(client, name) for name in names] == [False, True, True]


def test_connect_rate_limit_per_authorization(make_app):
    app = make_app(api_connect_limit=2, api_connect_window="1h")
    client = app.test_client()
    add_user(app, "alice")
    token = app_tokens(client)
    for _ in range(2):
        assert (
            client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"}).status_code
            == 201
        )
    refused = client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"})
    assert refused.status_code == 429
    assert "2 configs made by this app within 3600 s" in refused.get_json()["error"]
    assert 3590 <= int(refused.headers["Retry-After"]) <= 3600
    # Another app of the same user has its own budget.
    other = app_tokens(app.test_client())
    assert (
        client.post("/api/v3/connect", headers=bearer(other), data={"profile_id": "office"}).status_code
        == 201
    )


def test_parallel_connects_of_one_authorization_leave_one_config(client, app):
    add_user(app, "alice")
    token = app_tokens(client)
    server = LiveServer(app)
    try:
        statuses = server.post_in_parallel(
            8,
            "/api/v3/connect",
            {"profile_id": "office"},
            {"Authorization": f"Bearer {token['access_token']}"},
        )
    finally:
        server.stop()
    assert statuses == [201] * 8  # one after the other under the user's lock: each replaced the last
    assert len(_active_configs(app)) == 1
    [(made,)] = _query(app, select(func.count()).select_from(VpnConfig))
    assert made == 8


def test_parallel_connects_of_many_apps_keep_the_limit(client, app):
    add_user(app, "alice")
    tokens = [app_tokens(app.test_client()) for _ in range(6)]
    server = LiveServer(app)
    try:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        start = threading.Barrier(len(tokens))

        def connect(token):
            start.wait()
            return server.post(
                "/api/v3/connect",
                {"profile_id": "office"},
                {"Authorization": f"Bearer {token['access_token']}"},
            )[0]

        with ThreadPoolExecutor(len(tokens)) as pool:
            statuses = list(pool.map(connect, tokens))
    finally:
        server.stop()
    assert statuses == [201] * 6
    assert len(_active_configs(app)) == 3


def test_database_refuses_two_active_configs_of_one_authorization(client, app):
    """The unique index holds even when the code above it would not."""
    from sqlalchemy.exc import IntegrityError

    add_user(app, "alice")
    token = app_tokens(client)
    assert (
        client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"}).status_code
        == 201
    )
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        existing = session.scalar(select(VpnConfig))
        session.add(
            VpnConfig(
                user_id=existing.user_id,
                profile_id="office",
                display_name="copy",
                common_name="c" * 32,
                serial_number="01",
                authorization_id=existing.authorization_id,
                expires_at=existing.expires_at,
            )
        )
        with pytest.raises(IntegrityError):
            session.commit()
    finally:
        session.close()


def test_reused_refresh_token_ends_the_authorization(client, app):
    add_user(app, "alice")
    token = app_tokens(client)

    def refresh(refresh_token):
        return client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": refresh_token},
        )

    rotated = refresh(token["refresh_token"]).get_json()
    made = client.post("/api/v3/connect", headers=bearer(rotated), data={"profile_id": "office"})
    assert made.status_code == 201
    [(config_id, _)] = _active_configs(app)
    [(common_name,)] = _query(app, select(VpnConfig.common_name).where(VpnConfig.id == config_id))
    # The first refresh token again: a copy is in use. The whole chain ends.
    reused = refresh(token["refresh_token"])
    assert reused.status_code == 400 and reused.get_json()["error"] == "invalid_grant"
    assert client.get("/api/v3/info", headers=bearer(rotated)).status_code == 401
    assert refresh(rotated["refresh_token"]).status_code == 400
    assert _active_configs(app) == [] and not _node_allows(client, common_name)
    [(revoked_at,)] = _query(app, select(OAuthAuthorization.revoked_at))
    assert revoked_at is not None


def test_home_page_counts_app_configs_in_the_limit(client, app):
    add_user(app, "alice")
    token = app_tokens(client)
    client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"})
    page = client.get("/").get_data(as_text=True)
    table = page.split('<table id="authorizations">')[1].split("</table>")[0]
    row = re.search(r"<td>eduVPN for Linux</td>.*?</tr>", table, re.S).group(0)
    assert "<td>1</td>" in row
    assert log_in(app.test_client(), "alice", PASSWORD).status_code == 302
