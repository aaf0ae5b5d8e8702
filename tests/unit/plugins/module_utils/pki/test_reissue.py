"""The decision "does this need a new certificate?" (pki/reissue.py), on certificates of a real CA."""

import datetime

import pytest
from vpnfleet.shared.pki import authority, keys, reissue

from .conftest import SAN_DNS, SAN_IP


def wanted(cert_or_key, common_name="node", purpose="server", dns_names=(), ip_addresses=(), **kwargs):
    key = cert_or_key if hasattr(cert_or_key, "private_bytes") else None
    public_key = key.public_key() if key is not None else cert_or_key.public_key()
    return reissue.WantedCertificate(
        common_name, purpose, tuple(dns_names), tuple(ip_addresses), public_key, **kwargs
    )


@pytest.fixture
def issued(fresh_ca):
    """A server certificate of fresh_ca for "node", 100 days, with its key."""
    key, cert = fresh_ca.issue("node", "server", SAN_DNS, lifetime_days=100)
    return key, cert


def test_a_fitting_certificate_is_kept(ca):
    key, cert = ca.issue("keep", "daemon_server", SAN_DNS, SAN_IP, key_type=keys.key_type_of(ca.key))
    # IP addresses in another order and spelling are the same names.
    asked = wanted(key, "keep", "daemon_server", SAN_DNS, ["2001:db8:0::10", "203.0.113.10"])
    assert reissue.reissue_reasons(cert, ca, asked) == []


def test_no_certificate_yet(fresh_ca):
    assert reissue.reissue_reasons(None, fresh_ca, wanted(keys.make_private_key())) == ["no certificate yet"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(common_name="other"), "common name is 'node', wanted 'other'"),
        (dict(purpose="daemon_server"), "purpose is server, wanted daemon_server"),
        (dict(dns_names=[]), "DNS names differ"),
        (dict(ip_addresses=["203.0.113.1"]), "IP addresses differ"),
        (dict(renew_before_days=101), "less than 101 days of validity left"),
    ],
)
def test_each_change_that_calls_for_a_new_certificate(fresh_ca, issued, change, reason):
    key, cert = issued
    asked = dict(common_name="node", purpose="server", dns_names=SAN_DNS)
    asked.update(change)
    assert reissue.reissue_reasons(cert, fresh_ca, wanted(key, **asked)) == [reason]


def test_another_key_or_a_key_still_to_be_made_calls_for_a_new_certificate(fresh_ca, issued):
    unused_key, cert = issued
    other = wanted(keys.make_private_key(), dns_names=SAN_DNS)
    assert reissue.reissue_reasons(cert, fresh_ca, other) == ["the key is not the requested one"]
    to_be_made = reissue.WantedCertificate("node", "server", tuple(SAN_DNS), (), None)
    assert reissue.reissue_reasons(cert, fresh_ca, to_be_made) == ["the key is not the requested one"]


def test_a_certificate_of_another_ca_or_a_revoked_one(fresh_ca, issued, tmp_path):
    key, cert = issued
    asked = wanted(key, dns_names=SAN_DNS)
    other_ca = authority.CertificateAuthority.create(str(tmp_path / "other"), "Fresh CA")
    assert reissue.reissue_reasons(cert, other_ca, asked) == ["not issued by this CA"]
    fresh_ca.revoke(cert.serial_number)
    assert reissue.reissue_reasons(cert, fresh_ca, asked) == ["revoked"]


def test_renewal_threshold_moves_with_the_clock(fresh_ca, issued):
    key, cert = issued
    asked = wanted(key, dns_names=SAN_DNS, renew_before_days=30)
    assert reissue.reissue_reasons(cert, fresh_ca, asked) == []
    in_80_days = keys.utcnow() + datetime.timedelta(days=80)
    assert reissue.reissue_reasons(cert, fresh_ca, asked, now=in_80_days) == [
        "less than 30 days of validity left"
    ]


def test_a_csr_proposes_names_and_the_arguments_override_them():
    node_key = keys.make_private_key()
    csr = keys.make_csr(node_key, "asked", ["asked.example.org"], ["203.0.113.7"])
    proposed = reissue.wanted_certificate("server", csr)
    assert (proposed.common_name, proposed.dns_names, proposed.ip_addresses) == (
        "asked",
        ("asked.example.org",),
        ("203.0.113.7",),
    )
    assert keys.same_public_key(proposed.public_key, node_key.public_key())
    # Names given replace both lists of the CSR, so "no IP addresses" can be asked for.
    overridden = reissue.wanted_certificate("server", csr, "node-a", dns_names=["node-a.example.org"])
    assert (overridden.common_name, overridden.dns_names, overridden.ip_addresses) == (
        "node-a",
        ("node-a.example.org",),
        (),
    )


def test_without_a_csr_the_kept_key_is_certified_or_none():
    key = keys.make_private_key()
    assert keys.same_public_key(
        reissue.wanted_certificate("client", None, "alice", key=key).public_key, key.public_key()
    )
    assert reissue.wanted_certificate("client", None, "alice").public_key is None


def test_a_common_name_is_required_without_a_csr():
    with pytest.raises(keys.PkiError, match="common_name is required"):
        reissue.wanted_certificate("client")
