"""The decision without a controller answer, on real CRL files: in only while the node's CRL is
fresh and our CA's; a CRL that is stale, missing, broken or another CA's means no."""

from __future__ import annotations

import datetime
import socket

import pytest
from vpnfleet.shared import files
from vpnfleet.shared.pki import authority, keys

from vpnfleet.hooks.hook import ClientEvent, decide_connect
from vpnfleet.hooks.settings import HookSettings


@pytest.fixture
def node(tmp_path):
    """A CA, a token file and a port of 127.0.0.1 where nothing listens (a controller that is down)."""
    ca = authority.CertificateAuthority.create(str(tmp_path / "ca"), common_name="vfh CA")
    other = authority.CertificateAuthority.create(str(tmp_path / "other"), common_name="vfh other CA")
    token = tmp_path / "hooks.token"
    token.write_text("token\n")
    token.chmod(0o640)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {"ca": ca, "other": other, "dir": tmp_path, "token": token, "port": port}


def _decide(node, crl_file=None, crl_ca_file=None):
    settings = {
        "controller_url": f"https://127.0.0.1:{node['port']}",
        "node_name": "node-x1",
        "token_file": str(node["token"]),
        "timeout_seconds": 1,
    }
    if crl_file:
        settings["crl_file"] = str(crl_file)
    if crl_ca_file:
        settings["crl_ca_file"] = str(crl_ca_file)
    event = ClientEvent.from_environment(
        {"script_type": "client-connect", "common_name": "a" * 32}, None, "office"
    )
    return decide_connect(HookSettings.from_mapping(settings), event)


def _crl(node, valid_for, ca="ca"):
    now = keys.utcnow()
    path = node["dir"] / f"crl-{ca}-{int(valid_for.total_seconds())}.pem"
    pem = node[ca].sign_crl([], now - datetime.timedelta(hours=2), now + valid_for, 7)
    files.write_file_atomic(path, pem)
    return path


@pytest.mark.parametrize("check_signature", [True, False])
def test_a_fresh_crl_admits_and_a_stale_one_refuses(node, check_signature):
    ca_file = node["ca"].cert_path if check_signature else None
    fresh = _decide(node, _crl(node, datetime.timedelta(minutes=10)), ca_file)
    assert (
        fresh.allow and "controller unavailable (connection refused); the node's CRL is fresh" in fresh.reason
    )
    stale = _decide(node, _crl(node, datetime.timedelta(seconds=-1)), ca_file)
    assert not stale.allow and "the node's CRL is stale (nextUpdate " in stale.reason


def test_without_a_usable_crl_no_answer_means_no(node, tmp_path):
    broken = tmp_path / "broken.pem"
    broken.write_text("not a CRL\n")
    cases = [
        (None, None, "no crl_file to rely on"),
        (tmp_path / "absent.pem", node["ca"].cert_path, "no CRL of the node's CA in"),
        (broken, None, "cannot read the CRL"),
        (
            _crl(node, datetime.timedelta(minutes=10), ca="other"),
            node["ca"].cert_path,
            "no CRL of the node's CA",
        ),
    ]
    for crl_file, ca_file, reason in cases:
        decision = _decide(node, crl_file, ca_file)
        assert not decision.allow and reason in decision.reason, (crl_file, decision)
