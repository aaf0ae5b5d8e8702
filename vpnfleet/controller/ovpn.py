"""The OpenVPN client configuration (.ovpn) handed to users and apps."""

from __future__ import annotations

from vpnfleet.controller.certificates import IssuedClientCertificate
from vpnfleet.controller.settings import Profile
from vpnfleet.shared.pki.keys import VPN_SERVER_OID

# What every client gets; the routes, DNS and addresses are pushed by the node's server config.
_CLIENT_OPTIONS = (
    "dev tun",
    "client",
    "nobind",
    # A node's vpn_server usage, not just serverAuth: any TLS server certificate of the CA (the
    # controller's web one) would pass "remote-cert-tls server". A name prefix would not hold
    # either: the web certificate of a controller that is also a node carries the node's name.
    # The key usage is left to the TLS library, as remote-cert-tls does since OpenVPN 2.4.
    f"remote-cert-eku {VPN_SERVER_OID}",
    "verb 3",
    # Failover in seconds (docs/node.md): 5 s for a remote to answer before the next one, a
    # second between attempts, and backing off to at most 30 s when every remote fails.
    "server-poll-timeout 5",
    "connect-retry 1 30",
    # A full process (max-clients) still answers the first packet (OpenVPN 2.6's stateless
    # reset reply) and only then drops the client, so server-poll-timeout no longer applies and
    # the client waited out the default 60 s handshake window before its next remote
    # (bench/storm.py's "full" event). 10 s, and in through the next remote within 15 s; a
    # handshake takes 1-2 s even in a storm (docs/bench.md).
    "hand-window 10",
    "tls-version-min 1.3",
    "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
    "reneg-sec 0",
)


def render_client_config(
    profile: Profile,
    remotes: list[str],
    ca_certificate_pem: str,
    certificate: IssuedClientCertificate,
    tls_crypt_key: str,
) -> str:
    """The .ovpn; ``remotes`` are the remote lines the node choice made (controller/fleet.py)."""
    lines = [f"# {profile.display_name}", *_CLIENT_OPTIONS]
    for tag, content in (
        ("ca", ca_certificate_pem),
        ("cert", certificate.certificate_pem),
        ("key", certificate.private_key_pem),
        ("tls-crypt", tls_crypt_key),
    ):
        lines += [f"<{tag}>", content.strip(), f"</{tag}>"]
    lines += remotes
    return "\n".join(lines) + "\n"
