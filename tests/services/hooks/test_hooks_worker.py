"""The resident worker (`vpnfleet-hook serve`) between the shim and the controller: real OpenVPN,
real clients, the real controller over HTTPS; and the shim's fallback when the worker is gone."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from hooks_lab import hook_lines
from openvpn_netlab import wait_for


def _line_about(log: str, common_name: str, what: str = "connect") -> str | None:
    prefixes = (f"{what} ALLOW cn={common_name}", f"{what} DENY cn={common_name}", f"{what} cn={common_name}")
    return next((line for line in hook_lines(log) if line.split(": ", 1)[-1].startswith(prefixes)), None)


def _ask_worker(lab, **event) -> str:
    """One event straight to the worker's socket, as the shim's curl sends it."""
    command = ["curl", "--silent", "--fail", "--unix-socket", str(lab.worker_socket), "--max-time", "10"]
    for name, value in event.items():
        command += ["--data-urlencode", f"{name}={value}"]
    kind = "connect" if event["script_type"] == "client-connect" else "disconnect"
    return subprocess.run(command + [f"http://vpnfleet-hooks/{kind}"], capture_output=True, text=True).stdout


def test_connect_and_disconnect_go_through_the_worker(lab, hooks, worker, vpn_client):
    common_name, ovpn = lab.new_config()
    client = vpn_client(ovpn)
    client.wait_until_up()
    decision = wait_for(lambda: _line_about(worker.log(), common_name), "the worker's decision")
    assert "connect ALLOW" in decision and "controller allowed (connection" in decision, decision
    # No Python run of its own: the server's log has no hook line about this client.
    assert _line_about(lab.server.log(), common_name) is None
    [row] = lab.log_rows(common_name)
    assert row.ipv4 and row.ipv4.startswith("198.19.128.") and row.real_address == "198.51.100.194"

    client.stop()
    report = wait_for(lambda: _line_about(worker.log(), common_name, "disconnect"), "the worker's report")
    assert "controller closed 1 connection-log row(s)" in report, report
    assert lab.log_rows(common_name)[0].close_reason == "disconnect"


def test_the_worker_refuses_what_the_controller_refuses(lab, hooks, worker, vpn_client):
    common_name, ovpn = lab.stranger_config()
    vpn_client(ovpn).wait_until_refused()
    decision = wait_for(lambda: _line_about(worker.log(), common_name), "the worker's decision")
    assert "connect DENY" in decision and "controller refused (HTTP 403): unknown certificate" in decision
    assert "MULTI: deferred --client-connect script returned CC_RET_FAILED" in lab.server.log()
    assert lab.log_rows(common_name) == []


def test_without_an_answer_the_worker_follows_the_crl(lab, hooks, worker):
    """No answer is never a yes: a 502 admits only while the node's CRL is fresh."""
    common_name, _ = lab.new_config()
    event = {"script_type": "client-connect", "common_name": common_name, "VPNFLEET_PROFILE": "office"}
    lab.front.fail_status = "502 Bad Gateway"
    assert _ask_worker(lab, **event) == "1"
    lab.write_node_crl(timedelta(seconds=-1))
    try:
        assert _ask_worker(lab, **event) == "0"
    finally:
        lab.write_node_crl(timedelta(days=1))
    lines = [line for line in hook_lines(worker.log()) if f"cn={common_name}" in line]
    assert len(lines) == 2, lines
    assert "connect ALLOW" in lines[0] and "(HTTP 502); the node's CRL is fresh" in lines[0], lines
    assert "connect DENY" in lines[1] and "(HTTP 502); the node's CRL is stale" in lines[1], lines


def test_a_stopped_worker_leaves_the_decision_to_the_fallback_run(lab, hooks, worker, vpn_client):
    worker.stop()
    assert lab.worker_socket.exists()  # nothing listens behind it: curl is refused at once
    allowed, allowed_ovpn = lab.new_config()
    refused, refused_ovpn = lab.stranger_config()
    vpn_client(allowed_ovpn).wait_until_up()
    vpn_client(refused_ovpn).wait_until_refused()
    assert "controller allowed" in wait_for(lambda: _line_about(lab.server.log(), allowed), "the fallback")
    assert "HTTP 403" in wait_for(lambda: _line_about(lab.server.log(), refused), "the fallback's refusal")


def test_a_worker_killed_mid_decision_strands_nobody(lab, hooks, worker, vpn_client):
    """The worker dies while the controller sits on a connect: the shim's curl loses its
    connection, and the fallback run decides the client (after the controller answers it)."""
    hooks(timeout_seconds=10)
    common_name, ovpn = lab.new_config()
    gate = lab.front.hold(common_name)
    client = vpn_client(ovpn)
    wait_for(lambda: f"connect {common_name} arrived" in lab.front.events, "the connect to arrive")
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    wait_for(
        lambda: lab.front.events.count(f"connect {common_name} arrived") == 2, "the fallback run to ask again"
    )
    gate.set()
    client.wait_until_up()
    line = wait_for(lambda: _line_about(lab.server.log(), common_name), "the fallback")
    assert "controller allowed" in line, line


