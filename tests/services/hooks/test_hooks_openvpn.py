"""The hooks with a real OpenVPN server and clients, against the real controller over HTTPS."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from hooks_lab import SERVER_ADDRESS, hook_lines
from openvpn_netlab import WAIT_SECONDS, wait_for
from sqlalchemy import update

from vpnfleet.controller.models import VpnConfig, utcnow


def _bytes_received(lab, common_name: str) -> int:
    """What the server counts for this client, asked over its management socket (status 2)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as management:
        management.settimeout(WAIT_SECONDS)
        management.connect(str(lab.workdir / "office-0.sock"))
        management.sendall(b"status 2\n")
        reply = b""
        while b"\nEND" not in reply:
            chunk = management.recv(65536)
            if not chunk:
                break
            reply += chunk
    for line in reply.decode().splitlines():
        fields = line.split(",")
        if fields[0] == "CLIENT_LIST" and fields[1] == common_name:
            return int(fields[5])
    return 0


def _decision_for(lab, common_name: str) -> str:
    """The hook's one decision line about this client, once it is in the server's log."""
    return wait_for(
        lambda: next(
            (
                line
                for line in hook_lines(lab.server.log())
                if f"connect ALLOW cn={common_name}" in line or f"connect DENY cn={common_name}" in line
            ),
            None,
        ),
        f"the hook's decision about {common_name}",
    )


def test_known_config_is_allowed_logged_and_closed_with_bytes(lab, hooks, vpn_client):
    common_name, ovpn = lab.new_config()
    client = vpn_client(ovpn, configure_tun=True)
    client.wait_until_up()
    decision = _decision_for(lab, common_name)
    assert "ALLOW" in decision and "controller allowed (connection" in decision, decision
    assert "token" not in decision.lower() or "c" * 24 not in decision

    [row] = lab.log_rows(common_name)
    assert (row.username, row.profile_id, row.node, row.location) == (
        "alice",
        "office",
        "node-k1",
        "location-k",
    )
    assert row.ipv4 and row.ipv4.startswith("198.19.128."), row.ipv4
    assert row.ipv6 and row.ipv6.startswith("2001:db8:f1:"), row.ipv6
    assert row.real_address == "198.51.100.194" and row.disconnected_at is None

    # Real traffic through the tunnel, so the byte counters are more than the handshake: UDP to
    # the server's tunnel address (it answers each with an ICMP port unreachable).
    sender = lab.namespaces.socket_in(lab.namespaces.client, socket.SOCK_DGRAM)
    with sender:
        for _ in range(20):
            sender.sendto(b"x" * 1000, ("198.19.128.1", 9))
    wait_for(lambda: _bytes_received(lab, common_name) > 20 * 1000, "the server to count the datagrams")
    client.stop()
    wait_for(
        lambda: lab.log_rows(common_name)[0].disconnected_at is not None, "the disconnect to close the row"
    )
    [row] = lab.log_rows(common_name)
    assert row.close_reason == "disconnect"
    assert row.bytes_received > 20 * 1000 and row.bytes_sent > 0, (row.bytes_received, row.bytes_sent)
    disconnect = wait_for(
        lambda: next(
            (line for line in hook_lines(lab.server.log()) if f"disconnect cn={common_name}" in line), None
        ),
        "the disconnect line",
    )
    assert "controller closed 1 connection-log row(s)" in disconnect, disconnect


def test_unknown_certificate_is_refused(lab, hooks, vpn_client):
    common_name, ovpn = lab.stranger_config()
    vpn_client(ovpn).wait_until_refused()
    decision = _decision_for(lab, common_name)
    assert "DENY" in decision and "controller refused (HTTP 403): unknown certificate" in decision, decision
    assert lab.log_rows(common_name) == []


def test_config_revoked_at_the_controller_is_refused_before_the_nodes_crl_knows(lab, hooks, vpn_client):
    common_name, ovpn = lab.new_config()
    session = lab.session()
    session.execute(update(VpnConfig).where(VpnConfig.common_name == common_name).values(revoked_at=utcnow()))
    session.commit()
    session.close()
    vpn_client(ovpn).wait_until_refused()
    decision = _decision_for(lab, common_name)
    assert "DENY" in decision and "certificate revoked" in decision, decision
    assert "MULTI: deferred --client-connect script returned CC_RET_FAILED" in lab.server.log()
    assert lab.log_rows(common_name) == []


