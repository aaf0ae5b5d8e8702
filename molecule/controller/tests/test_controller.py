"""The whole fleet on real lab hosts: the controller behind nginx, nodes in two locations whose
OpenVPN processes ask the controller through their hooks, and a real OpenVPN client.

A user logs in over HTTPS, downloads a config, connects and pings the node's tunnel address; the
admin sees the connection with its node and location and disconnects it; after the user deletes
the config, a reconnect with it is refused in the TLS handshake (the CRL was pushed). The tests run
in file order.
"""

import json
import os
import re
import ssl
import time

import pytest
from cryptography import x509
from lab_portal import ADMIN, ALICE, NODES, Browser, PortalClient, csrf
from lab_testinfra import lab_host, wait_for

testinfra_hosts = ["controller"]


@pytest.fixture(scope="module")
def controller():
    return lab_host("controller")


@pytest.fixture(scope="module")
def tls_context(controller):
    """Trust only the fleet's CA: the portal's certificate must be ours and name 203.0.113.10."""
    ca_pem = controller.file("/var/lib/vpnfleet/ca/ca.crt").content_string
    return ssl.create_default_context(cadata=ca_pem)


@pytest.fixture(scope="module")
def state():
    """What one test leaves for the next (they tell one story, in file order)."""
    return {}


def test_the_services_run_hardened_and_nginx_redirects_http(controller, client):
    for unit in (
        "vpnfleet-controller.socket",
        "vpnfleet-controller.service",
        "nginx.service",
        "vpnfleet-controller-housekeeping.timer",
        "vpnfleet-controller-backup.timer",
        "vpnfleet-signer.socket",
    ):
        assert controller.service(unit).is_running, unit
    # The workaround that handed the CA to the web app's user is gone.
    assert not controller.file("/etc/systemd/system/vpnfleet-controller-ca-access.path").exists
    assert controller.user("vpnfleet-controller").shell == "/usr/sbin/nologin"
    gunicorn = controller.check_output(
        "systemctl show -p User,ProtectSystem,NoNewPrivileges vpnfleet-controller"
    )
    assert "User=vpnfleet-controller" in gunicorn and "ProtectSystem=strict" in gunicorn
    # The app listens only on the socket nginx may use; the outside sees 80 and 443.
    assert not controller.socket("tcp://0.0.0.0:8080").is_listening
    assert controller.file("/run/vpnfleet-controller.sock").group == "www-data"
    assert controller.file("/run/vpnfleet-controller.sock").mode == 0o660
    redirect = client.check_output(
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://203.0.113.10/login"
    )
    assert redirect == "301 https://203.0.113.10/login"
    # The CA is the signer's, the database and the settings the service's, secrets closed to others.
    for path, owner, mode in (
        ("/var/lib/vpnfleet/ca", "vpnfleet-signer", 0o710),
        ("/var/lib/vpnfleet/ca/ca.key", "vpnfleet-signer", 0o600),
        ("/var/lib/vpnfleet/ca/index.json", "vpnfleet-signer", 0o600),
        ("/var/lib/vpnfleet/ca/tls-crypt-office.key", "vpnfleet-signer", 0o640),
        ("/run/vpnfleet-signer/signer.sock", "vpnfleet-signer", 0o660),
        ("/var/lib/vpnfleet-controller/controller.sqlite", "vpnfleet-controller", None),
        ("/etc/vpnfleet/controller/secret", "root", 0o640),
        ("/etc/vpnfleet/controller/web.key", "root", 0o600),
    ):
        info = controller.file(path)
        assert info.user == owner, path
        if mode is not None:
            assert info.mode == mode, path
    settings = controller.file("/etc/vpnfleet/controller.yml").content_string
    tokens = controller.check_output("cat /etc/vpnfleet/controller/node-tokens/node-x1.token")
    assert tokens not in settings and "api_token_sha256" in settings


