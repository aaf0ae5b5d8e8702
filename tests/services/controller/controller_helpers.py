"""Helpers the controller's service tests share: settings, users, logging in."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from controller_node_lab import DAEMON_ADDRESS, NODE_X1_ADDRESS, SILENT_DAEMON_ADDRESS
from metrics_text import samples
from sqlalchemy import select
from vpnfleet.shared.pki import authority, keys

from vpnfleet.controller.accounts import ensure_user
from vpnfleet.controller.models import ConnectionLogEntry, VpnConfig
from vpnfleet.controller.state import EXTENSION_KEY

NODE_TOKENS = {"node-x1": "token-of-node-x1-" + "a" * 20, "node-y1": "token-of-node-y1-" + "b" * 20}
PASSWORD = "correct horse battery staple"  # noqa: S105 - the test users' password


def make_pki(directory: Path, common_name: str = "test CA") -> Path:
    """A CA with the daemon TLS pair (the daemon on 127.0.0.1) and the profiles' tls-crypt keys."""
    ca = authority.CertificateAuthority.create(str(directory / "ca"), common_name=common_name)
    for purpose, name, addresses in (
        ("daemon_server", "node", ["127.0.0.1"]),
        ("daemon_client", "controller", []),
    ):
        key, cert = ca.issue(name, purpose, ip_addresses=addresses, lifetime_days=2)
        (directory / f"{purpose}.key").write_bytes(keys.private_key_pem(key))
        (directory / f"{purpose}.crt").write_bytes(keys.certificate_pem(cert))
    for profile in ("office", "internet"):
        (directory / f"tls-crypt-{profile}.key").write_text(keys.make_tls_crypt_key())
    return directory


def settings_mapping(pki_dir: Path, database_url: str, daemon_port: int) -> dict:
    return {
        "base_url": "http://127.0.0.1:8080",
        "secret_key": "s" * 40,
        "database_url": database_url,
        "ca_dir": str(pki_dir / "ca"),
        "signer_socket": str(pki_dir / "signer.sock"),
        "daemon_client": {
            "cert": str(pki_dir / "daemon_client.crt"),
            "key": str(pki_dir / "daemon_client.key"),
            "ca": str(pki_dir / "ca" / "ca.crt"),
        },
        "daemon_port": daemon_port,
        "daemon_timeout_seconds": 15,  # node-x1 is real and this machine may be busy
        "behind_proxy": False,
        "profiles": [
            {
                "id": "office",
                "display_name": "Office",
                "ipv4_range": "198.19.64.0/20",
                "ipv6_range": "2001:db8:f2::/64",
                "default_gateway": False,
                "routes": ["203.0.113.0/24", "2001:db8:ff::/48"],
                "dns": ["203.0.113.53"],
                "tls_crypt_key_file": str(pki_dir / "tls-crypt-office.key"),
            },
            {
                "id": "internet",
                "display_name": "Internet",
                "ipv4_range": "198.19.80.0/20",
                "default_gateway": True,
                "groups": ["staff"],
                "tls_crypt_key_file": str(pki_dir / "tls-crypt-internet.key"),
            },
        ],
        "nodes": [
            # node-x1 is real (controller_node_lab); nothing listens for node-y1's daemon.
            {
                "name": "node-x1",
                "location": "location-x",
                "public_address": NODE_X1_ADDRESS,
                "daemon_address": DAEMON_ADDRESS,
                "api_token_sha256": hashlib.sha256(NODE_TOKENS["node-x1"].encode()).hexdigest(),
                "processes": [
                    # Named as node-x1's plan names them (UDP first): its daemon reports these names.
                    {
                        "profile": "office",
                        "name": "office-0",
                        "proto": "udp",
                        "port": 1194,
                        "max_clients": 60,
                    },
                    {
                        "profile": "office",
                        "name": "office-2",
                        "proto": "tcp",
                        "port": 1194,
                        "max_clients": 60,
                    },
                    {
                        "profile": "office",
                        "name": "office-1",
                        "proto": "udp",
                        "port": 1195,
                        "max_clients": 60,
                    },
                    {
                        "profile": "internet",
                        "name": "internet-0",
                        "proto": "udp",
                        "port": 1200,
                        "max_clients": 60,
                    },
                ],
            },
            {
                "name": "node-y1",
                "location": "location-y",
                "public_address": "203.0.113.21",
                "daemon_address": SILENT_DAEMON_ADDRESS,
                "api_token_sha256": hashlib.sha256(NODE_TOKENS["node-y1"].encode()).hexdigest(),
                "processes": [
                    {"profile": "office", "proto": "tcp", "port": 443, "max_clients": 30},
                    {"profile": "office", "proto": "udp", "port": 1194, "max_clients": 60},
                ],
            },
        ],
    }


