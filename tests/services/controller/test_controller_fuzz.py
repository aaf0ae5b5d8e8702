"""Generated requests (Hypothesis) against the portal, the API and the node API: no input gets
a 5xx. Each request is sent with valid credentials (a logged-in admin with a CSRF token, a bearer
token, a node's token) or with generated ones, so that the fuzzing reaches past authentication.

The number of examples is bounded (FUZZ_EXAMPLES each, the whole file well under a minute);
VPNFLEET_FUZZ_EXAMPLES sets more for a longer run. The summary (requests sent, statuses seen)
is printed; run with -s to see it."""

from __future__ import annotations

import json
import os
from collections import Counter
from urllib.parse import quote

import pytest
from controller_helpers import (
    CLIENT_ID,
    NODE_TOKENS,
    REDIRECT_URI,
    add_user,
    app_tokens,
    csrf_token,
    log_in,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("VPNFLEET_FUZZ_EXAMPLES", "200"))
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    # One app per test on purpose: state (configs, throttle rows, revoked tokens) builds up.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Values that have broken parsers before, beside arbitrary text (no lone surrogates: a URL or a
# form cannot carry one; the JSON bodies below do).
_SHARP = st.sampled_from(
    [
        "",
        "office",
        "internet",
        "yes",
        "no",
        "0",
        "-1",
        "9" * 20,
        str(2**63),
        str(2**31),
        "١٢٣",
        "²",
        "1e3",
        "\n",
        "a\r\nLocation: http://x",
        "\x00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-14:00",
        "2025-03-01 14:30",
        "198.19.64.7",
        "::1",
        CLIENT_ID,
        REDIRECT_URI,
        REDIRECT_URI + "\n",
        "x" * 2000,
    ]
)
TEXT = st.one_of(_SHARP, st.text(st.characters(exclude_categories=("Cs",)), max_size=40))
# A path segment as a client sends it: percent-encoded ("?" or "/" in it would not be one).
SEGMENT = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    TEXT.filter(lambda value: value not in ("", ".", "..")).map(lambda value: quote(value, safe="")),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _params(names: list[str]):
    return st.dictionaries(st.sampled_from(names) | TEXT, TEXT, max_size=len(names) + 1)


class Fuzzer:
    """Sends requests, counts them by status, and fails on the first 5xx with its input."""

    def __init__(self, client, name: str):
        self.client = client
        self.name = name
        self.statuses: Counter[int] = Counter()

    def send(self, method: str, path: str, **kwargs):
        response = self.client.open(path, method=method, **kwargs)
        self.statuses[response.status_code] += 1
        assert response.status_code < 500, (method, path, kwargs, response.get_data(as_text=True)[-500:])
        return response

    def report(self) -> None:
        statuses = dict(sorted(self.statuses.items()))
        print(f"\nfuzz {self.name}: {sum(self.statuses.values())} requests, statuses {statuses}")


@pytest.fixture
def admin(client, app):
    add_user(app, "root", admin=True)
    log_in(client, "root")
    return client


PORTAL_FORMS = ["username", "password", "next", "profile_id", "display_name", "csrf_token", "decision"]
OAUTH_QUERY = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
]


def test_fuzz_portal(admin, app):
    fuzzer = Fuzzer(admin, "portal")
    token = csrf_token(admin.get("/").get_data(as_text=True))

    @FUZZ_SETTINGS
    @given(
        route=st.sampled_from(
            [
                ("GET", "/login"),
                ("POST", "/login"),
                ("GET", "/"),
                ("POST", "/configs"),
                ("POST", "/configs/{}/delete"),
                ("POST", "/authorizations/{}/revoke"),
                ("GET", "/admin/users"),
                ("GET", "/admin/users/{}"),
                ("POST", "/admin/users/{}/disconnect"),
                ("POST", "/admin/users/{}/enable"),
                ("GET", "/admin/log"),
                ("GET", "/oauth/authorize"),
                ("POST", "/oauth/authorize"),
                ("GET", "/{}"),
            ]
        ),
        segment=SEGMENT,
        query=_params(["user", "address", "at", "next", *OAUTH_QUERY]),
        form=_params(PORTAL_FORMS),
        with_csrf=st.sampled_from([True, True, True, False]),  # mostly past the CSRF check
    )
    def one(route, segment, query, form, with_csrf):
        method, template = route
        if with_csrf:
            form = {**form, "csrf_token": token}
        fuzzer.send(method, template.format(segment), query_string=query, data=form)

    try:
        one()
    finally:
        fuzzer.report()
    assert admin.get("/").status_code == 200  # the fuzzing never ended the admin's own login


