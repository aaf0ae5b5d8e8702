"""The OpenVPN client configuration (.ovpn) handed to users and apps."""

from __future__ import annotations

import random

from vpnfleet.controller.certificates import IssuedClientCertificate
from vpnfleet.controller.settings import Node, Profile
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
    "server-poll-timeout 10",
    "tls-version-min 1.3",
    "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
    "reneg-sec 0",
)


def remote_lines(profile: Profile, nodes: tuple[Node, ...], prefer_tcp: bool = False) -> list[str]:
    """A remote for every node process serving the profile: UDP first (TCP first if asked).

    Within a protocol the order is shuffled, so that clients spread over processes and nodes; a
    client that cannot reach one remote moves on to the next by itself.
    """
    by_proto: dict[str, list[str]] = {"udp": [], "tcp": []}
    for node in nodes:
        for process in node.processes_of(profile.id):
            by_proto[process.proto].append(f"remote {node.public_address} {process.port} {process.proto}")
    for remotes in by_proto.values():
        random.shuffle(remotes)
    order = ("tcp", "udp") if prefer_tcp else ("udp", "tcp")
    return [line for proto in order for line in by_proto[proto]]


def render_client_config(
    profile: Profile,
    nodes: tuple[Node, ...],
    ca_certificate_pem: str,
    certificate: IssuedClientCertificate,
    tls_crypt_key: str,
    prefer_tcp: bool = False,
) -> str:
    lines = [f"# {profile.display_name}", *_CLIENT_OPTIONS]
    for tag, content in (
        ("ca", ca_certificate_pem),
        ("cert", certificate.certificate_pem),
        ("key", certificate.private_key_pem),
        ("tls-crypt", tls_crypt_key),
    ):
        lines += [f"<{tag}>", content.strip(), f"</{tag}>"]
    lines += remote_lines(profile, nodes, prefer_tcp)
    return "\n".join(lines) + "\n"