def add_user(app, username: str, *, admin: bool = False, groups=(), password: str = PASSWORD):
    with app.app_context():
        session = app.extensions[EXTENSION_KEY].sessions()
        try:
            ensure_user(session, username, password, is_admin=admin, groups=list(groups))
        finally:
            session.close()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def log_in(client, username: str, password: str = PASSWORD, next_path: str = ""):
    page = client.get("/login", query_string={"next": next_path} if next_path else None)
    return client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "next": next_path,
            "csrf_token": csrf_token(page.get_data(as_text=True)),
        },
    )


CLIENT_ID = "org.eduvpn.app.linux"
REDIRECT_URI = "http://127.0.0.1:41234/callback"


def pkce_pair() -> tuple[str, str]:
    import base64
    import secrets

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(challenge: str, **overrides) -> dict:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "config",
        "state": "state-1234",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {key: value for key, value in params.items() if value is not None}


def approve(client, params: dict):
    """The user approves the app on the consent page; returns the redirect response."""
    page = client.get("/oauth/authorize", query_string=params)
    assert page.status_code == 200, page.get_data(as_text=True)
    return client.post(
        "/oauth/authorize",
        query_string=params,
        data={"csrf_token": csrf_token(page.get_data(as_text=True)), "decision": "approve"},
    )


def code_from(response) -> str:
    from urllib.parse import parse_qs, urlsplit

    location = urlsplit(response.headers["Location"])
    return parse_qs(location.query)["code"][0]


def exchange(client, code: str, verifier: str, redirect_uri: str = REDIRECT_URI, client_id: str = CLIENT_ID):
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )


def app_tokens(client, username: str = "alice") -> dict:
    """Log in, approve the app and exchange the code: the token response."""
    log_in(client, username)
    verifier, challenge = pkce_pair()
    response = exchange(client, code_from(approve(client, authorize_params(challenge))), verifier)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def bearer(token: dict) -> dict:
    return {"Authorization": f"Bearer {token['access_token']}"}


def portal_ovpn(client, app, username="alice", display_name="laptop") -> tuple[str, str]:
    """Make a config through the portal: its common name and the .ovpn handed out."""
    add_user(app, username)
    log_in(client, username)
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post(
        "/configs", data={"profile_id": "office", "display_name": display_name, "csrf_token": token}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        session = app.extensions[EXTENSION_KEY].sessions()
        name = session.scalars(select(VpnConfig.common_name).order_by(VpnConfig.id.desc())).first()
        session.close()
    return name, response.get_data(as_text=True)


def portal_config(client, app, username="alice") -> str:
    """Make a config through the portal; its common name."""
    return portal_ovpn(client, app, username)[0]


def run_sql(app, statement):
    session = app.extensions[EXTENSION_KEY].sessions()
    session.execute(statement)
    session.commit()
    session.close()


def log_rows(app) -> list[ConnectionLogEntry]:
    session = app.extensions[EXTENSION_KEY].sessions()
    rows = list(session.scalars(select(ConnectionLogEntry)))
    session.close()
    return rows


class LiveServer:
    """The app on a real threaded HTTP server on 127.0.0.1, for requests that truly run in
    parallel (each on its own thread and database connection)."""

    def __init__(self, app):
        import threading

        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def post(self, path: str, data: dict, headers: dict) -> tuple[int, dict, bytes]:
        import urllib.error
        import urllib.parse
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1, our own server
            self.url + path, data=urllib.parse.urlencode(data).encode(), headers=headers, method="POST"
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def post_in_parallel(self, count: int, path: str, data: dict, headers: dict) -> list[int]:
        """`count` identical POSTs released at once; their statuses."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        start = threading.Barrier(count)

        def one(_):
            start.wait()
            return self.post(path, data, headers)[0]

        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(one, range(count)))

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()


def _no_redirect_handler():
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    return NoRedirect


_NoRedirect = _no_redirect_handler()


def session_cookie(client) -> str:
    """The test client's portal cookie as a Cookie header value."""
    cookie = client.get_cookie("vpnfleet_session")
    return f"vpnfleet_session={cookie.value}"


# The metrics' scrape token (the settings hold its SHA-256) and what a scrape returns.
SCRAPE_TOKEN = "scrape-token-" + "m" * 30  # noqa: S105 - the test's scrape token
SCRAPE_TOKEN_SHA256 = hashlib.sha256(SCRAPE_TOKEN.encode()).hexdigest()
SCRAPE_HEADERS = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=SCRAPE_HEADERS)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return samples(response.get_data(as_text=True))


def labels(**values: str) -> tuple:
    return tuple(sorted(values.items()))
