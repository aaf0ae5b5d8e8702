"""WireGuard beside OpenVPN (issue 13), the controller's half, against node-x1 for real: wireguard-go
interfaces, the real daemon's /w/ calls, a real WireGuard client (controller_wireguard_lab).

- /api/v3/info lists each profile's protocols and transports; /api/v3/connect chooses the protocol
  as API v3 says (Accept, public_key, prefer_tcp, the profile's first), 406 or 400 with a reason.
- A WireGuard config: an address of node-x1's slice (free, recorded), the node's key and entry
  point; the peer is on the node before the answer, and the client's tunnel carries traffic.
- Every end of a config (API disconnect, portal delete, disabled user, revoked authorization,
  expiry) removes the peer at once and the traffic stops; the connection log answers who had the
  address when; a node that lost its peers gets them back, one the controller does not know loses it.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import ssl
import threading
import time
from datetime import timedelta

import eduvpn_app
import pytest
import yaml
from controller_helpers import (
    SCRAPE_TOKEN_SHA256,
    add_user,
    app_tokens,
    bearer,
    csrf_token,
    labels,
    log_in,
    run_sql,
    scrape,
    settings_mapping,
)
from controller_node_lab import NODE_X1_ADDRESS
from controller_wireguard_lab import SLICES, WGONLY_ROUTES, WireguardNode, key_pair, node_settings
from openvpn_netlab import issue_files, wait_for
from sqlalchemy import select, update
from vpnfleet.shared.pki import authority

from vpnfleet.controller import cli, connection_log, wireguard
from vpnfleet.controller.models import (
    ConnectionLogEntry,
    OAuthAuthorization,
    User,
    VpnConfig,
    WireguardPeer,
    utcnow,
)
from vpnfleet.controller.state import EXTENSION_KEY
from vpnfleet.controller.wireguard import reconcile

WIREGUARD = "application/x-wireguard-profile"
OPENVPN = "application/x-openvpn-profile"
# node-x1's own address on each interface: the first host of its slice.
NODE_ADDRESS = {
    profile: str(next(ipaddress.ip_network(s["ipv4_range"]).hosts())) for profile, s in SLICES.items()
}


@pytest.fixture(scope="module")
def wireguard_node(node_lab):
    if not shutil.which("wireguard-go") or not shutil.which("wg"):
        pytest.skip("the WireGuard node lab needs wireguard-go and wg (wireguard-tools)")
    from controller_wireguard_lab import start_wireguard_node

    node = start_wireguard_node(node_lab)
    yield node
    node.stop()


def _wireguard_profiles(base: dict) -> list[dict]:
    """office offering OpenVPN and WireGuard, wgonly WireGuard alone (a split tunnel)."""
    profiles = [
        {**profile, "protocols": ["openvpn", "wireguard"]} if profile["id"] == "office" else profile
        for profile in base["profiles"]
    ]
    profiles.append(
        {
            "id": "wgonly",
            "display_name": "WireGuard only",
            "protocols": ["wireguard"],
            "default_gateway": False,
            "routes": WGONLY_ROUTES,
            "dns": ["203.0.113.53"],
        }
    )
    return profiles


def _wireguard_nodes(base: dict, wireguard_node: WireguardNode) -> list[dict]:
    nodes = [dict(node) for node in base["nodes"]]
    nodes[0]["wireguard"] = node_settings(wireguard_node)
    return nodes


@pytest.fixture
def wg_app(make_app, pki_dir, wireguard_node: WireguardNode):
    """The controller with office offering OpenVPN and WireGuard, wgonly WireGuard alone, and
    node-x1's daemon the one that serves both; afterwards no peer and no client is left."""
    base = settings_mapping(pki_dir, "", 0)
    profiles = _wireguard_profiles(base)
    nodes = _wireguard_nodes(base, wireguard_node)
    # Room for office's whole slice of configs for one user (the address test).
    app = make_app(
        profiles=profiles, nodes=nodes, daemon_port=wireguard_node.daemon_port, max_configs_per_user=20
    )
    yield app
    wireguard_node.client_down()
    for profile in SLICES:
        for key in wireguard_node.peers(profile):
            wireguard_node.remove_peer(profile, key)
    app.extensions[EXTENSION_KEY].sessions.kw["bind"].dispose()


