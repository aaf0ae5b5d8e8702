"""The controller's /metrics: the scrape token, the fleet measured at scrape time from the real
node-x1 (a real VPN client moves its process's clients by one), the events counted, and
gunicorn's workers added up in multiprocess mode."""

from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from controller_helpers import (
    NODE_TOKENS,
    SCRAPE_HEADERS,
    SCRAPE_TOKEN,
    SCRAPE_TOKEN_SHA256,
    add_user,
    labels,
    log_in,
    portal_ovpn,
    samples,
    scrape,
    settings_mapping,
)

from vpnfleet.controller import cli

NODE_X1 = ("node-x1", NODE_TOKENS["node-x1"])


def process_labels(process: str, protocol: str, profile: str = "office") -> tuple:
    return labels(node="node-x1", location="location-x", profile=profile, process=process, protocol=protocol)


def of_profile(found: dict, name: str, profile: str) -> float:
    """sum by (profile): eduVPN's figure, over the profile's series of every protocol."""
    return sum(
        value for (metric, key), value in found.items() if metric == name and ("profile", profile) in key
    )


@pytest.fixture
def metrics_app(make_app):
    # node-y1's daemon never answers: a short timeout keeps each scrape short.
    return make_app(metrics_token_sha256=SCRAPE_TOKEN_SHA256, daemon_timeout_seconds=2)


def test_metrics_need_the_scrape_token(make_app, metrics_app):
    assert make_app().test_client().get("/metrics", headers=SCRAPE_HEADERS).status_code == 404
    client = metrics_app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SCRAPE_TOKEN}"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers=SCRAPE_HEADERS).status_code == 200


def test_a_real_client_moves_its_node_profile_and_process_by_one(metrics_app, vpn_client):
    client = metrics_app.test_client()
    tcp = process_labels("office-2", "tcp")
    before = scrape(client)
    assert before[("vpnfleet_node_up", labels(node="node-x1", location="location-x"))] == 1
    assert before[("vpnfleet_node_up", labels(node="node-y1", location="location-y"))] == 0
    assert before[("vpnfleet_node_maintenance", labels(node="node-x1", location="location-x"))] == 0
    assert before[("vpnfleet_process_max_clients", tcp)] == 60
    # node-y1 did not answer: the profile counts node-x1's three office processes only, two UDP
    # and one TCP, each of its own protocol's series.
    assert before[("eduvpn_max_connections", labels(profile="office", protocol="udp"))] == 120
    assert before[("eduvpn_max_connections", labels(profile="office", protocol="tcp"))] == 60
    assert of_profile(before, "eduvpn_max_connections", "office") == 180
    issued = before.get(("vpnfleet_configs_issued_total", labels(profile="office", via="portal")), 0)

    common_name, ovpn = portal_ovpn(client, metrics_app)
    vpn = vpn_client(ovpn, "tcp")
    vpn.wait_until_up()
    deadline = time.monotonic() + 30
    while (after := scrape(client))[("openvpn_server_connected_clients", tcp)] != before[
        ("openvpn_server_connected_clients", tcp)
    ] + 1:
        assert time.monotonic() < deadline, "the TCP process's clients did not move by one"
        time.sleep(0.5)

    for process, protocol in (("office-0", "udp"), ("office-1", "udp")):
        key = ("openvpn_server_connected_clients", process_labels(process, protocol))
        assert after[key] == before[key]
    assert (
        after[("vpnfleet_process_free_addresses", tcp)]
        == before[("vpnfleet_process_free_addresses", tcp)] - 1
    )
    office_tcp = labels(profile="office", protocol="tcp")
    office_udp = labels(profile="office", protocol="udp")
    for name, by in (("eduvpn_active_connections", 1), ("eduvpn_free_ips", -1)):
        assert after[(name, office_tcp)] == before[(name, office_tcp)] + by, name
        assert after[(name, office_udp)] == before[(name, office_udp)], name
        assert of_profile(after, name, "office") == of_profile(before, name, "office") + by, name
    assert after[("vpnfleet_configs_issued_total", labels(profile="office", via="portal"))] == issued + 1
    assert common_name


