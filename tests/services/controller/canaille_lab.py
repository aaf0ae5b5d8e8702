"""A real OpenID Connect provider for the login tests: Canaille (an identity server built on
Authlib), from its own virtual environment (.venv-oidc-provider, made by scripts/setup), served
over HTTPS with a CA made here, seeded with the lab's seed script (roles/directory/files)."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import requests
from authlib.jose import JsonWebKey
from slapd_lab import make_tls

ROOT = Path(__file__).resolve().parents[3]
VENV = Path(os.environ.get("VPNFLEET_OIDC_PROVIDER_VENV", ROOT / ".venv-oidc-provider"))
SEED_SCRIPT = Path(__file__).with_name("oidc_provider_seed.py")
CLIENT_ID = "vpn-portal"
CLIENT_SECRET = "relying-party-secret-of-the-test-portal"  # noqa: S105 - a test provider's secret
USERS = {"olivia": "olivia's provider password", "oscar": "oscar's provider password"}


def available() -> bool:
    return (VENV / "bin" / "canaille").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string


@dataclass
class Provider:
    directory: Path
    port: int
    ca_file: Path
    process: subprocess.Popen | None = None
    environment: dict = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, redirect_uris: list[str]) -> Provider:
        _, cert, key = self.ca_file, self.directory / "server.crt", self.directory / "server.key"
        jwk = JsonWebKey.generate_key("RSA", 2048, is_private=True).as_dict(is_private=True)
        jwk["kid"] = "test-1"
        jwks = "[{" + ", ".join(f"{name} = {_toml_string(value)}" for name, value in jwk.items()) + "}]"
        config = self.directory / "canaille.toml"
        config.write_text(
            "\n".join(
                [
                    f"SECRET_KEY = {_toml_string(os.urandom(24).hex())}",
                    f'SERVER_NAME = "127.0.0.1:{self.port}"',
                    'PREFERRED_URL_SCHEME = "https"',
                    "[CANAILLE]",
                    'NAME = "Test institution"',
                    'DATABASE = "sql"',
                    "JAVASCRIPT = false",
                    "[CANAILLE.ACL.DEFAULT]",
                    'PERMISSIONS = ["use_oidc"]',
                    'READ = ["user_name", "groups"]',
                    "[CANAILLE_SQL]",
                    f"DATABASE_URI = {_toml_string('sqlite:///' + str(self.directory / 'provider.sqlite'))}",
                    "[CANAILLE_OIDC]",
                    f"ACTIVE_JWKS = {jwks}",
                    "[CANAILLE_HYPERCORN]",
                    f'BIND = ["127.0.0.1:{self.port}"]',
                    f"CERTFILE = {_toml_string(str(cert))}",
                    f"KEYFILE = {_toml_string(str(key))}",
                    "",
                ]
            )
        )
        self.environment = {**os.environ, "CANAILLE_CONFIG": str(config)}
        log = (self.directory / "provider.log").open("w")
        subprocess.run(
            [VENV / "bin" / "canaille", "install"], env=self.environment, check=True, stdout=log, stderr=log
        )
        self.seed(
            {
                "users": [{"user_name": name, "password": password} for name, password in USERS.items()],
                "groups": [{"display_name": "staff", "members": ["olivia"]}],
                "clients": [
                    {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": redirect_uris}
                ],
            }
        )
        self.process = subprocess.Popen(
            [VENV / "bin" / "canaille", "run", "--workers", "1"],
            env=self.environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            # hypercorn runs its worker in a child process: stop() ends the whole group.
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the provider stopped: " + (self.directory / "provider.log").read_text())
            try:
                requests.get(
                    f"{self.issuer}/.well-known/openid-configuration", verify=str(self.ca_file), timeout=2
                )
                return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("the provider did not answer within 30 s")

    def seed(self, spec: dict) -> bool:
        path = self.directory / "seed.json"
        path.write_text(json.dumps(spec))
        done = subprocess.run(
            [VENV / "bin" / "python", SEED_SCRIPT, path],
            env=self.environment,
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])["changed"]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=5)


def start_provider(directory: Path, redirect_uris: list[str]) -> Provider:
    ca_file, _, _ = make_tls(directory)
    return Provider(directory, _free_port(), ca_file).start(redirect_uris)


def _form_fields(page: str) -> tuple[str, dict[str, str]]:
    form = re.search(r"<form(.*?)>(.*?)</form>", page, re.S)
    assert form, "no form on the provider's page"
    action = re.search(r'action="([^"]*)"', form.group(1))
    fields = {}
    for tag in re.findall(r"<input[^>]*>", form.group(2)):
        name, value = re.search(r'name="([^"]+)"', tag), re.search(r'value="([^"]*)"', tag)
        if name and 'type="checkbox"' not in tag:
            fields[name.group(1)] = html.unescape(value.group(1)) if value else ""
    return (html.unescape(action.group(1)) if action else ""), fields


def log_in_at_provider(
    provider: Provider, authorize_url: str, username: str, password: str, back_to: str
) -> str:
    """Go through the provider's own login pages (user name, then password, then consent) as a
    browser would; returns the URL the provider sends the browser back to (starts with back_to)."""
    browser = requests.Session()
    browser.verify, browser.trust_env = str(provider.ca_file), False
    response = browser.get(authorize_url, allow_redirects=True)
    for _ in range(6):
        action, fields = _form_fields(response.text)
        if "login" in fields:
            fields["login"] = username
        if "password" in fields:
            fields["password"] = password
        fields["answer"] = "accept" if 'value="accept"' in response.text else ""
        # The provider's CSRF check wants the Referer of its own page (Flask-WTF over HTTPS).
        response = browser.post(
            urljoin(response.url, action or response.url),
            data=fields,
            headers={"Referer": response.url},
            allow_redirects=False,
        )
        while response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(back_to):
                return location
            response = browser.get(location, allow_redirects=False, headers={"Referer": response.url})
        assert response.status_code == 200, f"{response.url}: {response.status_code}"
    raise AssertionError(f"the provider did not send the browser back; last page {response.url}")
