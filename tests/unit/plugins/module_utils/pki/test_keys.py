"""Keys, CSRs, PEM and the tls-crypt key (pki/keys.py), with the real `cryptography` and `openvpn`."""

import os
import shutil
import stat
import subprocess

import pytest
from vpnfleet.shared import files
from vpnfleet.shared.pki import keys


def test_private_key_round_trip_and_atomic_write_mode(tmp_path):
    for key_type in keys.KEY_TYPES:
        key = keys.make_private_key(key_type)
        path = str(tmp_path / (key_type + ".key"))
        files.write_file_atomic(path, keys.private_key_pem(key), 0o600)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert keys.key_type_of(keys.load_private_key(files.read_file(path))) == key_type
    assert [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")] == []


def test_tls_crypt_key_format():
    key = keys.make_tls_crypt_key()
    lines = key.splitlines()
    assert lines[0] == "-----BEGIN OpenVPN Static key V1-----"
    assert lines[-1] == "-----END OpenVPN Static key V1-----"
    assert len(lines) == 18 and all(len(line) == 32 for line in lines[1:-1])
    assert len(bytes.fromhex("".join(lines[1:-1]))) == 256
    assert keys.is_tls_crypt_key(key) and key != keys.make_tls_crypt_key()
    assert not keys.is_tls_crypt_key(key.replace(lines[3], lines[3][:-1]))


@pytest.mark.skipif(shutil.which("openvpn") is None, reason="openvpn is not installed")
def test_tls_crypt_key_matches_what_openvpn_writes(tmp_path):
    path = tmp_path / "ta.key"
    subprocess.run(["openvpn", "--genkey", "secret", str(path)], check=True, capture_output=True)
    assert keys.is_tls_crypt_key(path.read_text())


def test_read_pem_gives_none_for_a_missing_or_foreign_file(tmp_path):
    key = keys.make_private_key()
    path = tmp_path / "server.key"
    assert keys.read_pem(str(path), keys.load_private_key) is None
    path.write_bytes(keys.private_key_pem(key))
    assert keys.same_public_key(
        keys.read_pem(str(path), keys.load_private_key).public_key(), key.public_key()
    )
    # A key where a certificate should be, or garbage: the caller makes the file anew.
    assert keys.read_pem(str(path), keys.load_certificate) is None
    path.write_text("not PEM at all\n")
    assert keys.read_pem(str(path), keys.load_private_key) is None


def test_key_of_type_keeps_only_a_key_of_the_asked_type():
    key = keys.make_private_key("ed25519")
    assert keys.key_of_type(key, "ed25519") is key
    assert keys.key_of_type(key, "ecdsa-p256") is None
    assert keys.key_of_type(None, "ed25519") is None


def test_csr_matches_only_its_key_and_names():
    key = keys.make_private_key()
    csr = keys.load_csr(keys.csr_pem(keys.make_csr(key, "node-a", ["node-a.example.org"], ["2001:db8::1"])))
    assert keys.csr_matches(csr, key, "node-a", ["node-a.example.org"], ["2001:db8:0::1"])
    assert not keys.csr_matches(csr, key, "node-b", ["node-a.example.org"], ["2001:db8::1"])
    assert not keys.csr_matches(csr, key, "node-a", [], ["2001:db8::1"])
    assert not keys.csr_matches(
        csr, keys.make_private_key(), "node-a", ["node-a.example.org"], ["2001:db8::1"]
    )
