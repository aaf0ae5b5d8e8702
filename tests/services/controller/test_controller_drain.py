"""Maintenance (drain) with the real daemon of node-x1 and real OpenVPN clients: the admin's
button and the CLI set the flag the node holds, its clients are told to take their next remote,
new configs leave the node out, and the last node of a location needs force."""

from __future__ import annotations

import json
import re
import socket
import time

from controller_helpers import add_user, csrf_token, log_in, portal_ovpn, settings_mapping
from controller_node_lab import NODE_X1_ADDRESS, SILENT_DAEMON_ADDRESS, client_config
from openvpn_netlab import wait_for
from test_controller_admin import _admin

from vpnfleet.controller.cli import EXIT_NEEDS_FORCE
from vpnfleet.controller.cli import main as cli_main


def _maintenance(admin, node: str, on: bool, force: bool = False):
    page = admin.get("/admin/nodes").get_data(as_text=True)
    fields = {"csrf_token": csrf_token(page), "on": "yes" if on else "no"}
    if force:
        fields["force"] = "yes"
    return admin.post(f"/admin/nodes/{node}/maintenance", data=fields, follow_redirects=True)


def _node_row(admin, node: str) -> str:
    page = admin.get("/admin/nodes").get_data(as_text=True)
    return re.search(rf'<tr id="node-{node}">(.*?)</form>', page, re.DOTALL).group(1)


def test_a_drained_node_moves_its_clients_on_and_gets_no_new_config(app, node_lab, vpn_client, client):
    flag = node_lab.workdir / "maintenance"
    admin = _admin(app)
    common_name, ovpn = portal_ovpn(client, app)
    # node-x1's UDP remote first, then its TCP one: the next remote of a client told to move on.
    remotes = [line for line in client_config(ovpn, None).splitlines() if line.startswith("remote ")]
    assert remotes == [f"remote {NODE_X1_ADDRESS} 1194 udp", f"remote {NODE_X1_ADDRESS} 1194 tcp"]
    vpn = vpn_client(ovpn, None)
    vpn.wait_until_up()
    node_lab.wait_until_listed(common_name)
    assert f"link remote: [AF_INET]{NODE_X1_ADDRESS}:1194" in vpn.log() and "UDP" in vpn.log(), vpn.log()

    # node-x1 is the only node of location-x that answers: a plain drain is refused, with a reason.
    refused = _maintenance(admin, "node-x1", on=True).get_data(as_text=True)
    assert "last node of location location-x" in refused and "with force" in refused
    assert "Drain anyway" in _maintenance_page_after_refusal(admin)
    assert not flag.exists()

    before = vpn.log_size()
    forced = _maintenance(admin, "node-x1", on=True, force=True).get_data(as_text=True)
    assert "Warning: node-x1 is the last node" in forced and "1 client(s) told to move on" in forced
    assert flag.exists()
    # Told "RESTART,[N]", the client takes its next remote at once: node-x1's TCP entry point.
    wait_for(lambda: "Initialization Sequence Completed" in vpn.log()[before:], "the client to reconnect")
    after = vpn.log()[before:]
    assert "pushed by server ('[N]')" in after or "server-pushed-connection-reset" in after, after
    assert re.search(rf"TCP connection established with \[AF_INET\]{NODE_X1_ADDRESS}:1194", after), after
    assert "drained" in _node_row(admin, "node-x1")

    # No new config names a drained node; node-y1 does not answer, so there is none at all.
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post(
        "/configs", data={"profile_id": "office", "display_name": "phone", "csrf_token": token}
    )
    assert response.status_code == 409
    assert "no node serving profile office takes new clients now" in response.get_data(as_text=True)

    undrained = _maintenance(admin, "node-x1", on=False).get_data(as_text=True)
    assert "node-x1 takes new clients again" in undrained and not flag.exists()
    _, again = portal_ovpn(client, app, display_name="phone")
    # Its least full UDP process first: which one depends on where the moved client's old UDP
    # session still counts, now that every process is known by the name its daemon reports.
    assert re.search(rf"^remote {re.escape(NODE_X1_ADDRESS)} 119[45] udp$", again, re.M), again


def _maintenance_page_after_refusal(admin) -> str:
    return admin.get("/admin/nodes?confirm=node-x1").get_data(as_text=True)


def test_the_cli_drains_and_undrains_and_says_when_force_is_needed(
    make_app, pki_dir, database_url, tmp_path, capsys, node_lab
):
    make_app()  # the database, migrated
    settings_file = tmp_path / "controller.yml"
    # JSON is YAML: the settings file as the role writes it.
    settings_file.write_text(json.dumps(settings_mapping(pki_dir, database_url, node_lab.daemon_port)))
    flag = node_lab.workdir / "maintenance"

    def run(*arguments: str) -> int:
        return cli_main(["--settings", str(settings_file), "node-maintenance", *arguments])

    assert run("node-x1", "--drain") == EXIT_NEEDS_FORCE
    assert "with force" in capsys.readouterr().err and not flag.exists()
    assert run("node-x1", "--drain", "--force") == 0
    drained = json.loads(capsys.readouterr().out)
    assert drained["changed"] is True and drained["maintenance_mode"] is True and drained["warning"]
    assert flag.exists()
    assert run("node-x1", "--drain", "--force") == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
    assert run("node-x1", "--no-drain") == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True and not flag.exists()
    assert run("node-y9", "--no-drain") == 2
    assert "no such node: node-y9" in capsys.readouterr().err


def test_a_node_that_hangs_does_not_hold_up_a_config(make_app, client, node_lab):
    """node-y1's daemon address accepts connections and never answers: the config comes
    within the health bound (1 s here), naming node-x1 only."""
    with socket.socket() as hanging:
        hanging.bind((SILENT_DAEMON_ADDRESS, node_lab.daemon_port))
        hanging.listen(16)
        app = make_app(node_health_timeout_seconds=1.0)
        add_user(app, "alice")
        log_in(client, "alice")
        token = csrf_token(client.get("/").get_data(as_text=True))
        started = time.monotonic()
        response = client.post(
            "/configs", data={"profile_id": "office", "display_name": "laptop", "csrf_token": token}
        )
        took = time.monotonic() - started
    assert response.status_code == 200, response.get_data(as_text=True)
    assert took < 3, took
    remotes = [line for line in response.get_data(as_text=True).splitlines() if line.startswith("remote ")]
    assert {line.split()[1] for line in remotes} == {NODE_X1_ADDRESS}
