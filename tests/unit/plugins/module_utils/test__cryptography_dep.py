"""The cryptography guard (_cryptography_dep.py) and the places that must say the same minimum."""

import re
from pathlib import Path

import cryptography
import pytest
from vpnfleet.shared import _cryptography_dep as dep

REPO = Path(__file__).resolve().parents[4]


def test_the_cryptography_here_is_accepted():
    assert dep.HAS_CRYPTOGRAPHY and dep.CRYPTOGRAPHY_VERSION == cryptography.__version__
    assert dep.cryptography_problem() is None


@pytest.mark.parametrize("version", ["44.0.0", "44.0", "45.0.7", "50.0.2", "46.0.0rc1", "100.0"])
def test_new_enough(version):
    assert dep.cryptography_problem(version) is None


@pytest.mark.parametrize("version", ["38.0.4", "43.0.0", "43.0.3", "9.9", "4.0"])
def test_too_old_names_the_version_the_place_and_the_minimum(version):
    problem = dep.cryptography_problem(version, "/usr/lib/python3/dist-packages/cryptography/__init__.py")
    assert "found cryptography %s at /usr/lib/python3/dist-packages" % version in problem
    assert "need 44.0 or later" in problem


def test_missing():
    assert dep.cryptography_problem(None) == "cryptography is not installed for this Python"


def test_pyproject_and_the_doc_fragment_say_the_same_minimum():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.findall(r'"cryptography>=([0-9.]+)"', pyproject) == [dep.MINIMUM_CRYPTOGRAPHY_VERSION]
    fragment = (REPO / "plugins/doc_fragments/pki.py").read_text()
    assert re.findall(r"cryptography >= ([0-9.]+)", fragment) == [dep.MINIMUM_CRYPTOGRAPHY_VERSION]
    for module in ("ca", "csr", "certificate"):
        text = (REPO / "plugins" / "modules" / (module + ".py")).read_text()
        assert "vpnfleet.server.pki\n" in text and "cryptography >=" not in text, module