def test_many_clients_at_once_are_decided_by_the_worker(lab, hooks, worker, vpn_client):
    configs = [lab.new_config() for _ in range(30)]
    clients = [vpn_client(ovpn) for _, ovpn in configs]
    for client in clients:
        client.wait_until_up()
    decisions = [
        wait_for(lambda name=name: _line_about(worker.log(), name), f"the decision about {name}")
        for name, _ in configs
    ]
    assert all("connect ALLOW" in line for line in decisions), decisions
    server_log = lab.server.log()
    assert not [name for name, _ in configs if _line_about(server_log, name)], "a fallback run decided"
    # Each took the controller's time, not an interpreter's start-up (a pooled, kept-alive connection).
    took = sorted(float(line.rsplit("[", 1)[1].split()[0]) for line in decisions)
    assert took[len(took) // 2] < 0.5, took


def _queue_behind_a_held_check(lab, names: list[str]) -> tuple[dict[str, str], list[str]]:
    """The first name's check held at the controller while the others queue behind it at a
    worker of one call; then released. Each name's answer from the worker, and what the
    controller saw meanwhile."""
    answers: dict[str, str] = {}
    seen_before = len(lab.front.events)

    def ask(name: str) -> None:
        answers[name] = _ask_worker(
            lab, script_type="client-connect", common_name=name, VPNFLEET_PROFILE="office"
        )

    gate = lab.front.hold(names[0])
    first = threading.Thread(target=ask, args=(names[0],))
    first.start()
    wait_for(lambda: f"connect {names[0]} arrived" in lab.front.events, "the first check at the controller")
    queued = [threading.Thread(target=ask, args=(name,)) for name in names[1:]]
    for thread in queued:
        thread.start()
    time.sleep(1)  # the curls' events reach the worker's queue
    gate.set()
    for thread in [first, *queued]:
        thread.join()
    return answers, lab.front.events[seen_before:]


@pytest.mark.parametrize("worker", [1], indirect=True)
def test_checks_queued_behind_a_call_go_out_as_one_batch(lab, hooks, worker):
    """Each check in the batch is answered as /connect answers it: a log row and a connection
    id for each known config, a refusal for the unknown certificate."""
    known = [lab.new_config()[0] for _ in range(4)]
    unknown = "e" * 32
    answers, seen = _queue_behind_a_held_check(lab, [*known, unknown])
    assert answers == {**dict.fromkeys(known, "1"), unknown: "0"}
    assert seen.count("connect_batch None arrived") == 1, seen
    log = worker.log()
    assert "(queued 0.000 s, single call, new connection)" in _line_about(log, known[0])
    batched = [_line_about(log, name) for name in [*known[1:], unknown]]
    assert all("batch of 4, " in line for line in batched), batched
    assert all("connect ALLOW" in line and "controller allowed (connection" in line for line in batched[:-1])
    assert "connect DENY" in batched[-1] and "(HTTP 403): unknown certificate" in batched[-1], batched
    rows = [lab.log_rows(name) for name in known]
    assert all(len(each) == 1 and each[0].disconnected_at is None for each in rows), rows
    assert lab.log_rows(unknown) == []


@pytest.mark.parametrize("worker", [1], indirect=True)
def test_a_controller_without_the_batch_call_gets_single_calls(lab, hooks, worker):
    lab.front.missing_calls.add("connect_batch")
    names = [lab.new_config()[0] for _ in range(4)]
    answers, seen = _queue_behind_a_held_check(lab, names)
    assert answers == dict.fromkeys(names, "1")
    # Asked once; then each check alone, and the next queue too (the worker remembers the 404).
    assert seen.count("connect_batch None arrived") == 1, seen
    assert all(seen.count(f"connect {name} answered 200 OK") == 1 for name in names), seen
    more = [lab.new_config()[0] for _ in range(3)]
    answers, seen = _queue_behind_a_held_check(lab, more)
    assert answers == dict.fromkeys(more, "1")
    assert "connect_batch None arrived" not in seen, seen
    log = worker.log()
    assert all("single call" in _line_about(log, name) for name in names + more)


def test_the_worker_holds_no_connection_without_a_request(lab, hooks, worker):
    """A connection that never carried a request is one the controller's nginx waits for when
    it stops (it held every controller stop 5 s): the worker opens connections for its calls only."""
    name = lab.new_config()[0]
    time.sleep(2)  # the keep-warm thread's first rounds
    assert _open_connections(lab) == 0
    answer = _ask_worker(lab, script_type="client-connect", common_name=name, VPNFLEET_PROFILE="office")
    assert answer == "1"
    assert "new connection)" in _line_about(worker.log(), name)


def _open_connections(lab) -> int:
    """The established TCP connections to the controller in the server namespace."""
    listed = subprocess.run(
        ["ip", "netns", "exec", lab.namespaces.server, "ss", "-Htn", "state", "established"]
        + ["dst", f"127.0.0.1:{lab.controller.port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(listed.splitlines())
