"""OpenID Connect login on the lab's real hosts: a person of the institution's provider (Canaille,
roles/oidc_provider, on the directory host) logs in to the portal in a real browser (Debian's
Chromium on the control machine) through the provider's own login pages, downloads a config,
and the client host connects with it; the eduVPN app flow (PKCE, our OAuth, /api/v3/connect)
works for such a user too, the app's browser going through the provider as well.

Runs after test_metrics.py (name order): the clients here come and go within their own test."""

import base64
import hashlib
import json
import os
import secrets
import socket
import ssl
import urllib.parse
import urllib.request

import pytest
from chromium import CHROMEDRIVER, CHROMIUM, start_chromium
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lab_portal import PORTAL, PortalClient
from lab_testinfra import lab_host, wait_for

PROVIDER = "https://203.0.113.20"
OLGA = ("olga", "lab-olga-provider-password")
# Waits for pages and downloads; generous, since the lab's hosts share two cores with others.
PAGE_SECONDS = 60
APP_REDIRECT = "http://127.0.0.1:41234/callback"
# All that the browser may reach: the portal, the provider, the app's redirect URI.
REACHABLE = ("203.0.113.10", "203.0.113.20", "127.0.0.1")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver"
)
testinfra_hosts = ["controller"]


@pytest.fixture(scope="module")
def tls_context(fleet_tls_context):
    return fleet_tls_context


def _spki_pin(address, ca_pem):
    """The pin of the server's key, taken from a connection that checked it against its CA."""
    context = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection((address, 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=address) as tls:
            der = tls.getpeercert(binary_form=True)
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def certificate_pins():
    """Chromium trusts the portal's and the provider's certificates, and only those."""
    fleet_ca = lab_host("controller").file("/var/lib/vpnfleet/ca/ca.crt").content_string
    provider_ca = lab_host("directory").file("/etc/vpnfleet-oidc-provider/ca.crt").content_string
    return ",".join([_spki_pin("203.0.113.10", fleet_ca), _spki_pin("203.0.113.20", provider_ca)])


@pytest.fixture
def browser(tmp_path, certificate_pins):
    """Debian's Chromium through its own driver, headless; the driver is named (Selenium Manager
    fetches nothing), no statistics, no name lookups: it reaches the two lab hosts only."""
    os.environ["SE_AVOID_STATS"] = "true"
    resolve_only = ", ".join(f"EXCLUDE {host}" for host in REACHABLE)
    driver = start_chromium(
        tmp_path,
        (
            f"--host-resolver-rules=MAP * ~NOTFOUND, {resolve_only}",
            f"--ignore-certificate-errors-spki-list={certificate_pins}",
        ),
    )
    yield driver
    driver.quit()


def _log_in_at_the_provider(browser, username, password):
    """From our login page through the provider's own pages (user name, password, consent)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, PAGE_SECONDS)
    wait.until(expected_conditions.presence_of_element_located((By.ID, "login-oidc"))).click()
    wait.until(expected_conditions.presence_of_element_located((By.NAME, "login")))
    assert browser.current_url.startswith(PROVIDER + "/"), browser.current_url
    browser.find_element(By.NAME, "login").send_keys(username)
    browser.find_element(By.CSS_SELECTOR, "button[name=answer]").click()
    wait.until(expected_conditions.presence_of_element_located((By.NAME, "password")))
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The provider asks for consent the first time a relying party wants the user's claims.
    wait.until(lambda driver: driver.find_elements(By.ID, "accept") or driver.current_url.startswith(PORTAL))
    if browser.find_elements(By.ID, "accept"):
        browser.find_element(By.ID, "accept").click()


def _connect_and_ping(client, name, config):
    vpn = PortalClient(client, name, config).start()
    try:
        vpn.wait_connected()
        gateway = vpn.interface().network.network_address + 1
        client.check_output(f"ping -c 3 -W 2 {gateway}")
    finally:
        vpn.stop()


def test_an_oidc_user_logs_in_through_the_provider_in_a_browser_and_connects(browser, client):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(PORTAL + "/")
    assert "/login" in browser.current_url
    _log_in_at_the_provider(browser, *OLGA)
    WebDriverWait(browser, PAGE_SECONDS).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "My VPN")
    )
    assert browser.current_url.startswith(PORTAL)
    # internet is for staff: the provider's groups claim gave it.
    choice = Select(browser.find_element(By.NAME, "profile_id"))
    assert {option.get_attribute("value") for option in choice.options} == {"internet", "office"}
    choice.select_by_value("internet")
    browser.find_element(By.NAME, "display_name").send_keys("sso-laptop")
    browser.find_element(By.ID, "create-config").click()
    ovpn = wait_for(
        lambda: next(iter(browser.downloads.glob("*.ovpn")), None), "the .ovpn download", PAGE_SECONDS
    )
    assert ovpn.name == "internet-sso-laptop.ovpn"
    _connect_and_ping(client, "olga-sso-laptop", ovpn.read_text())


def _post(path, fields, tls_context, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(  # noqa: S310 - PORTAL is a fixed https URL
        PORTAL + path, data=urllib.parse.urlencode(fields).encode(), headers=headers
    )
    with urllib.request.urlopen(request, context=tls_context, timeout=60) as answer:  # noqa: S310
        return answer.read().decode()


def test_the_eduvpn_app_flow_works_for_an_oidc_user(browser, client, tls_context):
    """What an eduVPN app does: PKCE in the system browser, which logs in through the provider and
    approves; the code for a token; /api/v3/info and /api/v3/connect; the config connects."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode(
        {
            "client_id": "org.eduvpn.app.linux",
            "redirect_uri": APP_REDIRECT,
            "response_type": "code",
            "scope": "config",
            "state": "s-14",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    browser.get(f"{PORTAL}/oauth/authorize?{query}")
    _log_in_at_the_provider(browser, *OLGA)
    wait = WebDriverWait(browser, PAGE_SECONDS)
    wait.until(expected_conditions.presence_of_element_located((By.ID, "approve"))).click()
    # The app's redirect URI is the app itself (nothing listens there): the code is in the URL.
    wait.until(lambda driver: driver.current_url.startswith(APP_REDIRECT))
    answer = urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)
    assert answer["state"] == ["s-14"]
    token = json.loads(
        _post(
            "/oauth/token",
            {
                "grant_type": "authorization_code",
                "code": answer["code"][0],
                "redirect_uri": APP_REDIRECT,
                "client_id": "org.eduvpn.app.linux",
                "code_verifier": verifier,
            },
            tls_context,
        )
    )["access_token"]
    request = urllib.request.Request(  # noqa: S310 - PORTAL is a fixed https URL
        PORTAL + "/api/v3/info", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, context=tls_context, timeout=30) as info:  # noqa: S310
        profiles = {profile["profile_id"] for profile in json.load(info)["info"]["profile_list"]}
    assert profiles == {"internet", "office"}
    config = _post("/api/v3/connect", {"profile_id": "internet"}, tls_context, token)
    assert "<cert>" in config
    _connect_and_ping(client, "olga-app", config)
    # The app says goodbye; its config goes.
    _post("/api/v3/disconnect", {}, tls_context, token)
