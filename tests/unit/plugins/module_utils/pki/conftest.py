"""The CAs the PKI tests share, and how they ask the real openssl."""

import subprocess

import pytest
from vpnfleet.shared.pki import authority, keys

SAN_DNS = ["node-a.example.org"]
SAN_IP = ["203.0.113.10", "2001:db8::10"]


@pytest.fixture(scope="module", params=keys.KEY_TYPES)
def ca(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("vfh1-ca-" + request.param)
    return authority.CertificateAuthority.create(str(directory), "Test CA", key_type=request.param)


@pytest.fixture
def fresh_ca(tmp_path):
    return authority.CertificateAuthority.create(str(tmp_path / "ca"), "Fresh CA")


def extension(cert, kind):
    return cert.extensions.get_extension_for_class(kind)


def openssl_verify(tmp_path, ca, cert, purpose=None, with_crl=False):
    command = ["openssl", "verify", "-CAfile", ca.cert_path]
    if with_crl:
        command += ["-crl_check", "-CRLfile", ca.crl_path]
    if purpose:
        command += ["-purpose", purpose]
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(keys.certificate_pem(cert))
    command.append(str(leaf))
    return subprocess.run(command, capture_output=True, text=True, check=False)
