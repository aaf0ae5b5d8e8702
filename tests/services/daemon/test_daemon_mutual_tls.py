"""Only the controller's daemon_client certificate from our CA, over TLS 1.3, gets an answer."""

import ssl

import pytest


def test_the_controller_is_answered(daemon_client, controller):
    assert daemon_client.request("GET", "/i/node", controller).status == 200


def test_a_client_without_certificate_is_refused(daemon_client):
    assert daemon_client.refusal(daemon_client.tls_context(None))


def test_a_daemon_client_certificate_of_another_ca_is_refused(daemon_client, lab_pki):
    stranger = lab_pki.credentials("vfd-controller", "daemon_client", stranger=True)
    assert daemon_client.refusal(daemon_client.tls_context(stranger))


@pytest.mark.parametrize("purpose", ["client", "server", "daemon_server"])
def test_a_certificate_of_our_ca_for_another_purpose_is_refused(daemon, daemon_client, lab_pki, purpose):
    # A VPN user's `client` certificate chains to the very same CA: only its purpose tells.
    credentials = lab_pki.credentials(f"vfd-not-controller-{purpose}", purpose)
    assert daemon_client.refusal(daemon_client.tls_context(credentials))
    if purpose == "client":
        # OpenSSL accepts a clientAuth certificate of our CA; the daemon itself turns it away.
        assert f"(vfd-not-controller-{purpose}): certificate purpose is {purpose}" in daemon.log()


def test_tls_1_2_is_refused(daemon_client, controller):
    assert daemon_client.refusal(daemon_client.tls_context(controller, tls_version=ssl.TLSVersion.TLSv1_2))


def test_a_revoked_controller_certificate_is_refused(daemon_client, lab_pki):
    revoked = lab_pki.credentials("vfd-revoked-controller", "daemon_client")
    assert daemon_client.refusal(daemon_client.tls_context(revoked))
