"""POST /crl (ours): the controller's CRL replaces the node's, checked; /i/node says how fresh it is."""

import datetime
import time

import pytest

PEM = "application/x-pem-file"
# Above the CA's own CRL numbers (1, 2, ...), as the controller's (microseconds of thisUpdate) are.
FIRST = 1_800_000_000_000_000


@pytest.fixture
def push(daemon_client, controller):
    def push(pem: str, content_type: str = PEM):
        return daemon_client.request("POST", "/crl", controller, form=pem, content_type=content_type)

    return push


def _crl_info(daemon_client, controller) -> dict:
    return daemon_client.request("GET", "/i/node", controller).payload["crl"]


def test_a_new_crl_replaces_the_file_and_the_same_again_changes_nothing(
    daemon, push, lab_pki, workdir, daemon_client, controller
):
    number = FIRST + int(time.time())
    pem = lab_pki.sign_crl(number)
    answer = push(pem)
    assert answer.status == 200 and answer.payload["installed"] is True, answer
    assert (workdir / "node-crl.pem").read_text() == pem
    info = _crl_info(daemon_client, controller)
    assert info["crl_number"] == number and info["stale"] is False and info["revoked_count"] == 1
    mtime = (workdir / "node-crl.pem").stat().st_mtime
    again = push(pem)
    assert again.status == 200 and again.payload["installed"] is False
    assert (workdir / "node-crl.pem").stat().st_mtime == mtime


def test_an_older_crl_is_refused_as_a_replay(push, lab_pki, workdir):
    number = FIRST + int(time.time()) + 100
    assert push(lab_pki.sign_crl(number)).status == 200
    before = (workdir / "node-crl.pem").read_bytes()
    replay = push(lab_pki.sign_crl(number - 1))
    assert replay.status == 409 and f"is older than the installed {number}" in replay.payload["error"]
    same_number = push(lab_pki.sign_crl(number, valid_for=datetime.timedelta(hours=2)))
    assert (
        same_number.status == 409 and "another CRL with the installed number" in same_number.payload["error"]
    )
    assert (workdir / "node-crl.pem").read_bytes() == before


def test_crls_of_another_ca_expired_or_broken_are_refused(push, lab_pki, workdir):
    before = (workdir / "node-crl.pem").read_bytes()
    number = FIRST * 2
    for pem, status, reason in [
        (lab_pki.sign_crl(number, stranger=True), 400, "not signed by this node's CA"),
        (lab_pki.sign_crl(number, valid_for=datetime.timedelta(seconds=-1)), 400, "the CRL has expired"),
        ("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", 400, "not a CRL"),
        (lab_pki.sign_crl(number), 415, "send the CRL as application/x-pem-file"),
    ]:
        content_type = "text/plain" if status == 415 else PEM
        answer = push(pem, content_type)
        assert (answer.status, reason in answer.payload["error"]) == (status, True), answer
    assert (workdir / "node-crl.pem").read_bytes() == before


def test_a_controller_certificate_on_a_pushed_crl_is_refused_at_once(
    push, lab_pki, daemon_client, controller
):
    """No restart: the daemon checks the controller's serial against the CRL file as it is now."""
    doomed = lab_pki.credentials("vfd-controller-to-revoke", "daemon_client")
    assert daemon_client.request("GET", "/i/node", doomed).status == 200
    assert push(lab_pki.sign_crl(FIRST * 3, extra=[doomed])).status == 200
    assert daemon_client.refusal(daemon_client.tls_context(doomed))
    assert daemon_client.request("GET", "/i/node", controller).status == 200


def test_a_stale_crl_is_reported_and_the_controller_still_answered(
    daemon, lab_pki, workdir, daemon_client, controller
):
    """A CRL past its nextUpdate does not lock the controller out: it must reach the node to renew it."""
    path = workdir / "node-crl.pem"
    before = path.read_bytes()
    stale = lab_pki.sign_crl(FIRST * 4, valid_for=datetime.timedelta(seconds=-60))
    try:
        path.write_text(stale)
        info = _crl_info(daemon_client, controller)
        assert info["stale"] is True and info["crl_number"] == FIRST * 4
        # A fresh one with a higher number repairs it.
        fresh = daemon_client.request(
            "POST", "/crl", controller, form=lab_pki.sign_crl(FIRST * 5), content_type=PEM
        )
        assert fresh.status == 200 and _crl_info(daemon_client, controller)["stale"] is False
    finally:
        path.write_bytes(before)
