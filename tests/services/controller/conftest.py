"""Fixtures: a CA, node-x1 for real (OpenVPN servers and the real daemon, see controller_node_lab),
real VPN clients, a fresh migrated database (SQLite and PostgreSQL) and a fresh app per test."""

from __future__ import annotations

from pathlib import Path

import postgres_cluster
import pytest
from controller_helpers import make_pki, settings_mapping
from controller_node_lab import NodeLab, client_config, start_node_lab, vpn_clients
from openvpn_netlab import OpenVpnProcess, require_lab
from signer_process import start_signer

from vpnfleet.controller.app import create_app
from vpnfleet.controller.database import migrate
from vpnfleet.controller.settings import settings_from_mapping
from vpnfleet.controller.state import EXTENSION_KEY


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory) -> Path:
    """A CA with the daemon TLS pair and the profiles' tls-crypt keys."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session", autouse=True)
def signer(pki_dir):
    """The real signer over the test CA: the app signs through it, as on a controller."""
    process = start_signer(pki_dir / "ca", pki_dir)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def node_lab(pki_dir) -> NodeLab:
    """node-x1 for real: its OpenVPN servers, its daemon (on 127.0.0.1) and a client namespace."""
    require_lab("the controller's node lab")
    lab = start_node_lab(pki_dir, settings_mapping(pki_dir, "sqlite://", 0))
    yield lab
    lab.stop()


@pytest.fixture
def vpn_client(node_lab):
    """Connects real openvpn clients with .ovpn files the controller issued; afterwards stops
    whichever still run and waits until node-x1 lists nobody, so the next test starts clean."""
    clients = vpn_clients(node_lab)

    def start(ovpn: str, proto: str | None = "tcp") -> OpenVpnProcess:
        return clients.start(client_config(ovpn, proto))

    yield start
    clients.stop_all()
    node_lab.wait_until_empty()


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
def make_app(pki_dir, database_url, node_lab):
    """Build an app on the fresh database; keyword arguments override settings."""
    migrate(database_url)

    def build(**overrides):
        mapping = settings_mapping(pki_dir, database_url, node_lab.daemon_port)
        mapping.update(overrides)
        app = create_app(settings_from_mapping(mapping))
        app.config["TESTING"] = True
        return app

    return build


@pytest.fixture
def app(make_app):
    application = make_app()
    yield application
    application.extensions[EXTENSION_KEY].sessions.kw["bind"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()
