"""eduVPN API v3: discovery, OAuth with PKCE S256, info, connect, disconnect, documented errors."""

from __future__ import annotations

from datetime import timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

from controller_helpers import (
    NODE_TOKENS,
    REDIRECT_URI,
    add_user,
    app_tokens,
    approve,
    authorize_params,
    bearer,
    code_from,
    exchange,
    log_in,
    pkce_pair,
)
from sqlalchemy import update

from vpnfleet.controller.models import OAuthCode, utcnow
from vpnfleet.controller.state import EXTENSION_KEY
from vpnfleet.controller.wireguard import make_key_pair


def test_discovery_document(client):
    document = client.get("/.well-known/vpn-user-portal").get_json()
    endpoints = document["api"]["http://eduvpn.org/api#3"]
    assert endpoints == {
        "api_endpoint": "http://127.0.0.1:8080/api/v3",
        "authorization_endpoint": "http://127.0.0.1:8080/oauth/authorize",
        "token_endpoint": "http://127.0.0.1:8080/oauth/token",
    }
    assert "v" in document


def test_authorize_needs_login_first(client, app):
    _, challenge = pkce_pair()
    response = client.get("/oauth/authorize", query_string=authorize_params(challenge))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


def test_full_flow_info_connect_disconnect(client, app, vpn_client):
    add_user(app, "alice")
    token = app_tokens(client)
    assert token["token_type"].lower() == "bearer" and token["refresh_token"] and token["expires_in"] > 0

    info = client.get("/api/v3/info", headers=bearer(token))
    assert info.status_code == 200
    assert info.get_json() == {
        "info": {
            "profile_list": [
                {
                    "profile_id": "office",
                    "display_name": "Office",
                    "default_gateway": False,
                    "vpn_proto_list": ["openvpn"],
                    "vpn_proto_transport_list": ["openvpn+udp", "openvpn+tcp"],
                }
            ]
        }
    }

    connect = client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"})
    assert connect.status_code == 201
    assert connect.mimetype == "application/x-openvpn-profile"
    expires = parsedate_to_datetime(connect.headers["Expires"]).replace(tzinfo=None)
    assert timedelta(days=89) < expires - utcnow() <= timedelta(days=90)
    text = connect.get_data(as_text=True)
    assert "<tls-crypt>" in text and "<cert>" in text
    assert text.splitlines()[-1].endswith(" tcp")
    first = vpn_client(text)
    first.wait_until_up()

    tcp_first = client.post(
        "/api/v3/connect", headers=bearer(token), data={"profile_id": "office", "prefer_tcp": "yes"}
    ).get_data(as_text=True)
    remotes = [line for line in tcp_first.splitlines() if line.startswith("remote ")]
    assert remotes[0].endswith(" tcp") and remotes[-1].endswith(" udp")
    # The second /connect invalidated the first config of the same authorization: its client,
    # connected to node-x1 for real, is dropped.
    first.wait_until_halted()
    second = vpn_client(tcp_first)
    second.wait_until_up()

    disconnect = client.post("/api/v3/disconnect", headers=bearer(token))
    assert disconnect.status_code == 204 and disconnect.get_data() == b""
    second.wait_until_halted()


def test_refresh_token_rotates(client, app):
    add_user(app, "alice")
    token = app_tokens(client)
    refreshed = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "org.eduvpn.app.linux",
            "refresh_token": token["refresh_token"],
        },
    )
    assert refreshed.status_code == 200
    new = refreshed.get_json()
    assert new["access_token"] != token["access_token"] and new["refresh_token"] != token["refresh_token"]
    assert client.get("/api/v3/info", headers=bearer(new)).status_code == 200
    again = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "org.eduvpn.app.linux",
            "refresh_token": token["refresh_token"],
        },
    )
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"


def test_wrong_code_verifier_is_refused(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    _, challenge = pkce_pair()
    other_verifier, _ = pkce_pair()
    response = exchange(client, code_from(approve(client, authorize_params(challenge))), other_verifier)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"


def test_missing_code_verifier_is_refused(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    _, challenge = pkce_pair()
    code = code_from(approve(client, authorize_params(challenge)))
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": "org.eduvpn.app.linux",
        },
    )
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


