"""The daemon against real OpenVPN servers and clients: list, disconnect, node info, failures."""

import datetime
import ipaddress
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from daemon_lab import CLIENT_UNDERLAY_ADDRESS, silent_management_socket, stale_management_socket
from openvpn_netlab import wait_for

PROCESS_NETWORKS = {
    "default-0": (ipaddress.ip_network("198.19.0.0/25"), ipaddress.ip_network("2001:db8:f0::/64")),
    "default-1": (ipaddress.ip_network("198.19.0.128/25"), ipaddress.ip_network("2001:db8:f0:1::/64")),
}


def connections(daemon_client, controller, common_names=None) -> list[dict]:
    response = daemon_client.request("GET", "/o/connection_list", controller)
    assert response.status == 200, response
    assert response.payload["unreachable_process_list"] == []
    listed = response.payload["connection_list"]
    return [entry for entry in listed if common_names is None or entry["common_name"] in common_names]


def test_lists_clients_of_every_process_and_disconnects_by_common_name(daemon_client, controller, vpn_client):
    # alice is connected twice, once to each process; bob only to the TCP one.
    alice_udp = vpn_client("vfd-alice", "udp")
    alice_tcp = vpn_client("vfd-alice", "tcp")
    bob_tcp = vpn_client("vfd-bob", "tcp")
    for client in (alice_udp, alice_tcp, bob_tcp):
        client.wait_until_up()
    names = {"vfd-alice", "vfd-bob"}
    listed = wait_for(
        lambda: (entries := connections(daemon_client, controller, names)) and len(entries) == 3 and entries,
        "three connections in the list",
    )

    by_process = {(entry["common_name"], entry["process"]): entry for entry in listed}
    assert set(by_process) == {
        ("vfd-alice", "default-0"),
        ("vfd-alice", "default-1"),
        ("vfd-bob", "default-1"),
    }
    for (_, process), entry in by_process.items():
        ipv4_slice, ipv6_slice = PROCESS_NETWORKS[process]
        assert entry["profile_id"] == "default"
        assert ipaddress.ip_address(entry["ip_four"]) in ipv4_slice
        assert ipaddress.ip_address(entry["ip_six"]) in ipv6_slice
        assert entry["real_address"].startswith(CLIENT_UNDERLAY_ADDRESS + ":")
        assert entry["bytes_in"] > 0 and entry["bytes_out"] > 0
        connected_since = datetime.datetime.strptime(entry["connected_since"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs(
            datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - connected_since
        ) < datetime.timedelta(hours=1)

    response = daemon_client.request("POST", "/o/disconnect_client", controller, form="common_name=vfd-alice")
    assert response.status == 200
    assert response.payload == {
        "common_name": "vfd-alice",
        "disconnected_count": 2,
        "unreachable_process_list": [],
    }
    # Both of alice's clients are told to halt, and they do: they exit on their own.
    for client in (alice_udp, alice_tcp):
        client.wait_until_halted()
    wait_for(
        lambda: (
            [entry["common_name"] for entry in connections(daemon_client, controller, names)] == ["vfd-bob"]
        ),
        "alice to leave the list",
    )
    assert bob_tcp.process.poll() is None

    node = daemon_client.request("GET", "/i/node?include_client_peer_count=yes", controller)
    assert node.status == 200
    assert node.payload["o_client_count"] == 1
    counts = {entry["process"]: entry["client_count"] for entry in node.payload["o_process_list"]}
    assert counts == {"default-0": 0, "default-1": 1}

    nobody = daemon_client.request("POST", "/o/disconnect_client", controller, form="common_name=vfd-nobody")
    assert nobody.status == 200 and nobody.payload["disconnected_count"] == 0
    assert bob_tcp.process.poll() is None


def test_disconnect_clients_takes_many_names_in_one_call(daemon_client, controller, vpn_client):
    dave, erin, frank = (
        vpn_client("vfd-dave", "udp"),
        vpn_client("vfd-erin", "tcp"),
        vpn_client("vfd-frank", "tcp"),
    )
    names = {"vfd-dave", "vfd-erin", "vfd-frank"}
    for client in (dave, erin, frank):
        client.wait_until_up()
    wait_for(lambda: len(connections(daemon_client, controller, names)) == 3, "all three in the list")
    form = "common_name=vfd-dave&common_name=vfd-erin&common_name=vfd-nobody&common_name=vfd-dave"
    response = daemon_client.request("POST", "/o/disconnect_clients", controller, form=form)
    assert response.status == 200
    assert response.payload == {
        "common_name_list": ["vfd-dave", "vfd-erin", "vfd-nobody"],
        "disconnected_count": 2,
        "unreachable_process_list": [],
    }
    for client in (dave, erin):
        client.wait_until_halted()
    assert [entry["common_name"] for entry in connections(daemon_client, controller, names)] == ["vfd-frank"]
    assert frank.process.poll() is None
    response = daemon_client.request(
        "POST", "/o/disconnect_clients", controller, form="common_name=vfd-frank"
    )
    assert response.status == 200 and response.payload["disconnected_count"] == 1
    frank.wait_until_halted()


def test_a_client_that_does_not_act_on_its_halt_is_ended_all_the_same(daemon_client, controller, vpn_client):
    # A TCP client that reads nothing (stopped here; a stuck or hostile one alike) never acts on its
    # HALT, and OpenVPN would keep its instance until its own delayed exit 5 s later.
    carol = vpn_client("vfd-carol", "tcp")
    carol.wait_until_up()
    wait_for(lambda: connections(daemon_client, controller, {"vfd-carol"}), "carol in the list")
    os.kill(carol.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = daemon_client.request(
            "POST", "/o/disconnect_client", controller, form="common_name=vfd-carol"
        )
        assert response.status == 200 and response.payload["disconnected_count"] == 1
        # Ended by its address before the daemon answered.
        assert connections(daemon_client, controller, {"vfd-carol"}) == []
        assert time.monotonic() - started < 2.0
    finally:
        os.kill(carol.process.pid, signal.SIGCONT)


def test_node_info_has_the_upstream_fields(daemon_client, controller):
    response = daemon_client.request("GET", "/i/node", controller)
    assert response.status == 200
    info = response.payload
    assert info["cpu_count"] == os.cpu_count()
    assert len(info["load_average"]) == 3 and len(info["rel_load_average"]) == 3
    assert isinstance(info["node_uptime"], int) and info["node_uptime"] > 0
    assert info["maintenance_mode"] is False
    # Without include_client_peer_count=yes no process is asked, as upstream.
    assert "o_client_count" not in info
    assert info["o_process_list"] == [
        {"process": "default-0", "profile_id": "default"},
        {"process": "default-1", "profile_id": "default"},
    ]


def test_maintenance_mode_is_a_flag_the_node_keeps_and_moves_every_client_on(
    daemon_client, controller, vpn_client, workdir
):
    flag = workdir / "maintenance"
    udp = vpn_client("vfd-carol", "udp")
    udp.wait_until_up()
    wait_for(lambda: connections(daemon_client, controller, {"vfd-carol"}), "carol in the list")
    before = udp.log_size()
    on = daemon_client.request("POST", "/i/maintenance_mode", controller, form="maintenance_mode=yes")
    assert on.status == 200, on
    assert on.payload == {
        "maintenance_mode": True,
        "changed": True,
        "moved_count": 1,
        "unreachable_process_list": [],
    }
    assert flag.exists()
    # Told RESTART,[N], the client restarts by itself to take the next remote of its config.
    wait_for(lambda: "pushed by server ('[N]')" in udp.log()[before:], "carol to be told to move on")
    wait_for(lambda: "server-pushed-connection-reset" in udp.log()[before:], "carol to restart")
    node = daemon_client.request("GET", "/i/node", controller)
    assert node.payload["maintenance_mode"] is True
    again = daemon_client.request("POST", "/i/maintenance_mode", controller, form="maintenance_mode=yes")
    assert again.payload["changed"] is False
    off = daemon_client.request("POST", "/i/maintenance_mode", controller, form="maintenance_mode=no")
    assert off.payload == {
        "maintenance_mode": False,
        "changed": True,
        "moved_count": 0,
        "unreachable_process_list": [],
    }
    assert not flag.exists()
    assert daemon_client.request("GET", "/i/node", controller).payload["maintenance_mode"] is False


def test_a_dead_or_hung_management_socket_is_reported_not_fatal(daemon, daemon_client, controller):
    stale_path = daemon.socket_dir / "crashed-0.sock"
    hung_path = daemon.socket_dir / "hung-0.sock"
    stale_management_socket(stale_path)
    hung = silent_management_socket(hung_path)
    try:
        response = daemon_client.request("GET", "/o/connection_list", controller)
        node = daemon_client.request("GET", "/i/node?include_client_peer_count=yes", controller)
    finally:
        hung.close()
        stale_path.unlink()
        hung_path.unlink()

    assert response.status == 200
    unreachable = {entry["process"]: entry for entry in response.payload["unreachable_process_list"]}
    assert set(unreachable) == {"crashed-0", "hung-0"}
    assert "refused" in unreachable["crashed-0"]["error"]
    assert "no answer within" in unreachable["hung-0"]["error"]
    assert unreachable["crashed-0"]["profile_id"] == "crashed"
    counts = {entry["process"]: entry["client_count"] for entry in node.payload["o_process_list"]}
    assert counts["crashed-0"] is None and counts["hung-0"] is None
    assert counts["default-0"] is not None and counts["default-1"] is not None


@pytest.mark.parametrize(
    ("method", "path", "form", "status", "reason"),
    [
        ("GET", "/o/nothing_here", None, 404, "no such call"),
        ("GET", "/o/disconnect_client", None, 405, "takes POST only"),
        ("DELETE", "/o/connection_list", None, 405, "takes GET only"),
        ("POST", "/o/disconnect_client", "", 400, "common_name is required"),
        ("POST", "/o/disconnect_client", "common_name=a&common_name=b", 400, "more than once"),
        ("POST", "/o/disconnect_client", "common_name=" + quote("vfd-bob\nkill all"), 400, "printable"),
        ("POST", "/o/disconnect_client", "common_name=" + "x" * 65, 400, "1 to 64"),
        ("POST", "/o/disconnect_clients", "", 400, "1 to 16 times, not 0"),
        (
            "POST",
            "/o/disconnect_clients",
            "&".join(f"common_name=n{i}" for i in range(17)),
            400,
            "more than 16",
        ),
        (
            "POST",
            "/o/disconnect_clients",
            "common_name=a&common_name=" + quote("b\nkill all"),
            400,
            "printable",
        ),
        ("GET", "/o/disconnect_clients", None, 405, "takes POST only"),
        ("GET", "/i/node?include_client_peer_count=maybe", None, 400, "yes or no"),
        ("POST", "/i/maintenance_mode", "", 400, "maintenance_mode is required"),
        ("POST", "/i/maintenance_mode", "maintenance_mode=maybe", 400, "yes or no"),
        ("GET", "/i/maintenance_mode", None, 405, "takes POST only"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(daemon_client, controller, method, path, form, status, reason):
    response = daemon_client.request(method, path, controller, form=form)
    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    assert reason in response.payload["error"]


def test_a_form_of_another_type_or_without_length_is_refused(daemon_client, controller):
    as_json = daemon_client.request(
        "POST",
        "/o/disconnect_client",
        controller,
        form='{"common_name": "x"}',
        content_type="application/json",
    )
    assert as_json.status == 415 and "x-www-form-urlencoded" in as_json.payload["error"]

    context = daemon_client.tls_context(controller)
    no_length = daemon_client.raw_exchange(
        context,
        b"POST /o/disconnect_client HTTP/1.1\r\nHost: node\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert no_length.status == 411 and no_length.payload["error"]


def test_a_malformed_request_gets_json_not_html(daemon_client, controller):
    response = daemon_client.raw_exchange(daemon_client.tls_context(controller), b"NOT A REQUEST\r\n\r\n")
    assert 400 <= response.status < 500
    assert response.headers["Content-Type"] == "application/json"
    assert response.payload["error"]


def test_parallel_requests_take_turns_on_each_management_socket(daemon_client, controller):
    # OpenVPN serves one management client at a time; concurrent calls must all still succeed.
    with ThreadPoolExecutor(6) as pool:
        responses = list(
            pool.map(lambda _: daemon_client.request("GET", "/o/connection_list", controller), range(6))
        )
    assert [response.status for response in responses] == [200] * 6
    assert all(response.payload["unreachable_process_list"] == [] for response in responses)
