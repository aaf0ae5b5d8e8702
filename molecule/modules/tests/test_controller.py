"""The CA on the controller: made there, and the node's key never came here."""

testinfra_hosts = ["ansible://controller"]

CA = "/var/lib/vpnfleet/ca"


def test_ca_is_made_and_its_key_kept_private(host):
    assert (host.file(CA).mode, host.file(CA).user) == (0o700, "root")
    key = host.file(CA + "/ca.key")
    assert (key.mode, key.user) == (0o600, "root")
    for name in ("ca.crt", "crl.pem", "index.json"):
        assert host.file("%s/%s" % (CA, name)).is_file, name
    subject = host.check_output("openssl x509 -in %s/ca.crt -noout -subject", CA)
    assert "vpnfleet lab CA" in subject


def test_the_node_certificate_was_signed_here_without_its_key(host):
    cert = CA + "/hosts/node-x1-server.crt"
    assert host.file(cert).is_file
    host.run_expect([0], "openssl verify -CAfile %s/ca.crt %s", CA, cert)
    text = host.check_output("openssl x509 -in %s -noout -text", cert)
    assert "TLS Web Server Authentication" in text
    assert "DNS:node-x1" in text and "IP Address:198.51.100.10" in text
    # The only private key on the controller under /var/lib/vpnfleet is the CA's own.
    keys = host.check_output("grep -rl 'PRIVATE KEY' /var/lib/vpnfleet || true").split()
    assert keys == [CA + "/ca.key"]