def test_unregistered_redirect_uri_is_refused_without_redirecting(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    _, challenge = pkce_pair()
    response = client.get(
        "/oauth/authorize",
        query_string=authorize_params(challenge, redirect_uri="https://attacker.example/callback"),
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "not supported by client" in response.get_data(as_text=True)


def test_other_redirect_uri_at_token_endpoint_is_refused(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    verifier, challenge = pkce_pair()
    code = code_from(approve(client, authorize_params(challenge)))
    response = exchange(client, code, verifier, redirect_uri="http://127.0.0.1:9999/callback")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"


def test_expired_code_is_refused(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    verifier, challenge = pkce_pair()
    code = code_from(approve(client, authorize_params(challenge)))
    with app.app_context():
        session = app.extensions[EXTENSION_KEY].sessions()
        session.execute(update(OAuthCode).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
        session.close()
    response = exchange(client, code, verifier)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"


def test_reused_code_is_refused_and_ends_the_first_tokens(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    verifier, challenge = pkce_pair()
    code = code_from(approve(client, authorize_params(challenge)))
    first = exchange(client, code, verifier)
    assert first.status_code == 200
    second = exchange(client, code, verifier)
    assert second.status_code == 400 and second.get_json()["error"] == "invalid_grant"
    assert client.get("/api/v3/info", headers=bearer(first.get_json())).status_code == 401


def test_pkce_is_required_and_only_s256(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    _, challenge = pkce_pair()
    for overrides in (
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"scope": "other"},
    ):
        response = client.get("/oauth/authorize", query_string=authorize_params(challenge, **overrides))
        assert response.status_code == 302, overrides
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        assert query["error"][0] in ("invalid_request", "invalid_scope"), overrides
        assert query["state"] == ["state-1234"]


def test_unknown_client_is_refused(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    _, challenge = pkce_pair()
    response = client.get(
        "/oauth/authorize", query_string=authorize_params(challenge, client_id="com.example.other")
    )
    assert response.status_code == 400


def test_denying_the_app_redirects_with_access_denied(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    _, challenge = pkce_pair()
    params = authorize_params(challenge)
    page = client.get("/oauth/authorize", query_string=params).get_data(as_text=True)
    from controller_helpers import csrf_token

    response = client.post(
        "/oauth/authorize", query_string=params, data={"csrf_token": csrf_token(page), "decision": "deny"}
    )
    assert parse_qs(urlsplit(response.headers["Location"]).query)["error"] == ["access_denied"]


def test_approval_without_csrf_token_is_refused(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    _, challenge = pkce_pair()
    response = client.post(
        "/oauth/authorize", query_string=authorize_params(challenge), data={"decision": "approve"}
    )
    assert response.status_code == 400


def test_api_without_or_with_bad_token(client):
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        response = client.get("/api/v3/info", headers=headers)
        assert response.status_code == 401
        assert response.is_json and "error" in response.get_json()


def test_connect_documented_errors(client, app):
    add_user(app, "alice")
    headers = bearer(app_tokens(client))
    cases = [
        ({}, 400, 'missing "profile_id" parameter'),
        ({"profile_id": "off ice!"}, 400, 'invalid value for "profile_id"'),
        ({"profile_id": "nosuch"}, 404, 'no such "profile_id"'),
        ({"profile_id": "internet"}, 404, 'no such "profile_id"'),  # group-limited profile
        ({"profile_id": "office", "prefer_tcp": "maybe"}, 400, 'invalid "prefer_tcp"'),
    ]
    for form, status, message in cases:
        response = client.post("/api/v3/connect", headers=headers, data=form)
        assert (response.status_code, response.get_json()) == (status, {"error": message}), form
    public_key = make_key_pair()[1]
    for key, reason in (
        ("x" * 44, "public_key must be 32 bytes, got 33"),
        ("not base64!", "public_key is not base64"),
        ("AAAA", "public_key must be 32 bytes, got 3"),
        (public_key[:-2] + "B=", "public_key is not in its canonical base64 form"),
    ):
        refused = client.post(
            "/api/v3/connect", data={"profile_id": "office", "public_key": key}, headers=headers
        )
        assert (refused.status_code, refused.get_json()) == (
            400,
            {"error": f'invalid "public_key": {reason}'},
        )
    wireguard_only = client.post(
        "/api/v3/connect",
        data={"profile_id": "office", "public_key": public_key},
        headers={**headers, "Accept": "application/x-wireguard-profile"},
    )
    assert wireguard_only.status_code == 406
    assert wireguard_only.get_json() == {
        "error": 'profile "office" offers openvpn; the app accepts wireguard'
    }
    both = client.post(
        "/api/v3/connect",
        data={"profile_id": "office", "public_key": public_key},
        headers={**headers, "Accept": "application/x-openvpn-profile, application/x-wireguard-profile"},
    )
    assert both.status_code == 201


def test_old_api_config_is_refused_by_node_after_new_connect(client, app):
    add_user(app, "alice")
    headers = bearer(app_tokens(client))

    def common_name(text: str) -> str:
        from vpnfleet.shared.pki import keys

        cert = keys.load_certificate(text.split("<cert>\n")[1].split("</cert>")[0].encode())
        return keys.certificate_facts(cert)["common_name"]

    first = common_name(
        client.post("/api/v3/connect", headers=headers, data={"profile_id": "office"}).get_data(as_text=True)
    )
    second = common_name(
        client.post("/api/v3/connect", headers=headers, data={"profile_id": "office"}).get_data(as_text=True)
    )
    auth = ("node-x1", NODE_TOKENS["node-x1"])
    assert (
        client.post(
            "/node-api/v1/connect", auth=auth, data={"common_name": first, "profile_id": "office"}
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/node-api/v1/connect", auth=auth, data={"common_name": second, "profile_id": "office"}
        ).status_code
        == 200
    )
