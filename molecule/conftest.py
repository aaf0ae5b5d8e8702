"""Fixtures every scenario's testinfra tests may use (helpers: lab_testinfra.py)."""

import pytest
from lab_testinfra import WORK, lab_host


@pytest.fixture(scope="module")
def client():
    """The lab's client host, with the tests' work directory."""
    host = lab_host("client")
    host.check_output(f"mkdir -p {WORK}")
    return host
