"""Login throttling (atomic, capped delays per user at an address, per address and per user), a
disabled account that answers as a wrong password, bad inputs that get a 4xx with a reason, and
the migration from the first schema."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest
from alembic import command
from controller_helpers import (
    NODE_TOKENS,
    PASSWORD,
    LiveServer,
    add_user,
    authorize_params,
    csrf_token,
    log_in,
    pkce_pair,
    run_sql,
    session_cookie,
)
from sqlalchemy import create_engine, text, update

from vpnfleet.controller.accounts import _DUMMY_HASH, password_matches
from vpnfleet.controller.database import alembic_config, migrate
from vpnfleet.controller.models import LoginThrottleEntry, User, utcnow

NODE_X1 = ("node-x1", NODE_TOKENS["node-x1"])


def _login_from(app, address: str, username: str, password: str, client=None):
    client = client or app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return log_in(client, username, password)


def _without_csrf(html: str) -> str:
    return re.sub(r'value="[^"]*"', 'value=""', html)


def test_parallel_wrong_passwords_are_counted_one_after_the_other(client, app):
    add_user(app, "alice")
    page = client.get("/login")
    form = {"username": "alice", "password": "wrong", "csrf_token": csrf_token(page.get_data(as_text=True))}
    server = LiveServer(app)
    try:
        headers = {"Cookie": session_cookie(client), "Content-Type": "application/x-www-form-urlencoded"}
        statuses = server.post_in_parallel(12, "/login", form, headers)
    finally:
        server.stop()
    # Five free failures (login_max_failures); every other try of the burst waits for a delay.
    assert sorted(statuses) == [401] * 5 + [429] * 7, statuses


def test_delay_doubles_and_is_capped(make_app):
    app = make_app(login_delay_max="90s")
    add_user(app, "alice")
    for _ in range(5):
        assert _login_from(app, "203.0.113.7", "alice", "wrong").status_code == 401

    def wait_after(failures: int) -> int:
        # As if the last of `failures` failures had just happened.
        run_sql(app, update(LoginThrottleEntry).values(failures=failures, last_failure_at=utcnow()))
        response = _login_from(app, "203.0.113.7", "alice", PASSWORD)
        assert response.status_code == 429
        assert "Too many failed logins; wait" in response.get_data(as_text=True)
        return int(response.headers["Retry-After"])

    assert [wait_after(failures) for failures in (5, 6, 7, 8)] == [1, 2, 4, 8]
    assert wait_after(1000) == 90  # the cap: nobody is locked out longer
    # Once the delay is over, the right password works and the count starts over.
    run_sql(app, update(LoginThrottleEntry).values(last_failure_at=utcnow() - timedelta(seconds=91)))
    assert _login_from(app, "203.0.113.7", "alice", PASSWORD).status_code == 302
    assert _login_from(app, "203.0.113.7", "alice", "wrong").status_code == 401


def test_failures_from_one_address_do_not_slow_the_user_elsewhere(client, app):
    add_user(app, "alice")
    for _ in range(8):
        _login_from(app, "203.0.113.66", "alice", "wrong")
    assert _login_from(app, "203.0.113.66", "alice", PASSWORD).status_code == 429
    assert _login_from(app, "198.51.100.7", "alice", PASSWORD).status_code == 302


def test_an_address_guessing_many_users_is_slowed(make_app):
    app = make_app(login_max_failures=2)  # the address key: 4 times that free
    add_user(app, "alice")
    for index in range(8):  # one try per name: only the address key counts them all
        assert _login_from(app, "203.0.113.66", f"user{index}", "guess").status_code == 401
    assert _login_from(app, "203.0.113.66", "alice", PASSWORD).status_code == 429
    assert _login_from(app, "203.0.113.67", "alice", PASSWORD).status_code == 302


def test_guessing_one_user_from_many_addresses_spares_the_users_own_browser(make_app):
    app = make_app(login_max_failures=2)  # the user key: 4 times that free
    add_user(app, "alice")
    browser = app.test_client()
    assert _login_from(app, "198.51.100.7", "alice", PASSWORD, browser).status_code == 302
    for index in range(9):  # a botnet: each address tries once
        _login_from(app, f"203.0.113.{index + 1}", "alice", "guess")
    # A fresh address and browser waits (the user key) ...
    assert _login_from(app, "203.0.113.200", "alice", PASSWORD).status_code == 429
    # ... the browser alice logged in with before does not (its device cookie).
    again = app.test_client()
    again.set_cookie("vpnfleet_device", browser.get_cookie("vpnfleet_device").value)
    assert _login_from(app, "198.51.100.8", "alice", PASSWORD, again).status_code == 302
    # The cookie is alice's only: it does not help a guess at bob.
    add_user(app, "bob")
    for index in range(9):
        _login_from(app, f"203.0.113.{index + 30}", "bob", "guess")
    thief = app.test_client()
    thief.set_cookie("vpnfleet_device", browser.get_cookie("vpnfleet_device").value)
    assert _login_from(app, "198.51.100.9", "bob", PASSWORD, thief).status_code == 429


def test_disabled_account_answers_as_a_wrong_password(client, app):
    add_user(app, "alice")
    add_user(app, "dora")
    run_sql(app, update(User).where(User.username == "dora").values(is_disabled=True))

    def attempt(username: str, password: str, address: str):
        started = time.perf_counter()
        response = _login_from(app, address, username, password)
        return response, time.perf_counter() - started

    disabled, _ = attempt("dora", PASSWORD, "198.51.100.1")
    wrong, _ = attempt("alice", "wrong", "198.51.100.2")
    assert disabled.status_code == wrong.status_code == 401
    assert _without_csrf(disabled.get_data(as_text=True)).replace("dora", "alice") == _without_csrf(
        wrong.get_data(as_text=True)
    )

    # Both check a password hash: each takes about one argon2 verification. The fastest of a few
    # runs is the measure, so that a busy machine does not make the test fail.
    def fastest(run, times=5) -> float:
        durations = []
        for _ in range(times):
            started = time.perf_counter()
            run()
            durations.append(time.perf_counter() - started)
        return min(durations)

    one_hash = fastest(lambda: password_matches(_DUMMY_HASH, "x"))
    addresses = iter(range(10, 60))
    disabled_time = fastest(lambda: attempt("dora", PASSWORD, f"198.51.100.{next(addresses)}"))
    wrong_time = fastest(lambda: attempt("alice", "wrong", f"198.51.100.{next(addresses)}"))
    assert disabled_time > 0.6 * one_hash and wrong_time > 0.6 * one_hash
    assert 0.33 < disabled_time / wrong_time < 3


def test_bad_inputs_get_a_4xx_with_a_reason(client, app):
    add_user(app, "root", admin=True)
    log_in(client, "root")
    token = csrf_token(client.get("/").get_data(as_text=True))
    huge = "9" * 30
    for path in (f"/configs/{huge}/delete", f"/configs/{2**31}/delete", f"/authorizations/{huge}/revoke"):
        response = client.post(path, data={"csrf_token": token})
        assert response.status_code == 404, path
    assert client.get(f"/admin/users/{huge}").status_code == 404
    assert client.post(f"/admin/users/{2**40}/disable", data={"csrf_token": token}).status_code == 404
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "99999-01-01", "2025-13-01"):
        response = client.get("/admin/log", query_string={"at": moment})
        assert response.status_code == 400 and "is not a time like" in response.get_data(as_text=True), moment
    response = client.get("/admin/log", query_string={"user": "ro\x00ot"})
    assert response.status_code == 400 and "control character" in response.get_data(as_text=True)

    _, challenge = pkce_pair()
    for redirect_uri in ("http://127.0.0.1:41234/callback\n", "http://127.0.0.1:41234/call\r\nback"):
        response = client.get(
            "/oauth/authorize", query_string=authorize_params(challenge, redirect_uri=redirect_uri)
        )
        assert response.status_code == 400 and "printable ASCII" in response.get_data(as_text=True)
        assert "Location" not in response.headers
    token_answer = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "redirect_uri": "http://a\nb",
            "client_id": "c",
        },
    )
    assert token_answer.status_code == 400 and "printable ASCII" in token_answer.get_json()["error"]

    def node(path: str, **kwargs):
        response = client.post(f"/node-api/v1/{path}", auth=NODE_X1, **kwargs)
        assert response.status_code == 400, (path, kwargs)
        return response.get_json()["error"]

    deep = "[" * 100_000 + "]" * 100_000
    assert "nested too deeply" in node(
        "connect", data=deep[:30_000] + deep[-30_000:], content_type="application/json"
    )
    assert "must be a string" in node("connect", json={"common_name": {"a": [1]}, "profile_id": "office"})
    assert "unpaired surrogate" in node(
        "connect", data='{"common_name": "\\ud800", "profile_id": "office"}', content_type="application/json"
    )
    for count in ("99999999999999999999", "9223372036854775808", "²", "١٢٣", "1e3", " 12"):
        assert "whole number of bytes" in node(
            "disconnect", data={"common_name": "x", "bytes_sent": count}
        ), count
    assert (
        client.post(
            "/node-api/v1/disconnect",
            auth=NODE_X1,
            data={"common_name": "x", "bytes_sent": "9223372036854775807"},
        ).status_code
        == 200
    )


def test_migration_from_the_first_schema_keeps_the_data(database_url):
    """A database made by revision 0001, with two active configs of one authorization (what
    parallel /connect calls could leave), upgraded to the newest schema."""
    command.upgrade(alembic_config(database_url), "0001")
    engine = create_engine(database_url)
    created = datetime(2026, 11, 1)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, username, password_hash, is_admin, is_disabled, groups, created_at) "
                "VALUES (1, 'alice', 'x', false, false, '[]', :at)"
            ),
            {"at": created},
        )
        connection.execute(
            text(
                "INSERT INTO oauth_authorizations (id, user_id, client_id, scope, created_at, expires_at) "
                "VALUES (1, 1, 'org.eduvpn.app.linux', 'config', :at, :until)"
            ),
            {"at": created, "until": created + timedelta(days=90)},
        )
        for config_id, authorization in ((1, 1), (2, 1), (3, None), (4, None)):
            connection.execute(
                text(
                    "INSERT INTO vpn_configs (id, user_id, profile_id, display_name, common_name,"
                    " serial_number, authorization_id, created_at, expires_at)"
                    " VALUES (:id, 1, 'office', 'x', :cn, '01', :auth, :at, :until)"
                ),
                {
                    "id": config_id,
                    "cn": f"{config_id:032d}",
                    "auth": authorization,
                    "at": created,
                    "until": created + timedelta(days=90),
                },
            )
        connection.execute(
            text(
                "INSERT INTO login_failures (username, remote_addr, failed_at) VALUES ('alice', '::1', :at)"
            ),
            {"at": created},
        )
    migrate(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, revoked_at IS NOT NULL FROM vpn_configs ORDER BY id")
        ).all()
        assert [tuple(row) for row in rows] == [(1, True), (2, False), (3, False), (4, False)]
        assert connection.execute(text("SELECT count(*) FROM portal_sessions")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM login_throttle")).scalar() == 0
    with pytest.raises(Exception, match="(?i)unique"), engine.begin() as connection:
        connection.execute(text("UPDATE vpn_configs SET revoked_at = NULL WHERE id = 1"))
    command.downgrade(alembic_config(database_url), "0001")
    migrate(database_url)
    engine.dispose()
