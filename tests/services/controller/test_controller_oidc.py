"""OpenID Connect login against a real provider (Canaille, canaille_lab): the code flow with
PKCE through the provider's own login pages, the issuer checked, users made with the groups
claim, logout, a provider that is down, and the eduVPN app flow (our OAuth) for such a user."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import canaille_lab
import pytest
import yaml
from canaille_lab import CLIENT_ID, CLIENT_SECRET, USERS, log_in_at_provider
from chromium import CHROMEDRIVER, CHROMIUM, start_chromium
from controller_helpers import (
    approve,
    authorize_params,
    bearer,
    code_from,
    csrf_token,
    exchange,
    pkce_pair,
    settings_mapping,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from test_controller_browser import (
    DOWNLOAD_LIMIT_SECONDS,
    STARTUP_LIMIT_SECONDS,
    _free_port,
    _wait_for,
    serve,
)

from vpnfleet.controller import cli
from vpnfleet.controller.models import User
from vpnfleet.controller.state import db

CALLBACK = "http://localhost/login/oidc/callback"  # the test client's host


@pytest.fixture(scope="session")
def provider(tmp_path_factory):
    if not canaille_lab.available():
        pytest.skip("the OpenID provider's venv is missing (bash scripts/setup makes .venv-oidc-provider)")
    server = canaille_lab.start_provider(tmp_path_factory.mktemp("provider"), [CALLBACK])
    yield server
    server.stop()


def oidc_settings(provider, **overrides) -> dict:
    settings = {
        "issuer": provider.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "openid profile groups",
        "user_id_claim": "sub",
        "groups_claim": "groups",
        "admin_group": "vpn-admins",
        "display_name": "Test institution",
        "ca_file": str(provider.ca_file),
        "timeout_seconds": 5,
    }
    settings.update(overrides)
    return settings


def oidc_log_in(client, provider, username: str, next_path: str = ""):
    """Click "Log in with ..." on our page, log in at the provider, come back: our answer."""
    page = client.get("/login", query_string={"next": next_path} if next_path else None)
    assert 'id="login-oidc"' in page.get_data(as_text=True)
    start = client.get("/login/oidc", query_string={"next": next_path} if next_path else None)
    assert start.status_code == 302, start.get_data(as_text=True)
    authorize_url = start.headers["Location"]
    query = parse_qs(urlsplit(authorize_url).query)
    # The code flow with PKCE S256 and a nonce, for our registered client and callback.
    assert authorize_url.startswith(provider.issuer + "/")
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == [CLIENT_ID] and query["redirect_uri"] == [CALLBACK]
    assert query["nonce"] and query["state"] and query["code_challenge"]
    back = log_in_at_provider(provider, authorize_url, username, USERS[username], CALLBACK)
    parts = urlsplit(back)
    _wait_for_a_new_token_second(username)
    answer = client.get(parts.path, query_string=parts.query)
    # Our callback fetched the token: it was issued at this second or before.
    _last_token_second[username] = int(time.time())
    return answer


_last_token_second: dict[str, int] = {}


def _wait_for_a_new_token_second(username: str) -> None:
    """Canaille's access token is a JWT without a random part, unique in its database: two tokens
    of one user and client within one second (iat) collide, and its token endpoint answers 500.
    A person never logs in twice a second; the tests do, so they wait for the next second (after
    the second in which the last token was fetched, not the one before it was asked for)."""
    while int(time.time()) <= _last_token_second.get(username, -1):
        time.sleep(0.05)


def _user(app, username):
    with app.app_context():
        user = db().scalar(select(User).where(User.username == username))
        if user is not None:
            db().expunge(user)
        return user


def test_oidc_user_logs_in_gets_the_groups_profiles_and_logs_out(make_app, provider):
    app = make_app(oidc=oidc_settings(provider, user_id_claim="sub"))
    client = app.test_client()
    response = oidc_log_in(client, provider, "olivia")
    assert response.status_code == 302, response.get_data(as_text=True)
    home = client.get("/").get_data(as_text=True)
    assert 'value="internet"' in home and 'value="office"' in home  # olivia is staff
    user = _user(app, "olivia")
    assert user is not None
    assert (user.source, user.groups, user.is_admin) == ("oidc", ["staff"], False)

    other = app.test_client()
    assert oidc_log_in(other, provider, "oscar").status_code == 302
    assert 'value="internet"' not in other.get("/").get_data(as_text=True)

    token = csrf_token(home)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302  # the portal session is over
    assert other.get("/").status_code == 200


def test_oidc_answer_that_does_not_check_out_is_refused(make_app, provider):
    app = make_app(oidc=oidc_settings(provider))
    client = app.test_client()
    start = client.get("/login/oidc")
    back = log_in_at_provider(provider, start.headers["Location"], "olivia", USERS["olivia"], CALLBACK)
    parts = urlsplit(back)
    # Replayed from another browser (no state in its session): refused with a reason.
    stranger = app.test_client().get(parts.path, query_string=parts.query)
    assert stranger.status_code == 400
    assert "could not be checked" in stranger.get_data(as_text=True)
    # An answer naming another issuer (RFC 9207) is refused before the code is used.
    query = parse_qs(parts.query)
    query["iss"] = ["https://impostor.example"]
    forged = client.get(parts.path, query_string={key: value[0] for key, value in query.items()})
    assert forged.status_code == 400
    assert _user(app, "olivia") is None
    refused = client.get(parts.path, query_string={"error": "access_denied", "state": query["state"][0]})
    assert refused.status_code == 401


def test_a_provider_whose_discovery_names_another_issuer_is_refused(make_app, provider):
    # The same provider reached by another name: its discovery document names 127.0.0.1.
    app = make_app(oidc=oidc_settings(provider, issuer=provider.issuer.replace("127.0.0.1", "localhost")))
    response = app.test_client().get("/login/oidc")
    assert response.status_code in (502, 503)
    assert "sign-in service" in response.get_data(as_text=True)


def test_a_provider_that_is_down_is_a_clear_503(make_app, provider):
    app = make_app(oidc=oidc_settings(provider, issuer="https://127.0.0.1:9"))
    response = app.test_client().get("/login/oidc")
    assert response.status_code == 503
    assert "cannot be reached now" in response.get_data(as_text=True)


def test_the_vpn_app_flow_works_for_an_oidc_user(make_app, provider):
    app = make_app(oidc=oidc_settings(provider))
    client = app.test_client()
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge)
    authorize_path = "/oauth/authorize?" + "&".join(f"{key}={value}" for key, value in params.items())
    # The app opens our authorize page; not logged in, the user goes through the provider.
    assert client.get("/oauth/authorize", query_string=params).status_code == 302
    back = oidc_log_in(client, provider, "olivia", next_path=authorize_path)
    assert back.status_code == 302 and back.headers["Location"].startswith("/oauth/authorize")
    token = exchange(client, code_from(approve(client, params)), verifier)
    assert token.status_code == 200, token.get_data(as_text=True)
    info = client.get("/api/v3/info", headers=bearer(token.get_json()))
    assert info.status_code == 200
    profiles = {profile["profile_id"] for profile in info.get_json()["info"]["profile_list"]}
    assert profiles == {"office", "internet"}
    connect = client.post(
        "/api/v3/connect", headers=bearer(token.get_json()), data={"profile_id": "internet"}
    )
    assert connect.status_code == 201, connect.get_data(as_text=True)
    assert "<cert>" in connect.get_data(as_text=True)


@pytest.fixture
def oidc_browser_setup(tmp_path, pki_dir, node_lab, provider):
    """The controller under gunicorn with the provider as its OpenID Connect login, and a
    Chromium that trusts the provider's certificate (only that one)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    provider.seed(
        {
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": [CALLBACK, f"{base_url}/login/oidc/callback"],
                }
            ]
        }
    )
    mapping = settings_mapping(pki_dir, f"sqlite:///{tmp_path / 'controller.sqlite'}", node_lab.daemon_port)
    mapping.update(base_url=base_url, oidc=oidc_settings(provider))
    settings_file = tmp_path / "controller.yml"
    settings_file.write_text(yaml.safe_dump(mapping))
    assert cli.main(["--settings", str(settings_file), "migrate"]) == 0
    certificate = x509.load_pem_x509_certificate((provider.directory / "server.crt").read_bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    with serve(tmp_path, settings_file, port) as url:
        driver = start_chromium(tmp_path, (f"--ignore-certificate-errors-spki-list={pin}",))
        try:
            yield url, driver
        finally:
            driver.quit()  # before gunicorn stops: it would wait for the browser's connections


def test_oidc_user_logs_in_through_the_provider_in_a_browser_and_downloads_a_config(
    oidc_browser_setup, provider, node_lab, vpn_client
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, browser = oidc_browser_setup
    wait = WebDriverWait(browser, STARTUP_LIMIT_SECONDS)
    browser.get(url + "/")
    browser.find_element(By.ID, "login-oidc").click()
    # The provider's own pages: user name, password, consent.
    wait.until(expected_conditions.presence_of_element_located((By.NAME, "login")))
    assert browser.current_url.startswith(provider.issuer + "/")
    browser.find_element(By.NAME, "login").send_keys("olivia")
    browser.find_element(By.CSS_SELECTOR, "button[name=answer]").click()
    wait.until(expected_conditions.presence_of_element_located((By.NAME, "password")))
    browser.find_element(By.NAME, "password").send_keys(USERS["olivia"])
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#accept, h1")))
    if browser.find_elements(By.ID, "accept"):
        browser.find_element(By.ID, "accept").click()
    wait.until(expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "My VPN"))
    assert browser.current_url.startswith(url)

    Select(browser.find_element(By.NAME, "profile_id")).select_by_value("internet")
    browser.find_element(By.NAME, "display_name").send_keys("laptop")
    browser.find_element(By.ID, "create-config").click()

    def finished_download() -> Path | None:
        files = [path for path in browser.downloads.iterdir() if path.suffix == ".ovpn"]
        return files[0] if files else None

    ovpn = _wait_for(finished_download, DOWNLOAD_LIMIT_SECONDS, "the .ovpn download")
    assert ovpn.name == "internet-laptop.ovpn"
    # The config connects to node-x1 for real.
    vpn = vpn_client(ovpn.read_text(), "udp")
    vpn.wait_until_up()