def test_the_web_app_cannot_read_the_ca_key_and_only_its_group_reaches_the_signer(controller):
    as_controller = "runuser -u vpnfleet-controller -- "
    assert controller.run(as_controller + "cat /var/lib/vpnfleet/ca/ca.key").rc != 0
    assert controller.run(as_controller + "cat /var/lib/vpnfleet/ca/tls-crypt-office.key").rc == 0
    assert controller.file("/run/vpnfleet-signer/signer.sock").group == "vpnfleet-controller"
    connect = (
        "/opt/vpnfleet/controller/bin/python -c 'import socket; "
        'socket.socket(socket.AF_UNIX).connect("/run/vpnfleet-signer/signer.sock")\''
    )
    assert controller.run(as_controller + connect).rc == 0
    assert controller.run("runuser -u www-data -- " + connect).rc != 0
    # The signer sees no network and runs as its own user.
    shown = controller.check_output("systemctl show -p User,PrivateNetwork,ActiveState vpnfleet-signer")
    assert "User=vpnfleet-signer" in shown and "PrivateNetwork=yes" in shown and "ActiveState=active" in shown


EXPOSURE_GOAL = 2.0


def _exposure(host, unit: str) -> float:
    out = host.check_output(f"systemd-analyze security --no-pager {unit} | tail -1")
    return float(re.search(r"exposure level for \S+: ([0-9.]+)", out).group(1))


def test_the_controller_the_signer_and_the_daemon_score_at_most_2_in_systemd_analyze_security(controller):
    node = lab_host("node-x1")
    goal = {
        unit: _exposure(controller, unit)
        for unit in ("vpnfleet-controller.service", "vpnfleet-signer.service")
    }
    goal["vpnfleet-daemon.service"] = _exposure(node, "vpnfleet-daemon.service")
    # The others are recorded, not held to the goal: OpenVPN's is Debian's unit, the hooks run in it.
    recorded = {
        unit: _exposure(controller, unit)
        for unit in ("vpnfleet-controller-housekeeping.service", "vpnfleet-controller-backup.service")
    }
    recorded["openvpn-server@office-0.service"] = _exposure(node, "openvpn-server@office-0.service")
    report = os.environ.get("VPNFLEET_EXPOSURE_REPORT")
    if report:
        with open(report, "w") as out:
            json.dump({**goal, **recorded}, out, indent=2)
    assert all(figure <= EXPOSURE_GOAL for figure in goal.values()), goal


def _handshake(client, *options: str) -> bool:
    """Whether the portal's nginx completes a TLS handshake with the client host's openssl."""
    command = "openssl s_client -connect 203.0.113.10:443 -servername 203.0.113.10 " + " ".join(options)
    return client.run("echo | timeout 20 " + command).rc == 0


