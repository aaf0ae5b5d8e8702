"""WireGuard private keys made on the node: what `wg` accepts, and the same public key it derives."""

import shutil
import subprocess

import pytest
from vpnfleet.shared import wireguard_keys


def test_a_new_key_is_base64_of_32_clamped_bytes_and_differs_every_time():
    first, second = wireguard_keys.make_private_key(), wireguard_keys.make_private_key()
    assert first != second and first.endswith("\n") and len(first.strip()) == 44
    assert wireguard_keys.is_private_key(first.encode())


@pytest.mark.parametrize("data", [None, b"", b"not a key\n", b"AAAA\n", b"\xff" * 44, (b"A" * 43 + b"=") * 2])
def test_what_is_no_key_is_not_taken_for_one(data):
    assert not wireguard_keys.is_private_key(data)


@pytest.mark.skipif(shutil.which("wg") is None, reason="needs wg (wireguard-tools)")
def test_wg_reads_our_key_and_ours_reads_wgs():
    ours = wireguard_keys.make_private_key()
    public = subprocess.run(["wg", "pubkey"], input=ours, capture_output=True, text=True, check=True)
    assert len(public.stdout.strip()) == 44
    theirs = subprocess.run(["wg", "genkey"], capture_output=True, check=True).stdout
    assert wireguard_keys.is_private_key(theirs)
