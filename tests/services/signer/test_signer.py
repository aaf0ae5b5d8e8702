"""The real signer process over a real CA: what it signs, what it refuses, who may ask it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from signer_process import start_signer
from vpnfleet.shared.pki import authority, keys

from vpnfleet.signer.protocol import SignerError, call, format_time

MAX_CLIENT_DAYS = 2


@pytest.fixture(scope="module")
def workdir():
    # Under /tmp and open to others: the permission test connects as other users.
    directory = Path(tempfile.mkdtemp(prefix="vfs-"))
    os.chmod(directory, 0o755)  # noqa: S103 - the socket's own mode is what is tested
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def ca(workdir):
    return authority.CertificateAuthority.create(str(workdir / "ca"), common_name="signer test CA")


@pytest.fixture(scope="module")
def signer(ca, workdir):
    group = "nogroup" if os.geteuid() == 0 else None
    process = start_signer(
        Path(ca.directory),
        workdir,
        max_client_lifetime=f"{MAX_CLIENT_DAYS}d",
        max_crl_lifetime="1d",
        **({"socket_group": group} if group else {}),
    )
    yield process
    process.stop()


def public_pem(key=None) -> str:
    key = key or keys.make_private_key()
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def issue_request(**overrides) -> dict:
    request = {
        "op": "issue_client",
        "public_key": public_pem(),
        "common_name": "0123456789abcdef" * 2,
        "not_after": format_time(keys.utcnow() + timedelta(hours=8)),
    }
    request.update(overrides)
    return {name: value for name, value in request.items() if value is not None}


def test_a_client_certificate_for_a_public_key_and_nothing_recorded_in_the_ca(signer, ca, tmp_path):
    index_before = Path(ca.directory, "index.json").read_text()
    key = keys.make_private_key("ed25519")
    not_after = keys.utcnow().replace(microsecond=0) + timedelta(days=MAX_CLIENT_DAYS) - timedelta(minutes=1)
    answer = call(signer.socket, issue_request(public_key=public_pem(key), not_after=format_time(not_after)))
    cert = keys.load_certificate(answer["certificate"])
    assert keys.same_public_key(cert.public_key(), key.public_key())
    assert keys.certificate_purpose(cert) == "client" and keys.not_after(cert) == not_after
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(answer["certificate"])
    verified = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", ca.cert_path, str(leaf)],
        capture_output=True,
    )
    assert verified.returncode == 0, verified.stderr
    assert Path(ca.directory, "index.json").read_text() == index_before
    assert os.listdir(Path(ca.directory, "issued")) == []


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (
            {"op": "issue", "purpose": "server"},
            "unknown request 'issue'; the signer only does ca_certificate",
        ),
        ({"op": "private_key"}, "unknown request 'private_key'"),
        ({"purpose": "client"}, "unknown request 'None'"),
        (issue_request(purpose="server"), "issue_client: unknown field(s) purpose"),
        (issue_request(dns_names=["evil.example"]), "issue_client: unknown field(s) dns_names"),
        (issue_request(common_name=None), "issue_client: missing field(s) common_name"),
        (issue_request(common_name="controller"), "common_name must be 32 lower-case hex digits"),
        (issue_request(not_after="tomorrow"), "not_after must be a time like"),
        (
            issue_request(not_after=format_time(keys.utcnow() - timedelta(minutes=1))),
            "not_after is in the past",
        ),
        (
            issue_request(not_after=format_time(keys.utcnow() + timedelta(days=MAX_CLIENT_DAYS, hours=1))),
            "is longer than the bound of 2 days, 0:00:00",
        ),
        (
            issue_request(public_key="-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            "not a PEM public key",
        ),
        (
            issue_request(public_key=keys.private_key_pem(keys.make_private_key()).decode()),
            "that is a private key; send the public key only",
        ),
        (issue_request(public_key=17), "public_key must be a PEM text"),
        ({"op": "sign_crl", "revoked": {}, "this_update": "x"}, "sign_crl: missing field(s) next_update"),
    ],
)
def test_every_other_purpose_and_bad_input_is_refused_with_a_reason(signer, request_, reason):
    with pytest.raises(SignerError, match=None) as refusal:
        call(signer.socket, request_)
    assert reason in str(refusal.value)
    assert "refused a request of pid" in signer.log()


def crl_request(revoked=(), this_update=None, lifetime=timedelta(hours=1)) -> dict:
    this_update = this_update or keys.utcnow()
    return {
        "op": "sign_crl",
        "revoked": [list(entry) for entry in revoked],
        "this_update": format_time(this_update),
        "next_update": format_time(this_update + lifetime),
    }


def test_the_crl_lists_the_given_revocations_and_is_the_cas_published_one(signer, ca):
    now = keys.utcnow()
    answer = call(signer.socket, crl_request([("0ABC", format_time(now)), ("1f", format_time(now))]))
    crl = x509.load_pem_x509_crl(answer["crl"].encode())
    assert crl.is_signature_valid(ca.cert.public_key())
    assert sorted(entry.serial_number for entry in crl) == [0x1F, 0xABC]
    assert Path(ca.crl_path).read_text() == answer["crl"]


def test_each_crl_lists_its_request_and_a_bad_pair_is_refused_after_good_ones(signer, ca):
    # The signer keeps the pairs it checked for the last CRL: a later request is checked as a whole.
    now = format_time(keys.utcnow())
    listed = [(f"{serial:X}", now) for serial in range(1, 2001)]
    call(signer.socket, crl_request(listed))
    with pytest.raises(SignerError) as refusal:
        call(signer.socket, crl_request([*listed, ("0", now)]))
    assert "revoked[2000]: serial must be 1 to 40 hex digits, not zero" in str(refusal.value)
    answer = call(signer.socket, crl_request([*listed[1000:], ("ABCDE", now)]))
    crl = x509.load_pem_x509_crl(answer["crl"].encode())
    assert sorted(entry.serial_number for entry in crl) == [*range(1001, 2001), 0xABCDE]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (
            crl_request(lifetime=timedelta(days=2)),
            "a CRL lifetime of 2 days, 0:00:00 is longer than the bound",
        ),
        (crl_request(lifetime=timedelta(0)), "next_update must be after this_update"),
        (crl_request(this_update=keys.utcnow() - timedelta(days=1)), "this_update is more than an hour away"),
        ({**crl_request(), "revoked": "0ABC"}, "revoked must be a list of [serial, revoked_at] pairs"),
        (crl_request([("0ABC",)]), "revoked[0] must be a [serial, revoked_at] pair"),
        (crl_request([("xyz", format_time(keys.utcnow()))]), "revoked[0]: serial must be 1 to 40 hex digits"),
        (crl_request([("0", format_time(keys.utcnow()))]), "serial must be 1 to 40 hex digits, not zero"),
        (crl_request([("1", "yesterday")]), "revoked[0]: revoked_at must be a time like"),
        (crl_request([("1", format_time(keys.utcnow() + timedelta(days=3)))]), "revoked_at is in the future"),
    ],
)
def test_bad_crl_requests_are_refused_with_a_reason(signer, request_, reason):
    with pytest.raises(SignerError) as refusal:
        call(signer.socket, request_)
    assert reason in str(refusal.value)


def test_malformed_messages_get_a_reason_and_the_key_never_leaves(signer, ca):
    import socket

    for raw, reason in (
        (b"not json\n", "message is not JSON"),
        (b"[1, 2]\n", "must be a JSON object"),
        (b"\n", "empty"),
    ):
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(signer.socket))
            connection.sendall(raw)
            connection.shutdown(socket.SHUT_WR)
            answer = json.loads(connection.makefile().readline())
        assert answer["ok"] is False and reason in answer["error"]
    answers = [call(signer.socket, {"op": "ca_certificate"}), call(signer.socket, issue_request())]
    key_pem = Path(ca.directory, "ca.key").read_text()
    for answer in answers:
        text = json.dumps(answer)
        assert "PRIVATE KEY" not in text and key_pem.splitlines()[1] not in text


CONNECT = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as other users")
def test_only_the_socket_group_may_connect(signer):
    info = signer.socket.stat()
    assert oct(info.st_mode & 0o777) == "0o660"

    def connect_as(user: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", user, "--", "python3", "-c", CONNECT, str(signer.socket)],
            capture_output=True,
            text=True,
        )

    assert connect_as("nobody").returncode == 0  # nobody's group is nogroup, the socket's group
    refused = connect_as("daemon")
    assert refused.returncode != 0 and "PermissionError" in refused.stderr