def test_nginx_speaks_mozillas_intermediate_tls_and_sends_the_portals_headers(client):
    # CBC suites with SHA-1 or SHA-256 MACs are refused in TLS 1.2, an AEAD suite is taken.
    assert not _handshake(client, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
    assert not _handshake(client, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384")
    assert _handshake(client, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _handshake(client, "-tls1_3")
    headers = client.check_output("curl -s -k -D - -o /dev/null https://203.0.113.10/login").lower()
    assert "\nserver: nginx\r" in headers  # no version
    assert "content-security-policy: default-src 'none'; style-src 'self';" in headers
    assert "strict-transport-security: max-age=63072000" in headers
    assert "x-content-type-options: nosniff" in headers and "x-frame-options: deny" in headers


def test_every_openvpn_process_calls_the_controller_through_its_hooks():
    for name in ("node-x1", "node-y1"):
        node = lab_host(name)
        plan = json.loads(node.file("/etc/vpnfleet/openvpn-plan.json").content_string)
        for profile in plan["profiles"]:
            for process in profile["processes"]:
                config = node.file(process["config_path"]).content_string
                assert "client-connect /usr/local/libexec/vpnfleet/openvpn-hook" in config
                assert "client-disconnect /usr/local/libexec/vpnfleet/openvpn-hook" in config
        token = node.file("/etc/vpnfleet/hooks.token")
        assert (token.user, token.group, token.mode) == ("root", "vpnfleet-openvpn", 0o640)
        assert node.group("vpnfleet-openvpn").exists and not node.user("vpnfleet-openvpn").home.startswith(
            "/home"
        )
        # Every process has dropped to OpenVPN's own user and group, not nobody/nogroup.
        owners = node.check_output("ps -o user:32=,group:32= -C openvpn").split("\n")
        assert owners and {tuple(line.split()) for line in owners} == {
            ("vpnfleet-openvpn", "vpnfleet-openvpn")
        }
        assert (
            node.run(
                "/opt/vpnfleet/daemon/bin/vpnfleet-hook --settings /etc/vpnfleet/hooks.yaml check-settings"
            ).rc
            == 0
        )


def test_a_user_logs_in_downloads_a_config_connects_and_reaches_the_node(tls_context, client, state):
    alice = Browser(tls_context)
    home = alice.login(*ALICE)
    _, headers, config = alice.post(
        "/configs", {"csrf_token": csrf(home), "profile_id": "internet", "display_name": "laptop"}
    )
    assert headers.get_content_type() == "application/x-openvpn-profile"
    remotes = re.findall(r"^remote (\S+) (\d+) (\S+)", config, re.MULTILINE)
    assert {address for address, _, _ in remotes} == set(NODES), config
    assert [proto for _, _, proto in remotes] == sorted(
        (proto for _, _, proto in remotes), key=lambda p: p != "udp"
    )
    vpn = PortalClient(client, "laptop", config).start()
    state.update(alice=alice, vpn=vpn, config=config)
    vpn.wait_connected()
    gateway = vpn.interface().network.network_address + 1
    client.check_output(f"ping -c 3 -W 2 {gateway}")
    state["node"] = vpn.node()


def test_the_admin_sees_the_connection_with_its_node_and_location(tls_context, state):
    admin = Browser(tls_context)
    admin.login(*ADMIN)
    _, _, page = admin.get("/admin/")
    node, location = state["node"]
    row = next((row for row in re.findall(r"<tr>(.*?)</tr>", page, re.DOTALL) if "laptop" in row), None)
    assert row, page
    assert f"<td>{node}</td><td>{location}</td>" in row
    assert ">alice<" in row
    state.update(admin=admin, admin_page=page, admin_row=row)


def test_the_admin_disconnects_it_and_the_client_is_dropped(state):
    vpn, admin, row = state["vpn"], state["admin"], state["admin_row"]
    before = len(vpn.log_text())
    action = re.search(r'action="(/admin/users/\d+/disconnect)"', row).group(1)
    status, _, _ = admin.post(action, {"csrf_token": csrf(state["admin_page"])}, "/admin/")
    assert status == 200
    wait_for(
        lambda: re.search(r"SIGUSR1|SIGTERM|Connection reset|AUTH_FAILED|RESTART", vpn.log_text()[before:]),
        "the node to drop the client:\n" + vpn.log_text()[before:],
    )
    vpn.stop()


def test_a_deleted_config_is_refused_at_reconnect(client, state):
    alice = state["alice"]
    _, _, home = alice.get("/")
    action = re.search(r'action="(/configs/\d+/delete)"', home).group(1)
    since = int(time.time()) - 1
    status, _, after = alice.post(action, {"csrf_token": csrf(home)})
    assert status == 200 and action not in after
    # The deletion pushed a new CRL to every node: the reconnect fails in the TLS handshake.
    cert = re.search(r"<cert>\s*(.*?)\s*</cert>", state["config"], re.DOTALL).group(1)
    common_name = x509.load_pem_x509_certificate(cert.encode()).subject.rfc4514_string()
    again = PortalClient(client, "laptop-again", state["config"]).start()

    def refused():
        journals = [
            lab_host(name).run(f"journalctl -q --no-pager -o cat --since @{since}").stdout
            for name in ("node-x1", "node-y1")
        ]
        return any(f"certificate revoked: {common_name}" in journal for journal in journals)

    wait_for(refused, "a node to refuse the deleted config in the TLS handshake", timeout=45)
    assert "Initialization Sequence Completed" not in again.log_text()
    again.stop()
