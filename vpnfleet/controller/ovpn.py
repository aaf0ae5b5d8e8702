"""The OpenVPN client configuration (.ovpn) handed to users and apps."""

from __future__ import annotations

from vpnfleet.controller.certificates import IssuedClientCertificate
from vpnfleet.controller.settings import Profile

# What every client gets; the routes, DNS and addresses are pushed by the node's server config.
_CLIENT_OPTIONS = (
    "dev tun",
    "client",
    "nobind",
    "remote-cert-tls server",
    "verb 3",
    # Failover in seconds (docs/node.md): 5 s for a remote to answer before the next one, a
    # second between attempts, and backing off to at most 30 s when every remote fails.
    "server-poll-timeout 5",
    "connect-retry 1 30",
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
