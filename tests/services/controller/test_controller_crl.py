"""The CRL from the controller's database, on node-x1 within seconds; revoked clients dropped within 2 s.

node-x1 is real (controller_node_lab): its daemon keeps the CRL file its OpenVPN processes check.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from controller_helpers import (
    NODE_TOKENS,
    add_user,
    app_tokens,
    bearer,
    csrf_token,
    log_in,
    portal_ovpn,
    run_sql,
)
from cryptography import x509
from sqlalchemy import select, update
from vpnfleet.shared.pki import authority, keys

from vpnfleet.controller import crl as crl_module
from vpnfleet.controller.configs import revoke_configs
from vpnfleet.controller.crl import publish_crl, signing_turn
from vpnfleet.controller.models import PublishedCrl, VpnConfig, utcnow
from vpnfleet.controller.state import EXTENSION_KEY

NODE_X1 = ("node-x1", NODE_TOKENS["node-x1"])
# The drop must come this soon after the revocation was asked for.
DROP_SECONDS = 2.0


def _serials(pem: str | bytes) -> set[int]:
    return {
        entry.serial_number
        for entry in x509.load_pem_x509_crl(pem if isinstance(pem, bytes) else pem.encode())
    }


def _config(app, common_name: str) -> VpnConfig:
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        return session.scalars(select(VpnConfig).where(VpnConfig.common_name == common_name)).one()
    finally:
        session.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_crl_lists_revoked_unexpired_configs_and_revoked_node_certificates(client, app, pki_dir):
    kept, _ = portal_ovpn(client, app, display_name="kept")
    revoked, _ = portal_ovpn(client, app, display_name="revoked")
    expired, _ = portal_ovpn(client, app, display_name="expired")
    ca = authority.CertificateAuthority.load(str(pki_dir / "ca"))
    _, node_cert = ca.issue("node-z9", "server", lifetime_days=1)
    ca.revoke(node_cert.serial_number, "key_compromise")
    controller = app.extensions[EXTENSION_KEY]
    with app.app_context():
        session = controller.sessions()
        configs = list(
            session.scalars(select(VpnConfig).where(VpnConfig.common_name.in_([revoked, expired])))
        )
        revoke_configs(controller, session, configs)
        session.execute(
            update(VpnConfig)
            .where(VpnConfig.common_name == expired)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
        first = publish_crl(controller, session)
        second = publish_crl(controller, session)
        session.close()
    crl = x509.load_pem_x509_crl(second.pem.encode())
    assert _serials(second.pem) == {int(_config(app, revoked).serial_number, 16), node_cert.serial_number}
    assert int(_config(app, kept).serial_number, 16) not in _serials(second.pem)
    assert second.crl_number > first.crl_number
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert (
        number == second.crl_number and second.revoked_count == 1
    )  # the node certificate comes from the index
    # Valid for crl_lifetime (1 h by default) from now; thisUpdate a minute back for slow clocks.
    lifetime = crl.next_update_utc - crl.last_update_utc
    assert timedelta(minutes=60) < lifetime <= timedelta(minutes=61, seconds=1)
    assert crl.is_signature_valid(
        keys.load_certificate((pki_dir / "ca" / "ca.crt").read_bytes()).public_key()
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_nodes_pull_the_crl_with_their_token_and_it_is_renewed_at_half_life(client, app):
    assert client.get("/node-api/v1/crl").status_code == 401
    assert client.get("/node-api/v1/crl", auth=("node-x1", "wrong")).status_code == 401
    pulled = client.get("/node-api/v1/crl", auth=NODE_X1)
    assert pulled.status_code == 200 and pulled.mimetype == "application/x-pem-file"
    again = client.get("/node-api/v1/crl", auth=NODE_X1)
    assert again.data == pulled.data  # not re-signed while most of its lifetime is ahead
    # With less than half its lifetime left, the next pull brings a new one.
    run_sql(app, update(PublishedCrl).values(next_update=utcnow() + timedelta(minutes=29)))
    renewed = client.get("/node-api/v1/crl", auth=NODE_X1)
    old, new = (x509.load_pem_x509_crl(answer.data) for answer in (pulled, renewed))
    number = lambda crl: crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number  # noqa: E731
    assert number(new) > number(old)


def _revoke_by_deleting(client, app, common_name):
    config_id = _config(app, common_name).id
    page = client.get("/").get_data(as_text=True)
    return client.post(f"/configs/{config_id}/delete", data={"csrf_token": csrf_token(page)})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("how", ["config deleted", "user disabled", "authorization revoked"])
def test_a_revoked_client_is_dropped_within_2_s_and_refused_in_the_handshake(
    client, app, node_lab, vpn_client, how, proto
):
    if how == "authorization revoked":
        add_user(app, "alice")
        token = app_tokens(client)
        made = client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"})
        assert made.status_code == 201
        ovpn = made.get_data(as_text=True)
        session = app.extensions[EXTENSION_KEY].sessions()
        config = session.scalars(select(VpnConfig).order_by(VpnConfig.id.desc())).first()
        session.close()
        common_name, authorization_id = config.common_name, config.authorization_id
    else:
        common_name, ovpn = portal_ovpn(client, app)
    vpn = vpn_client(ovpn, proto=proto)
    vpn.wait_until_up()
    node_lab.wait_until_listed(common_name)
    since = vpn.log_size()
    page = client.get("/").get_data(as_text=True)
    started = time.monotonic()
    if how == "config deleted":
        response = _revoke_by_deleting(client, app, common_name)
    elif how == "authorization revoked":
        response = client.post(
            f"/authorizations/{authorization_id}/revoke", data={"csrf_token": csrf_token(page)}
        )
    else:
        admin = app.test_client()
        add_user(app, "root", admin=True)
        log_in(admin, "root")
        user_id = _config(app, common_name).user_id
        token = csrf_token(admin.get(f"/admin/users/{user_id}").get_data(as_text=True))
        response = admin.post(f"/admin/users/{user_id}/disable", data={"csrf_token": token})
    assert response.status_code == 302
    vpn.wait_until_dropped(since)
    elapsed = time.monotonic() - started
    assert elapsed < DROP_SECONDS, f"{how} ({proto}): dropped after {elapsed:.2f} s"
    # node-x1's CRL has it (pushed with the revocation): the next try fails in the TLS handshake.
    assert int(_config(app, common_name).serial_number, 16) in _serials(node_lab.crl_path.read_bytes())
    vpn.stop()
    vpn_client(ovpn, proto=proto)
    node_lab.wait_until_refused_by_crl(common_name)


def _newest_common_name(app) -> str:
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        return session.scalars(select(VpnConfig.common_name).order_by(VpnConfig.id.desc())).first()
    finally:
        session.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_config_an_app_replaces_is_refused_at_once_then_dropped_and_in_the_nodes_crl(
    client, app, node_lab, vpn_client
):
    """/connect answers before the CRL is signed and pushed (crl.RevocationPusher); the old config
    must be refused by the node API from that answer on and leave the node in the background."""
    add_user(app, "alice")
    token = app_tokens(client)
    first = client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"})
    assert first.status_code == 201
    old, ovpn = _newest_common_name(app), first.get_data(as_text=True)
    vpn = vpn_client(ovpn, proto="udp")
    vpn.wait_until_up()
    node_lab.wait_until_listed(old)
    since = vpn.log_size()
    second = client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"})
    assert second.status_code == 201
    refused = client.post(
        "/node-api/v1/connect", auth=NODE_X1, data={"common_name": old, "profile_id": "office"}
    )
    assert refused.status_code == 403 and refused.get_json()["reason"] == "certificate revoked"
    vpn.wait_until_dropped(since)
    assert app.extensions[EXTENSION_KEY].revocations.flush()
    assert int(_config(app, old).serial_number, 16) in _serials(node_lab.crl_path.read_bytes())
    vpn.stop()
    vpn_client(ovpn, proto="udp")
    node_lab.wait_until_refused_by_crl(old)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_apps_disconnect_answers_before_the_crl_is_signed_and_the_config_is_refused_at_once(
    client, app, node_lab, vpn_client
):
    """/api/v3/disconnect revokes in its transaction and leaves the CRL and the disconnect to
    crl.RevocationPusher: with another signer's turn held (the push cannot sign), it still answers,
    the node API refuses the config from that answer on, and once the turn is free the client
    is dropped and node-x1's CRL lists it."""
    add_user(app, "alice")
    token = app_tokens(client)
    made = client.post("/api/v3/connect", headers=bearer(token), data={"profile_id": "office"})
    assert made.status_code == 201
    common_name, ovpn = _newest_common_name(app), made.get_data(as_text=True)
    vpn = vpn_client(ovpn, proto="udp")
    vpn.wait_until_up()
    node_lab.wait_until_listed(common_name)
    since = vpn.log_size()
    controller = app.extensions[EXTENSION_KEY]
    blocker = controller.sessions()
    try:
        with ThreadPoolExecutor(1) as caller, signing_turn(blocker):
            # A /disconnect that waited for the turn would wait for this block to end: a timeout.
            answer = caller.submit(client.post, "/api/v3/disconnect", headers=bearer(token)).result(2.0)
            assert answer.status_code == 204
            refused = client.post(
                "/node-api/v1/connect",
                auth=NODE_X1,
                data={"common_name": common_name, "profile_id": "office"},
            )
            assert refused.status_code == 403 and refused.get_json()["reason"] == "certificate revoked"
            assert int(_config(app, common_name).serial_number, 16) not in _serials(
                node_lab.crl_path.read_bytes()
            )
        blocker.rollback()
    finally:
        blocker.close()
    vpn.wait_until_dropped(since)
    assert controller.revocations.flush()
    assert int(_config(app, common_name).serial_number, 16) in _serials(node_lab.crl_path.read_bytes())