def _connect(client, token, profile="wgonly", accept=WIREGUARD, public_key=None, **form):
    data = {"profile_id": profile, **form}
    if public_key:
        data["public_key"] = public_key
    return client.post("/api/v3/connect", data=data, headers={**bearer(token), "Accept": accept})


def _peer_of(app, common_name: str) -> WireguardPeer:
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        return session.scalars(
            select(WireguardPeer).join(VpnConfig).where(VpnConfig.common_name == common_name)
        ).one()
    finally:
        session.close()


def _last_config(app) -> VpnConfig:
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        return session.scalars(select(VpnConfig).order_by(VpnConfig.id.desc())).first()
    finally:
        session.close()


def _gone_within(seconds: float, node: WireguardNode, profile: str, key: str) -> float:
    """How long until the node's interface no longer has the peer (fails past ``seconds``)."""
    started = time.monotonic()
    wait_for(lambda: key not in node.peers(profile), f"the peer to leave {profile}", timeout=seconds)
    return time.monotonic() - started


def test_info_lists_each_profiles_protocols_and_transports(wg_app):
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    listed = client.get("/api/v3/info", headers=bearer(app_tokens(client))).get_json()["info"]["profile_list"]
    assert {p["profile_id"]: (p["vpn_proto_list"], p["vpn_proto_transport_list"]) for p in listed} == {
        "office": (["openvpn", "wireguard"], ["openvpn+udp", "openvpn+tcp", "wireguard+udp"]),
        "wgonly": (["wireguard"], ["wireguard+udp"]),
    }


def test_an_app_gets_a_wireguard_config_its_peer_on_the_node_and_traffic_through_it(wg_app, wireguard_node):
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    token = app_tokens(client)
    private_key, public_key = key_pair()
    answer = _connect(client, token, public_key=public_key)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    # Exactly the type: eduvpn-common compares the whole header.
    assert answer.headers["Content-Type"] == WIREGUARD
    config = answer.get_data(as_text=True)
    # The app adds its own private key: the controller never saw it.
    assert "PrivateKey" not in config
    assert f"PublicKey = {wireguard_node.public_keys['wgonly']}" in config
    assert f"Endpoint = {NODE_X1_ADDRESS}:{SLICES['wgonly']['port']}" in config
    # Split tunnel: its routes and its own slice, nothing else; the profile's DNS server.
    assert "AllowedIPs = 198.19.97.0/24, 2001:db8:f4::/112, 203.0.113.0/24" in config
    assert "DNS = 203.0.113.53" in config
    # The first free address of the slice: the node holds the first host.
    assert "Address = 198.19.97.2/24, 2001:db8:f4::2/112" in config
    # On the node before the answer came.
    assert wireguard_node.peers("wgonly") == {public_key: "198.19.97.2/32 2001:db8:f4::2/128"}
    wireguard_node.client_up(config, private_key)
    wait_for(lambda: wireguard_node.client_reaches(NODE_ADDRESS["wgonly"]), "traffic through the tunnel")

    disconnected_at = utcnow()
    assert client.post("/api/v3/disconnect", headers=bearer(token)).status_code == 204
    seconds = _gone_within(2, wireguard_node, "wgonly", public_key)
    print(f"API disconnect: the peer left the node {seconds:.2f} s after the answer")
    assert not wireguard_node.client_reaches(NODE_ADDRESS["wgonly"])

    # Who had 198.19.97.2 while connected: alice, over WireGuard, until the disconnect.
    session = wg_app.extensions[EXTENSION_KEY].sessions()
    try:
        [entry] = connection_log.search(
            session, connection_log.LogSearch.parse(None, "198.19.97.2", disconnected_at.isoformat())
        )
    finally:
        session.close()
    assert (entry.username, entry.protocol, entry.node, entry.close_reason) == (
        "alice",
        "wireguard",
        "node-x1",
        "revoked",
    )
    assert entry.disconnected_at is not None and entry.disconnected_at >= disconnected_at


