"""Purposes: the controller talks only to a node's daemon_server certificate, and the .ovpn it hands
out accepts only a node's vpn_server certificate, both against the real daemon and real OpenVPN."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest
from controller_helpers import portal_ovpn, settings_mapping
from controller_node_lab import DAEMON_ADDRESS, NODE_X1_ADDRESS, NodeLab
from openvpn_netlab import OpenVpnProcess, issue_files, stop_process, wait_for
from vpnfleet.shared.pki import authority

from vpnfleet.controller.daemons import NodeDaemons
from vpnfleet.controller.settings import settings_from_mapping
from vpnfleet.daemon.server import create_server
from vpnfleet.daemon.settings import DaemonSettings

IMPOSTOR_PORT = 1443  # no process of node-x1's plan listens there


def _ca(node_lab: NodeLab) -> authority.CertificateAuthority:
    return authority.CertificateAuthority.load(str(node_lab.pki_dir / "ca"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((DAEMON_ADDRESS, 0))
        return probe.getsockname()[1]


def _node_x1_answer(node_lab: NodeLab, daemon_port: int):
    settings = settings_from_mapping(settings_mapping(node_lab.pki_dir, "sqlite://", daemon_port))
    [answer] = [a for a in NodeDaemons(settings).node_infos() if a.node.name == "node-x1"]
    return answer


@pytest.mark.parametrize(
    ("purpose", "addresses", "refusal"),
    [
        ("server", [DAEMON_ADDRESS], "daemon certificate purpose is server, not daemon_server"),
        ("vpn_server", [DAEMON_ADDRESS], "daemon certificate purpose is vpn_server, not daemon_server"),
        # node-y1's own daemon_server certificate, presented at node-x1's address.
        ("daemon_server", ["127.0.0.2"], "certificate verify failed: IP address mismatch"),
    ],
)
def test_the_controller_refuses_a_daemon_without_that_nodes_daemon_server_certificate(
    node_lab, tmp_path, purpose, addresses, refusal
):
    # The real daemon on node-x1's address with another certificate of the same CA.
    credentials = issue_files(
        _ca(node_lab), tmp_path / "impostor", "node-x1", purpose, ip_addresses=addresses
    )
    (tmp_path / "sockets").mkdir()
    daemon = create_server(
        DaemonSettings.from_mapping(
            {
                "listen_address": DAEMON_ADDRESS,
                "listen_port": _free_port(),
                "tls_certificate": str(credentials.certificate),
                "tls_private_key": str(credentials.private_key),
                "tls_ca": str(node_lab.pki_dir / "ca" / "ca.crt"),
                "management_socket_glob": f"{tmp_path / 'sockets'}/*.sock",
            }
        )
    )
    thread = threading.Thread(target=daemon.serve_forever, daemon=True)
    thread.start()
    try:
        answer = _node_x1_answer(node_lab, daemon.server_address[1])
    finally:
        daemon.shutdown()
        daemon.server_close()
    assert not answer.ok and refusal in answer.error, answer
    # The same call reaches node-x1's own daemon (daemon_server, its address): no blanket refusal.
    assert _node_x1_answer(node_lab, node_lab.daemon_port).ok


def _impostor_server(node_lab: NodeLab, workdir: Path, purpose: str) -> OpenVpnProcess:
    """node-x1's office TCP process, as the role renders it, on another port with a certificate
    of ``purpose`` (the controller's web certificate is purpose server)."""
    [template] = [
        s
        for s in node_lab.servers.values()
        if re.search(r"^proto tcp", s.log_path.with_suffix(".conf").read_text(), re.M)
    ]
    credentials = issue_files(
        _ca(node_lab), workdir / purpose, "controller", purpose, ip_addresses=[NODE_X1_ADDRESS]
    )
    text = template.log_path.with_suffix(".conf").read_text()
    text = re.sub(r"^cert .*$", f"cert {credentials.certificate}", text, flags=re.M)
    text = re.sub(r"^key .*$", f"key {credentials.private_key}", text, flags=re.M)
    text = re.sub(r"^port \d+$", f"port {IMPOSTOR_PORT}", text, flags=re.M)
    # Its own device and client range beside node-x1's processes in the same namespace.
    text = re.sub(r"^dev .*$", "dev tun-impostor", text, flags=re.M)
    text = re.sub(r"^server .*$", "server 198.19.96.0 255.255.255.0", text, flags=re.M)
    text = re.sub(r"^server-ipv6 .*$", "", text, flags=re.M)
    text = re.sub(r"^management .*$", f"management {workdir / (purpose + '.sock')} unix", text, flags=re.M)
    server = OpenVpnProcess.start(node_lab.namespaces.server, text, workdir / f"impostor-{purpose}.conf")
    server.wait_until_up()
    return server


def _towards_impostor(ovpn: str) -> str:
    lines = [line for line in ovpn.splitlines() if not line.startswith("remote ")]
    return "\n".join([*lines, f"remote {NODE_X1_ADDRESS} {IMPOSTOR_PORT} tcp"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_vpn_client_refuses_a_server_with_the_controllers_web_certificate(
    client, app, node_lab, vpn_client, tmp_path
):
    _, ovpn = portal_ovpn(client, app)
    impostor = _impostor_server(node_lab, tmp_path, "server")
    try:
        refused = vpn_client(_towards_impostor(ovpn), proto=None)
        wait_for(lambda: "VERIFY EKU ERROR" in refused.log(), "the client to refuse the web certificate")
        assert not refused.connected(), refused.log()
        refused.stop()
        # The same .ovpn connects to node-x1's own process (its vpn_server certificate).
        vpn_client(ovpn).wait_until_up()
    finally:
        stop_process(impostor.process)