def test_revocations_that_arrive_during_a_push_share_the_next_crl_and_writes_go_on(client, app, node_lab):
    names = [portal_ovpn(client, app, display_name=f"laptop {n}")[0] for n in range(3)]
    run_sql(app, update(VpnConfig).where(VpnConfig.common_name.in_(names)).values(revoked_at=utcnow()))
    controller = app.extensions[EXTENSION_KEY]
    pusher = controller.revocations
    # Another signer's turn: the first push waits for it while two more revocations come, and
    # the database takes writes meanwhile (on SQLite too: no database lock while signing).
    blocker = controller.sessions()
    try:
        with signing_turn(blocker):
            pusher.submit(names[:1])
            deadline = time.monotonic() + 5
            while pusher.waiting and time.monotonic() < deadline:
                time.sleep(0.01)
            assert pusher.waiting == 0  # the first push took its revocation and waits for its turn
            pusher.submit(names[1:2])
            pusher.submit(names[2:])
            assert pusher.waiting == 2
            portal_ovpn(client, app, display_name="made while a signer waits")
        blocker.rollback()
    finally:
        blocker.close()
    assert pusher.flush()
    assert pusher.batches == 2  # two pushes for three revocations
    assert {int(_config(app, name).serial_number, 16) for name in names} <= _serials(
        node_lab.crl_path.read_bytes()
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_crl_another_worker_signed_since_is_pushed_as_it_is(client, app, node_lab):
    """Each gunicorn worker has its own pusher: one that finds the stored CRL listing its batch
    (signed by another worker while it waited for the lock) pushes that one instead of signing."""
    names = [portal_ovpn(client, app, display_name=f"laptop {n}")[0] for n in range(3)]
    run_sql(app, update(VpnConfig).where(VpnConfig.common_name.in_(names[:2])).values(revoked_at=utcnow()))
    controller = app.extensions[EXTENSION_KEY]
    with app.app_context():
        session = controller.sessions()
        signed = publish_crl(controller, session)
        session.close()
    controller.revocations.submit(names[:2])
    assert controller.revocations.flush()
    assert _published(app).crl_number == signed.crl_number
    assert node_lab.crl_path.read_text() == signed.pem
    # A revocation the stored CRL does not list: signed anew.
    run_sql(app, update(VpnConfig).where(VpnConfig.common_name == names[2]).values(revoked_at=utcnow()))
    controller.revocations.submit(names[2:])
    assert controller.revocations.flush()
    assert _published(app).crl_number > signed.crl_number
    assert {int(_config(app, name).serial_number, 16) for name in names} <= _serials(
        node_lab.crl_path.read_bytes()
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_pusher_signs_again_only_after_its_pace_and_the_configs_waiting_are_refused_meanwhile(
    client, app, node_lab, monkeypatch
):
    """Signed one after another, big CRLs took the signer from the certificates /connect waits
    for: after a signature the next waits PACE times as long (here pinned to 3 s), and what is
    revoked meanwhile shares it, refused by the node API all along."""
    monkeypatch.setattr(crl_module, "PACE", 1e9)
    monkeypatch.setattr(crl_module, "MAX_PACE_SECONDS", 3.0)
    names = [portal_ovpn(client, app, display_name=f"laptop {n}")[0] for n in range(3)]

    def revoke(some: list[str]) -> None:
        run_sql(app, update(VpnConfig).where(VpnConfig.common_name.in_(some)).values(revoked_at=utcnow()))
        pusher.submit(some)

    pusher = app.extensions[EXTENSION_KEY].revocations
    revoke(names[:1])
    assert pusher.flush()
    first = _published(app)
    revoke(names[1:2])
    time.sleep(0.3)
    revoke(names[2:])
    for name in names[1:]:
        refused = client.post(
            "/node-api/v1/connect", auth=NODE_X1, data={"common_name": name, "profile_id": "office"}
        )
        assert refused.status_code == 403 and refused.get_json()["reason"] == "certificate revoked"
    assert _published(app).crl_number == first.crl_number  # still pacing
    assert pusher.flush()
    # The pause runs from the first one's signature (its push to node-y1, down, took a while).
    assert (_published(app).this_update - first.this_update).total_seconds() >= 2.95
    assert pusher.batches == 2  # the two later revocations in one
    assert {int(_config(app, name).serial_number, 16) for name in names} <= _serials(
        node_lab.crl_path.read_bytes()
    )


def test_a_small_crl_whose_signature_was_slow_does_not_pace_the_next(client, app, node_lab, monkeypatch):
    """A signature of a few entries is the signer's fixed cost, not the entries': a pusher does not
    learn from it, so a node's CRL, its window for a revoked config when the controller is gone
    next, does not wait three times a slow round trip."""
    controller = app.extensions[EXTENSION_KEY]
    sign_crl = controller.issuer.sign_crl

    def slow_sign_crl(*args, **kwargs):
        time.sleep(1.0)
        return sign_crl(*args, **kwargs)

    monkeypatch.setattr(controller.issuer, "sign_crl", slow_sign_crl)
    names = [portal_ovpn(client, app, display_name=f"laptop {n}")[0] for n in range(2)]
    pusher = controller.revocations
    stored = []
    for name in names:
        run_sql(app, update(VpnConfig).where(VpnConfig.common_name == name).values(revoked_at=utcnow()))
        pusher.submit([name])
        assert pusher.flush()
        stored.append(_published(app))
    # The second: signed at once (its own second of signing), not 3 s after the first.
    assert (stored[1].this_update - stored[0].this_update).total_seconds() < 2.5
    assert stored[1].crl_number > stored[0].crl_number


def test_a_round_that_a_node_did_not_answer_teaches_the_pace_nothing(client, app, node_lab, monkeypatch):
    """The pace learns from a whole round, the push to every node included; a node that is down
    (node-y1 here) took its timeout, not the CRL's cost, and would hold every CRL for the longest
    pause while it stays down."""
    monkeypatch.setattr(crl_module, "LEARN_FROM_ENTRIES", 1)
    (name,) = [portal_ovpn(client, app, display_name="laptop")[0]]
    pusher = app.extensions[EXTENSION_KEY].revocations
    run_sql(app, update(VpnConfig).where(VpnConfig.common_name == name).values(revoked_at=utcnow()))
    pusher.submit([name])
    assert pusher.flush()
    assert pusher.batches == 1 and int(_config(app, name).serial_number, 16) in _serials(
        node_lab.crl_path.read_bytes()
    )
    assert pusher._seconds_per_entry == crl_module.SECONDS_PER_ENTRY


def _published(app) -> PublishedCrl:
    session = app.extensions[EXTENSION_KEY].sessions()
    try:
        return session.get(PublishedCrl, 1)
    finally:
        session.close()