def test_fuzz_api(client, app):
    add_user(app, "alice")
    tokens = app_tokens(client)
    fuzzer = Fuzzer(client, "api")

    @FUZZ_SETTINGS
    @given(
        route=st.sampled_from(
            [
                ("POST", "/oauth/token"),
                ("GET", "/api/v3/info"),
                ("POST", "/api/v3/connect"),
                ("POST", "/api/v3/disconnect"),
                ("GET", "/.well-known/vpn-user-portal"),
                ("POST", "/api/v3/{}"),
            ]
        ),
        segment=SEGMENT,
        form=_params(
            [
                "grant_type",
                "code",
                "redirect_uri",
                "client_id",
                "code_verifier",
                "refresh_token",
                "profile_id",
                "prefer_tcp",
                "public_key",
            ]
        ),
        authorization=st.one_of(
            st.just(f"Bearer {tokens['access_token']}"),
            st.just(f"Bearer {tokens['access_token']}"),
            TEXT.map(lambda value: f"Bearer {value}"),
            TEXT,
        ),
        accept=st.one_of(
            st.none(),
            st.sampled_from(["application/x-openvpn-profile", "application/x-wireguard-profile"]),
            TEXT,
        ),
    )
    def one(route, segment, form, authorization, accept):
        method, template = route
        if template == "/api/v3/connect" and "profile_id" not in form:
            form = {**form, "profile_id": "office"}  # so that configs are made too
        headers = {"Authorization": authorization.replace("\n", " ").replace("\r", " ")}
        if accept is not None:
            headers["Accept"] = accept.replace("\n", " ").replace("\r", " ")
        fuzzer.send(method, template.format(segment), data=form, headers=headers)

    try:
        one()
    finally:
        fuzzer.report()


def test_fuzz_node_api(client, app):
    fuzzer = Fuzzer(client, "node API")
    valid = ("node-x1", NODE_TOKENS["node-x1"])
    fields = ["common_name", "profile_id", "ipv4", "ipv6", "real_address", "bytes_received", "bytes_sent"]

    @FUZZ_SETTINGS
    @given(
        path=st.sampled_from(["connect", "disconnect"]),
        segment=st.tuples(st.integers(0, 4), SEGMENT).map(lambda pair: pair[1] if pair[0] == 0 else None),
        auth=st.one_of(st.just(valid), st.just(valid), st.tuples(TEXT, TEXT), st.none()),
        body=st.one_of(
            _params(fields).map(lambda form: {"data": form}),
            st.dictionaries(st.sampled_from(fields) | st.text(max_size=10), JSON).map(
                lambda document: {"data": json.dumps(document), "content_type": "application/json"}
            ),
            JSON.map(lambda document: {"data": json.dumps(document), "content_type": "application/json"}),
            st.sampled_from(["[" * 30_000 + "]" * 30_000, '{"common_name": "\\ud800"}', "{", "\xff"]).map(
                lambda raw: {"data": raw, "content_type": "application/json"}
            ),
        ),
    )
    def one(path, segment, auth, body):
        path = path if segment is None else segment
        if auth is not None and ":" in auth[0]:
            auth = (auth[0].replace(":", ""), auth[1])
        fuzzer.send("POST", f"/node-api/v1/{path}", auth=auth, **body)

    try:
        one()
    finally:
        fuzzer.report()