def test_connect_checks_are_counted_with_their_latency(metrics_app):
    client = metrics_app.test_client()
    before = scrape(client)
    common_name, unused_ovpn = portal_ovpn(client, metrics_app)
    allowed = client.post(
        "/node-api/v1/connect", auth=NODE_X1, json={"common_name": common_name, "profile_id": "office"}
    )
    denied = client.post(
        "/node-api/v1/connect", auth=NODE_X1, json={"common_name": "nobody", "profile_id": "no-such-profile"}
    )
    assert (allowed.status_code, denied.status_code) == (200, 403)
    after = scrape(client)

    def moved(name: str, key: tuple) -> float:
        return after.get((name, key), 0) - before.get((name, key), 0)

    assert moved("vpnfleet_connect_checks_total", labels(profile="office", result="allowed")) == 1
    # A profile nobody configured is counted as "unknown", never as a series of its own.
    assert moved("vpnfleet_connect_checks_total", labels(profile="unknown", result="denied")) == 1
    assert moved("vpnfleet_connect_check_duration_seconds_count", ()) == 2
    assert moved("vpnfleet_connect_check_duration_seconds_bucket", labels(le="+Inf")) == 2


def test_failed_logins_are_counted(metrics_app):
    client = metrics_app.test_client()
    add_user(metrics_app, "alice")
    invalid = ("vpnfleet_logins_failed_total", labels(method="password", reason="invalid"))
    before = scrape(client).get(invalid, 0)
    log_in(client, "alice", "not the password")
    log_in(client, "mallory", "whatever")
    after = scrape(client)[invalid]
    assert after == before + 2


def test_the_crl_dates_are_exposed(metrics_app):
    found = scrape(metrics_app.test_client())
    this_update = found[("vpnfleet_crl_this_update_timestamp_seconds", ())]
    assert this_update <= time.time() + 60
    assert found[("vpnfleet_crl_next_update_timestamp_seconds", ())] > this_update


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_gunicorn_workers_add_up_in_multiprocess_mode(pki_dir, node_lab, tmp_path):
    """Two workers, failed logins spread over both: the scrape (answered by either) counts all."""
    mapping = settings_mapping(pki_dir, f"sqlite:///{tmp_path / 'controller.sqlite'}", node_lab.daemon_port)
    mapping.update(
        metrics_token_sha256=SCRAPE_TOKEN_SHA256, daemon_timeout_seconds=2, login_max_failures=1000
    )
    settings_file = tmp_path / "controller.yml"
    settings_file.write_text(yaml.safe_dump(mapping))
    assert cli.main(["--settings", str(settings_file), "migrate"]) == 0
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:vpnfleet.controller.gunicorn_config",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "vpnfleet.controller.wsgi:app",
        ],
        env={
            **os.environ,
            "VPNFLEET_CONTROLLER_SETTINGS": str(settings_file),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gunicorn.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                urllib.request.urlopen(f"{url}/login", timeout=5).close()  # noqa: S310 - loopback
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not listen"
                time.sleep(0.2)

        # Complete forms, each from a session of its own, in parallel so that both workers serve.
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda i: _login_with_wrong_password(url, f"user{i}"), range(24)))
        assert all(400 <= status < 500 for status in statuses), statuses
        counter_files = list(metrics_dir.glob("counter_*.db"))
        assert len(counter_files) >= 2, f"one worker served everything: {counter_files}"
        request = urllib.request.Request(f"{url}/metrics", headers=SCRAPE_HEADERS)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            found = samples(response.read().decode())
        failed = sum(
            value for (name, unused_labels), value in found.items() if name == "vpnfleet_logins_failed_total"
        )
        assert failed == 24
    finally:
        server.terminate()
        server.wait(timeout=30)


def _login_with_wrong_password(url: str, username: str) -> int:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{url}/login", timeout=30) as page:
        html = page.read().decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert token
    body = urllib.parse.urlencode(
        {"username": username, "password": "wrong", "next": "", "csrf_token": token.group(1)}
    ).encode()
    try:
        opener.open(f"{url}/login", data=body, timeout=30).close()
    except urllib.error.HTTPError as error:
        return error.code
    return 200
