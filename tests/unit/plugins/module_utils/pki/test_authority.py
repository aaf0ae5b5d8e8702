"""The CA (pki/authority.py) against the real `cryptography` and, where it settles a question, the
real `openssl`."""

import datetime
import os
import shutil
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from vpnfleet.shared.pki import authority, keys

from .conftest import SAN_DNS, SAN_IP, extension, openssl_verify

# --------------------------------------------------------------------------- the CA itself


def test_ca_certificate_extensions(ca):
    basic = extension(ca.cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = extension(ca.cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = extension(ca.cert, x509.SubjectKeyIdentifier).value
    assert extension(ca.cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert keys.certificate_purpose(ca.cert) == "ca"


def test_ca_files_and_modes(ca):
    for name, mode in (("ca.key", 0o600), ("index.json", 0o600), ("ca.crt", 0o644), ("crl.pem", 0o644)):
        assert stat.S_IMODE(os.stat(os.path.join(ca.directory, name)).st_mode) == mode, name
    assert stat.S_IMODE(os.stat(ca.directory).st_mode) == 0o700


def test_ca_loads_back_and_refuses_a_second_create(ca):
    loaded = authority.CertificateAuthority.load(ca.directory)
    assert loaded.cert == ca.cert
    assert keys.key_type_of(loaded.key) == keys.key_type_of(ca.key)
    with pytest.raises(keys.PkiError, match="exists"):
        authority.CertificateAuthority.create(ca.directory)


def test_load_refuses_a_key_of_another_ca(tmp_path):
    first = authority.CertificateAuthority.create(str(tmp_path / "one"))
    second = authority.CertificateAuthority.create(str(tmp_path / "two"))
    shutil.copy(os.path.join(second.directory, "ca.key"), os.path.join(first.directory, "ca.key"))
    with pytest.raises(keys.PkiError, match="does not belong"):
        authority.CertificateAuthority.load(first.directory)


def test_load_of_an_empty_directory_says_so(tmp_path):
    with pytest.raises(keys.PkiError, match="no CA"):
        authority.CertificateAuthority.load(str(tmp_path))


# --------------------------------------------------------------------------- purposes


@pytest.mark.parametrize("purpose", keys.PURPOSES)
def test_each_purpose_has_its_extensions(ca, purpose, tmp_path):
    key, cert = ca.issue("leaf-" + purpose, purpose, SAN_DNS, SAN_IP, key_type=keys.key_type_of(ca.key))
    assert extension(cert, x509.BasicConstraints).value.ca is False
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert usage.value.key_encipherment == (keys.key_type_of(key) == "rsa3072")
    assert not usage.value.key_cert_sign
    usages = list(extension(cert, x509.ExtendedKeyUsage).value)
    wanted_tls = ExtendedKeyUsageOID.SERVER_AUTH if "server" in purpose else ExtendedKeyUsageOID.CLIENT_AUTH
    assert usages[0] == wanted_tls
    assert usages[1:] == ([keys.purpose_oids()[purpose]] if purpose in keys.PURPOSE_OID_STRINGS else [])
    ca_ski = extension(ca.cert, x509.SubjectKeyIdentifier).value.digest
    assert extension(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
    assert extension(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        key.public_key()
    )
    assert keys.certificate_purpose(cert) == purpose
    assert keys.certificate_purpose(keys.certificate_pem(cert)) == purpose
    facts = keys.certificate_facts(cert)
    assert facts["dns_names"] == SAN_DNS and facts["ip_addresses"] == sorted(SAN_IP)
    openssl_purpose = "sslserver" if "server" in purpose else "sslclient"
    result = openssl_verify(tmp_path, ca, cert, openssl_purpose)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_plain_server_certificate_is_no_vpn_server(ca):
    _, web = ca.issue("controller", "server", key_type=keys.key_type_of(ca.key))
    _, daemon = ca.issue("node", "daemon_server", key_type=keys.key_type_of(ca.key))
    assert keys.certificate_purpose(web) == "server"
    assert keys.certificate_purpose(daemon) == "daemon_server"
    for cert in (web, daemon):
        assert keys.purpose_oids()["vpn_server"] not in extension(cert, x509.ExtendedKeyUsage).value


def test_a_client_certificate_is_no_server_certificate(ca, tmp_path):
    _, cert = ca.issue("alice", "client", key_type=keys.key_type_of(ca.key))
    assert openssl_verify(tmp_path, ca, cert, "sslserver").returncode != 0


def test_purpose_oids_come_from_the_documented_arc():
    assert keys.purpose_oids()["daemon_server"].dotted_string == keys.VPNFLEET_OID_ARC + ".1"
    assert keys.purpose_oids()["daemon_client"].dotted_string == keys.VPNFLEET_OID_ARC + ".2"
    assert keys.purpose_oids()["vpn_server"].dotted_string == keys.VPNFLEET_OID_ARC + ".3"
    assert keys.VPN_SERVER_OID == keys.VPNFLEET_OID_ARC + ".3"
    assert keys.VPNFLEET_OID_ARC.startswith("2.25.")


def test_unknown_purpose_and_key_type_are_refused(fresh_ca):
    with pytest.raises(keys.PkiError, match="unknown purpose"):
        fresh_ca.issue("x", "vpn")
    with pytest.raises(keys.PkiError, match="unknown key type"):
        fresh_ca.issue("x", "client", key_type="dsa")
    with pytest.raises(keys.PkiError, match="not an IP address"):
        fresh_ca.issue("x", "server", ip_addresses=["node-a"])


def test_certificate_without_usages_has_unknown_purpose(fresh_ca):
    key = keys.make_private_key()
    now = keys.utcnow()
    bare = (
        x509.CertificateBuilder()
        .subject_name(keys.x509_name("bare"))
        .issuer_name(keys.x509_name("bare"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert keys.certificate_purpose(bare) == "unknown"
    assert not fresh_ca.issued_by_me(bare)


def test_lifetime_never_passes_the_ca(tmp_path):
    short_ca = authority.CertificateAuthority.create(str(tmp_path / "ca"), lifetime_days=10)
    _, cert = short_ca.issue("long", "client", lifetime_days=400)
    assert keys.not_after(cert) <= keys.not_after(short_ca.cert)


# --------------------------------------------------------------------------- CSR flow


def test_sign_csr_keeps_the_key_on_the_node(ca, tmp_path):
    node_key = keys.make_private_key("ed25519")
    csr = keys.make_csr(node_key, "node-a", SAN_DNS, ["203.0.113.10"])
    cert = ca.sign_csr(keys.csr_pem(csr), "server")
    assert keys.same_public_key(cert.public_key(), node_key.public_key())
    facts = keys.certificate_facts(cert)
    assert facts["common_name"] == "node-a"
    assert facts["dns_names"] == SAN_DNS and facts["ip_addresses"] == ["203.0.113.10"]
    assert facts["purpose"] == "server" and facts["key_type"] == "ed25519"
    assert openssl_verify(tmp_path, ca, cert, "sslserver").returncode == 0


def test_sign_csr_arguments_override_the_request(fresh_ca):
    csr = keys.make_csr(keys.make_private_key(), "asked-name", ["asked.example.org"])
    cert = fresh_ca.sign_csr(csr, "daemon_server", common_name="node-b", dns_names=["node-b.example.org"])
    facts = keys.certificate_facts(cert)
    assert facts["common_name"] == "node-b" and facts["dns_names"] == ["node-b.example.org"]
    assert facts["purpose"] == "daemon_server"


def test_sign_csr_refuses_garbage(fresh_ca):
    with pytest.raises(keys.PkiError, match="certificate signing request"):
        fresh_ca.sign_csr(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "client"
        )


def test_sign_csr_refuses_a_tampered_request(fresh_ca):
    csr = keys.make_csr(keys.make_private_key(), "honest")
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[der.index(b"honest")] = ord("H")  # change the signed subject, keep the signature
    tampered = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(keys.PkiError, match="signature"):
        fresh_ca.sign_csr(tampered, "client")


# --------------------------------------------------------------------------- revocation, CRL


def test_revocation_lands_in_the_crl(fresh_ca, tmp_path):
    _, kept = fresh_ca.issue("kept", "client")
    _, revoked = fresh_ca.issue("gone", "client")
    crl_number_before = extension(fresh_ca.crl(), x509.CRLNumber).value.crl_number
    assert fresh_ca.revoke(revoked.serial_number, "key_compromise") is True
    assert fresh_ca.revoke(keys.serial_hex(revoked.serial_number)) is False  # already revoked: no change

    crl = fresh_ca.crl()
    assert crl.is_signature_valid(fresh_ca.cert.public_key())
    assert extension(crl, x509.CRLNumber).value.crl_number == crl_number_before + 1
    entry = crl.get_revoked_certificate_by_serial_number(revoked.serial_number)
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(kept.serial_number) is None
    assert fresh_ca.is_revoked(revoked.serial_number) and not fresh_ca.is_revoked(kept.serial_number)

    assert openssl_verify(tmp_path, fresh_ca, kept, with_crl=True).returncode == 0
    refused = openssl_verify(tmp_path, fresh_ca, revoked, with_crl=True)
    assert refused.returncode != 0 and "revoked" in refused.stdout + refused.stderr


def test_revoking_a_foreign_serial_is_refused(fresh_ca):
    with pytest.raises(keys.PkiError, match="not issued by this CA"):
        fresh_ca.revoke(12345)
    with pytest.raises(keys.PkiError, match="hexadecimal"):
        fresh_ca.revoke("xyz")


def test_crl_refresh_only_when_due(fresh_ca):
    assert fresh_ca.refresh_crl(min_remaining_days=30) is False
    before = extension(fresh_ca.crl(), x509.CRLNumber).value.crl_number
    assert fresh_ca.refresh_crl(min_remaining_days=400) is True
    assert extension(fresh_ca.crl(), x509.CRLNumber).value.crl_number == before + 1


def test_index_records_every_issue_made_in_parallel(fresh_ca):
    serials = []

    def issue(number):
        _, cert = fresh_ca.issue("user-%d" % number, "client")
        serials.append(keys.serial_hex(cert.serial_number))

    threads = [threading.Thread(target=issue, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = fresh_ca.records()
    assert set(serials) <= set(records)
    for serial in serials:
        assert os.path.exists(os.path.join(fresh_ca.directory, "issued", serial + ".pem"))
        assert records[serial]["purpose"] == "client"


# --------------------------------------------------------------------------- users' certificates


def test_unrecorded_client_certificates_leave_the_index_and_issued_alone(fresh_ca):
    index_before = open(os.path.join(fresh_ca.directory, authority.INDEX_FILE)).read()
    until = keys.utcnow().replace(microsecond=0) + datetime.timedelta(hours=8)
    for _ in range(3):
        cert = fresh_ca.sign_public_key(
            keys.make_private_key().public_key(), "a" * 32, "client", record=False, valid_until=until
        )
    assert keys.not_after(cert) == until and keys.certificate_purpose(cert) == "client"
    assert open(os.path.join(fresh_ca.directory, authority.INDEX_FILE)).read() == index_before
    assert os.listdir(os.path.join(fresh_ca.directory, authority.ISSUED_DIR)) == []


def test_publish_crl_lists_the_given_clients_beside_the_index_and_re_signing_keeps_them(fresh_ca, tmp_path):
    _, node = fresh_ca.issue("node", "vpn_server")
    fresh_ca.revoke(node.serial_number)
    user = fresh_ca.sign_public_key(keys.make_private_key().public_key(), "b" * 32, "client", record=False)
    now = keys.utcnow().replace(microsecond=0)
    pem = fresh_ca.publish_crl(
        [(keys.serial_hex(user.serial_number), now)], now, now + datetime.timedelta(hours=1)
    )
    crl = x509.load_pem_x509_crl(pem)
    assert crl.next_update_utc == now + datetime.timedelta(hours=1) and crl.is_signature_valid(
        fresh_ca.key.public_key()
    )
    assert {entry.serial_number for entry in crl} == {node.serial_number, user.serial_number}
    assert open(fresh_ca.crl_path, "rb").read() == pem
    # Numbered by thisUpdate in microseconds, as the controller's CRLs are (controller/crl.py).
    number = extension(crl, x509.CRLNumber).value.crl_number
    assert number == int(now.timestamp() * 1_000_000)
    assert openssl_verify(tmp_path, fresh_ca, user, with_crl=True).returncode != 0
    # Ansible's refresh re-signs from the index: the controller's entries stay on the CRL, and
    # its number is above the controller's, or the nodes would refuse it.
    assert fresh_ca.refresh_crl(min_remaining_days=10000)
    assert {entry.serial_number for entry in fresh_ca.crl()} == {node.serial_number, user.serial_number}
    assert extension(fresh_ca.crl(), x509.CRLNumber).value.crl_number == number + 1
    # The next list replaces it: an expired certificate leaves the CRL.
    fresh_ca.publish_crl([], now, now + datetime.timedelta(hours=1))
    assert {entry.serial_number for entry in fresh_ca.crl()} == {node.serial_number}


def test_a_published_crl_is_re_signed_with_no_margin_only_once_it_ran_out(fresh_ca):
    # The controller role's CA task (crl_refresh_days 0): the controller's own CRL of an hour
    # stays as it is, or every Ansible run would re-sign it; one that ran out is re-signed.
    now = keys.utcnow().replace(microsecond=0)
    fresh_ca.publish_crl([], now, now + datetime.timedelta(hours=1))
    published = open(fresh_ca.crl_path, "rb").read()
    assert fresh_ca.refresh_crl(min_remaining_days=0) is False
    assert open(fresh_ca.crl_path, "rb").read() == published
    fresh_ca.publish_crl([], now - datetime.timedelta(hours=2), now - datetime.timedelta(hours=1))
    assert fresh_ca.refresh_crl(min_remaining_days=0) is True
    assert fresh_ca.crl().next_update_utc > now


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand files to another user")
def test_files_root_writes_go_to_the_owner_of_the_ca_directory(fresh_ca):
    os.chown(fresh_ca.directory, 65534, 65534)
    fresh_ca.issue("node", "daemon_server")
    now = keys.utcnow()
    fresh_ca.publish_crl([], now, now + datetime.timedelta(hours=1))
    for name in (
        authority.INDEX_FILE,
        authority.CRL_FILE,
        authority.LOCK_FILE,
        authority.CLIENT_REVOKED_FILE,
    ):
        info = os.stat(os.path.join(fresh_ca.directory, name))
        assert (info.st_uid, info.st_gid) == (65534, 65534), name
    assert stat.S_IMODE(os.stat(os.path.join(fresh_ca.directory, authority.LOCK_FILE)).st_mode) == 0o600


def test_expired_revoked_certificates_leave_the_crl(fresh_ca):
    _, short = fresh_ca.issue("short-lived", "client", lifetime_days=1)
    _, long = fresh_ca.issue("long-lived", "client", lifetime_days=30)
    fresh_ca.revoke(short.serial_number)
    fresh_ca.revoke(long.serial_number)
    in_two_days = keys.utcnow() + datetime.timedelta(days=2)
    assert [serial for serial, _, _ in fresh_ca.revoked_records(in_two_days)] == [
        keys.serial_hex(long.serial_number)
    ]
    assert len(fresh_ca.revoked_records()) == 2


def test_sign_crl_lists_exactly_what_it_is_given(fresh_ca):
    _, revoked = fresh_ca.issue("gone", "client")
    fresh_ca.revoke(revoked.serial_number)  # in the index, but not given: not listed
    now = keys.utcnow()
    pem = fresh_ca.sign_crl(
        [("0AB1", now.replace(tzinfo=None)), ("FF00", now, "key_compromise")],
        now - datetime.timedelta(minutes=1),
        now + datetime.timedelta(hours=1),
        1_796_000_000_000_000,
    )
    crl = x509.load_pem_x509_crl(pem)
    assert crl.is_signature_valid(fresh_ca.cert.public_key())
    assert sorted(entry.serial_number for entry in crl) == [0x0AB1, 0xFF00]
    assert extension(crl, x509.CRLNumber).value.crl_number == 1_796_000_000_000_000
    assert crl.next_update_utc - crl.last_update_utc == datetime.timedelta(minutes=61)
    reason = crl.get_revoked_certificate_by_serial_number(0xFF00).extensions.get_extension_for_class(
        x509.CRLReason
    )
    assert reason.value.reason == x509.ReasonFlags.key_compromise


def test_a_crl_signed_after_another_lists_its_own_entries_only(fresh_ca):
    # The CA keeps the entries it built for the last CRL: the next lists what it is given, no more.
    now = keys.utcnow().replace(microsecond=0)
    earlier = now - datetime.timedelta(hours=2)

    def signed(revoked):
        hour = datetime.timedelta(hours=1)
        crl = x509.load_pem_x509_crl(fresh_ca.sign_crl(revoked, now - hour, now + hour, 1))
        return {entry.serial_number: (entry.revocation_date_utc, entry) for entry in crl}

    signed([("01", now), ("02", now), ("03", now, "key_compromise")])
    second = signed([("02", now), ("03", now), ("04", earlier)])
    assert sorted(second) == [2, 3, 4]
    assert second[4][0] == earlier and second[2][0] == now
    # "03" came again with another reason: a new entry, not the one built before.
    reason = second[3][1].extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.cessation_of_operation
    assert signed([]) == {}