def _unreachable(lab, hooks, how: str) -> None:
    if how == "refused":
        # A port in the server namespace where nothing listens.
        closed = lab.namespaces.listening_socket(lab.namespaces.server)
        port = closed.getsockname()[1]
        closed.close()
        hooks(controller_url=f"https://127.0.0.1:{port}")
    elif how == "silent":
        # Accepts TCP into its backlog but never says a word: a hung controller.
        silent = lab.namespaces.listening_socket(lab.namespaces.server)
        lab.silent_listener = silent
        hooks(controller_url=f"https://127.0.0.1:{silent.getsockname()[1]}", timeout_seconds=1)
    elif how == "wrong certificate":
        # The controller's certificate checked against another CA: a controller we cannot trust.
        hooks(ca_file=str(lab.node_dir / "ca.crt"))
    elif how == "redirect":
        hooks()
        lab.front.fail_status = "302 Found"
    elif how == "not json":
        hooks()
        lab.front.fail_status = "200 OK"
    elif how == "wrong shape":
        hooks()
        lab.front.fail_status, lab.front.fail_body = "200 OK", b'{"allowed": true}'
    else:
        hooks()
        lab.front.fail_status = "502 Bad Gateway"


_NO_ANSWER = {
    "refused": "controller unavailable (connection refused)",
    "silent": "controller unavailable (no answer within 1 s)",
    "wrong certificate": "controller unavailable (TLS failure: CERTIFICATE_VERIFY_FAILED)",
    "redirect": "controller unavailable (HTTP 302)",
    "not json": "controller unavailable (HTTP 200 without a JSON object)",
    "wrong shape": "not a controller answer (HTTP 200 without allow)",
    "5xx": "controller unavailable (HTTP 502)",
}


@pytest.mark.parametrize("how", list(_NO_ANSWER))
def test_no_controller_answer_admits_while_the_nodes_crl_is_fresh(lab, hooks, vpn_client, how):
    common_name, ovpn = lab.new_config()
    _unreachable(lab, hooks, how)
    try:
        vpn_client(ovpn).wait_until_up()
        decision = _decision_for(lab, common_name)
    finally:
        listener = getattr(lab, "silent_listener", None)
        if listener is not None:
            listener.close()
            lab.silent_listener = None
    assert f"connect ALLOW cn={common_name}" in decision, decision
    assert f"{_NO_ANSWER[how]}; the node's CRL is fresh (nextUpdate " in decision, decision
    assert lab.log_rows(common_name) == []  # the controller never decided


def test_a_stale_crl_makes_openvpn_refuse_every_client_in_the_handshake(lab, hooks, vpn_client):
    """OpenVPN (with OpenSSL) checks the CRL's nextUpdate itself: past it, no client gets as far
    as the hook, whatever the controller would say. The hook's own refusal of a stale CRL
    (test_hooks_decisions.py) is the second line, for builds that do not check."""
    common_name, ovpn = lab.new_config()
    lab.write_node_crl(timedelta(seconds=-1))
    try:
        client = vpn_client(ovpn)
        wait_for(
            lambda: f"error=CRL has expired: CN={common_name}" in lab.server.log(),
            "OpenVPN to refuse the client for the stale CRL",
        )
        assert not client.connected()
    finally:
        lab.write_node_crl(timedelta(days=1))
    assert f"cn={common_name}" not in "\n".join(hook_lines(lab.server.log()))


def test_a_deferred_connect_does_not_block_the_other_clients(lab, hooks, vpn_client):
    """While the controller sits on client A's connect, client B of the same OpenVPN process
    connects; A follows once the controller answers. No clock involved: the order says it."""
    hooks(timeout_seconds=30)
    name_a, ovpn_a = lab.new_config()
    name_b, ovpn_b = lab.new_config()
    gate = lab.front.hold(name_a)
    client_a = vpn_client(ovpn_a)
    wait_for(lambda: f"connect {name_a} arrived" in lab.front.events, "A's connect to reach the controller")

    client_b = vpn_client(ovpn_b)
    client_b.wait_until_up()
    # B is through while A's check is still held at the controller: the process was not blocked.
    assert f"connect {name_a} answered 200 OK" not in lab.front.events
    assert not client_a.connected()
    assert client_a.process.poll() is None

    gate.set()
    client_a.wait_until_up()
    order = [event for event in lab.front.events if name_a in event or name_b in event]
    assert order.index(f"connect {name_a} arrived") < order.index(f"connect {name_b} answered 200 OK")
    assert order.index(f"connect {name_b} answered 200 OK") < order.index(f"connect {name_a} answered 200 OK")
    lines = hook_lines(lab.server.log())
    allow_b = next(i for i, line in enumerate(lines) if f"connect ALLOW cn={name_b}" in line)
    allow_a = next(i for i, line in enumerate(lines) if f"connect ALLOW cn={name_a}" in line)
    assert allow_b < allow_a
    # Both clients ping through the same process now.
    assert len(lab.log_rows(name_a)) == len(lab.log_rows(name_b)) == 1


def test_server_config_runs_the_shim_for_both_hooks(lab):
    config = (lab.workdir / "server.conf").read_text().splitlines()
    assert "script-security 2" in config
    assert f"client-connect {lab.shim}" in config and f"client-disconnect {lab.shim}" in config
    assert "setenv VPNFLEET_PROFILE office" in config
    assert f"local {SERVER_ADDRESS}" in config
