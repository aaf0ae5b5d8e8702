"""Fixtures: a CA, a stand-in node daemon, a fresh migrated database (SQLite and PostgreSQL)
and a fresh app per test."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest runs with --import-mode=importlib, which puts no test directory on sys.path; the test
# modules import their helpers (controller_helpers, stand_in_daemon, ...) from this directory.
sys.path.insert(0, str(Path(__file__).parent))

import postgres_cluster  # noqa: E402
import pytest  # noqa: E402
from controller_helpers import settings_mapping  # noqa: E402
from stand_in_daemon import StandInDaemon  # noqa: E402
from vpnfleet.shared import pki

from vpnfleet.controller.app import create_app
from vpnfleet.controller.database import migrate
from vpnfleet.controller.settings import settings_from_mapping
from vpnfleet.controller.state import EXTENSION_KEY


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory) -> Path:
    """A CA with the daemon TLS pair and the profiles' tls-crypt keys."""
    directory = tmp_path_factory.mktemp("pki")
    ca = pki.CertificateAuthority.create(str(directory / "ca"), common_name="test CA")
    for purpose, name, addresses in (
        ("daemon_server", "node", ["127.0.0.1"]),
        ("daemon_client", "controller", []),
    ):
        key, cert = ca.issue(name, purpose, ip_addresses=addresses, lifetime_days=2)
        (directory / f"{purpose}.key").write_bytes(pki.private_key_pem(key))
        (directory / f"{purpose}.crt").write_bytes(pki.certificate_pem(cert))
    for profile in ("office", "internet"):
        (directory / f"tls-crypt-{profile}.key").write_text(pki.make_tls_crypt_key())
    return directory


@pytest.fixture(scope="session")
def stand_in_daemon(pki_dir):
    daemon = StandInDaemon(
        pki_dir / "daemon_server.crt", pki_dir / "daemon_server.key", pki_dir / "ca" / "ca.crt"
    ).start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def postgres():
    if not postgres_cluster.available():
        pytest.skip("PostgreSQL 15 is not installed (apt-get install postgresql)")
    cluster = postgres_cluster.PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controller.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def make_app(pki_dir, database_url, stand_in_daemon):
    """Build an app on the fresh database; keyword arguments override settings."""
    migrate(database_url)

    def build(**overrides):
        mapping = settings_mapping(pki_dir, database_url, stand_in_daemon.port)
        mapping.update(overrides)
        app = create_app(settings_from_mapping(mapping))
        app.config["TESTING"] = True
        return app

    yield build
    stand_in_daemon.connections.clear()
    stand_in_daemon.disconnected.clear()


@pytest.fixture
def app(make_app):
    application = make_app()
    yield application
    application.extensions[EXTENSION_KEY].sessions.kw["bind"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()
