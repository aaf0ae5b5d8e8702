"""The OpenVPN client configuration (.ovpn) handed to users and apps."""

from __future__ import annotations

import random

from vpnfleet.controller.certificates import IssuedClientCertificate
from vpnfleet.controller.settings import Node, Profile

# What every client gets; the routes, DNS and addresses are pushed by the node's server config.
_CLIENT_OPTIONS = (
    "dev tun",
    "client",
    "nobind",
    "remote-cert-tls server",
    "verb 3",
    "server-poll-timeout 10",
    "tls-version-min 1.3",
    "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
    "reneg-sec 0",
)


def remote_lines(profile: Profile, nodes: tuple[Node, ...], prefer_tcp: bool = False) -> list[str]:
    """A remote for every node process serving the profile, or for every entry point of a node that
    has them (one public port per protocol, spread over the processes by the node's nftables):
    UDP first (TCP first if asked).

    Within a protocol the order is shuffled, so that clients spread over processes and nodes; a
    client that cannot reach one remote moves on to the next by itself.
    """
    by_proto: dict[str, list[str]] = {"udp": [], "tcp": []}
    for node in nodes:
        for entry in node.entry_points_of(profile.id) or node.processes_of(profile.id):
            by_proto[entry.proto].append(f"remote {node.public_address} {entry.port} {entry.proto}")
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