def test_protocol_choice_follows_api_v3(wg_app, wireguard_node):
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    token = app_tokens(client)
    _, public_key = key_pair()
    both = f"{OPENVPN}, {WIREGUARD}"
    cases = [
        # office offers both, OpenVPN first: an app that takes either gets OpenVPN ...
        (dict(profile="office", accept=both, public_key=public_key), 201, OPENVPN),
        # ... and WireGuard when it asks for WireGuard alone ...
        (dict(profile="office", accept=WIREGUARD, public_key=public_key), 201, WIREGUARD),
        # ... and OpenVPN without a public key to put in a WireGuard config.
        (dict(profile="office", accept=both), 201, OPENVPN),
        (dict(profile="office", accept=both, public_key=public_key, prefer_tcp="yes"), 201, OPENVPN),
        # No Accept the app names: both, as if it had sent none.
        (dict(profile="wgonly", accept="*/*", public_key=public_key), 201, WIREGUARD),
        # wgonly has no OpenVPN, and WireGuard needs the key.
        (dict(profile="wgonly", accept=OPENVPN, public_key=public_key), 406, None),
        (dict(profile="wgonly", accept=WIREGUARD), 400, None),
    ]
    for form, status, mimetype in cases:
        answer = _connect(client, token, **form)
        assert answer.status_code == status, (form, answer.get_data(as_text=True))
        if mimetype:
            assert answer.mimetype == mimetype, form
        else:
            assert answer.get_json()["error"], form
    assert _connect(client, token, profile="wgonly", accept=OPENVPN).get_json() == {
        "error": 'profile "wgonly" offers wireguard; the app accepts openvpn'
    }
    assert _connect(client, token, profile="wgonly").get_json() == {
        "error": 'missing "public_key" parameter: WireGuard needs the app\'s public key'
    }
    # Each /connect replaced the authorization's config before: one peer is left, the last one.
    assert list(wireguard_node.peers("wgonly")) == [public_key]
    assert wireguard_node.peers("office") == {}


def test_addresses_are_free_ones_and_come_back_when_released(wg_app, wireguard_node):
    """office's slice is a /28: 13 client addresses beside the network, the node and broadcast."""
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    holders = []
    for _ in range(13):
        token = app_tokens(client)
        answer = _connect(client, token, profile="office", accept=WIREGUARD, public_key=key_pair()[1])
        assert answer.status_code == 201, answer.get_data(as_text=True)
        holders.append((token, _last_config(wg_app).common_name))
    addresses = [_peer_of(wg_app, name).ipv4 for _, name in holders]
    assert addresses == [f"198.19.96.{host}" for host in range(2, 15)]
    full = _connect(client, app_tokens(client), profile="office", accept=WIREGUARD, public_key=key_pair()[1])
    assert full.status_code == 503 and "no free WireGuard address" in full.get_json()["error"]
    # The fifth config's address is free once it ends, and the next config gets it.
    client.post("/api/v3/disconnect", headers=bearer(holders[4][0]))
    again = _connect(client, app_tokens(client), profile="office", accept=WIREGUARD, public_key=key_pair()[1])
    assert again.status_code == 201 and "Address = 198.19.96.6/28" in again.get_data(as_text=True)


def test_bad_public_keys_are_refused_with_a_reason(wg_app):
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    token = app_tokens(client)
    for key, reason in (
        ("", "public_key is not base64"),
        ("AAAA", "public_key must be 32 bytes, got 3"),
        ("%" * 44, "public_key is not base64"),
    ):
        answer = _connect(client, token, public_key=key or "=")
        assert (answer.status_code, answer.get_json()["error"]) == (400, f'invalid "public_key": {reason}'), (
            key
        )


