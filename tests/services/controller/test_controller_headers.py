"""The browser headers on every kind of answer: pages, errors, the API, the consent page."""

from __future__ import annotations

import pytest
from controller_helpers import add_user, authorize_params, log_in, pkce_pair

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

POLICY = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"


@pytest.mark.parametrize("path", ["/login", "/no-such-page", "/static/portal.css", "/api/v3/info"])
def test_every_answer_carries_the_policy_and_the_usual_headers(client, path):
    response = client.get(path)
    assert response.headers["Content-Security-Policy"].startswith(POLICY), path
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_the_consent_page_may_send_its_form_on_to_the_apps_redirect_uri_only(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    _, challenge = pkce_pair()
    page = client.get("/oauth/authorize", query_string=authorize_params(challenge))
    assert page.status_code == 200
    assert "form-action 'self' http://127.0.0.1:41234;" in page.headers["Content-Security-Policy"]
    # Elsewhere forms go to the portal only.
    assert "form-action 'self';" in client.get("/").headers["Content-Security-Policy"]
