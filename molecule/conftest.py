"""Fixtures every scenario's testinfra tests may use (helpers: lab_testinfra.py)."""

import ssl

import pytest
from lab_testinfra import WORK, lab_host


@pytest.fixture(scope="module")
def client():
    """The lab's client host, with the tests' work directory."""
    host = lab_host("client")
    host.check_output(f"mkdir -p {WORK}")
    return host


@pytest.fixture(scope="module")
def fleet_tls_context():
    """Trust only the fleet's CA (the portal's certificate is signed by it)."""
    ca_pem = lab_host("controller").file("/var/lib/vpnfleet/ca/ca.crt").content_string
    return ssl.create_default_context(cadata=ca_pem)