def test_one_key_is_one_peer_and_not_another_users(wg_app, wireguard_node):
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    add_user(wg_app, "bob")
    _, public_key = key_pair()
    first = _connect(client, app_tokens(client, "alice"), public_key=public_key)
    assert first.status_code == 201
    earlier = _last_config(wg_app).common_name
    # Another app of alice's with the same key (eduVPN's macOS app): the earlier config ends,
    # and its address is free for the new one.
    second = _connect(client, app_tokens(client, "alice"), public_key=public_key)
    assert second.status_code == 201 and "Address = 198.19.97.2/24" in second.get_data(as_text=True)
    assert _peer_of(wg_app, earlier).released_at is not None
    assert wireguard_node.peers("wgonly") == {public_key: "198.19.97.2/32 2001:db8:f4::2/128"}
    stolen = _connect(client, app_tokens(client, "bob"), public_key=public_key)
    assert stolen.status_code == 403
    assert stolen.get_json() == {"error": "this public_key belongs to a config of another account"}


def test_portal_makes_the_key_pair_and_delete_removes_the_peer(wg_app, wireguard_node):
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    log_in(client, "alice")
    home = client.get("/").get_data(as_text=True)
    assert 'name="protocol"' in home
    answer = client.post(
        "/configs",
        data={
            "profile_id": "wgonly",
            "display_name": "laptop",
            "protocol": "",
            "csrf_token": csrf_token(home),
        },
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.mimetype == WIREGUARD
    assert answer.headers["Content-Disposition"] == 'attachment; filename="wgonly-laptop.conf"'
    assert answer.headers["Cache-Control"] == "no-store"
    config = answer.get_data(as_text=True)
    assert "PrivateKey = " in config
    [key] = wireguard_node.peers("wgonly")
    wireguard_node.client_up(config)
    wait_for(lambda: wireguard_node.client_reaches(NODE_ADDRESS["wgonly"]), "traffic through the tunnel")
    made = _last_config(wg_app)
    assert (made.protocol, made.serial_number) == ("wireguard", None)

    page = client.get("/").get_data(as_text=True)
    client.post(f"/configs/{made.id}/delete", data={"csrf_token": csrf_token(page)})
    seconds = _gone_within(2, wireguard_node, "wgonly", key)
    print(f"portal delete: the peer left the node {seconds:.2f} s after the answer")
    assert not wireguard_node.client_reaches(NODE_ADDRESS["wgonly"])
    # A config of a protocol the profile does not offer is refused, with the reason.
    refused = client.post(
        "/configs",
        data={
            "profile_id": "wgonly",
            "display_name": "old",
            "protocol": "openvpn",
            "csrf_token": csrf_token(page),
        },
    )
    assert refused.status_code == 409 and "does not offer openvpn" in refused.get_data(as_text=True)
    # office offers both: the portal makes OpenVPN unless asked (several nodes to move on to).
    office = client.post(
        "/configs",
        data={"profile_id": "office", "display_name": "desk", "protocol": "", "csrf_token": csrf_token(page)},
    )
    assert office.status_code == 200 and office.mimetype == OPENVPN


def test_disabled_user_revoked_authorization_and_expiry_remove_peers(wg_app, wireguard_node):
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    add_user(wg_app, "admin", admin=True)
    keys = [key_pair()[1] for _ in range(3)]
    tokens = [app_tokens(client) for _ in keys]
    for token, key in zip(tokens, keys, strict=True):
        assert _connect(client, token, public_key=key).status_code == 201
    assert set(wireguard_node.peers("wgonly")) == set(keys)

    # The user revokes one app's authorization in the portal.
    log_in(client, "alice")
    page = client.get("/").get_data(as_text=True)
    session = wg_app.extensions[EXTENSION_KEY].sessions()
    first = session.scalars(select(OAuthAuthorization).order_by(OAuthAuthorization.id)).first()
    session.close()
    client.post(f"/authorizations/{first.id}/revoke", data={"csrf_token": csrf_token(page)})
    _gone_within(2, wireguard_node, "wgonly", keys[0])

    # One config expires: the reconcile (the timer's run) releases its peer.
    common_name = _last_config(wg_app).common_name
    run_sql(
        wg_app,
        update(VpnConfig)
        .where(VpnConfig.common_name == common_name)
        .values(expires_at=utcnow() - timedelta(seconds=1)),
    )
    controller = wg_app.extensions[EXTENSION_KEY]
    session = controller.sessions()
    try:
        report = reconcile(controller, session)
    finally:
        session.close()
    assert report.released == 1
    assert keys[2] not in wireguard_node.peers("wgonly")

    # The admin disables alice: her last peer goes.
    admin = wg_app.test_client()
    log_in(admin, "admin")
    users = admin.get("/admin/users").get_data(as_text=True)
    alice_id = _last_config(wg_app).user_id
    admin.post(f"/admin/users/{alice_id}/disable", data={"csrf_token": csrf_token(users)})
    _gone_within(2, wireguard_node, "wgonly", keys[1])
    assert wireguard_node.peers("wgonly") == {}


def _alice_through_the_tunnel(wg_app, wireguard_node):
    """alice (and an admin) made; alice's app config of wgonly up on the client, passing traffic.
    Her test client (for more calls) and her public key are returned."""
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    add_user(wg_app, "admin", admin=True)
    private_key, public_key = key_pair()
    config = _connect(client, app_tokens(client), public_key=public_key).get_data(as_text=True)
    wireguard_node.client_up(config, private_key)
    wait_for(lambda: wireguard_node.client_reaches(NODE_ADDRESS["wgonly"]), "traffic through the tunnel")
    return client, public_key


def test_a_node_that_lost_its_peers_gets_them_back_and_loses_strangers(wg_app, wireguard_node):
    unused_client, public_key = _alice_through_the_tunnel(wg_app, wireguard_node)

    # The node restarts its interface: no peers. The node health sees a peer count other than
    # the controller's (the next /connect or admin page asks for it) and a reconcile runs.
    wireguard_node.restart_interface("wgonly")
    assert wireguard_node.peers("wgonly") == {}
    controller = wg_app.extensions[EXTENSION_KEY]
    controller.daemons.health.invalidate()
    started = time.monotonic()
    controller.daemons.health.get()
    wait_for(
        lambda: wireguard_node.peers("wgonly") == {public_key: "198.19.97.2/32 2001:db8:f4::2/128"},
        "the reconcile to give node-x1 its peer back",
        timeout=10,
    )
    print(f"node health: the node had its peer back {time.monotonic() - started:.2f} s after it was asked")
    wait_for(
        lambda: wireguard_node.client_reaches(NODE_ADDRESS["wgonly"]), "traffic through the tunnel again"
    )

    # A peer the controller does not know goes at the next reconcile (the timer's run).
    stranger = key_pair()[1]
    wireguard_node.add_stranger("wgonly", stranger, "198.19.97.200/32")
    session = controller.sessions()
    try:
        report = reconcile(controller, session)
    finally:
        session.close()
    assert (report.added, report.removed, report.nodes_unreachable) == (0, 1, [])
    assert wireguard_node.peers("wgonly") == {public_key: "198.19.97.2/32 2001:db8:f4::2/128"}

    # The admin sees the peer beside the OpenVPN clients.
    admin = wg_app.test_client()
    log_in(admin, "admin")
    page = admin.get("/admin/").get_data(as_text=True)
    assert 'id="wireguard-peers"' in page and "198.19.97.2/32" in page and ">alice<" in page
    # ... and counted against its node's slice: one address of the slice's held.
    [node] = [node for node in controller.settings.nodes if node.wireguard_of("wgonly")]
    addresses = node.wireguard_of("wgonly").client_addresses
    row = f"<td>wgonly</td><td>{node.location}</td><td>wireguard</td><td>1</td><td>{addresses}</td>"
    assert row in page.replace("\n", "").replace("      ", ""), page


def _configs_of(app, username: str) -> dict[str, VpnConfig]:
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        query = select(VpnConfig).join(User).where(User.username == username)
        return {config.common_name: config for config in session.scalars(query)}
    finally:
        session.close()


def _closed_as(app, common_name: str) -> str | None:
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        return session.scalars(
            select(ConnectionLogEntry.close_reason).where(ConnectionLogEntry.common_name == common_name)
        ).one()
    finally:
        session.close()


def test_the_admins_disconnect_ends_wireguard_configs_and_keeps_openvpn_ones(wg_app, wireguard_node):
    """eduVPN's disconnect: a WireGuard config's peer removed and the config ended (its peer would
    be back with the next reconcile otherwise); an OpenVPN config stays, its clients dropped."""
    client, public_key = _alice_through_the_tunnel(wg_app, wireguard_node)
    wireguard_name = _last_config(wg_app).common_name
    # An OpenVPN config of hers beside it, from another app.
    assert _connect(client, app_tokens(client), profile="office", accept=OPENVPN).status_code == 201
    openvpn_name = _last_config(wg_app).common_name
    alice_id = _last_config(wg_app).user_id

    admin = wg_app.test_client()
    log_in(admin, "admin")
    page = admin.get(f"/admin/users/{alice_id}").get_data(as_text=True)
    answer = admin.post(f"/admin/users/{alice_id}/disconnect", data={"csrf_token": csrf_token(page)})
    assert answer.status_code == 302
    seconds = _gone_within(2, wireguard_node, "wgonly", public_key)
    print(f"admin disconnect: the peer left the node {seconds:.2f} s after the answer")
    assert not wireguard_node.client_reaches(NODE_ADDRESS["wgonly"])
    page = admin.get(f"/admin/users/{alice_id}").get_data(as_text=True)
    assert "Disconnected alice on every node." in page
    assert "1 WireGuard config(s) of alice ended" in page

    configs = _configs_of(wg_app, "alice")
    assert configs[wireguard_name].revoked_at is not None and configs[openvpn_name].revoked_at is None
    assert _closed_as(wg_app, wireguard_name) == "disconnected"
    # The reconcile (the timer's next round) does not bring the peer back.
    controller = wg_app.extensions[EXTENSION_KEY]
    session = controller.sessions()
    try:
        assert reconcile(controller, session).added == 0
    finally:
        session.close()
    assert public_key not in wireguard_node.peers("wgonly")


def test_the_cli_disconnect_does_what_the_admin_page_does(
    wg_app, wireguard_node, pki_dir, database_url, tmp_path, capsys
):
    client = wg_app.test_client()
    add_user(wg_app, "bob")
    _, public_key = key_pair()
    assert _connect(client, app_tokens(client, "bob"), public_key=public_key).status_code == 201
    assert public_key in wireguard_node.peers("wgonly")
    # The settings wg_app runs on, as the role writes them for the CLI.
    mapping = settings_mapping(pki_dir, database_url, wireguard_node.daemon_port)
    mapping.update(profiles=_wireguard_profiles(mapping), nodes=_wireguard_nodes(mapping, wireguard_node))
    settings_file = tmp_path / "controller.yml"
    settings_file.write_text(yaml.safe_dump(mapping))
    command = ["--settings", str(settings_file), "disconnect"]
    capsys.readouterr()

    assert cli.main([*command, "bob"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "user": "bob",
        "openvpn_configs": 0,
        "wireguard_ended": 1,
        "nodes_unreachable": [],
    }
    assert public_key not in wireguard_node.peers("wgonly")
    assert cli.main([*command, "nobody"]) == 2
    assert "disconnect: no user 'nobody'" in capsys.readouterr().err


def test_the_reconcile_service_removes_an_expired_peer_at_its_expiry_not_a_round_later(
    wg_app, wireguard_node
):
    """The service sleeps until the next expiry it knows of, with rounds 30 s apart here; the
    second config's expiry is set after the service looked, and is seen at its next look (the
    wake for the first)."""
    client = wg_app.test_client()
    add_user(wg_app, "alice")
    keys = [key_pair()[1] for _ in range(2)]
    names = []
    for key in keys:
        assert _connect(client, app_tokens(client), public_key=key).status_code == 201
        names.append(_last_config(wg_app).common_name)

    def expire(common_name: str, seconds: float):
        at = utcnow() + timedelta(seconds=seconds)
        run_sql(wg_app, update(VpnConfig).where(VpnConfig.common_name == common_name).values(expires_at=at))
        return at

    controller = wg_app.extensions[EXTENSION_KEY]
    expires = [expire(names[0], 3)]
    stop, reports = threading.Event(), []
    service = threading.Thread(target=wireguard.serve, args=(controller, 30, stop, reports.append))
    service.start()
    try:
        expires.append(expire(names[1], 5))
        for key, expires_at in zip(keys, expires, strict=True):
            assert key in wireguard_node.peers("wgonly"), "removed before its expiry"
            wait_for(lambda key=key: key not in wireguard_node.peers("wgonly"), "the peer to go", timeout=10)
            late = (utcnow() - expires_at).total_seconds()
            print(f"expiry: the peer left the node {late:.2f} s after its config expired")
            assert 0 <= late < 1.5, late
    finally:
        stop.set()
        service.join(timeout=30)
    assert not service.is_alive()
    assert [report.released for report in reports if report.released] == [1, 1]
    assert [_closed_as(wg_app, name) for name in names] == ["expired", "expired"]


@pytest.fixture
def metrics_wg_app(make_app, pki_dir, wireguard_node):
    """wg_app's profiles and nodes with the scrape token."""
    base = settings_mapping(pki_dir, "", 0)
    app = make_app(
        profiles=_wireguard_profiles(base),
        nodes=_wireguard_nodes(base, wireguard_node),
        daemon_port=wireguard_node.daemon_port,
        metrics_token_sha256=SCRAPE_TOKEN_SHA256,
        daemon_timeout_seconds=2,
    )
    yield app
    wireguard_node.client_down()
    for profile in SLICES:
        for key in wireguard_node.peers(profile):
            wireguard_node.remove_peer(profile, key)
    app.extensions[EXTENSION_KEY].sessions.kw["bind"].dispose()


def test_metrics_count_wireguard_peers_per_node_and_profile_beside_openvpn(metrics_wg_app, wireguard_node):
    client = metrics_wg_app.test_client()
    add_user(metrics_wg_app, "alice")
    wgonly = labels(
        node="node-x1",
        location="location-x",
        profile="wgonly",
        process=wireguard_node.interfaces["wgonly"],
        protocol="wireguard",
    )
    profile = labels(profile="wgonly", protocol="wireguard")
    before = scrape(client)
    # A /24 slice: 253 addresses for configs (not the network's, the node's, the broadcast).
    assert before[("vpnfleet_process_max_clients", wgonly)] == 253
    assert before[("eduvpn_max_connections", profile)] == before[("eduvpn_free_ips", profile)] == 253
    assert before[("vpnfleet_wireguard_peers", wgonly)] == before[("eduvpn_active_connections", profile)] == 0
    # office offers both: its OpenVPN series per transport (node-x1's), WireGuard's beside them.
    office = {
        dict(key)["protocol"]: value
        for (name, key), value in before.items()
        if name == "eduvpn_max_connections" and dict(key)["profile"] == "office"
    }
    assert office == {"udp": 120, "tcp": 60, "wireguard": 13}
    assert ("openvpn_server_connected_clients", wgonly) not in before

    # A config: its address is in use from now, connected or not; no handshake yet.
    private_key, public_key = key_pair()
    config = _connect(client, app_tokens(client), public_key=public_key).get_data(as_text=True)
    configured = wait_for(
        lambda: (found := scrape(client))[("vpnfleet_wireguard_peers", wgonly)] == 1 and found,
        "the node's peer in the metrics",
    )
    assert configured[("vpnfleet_wireguard_connected_peers", wgonly)] == 0
    assert configured[("eduvpn_active_connections", profile)] == 0
    assert configured[("eduvpn_free_ips", profile)] == 252
    assert configured[("vpnfleet_process_free_addresses", wgonly)] == 252

    # The client's handshake makes it a connection.
    wireguard_node.client_up(config, private_key)
    wait_for(lambda: wireguard_node.client_reaches(NODE_ADDRESS["wgonly"]), "traffic through the tunnel")
    connected = wait_for(
        lambda: (found := scrape(client))[("eduvpn_active_connections", profile)] == 1 and found,
        "the connection in the metrics",
    )
    assert connected[("vpnfleet_wireguard_connected_peers", wgonly)] == 1
    assert connected[("eduvpn_free_ips", profile)] == 252


@pytest.fixture
def served_app(make_app, pki_dir, wireguard_node):
    """wg_app's settings, served over HTTPS on 127.0.0.1 for a real app (eduvpn-common)."""
    from werkzeug.serving import make_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = settings_mapping(pki_dir, "", 0)
    app = make_app(
        base_url=f"https://127.0.0.1:{port}",
        profiles=_wireguard_profiles(base),
        nodes=_wireguard_nodes(base, wireguard_node),
        daemon_port=wireguard_node.daemon_port,
    )
    # The web front's certificate ("server", as the controller role issues it) from the test CA:
    # the library speaks https only.
    ca = authority.CertificateAuthority.load(str(pki_dir / "ca"))
    web = issue_files(ca, pki_dir / "web-127.0.0.1", "127.0.0.1", "server", ip_addresses=["127.0.0.1"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(web.certificate, web.private_key)
    server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield app, f"https://127.0.0.1:{port}", str(pki_dir / "ca" / "ca.crt")
    server.shutdown()
    wireguard_node.client_down()


def test_eduvpn_common_gets_either_protocol_through_its_oauth_flow(served_app, wireguard_node):
    """The official apps' library: WireGuard from a WireGuard profile, and from office (OpenVPN
    first) OpenVPN, as the library accepts both there and sends its key.

    The module's node keeps the first database's peer: the second database's controller gives the
    same address again and meets a peer it does not hold there, which its reconcile removes."""
    if not eduvpn_app.available():
        pytest.skip("eduvpn-common is not installed (requirements/tools.txt)")
    app, base_url, ca_file = served_app
    add_user(app, "alice")
    browser = app.test_client()
    log_in(browser, "alice")

    def approve(url: str) -> str:
        assert url.startswith(f"{base_url}/oauth/authorize?"), url
        path = url.removeprefix(base_url)
        page = browser.get(path)
        assert page.status_code == 200, page.get_data(as_text=True)
        answer = browser.post(
            path, data={"csrf_token": csrf_token(page.get_data(as_text=True)), "decision": "approve"}
        )
        return answer.headers["Location"]

    got = eduvpn_app.get_config(base_url + "/", "wgonly", approve, ca_file)
    assert got.protocol == "wireguard", got.raw
    # The library put its own private key in; the node has its public key as a peer.
    assert "PrivateKey = " in got.text
    [public_key] = wireguard_node.peers("wgonly")
    wireguard_node.client_up(got.text)
    wait_for(lambda: wireguard_node.client_reaches(NODE_ADDRESS["wgonly"]), "traffic through the tunnel")
    assert public_key in wireguard_node.peers("wgonly")

    openvpn = eduvpn_app.get_config(base_url + "/", "office", approve, ca_file)
    assert openvpn.protocol == "openvpn" and "<tls-crypt>" in openvpn.text, openvpn.raw
