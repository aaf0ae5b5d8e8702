"""Portal: login, CSRF, throttling, creating, listing and deleting configs."""

from __future__ import annotations

from controller_helpers import PASSWORD, add_user, csrf_token, log_in, portal_ovpn
from controller_node_lab import NODE_X1_ADDRESS
from vpnfleet.shared.pki import keys


def test_login_page_and_wrong_password(client, app):
    add_user(app, "alice")
    assert client.get("/").status_code == 302  # not logged in: off to the login page
    response = log_in(client, "alice", "wrong password")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_login_then_home_lists_allowed_profiles(client, app):
    add_user(app, "alice")
    response = log_in(client, "alice")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Office" in page
    assert "Internet" not in page  # only for the group "staff"


def test_login_without_csrf_token_is_refused(client, app):
    add_user(app, "alice")
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


def test_login_redirect_never_leaves_the_site(client, app):
    add_user(app, "alice")
    response = log_in(client, "alice", next_path="//evil.example/steal")
    assert response.headers["Location"] == "/"


def test_login_throttling_refuses_even_the_right_password(client, app):
    add_user(app, "alice")
    for _ in range(5):
        assert log_in(client, "alice", "wrong").status_code == 401
    response = log_in(client, "alice")
    assert response.status_code == 429
    assert "Too many failed logins" in response.get_data(as_text=True)


def _create(client, profile_id="office", name="laptop"):
    token = csrf_token(client.get("/").get_data(as_text=True))
    return client.post("/configs", data={"profile_id": profile_id, "display_name": name, "csrf_token": token})


def test_create_config_downloads_ovpn(client, app, pki_dir):
    add_user(app, "alice")
    log_in(client, "alice")
    response = _create(client)
    assert response.status_code == 200
    assert response.mimetype == "application/x-openvpn-profile"
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert (pki_dir / "ca" / "ca.crt").read_text().strip() in text
    assert (pki_dir / "tls-crypt-office.key").read_text().strip() in text
    assert "<key>\n-----BEGIN PRIVATE KEY-----" in text
    remotes = [line for line in text.splitlines() if line.startswith("remote ")]
    # node-x1 answers: one entry point per protocol, its emptier UDP process (both are empty, so
    # the first); node-y1's daemon does not answer, so no config names it.
    assert remotes == [f"remote {NODE_X1_ADDRESS} 1194 udp", f"remote {NODE_X1_ADDRESS} 1194 tcp"]
    protos = [line.split()[-1] for line in remotes]
    assert protos == sorted(protos, key=lambda proto: proto != "udp")  # UDP before TCP
    cert_pem = text.split("<cert>\n")[1].split("</cert>")[0]
    cert = keys.load_certificate(cert_pem.encode())
    assert keys.certificate_purpose(cert) == "client"
    page = client.get("/").get_data(as_text=True)
    assert "laptop" in page


def test_profile_of_another_group_is_refused(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    response = _create(client, profile_id="internet")
    assert response.status_code == 400
    add_user(app, "bob", groups=["staff"])
    log_in(client, "bob")
    assert _create(client, profile_id="internet").status_code == 200


def test_max_active_configs(client, app):
    add_user(app, "alice")
    log_in(client, "alice")
    for index in range(3):
        assert _create(client, name=f"device {index}").status_code == 200
    response = _create(client, name="one too many")
    assert response.status_code == 409
    assert "3 active configs" in response.get_data(as_text=True)


def test_config_never_outlives_the_session(make_app):
    app = make_app(session_expiry="2h")
    client = app.test_client()
    add_user(app, "alice")
    log_in(client, "alice")
    text = _create(client).get_data(as_text=True)
    cert = keys.load_certificate(text.split("<cert>\n")[1].split("</cert>")[0].encode())
    lifetime = keys.not_after(cert) - keys.not_before(cert)
    # Backdated by five minutes against clock skew; never longer than the session.
    assert lifetime.total_seconds() <= 2 * 3600 + 5 * 60 + 1


def test_delete_revokes_and_disconnects(client, app, vpn_client):
    add_user(app, "alice")
    log_in(client, "alice")
    vpn = vpn_client(_create(client).get_data(as_text=True))
    vpn.wait_until_up()
    page = client.get("/").get_data(as_text=True)
    import re

    config_id = re.search(r"/configs/(\d+)/delete", page).group(1)
    assert client.post(f"/configs/{config_id}/delete").status_code == 400  # no CSRF token
    assert vpn.process.poll() is None
    response = client.post(f"/configs/{config_id}/delete", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    vpn.wait_until_halted()  # connected to node-x1 for real, and dropped there
    assert "You have no active configs" in client.get("/").get_data(as_text=True)


def test_cannot_delete_someone_elses_config(client, app):
    add_user(app, "alice")
    add_user(app, "mallory")
    log_in(client, "alice")
    _create(client)
    other = app.test_client()
    log_in(other, "mallory")
    token = csrf_token(other.get("/").get_data(as_text=True))
    assert other.post("/configs/1/delete", data={"csrf_token": token}).status_code == 404


def test_the_portal_offers_a_location_per_profile_automatic_by_default(client, app):
    add_user(app, "alice", groups=["staff"])
    log_in(client, "alice")
    home = client.get("/").get_data(as_text=True)
    assert '<option selected value="">automatic</option>' in home
    assert '<option value="location-x">location-x (Office, Internet)</option>' in home
    assert '<option value="location-y">location-y (Office)</option>' in home
    token = csrf_token(home)

    def create(profile_id, location, name):
        return client.post(
            "/configs",
            data={"profile_id": profile_id, "display_name": name, "location": location, "csrf_token": token},
        )

    chosen = create("office", "location-x", "x-laptop")
    assert chosen.status_code == 200
    remotes = [line for line in chosen.get_data(as_text=True).splitlines() if line.startswith("remote ")]
    assert remotes == [f"remote {NODE_X1_ADDRESS} 1194 udp", f"remote {NODE_X1_ADDRESS} 1194 tcp"]
    # The internet profile has no node in location-y: refused with the reason, nothing made.
    refused = create("internet", "location-y", "y-laptop")
    assert refused.status_code == 409
    assert "profile internet is not served in location location-y" in refused.get_data(as_text=True)
    assert create("office", "location-z", "z-laptop").status_code == 400


def test_a_config_leaves_a_full_process_for_its_next_remote_within_15_s(client, app):
    """A process at max-clients answers the client's first packet and then drops it (OpenVPN
    2.6's stateless reset reply): the client leaves only when its handshake window ends, then
    pauses connect-retry's first delay and makes its handshake with the next remote. Issue 12's
    goal is 15 s in all; bench/storm.py's "full" event measures it on the lab (docs/bench.md)."""
    _, ovpn = portal_ovpn(client, app)
    options = {line.split()[0]: line.split()[1:] for line in ovpn.splitlines() if line and line[0].isalpha()}
    remotes = [line for line in ovpn.splitlines() if line.startswith("remote ")]
    assert len(remotes) >= 2, remotes
    handshake_allowance = 2  # a handshake under the lab's storms took 1-2 s
    worst = int(options["hand-window"][0]) + int(options["connect-retry"][0]) + handshake_allowance
    assert worst <= 15, options
    # The other bound on a silent remote stays below the handshake window.
    assert int(options["server-poll-timeout"][0]) <= int(options["hand-window"][0])
