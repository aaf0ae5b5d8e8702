"""LDAP login against a real OpenLDAP (slapd_lab): search-then-bind over LDAPS and bind-as-user
over StartTLS, groups from a group search and from memberOf, the admin group, users made at the
first login and refreshed at each; a group or a user removed in the directory ends access (at the
next login and by the periodic check) and revokes the configs; wrong password, unknown user and a
directory that is down each get a clear answer; local users keep working."""

from __future__ import annotations

import itertools
import re

import pytest
import slapd_lab
from controller_helpers import add_user, csrf_token, log_in
from slapd_lab import SERVICE_DN, SERVICE_PASSWORD, SUFFIX, USER_PASSWORD, group, person
from sqlalchemy import select

from vpnfleet.controller.housekeeping import run_housekeeping
from vpnfleet.controller.models import User, VpnConfig
from vpnfleet.controller.state import controller, db

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory):
    if not slapd_lab.available():
        pytest.skip("slapd is not installed (apt-get install slapd ldap-utils)")
    server = slapd_lab.start_slapd(tmp_path_factory.mktemp("slapd"))
    server.add(group("staff", []) + "\n" + group("vpn-admins", []))
    yield server
    server.stop()


@pytest.fixture
def person_in(slapd):
    """A new directory user (the directory lives for the whole run), put in the groups named."""

    def make(*groups: str) -> str:
        uid = f"user{next(_numbers):03d}"
        slapd.add(person(uid))
        for name in groups:
            slapd.add_member(name, uid)
        return uid

    return make


def search_then_bind(slapd, **overrides) -> dict:
    settings = {
        "uri": slapd.ldaps_uri,
        "ca_file": str(slapd.ca_file),
        "user_search_base": f"ou=people,{SUFFIX}",
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "group_search_base": f"ou=groups,{SUFFIX}",
        "admin_group": "vpn-admins",
        "timeout_seconds": 3,
    }
    settings.update(overrides)
    return settings


def bind_as_user(slapd, **overrides) -> dict:
    settings = {
        "uri": slapd.ldap_uri,
        "start_tls": True,
        "ca_file": str(slapd.ca_file),
        "bind_dn_template": f"uid={{username}},ou=people,{SUFFIX}",
        "group_attribute": "memberOf",
        "admin_group": "vpn-admins",
        "timeout_seconds": 3,
    }
    settings.update(overrides)
    return settings


def _user(app, username: str) -> User | None:
    with app.app_context():
        user = db().scalar(select(User).where(User.username == username))
        if user is not None:
            db().expunge(user)
        return user


def _profiles_on_home(client) -> set[str]:
    page = client.get("/").get_data(as_text=True)
    return {profile for profile in ("office", "internet") if f'value="{profile}"' in page}


def _login_error(response) -> str:
    match = re.search(r'id="login-error">([^<]*)<', response.get_data(as_text=True))
    assert match, "no login error on the page"
    return match.group(1)


def _make_config(client, profile_id: str) -> None:
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post(
        "/configs", data={"profile_id": profile_id, "display_name": "laptop", "csrf_token": token}
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("mode", [search_then_bind, bind_as_user], ids=["search-ldaps", "bind-starttls"])
def test_directory_user_is_made_at_first_login_with_groups_and_admin_flag(make_app, slapd, person_in, mode):
    staff, admin = person_in("staff"), person_in("vpn-admins")
    app = make_app(ldap=mode(slapd))
    client = app.test_client()
    response = log_in(client, staff, USER_PASSWORD)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert _profiles_on_home(client) == {"office", "internet"}
    user = _user(app, staff)
    assert user is not None
    assert (user.source, user.groups, user.is_admin) == ("ldap", ["staff"], False)
    assert client.get("/admin/").status_code == 403

    admin_client = app.test_client()
    assert log_in(admin_client, admin, USER_PASSWORD).status_code == 302
    assert admin_client.get("/admin/").status_code == 200
    assert _profiles_on_home(admin_client) == {"office"}


def test_user_name_as_typed_becomes_the_directory_id(make_app, slapd, person_in):
    uid = person_in()
    app = make_app(ldap=search_then_bind(slapd))
    assert log_in(app.test_client(), uid.upper(), USER_PASSWORD).status_code == 302
    # One account whatever the case typed: the id is the directory's uid attribute.
    assert _user(app, uid) is not None
    assert _user(app, uid.upper()) is None


@pytest.mark.parametrize("mode", [search_then_bind, bind_as_user], ids=["search-ldaps", "bind-starttls"])
def test_wrong_password_and_unknown_user_get_the_same_answer(make_app, slapd, person_in, mode):
    uid = person_in()
    client = make_app(ldap=mode(slapd)).test_client()
    wrong = log_in(client, uid, "not the password")
    unknown = log_in(client, "nobody-" + uid, USER_PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert _login_error(wrong) == _login_error(unknown) == "Wrong user name or password."
    # An LDAP filter in the name is a name like any other, not a wildcard.
    assert log_in(client, "*", USER_PASSWORD).status_code == 401


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda slapd: {"uri": "ldaps://127.0.0.1:9"}, id="down"),
        pytest.param(lambda slapd: {"ca_file": "/etc/ssl/certs/ca-certificates.crt"}, id="unknown-CA"),
        pytest.param(lambda slapd: {"bind_password": "wrong"}, id="service-account-refused"),
    ],
)
def test_a_directory_that_cannot_answer_is_a_clear_503_and_local_users_still_log_in(
    make_app, slapd, person_in, broken
):
    uid = person_in()
    app = make_app(ldap=search_then_bind(slapd, **broken(slapd)))
    add_user(app, "break-glass", admin=True)
    client = app.test_client()
    response = log_in(client, uid, USER_PASSWORD)
    assert response.status_code == 503
    assert _login_error(response).startswith("The directory cannot be reached now")
    local = app.test_client()
    assert log_in(local, "break-glass").status_code == 302
    assert local.get("/admin/").status_code == 200


def test_a_local_user_is_never_taken_over_by_the_directory(make_app, slapd, person_in):
    uid = person_in("vpn-admins")
    app = make_app(ldap=search_then_bind(slapd))
    add_user(app, uid)  # a local user of the same name, with the local password
    client = app.test_client()
    # The directory's password is not this account's: only the local one logs in.
    assert log_in(client, uid, USER_PASSWORD).status_code == 401
    assert log_in(client, uid).status_code == 302
    user = _user(app, uid)
    assert user is not None
    assert (user.source, user.is_admin) == ("local", False)


def test_removed_from_a_group_the_user_loses_the_profile_and_its_configs_at_next_login(
    make_app, slapd, person_in, node_lab, vpn_client
):
    uid = person_in("staff")
    app = make_app(ldap=search_then_bind(slapd))
    client = app.test_client()
    assert log_in(client, uid, USER_PASSWORD).status_code == 302
    _make_config(client, "office")
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post(
        "/configs", data={"profile_id": "internet", "display_name": "laptop", "csrf_token": token}
    )
    [common_name] = _active_names(app, "internet")
    vpn = vpn_client(response.get_data(as_text=True), "udp")
    vpn.wait_until_up()
    node_lab.wait_until_listed(common_name)

    slapd.remove_member("staff", uid)
    again = app.test_client()
    assert log_in(again, uid, USER_PASSWORD).status_code == 302
    assert _profiles_on_home(again) == {"office"}
    assert _active_names(app, "internet") == []
    assert len(_active_names(app, "office")) == 1
    vpn.wait_until_halted()  # the connected client of the lost profile is dropped at once
    user = _user(app, uid)
    assert user is not None
    assert user.groups == []


def _active_names(app, profile_id: str) -> list[str]:
    with app.app_context():
        return list(
            db().scalars(
                select(VpnConfig.common_name).where(
                    VpnConfig.profile_id == profile_id, VpnConfig.revoked_at.is_(None)
                )
            )
        )


def test_periodic_check_disables_users_gone_from_the_directory_and_refreshes_groups(
    make_app, slapd, person_in
):
    leaver, mover = person_in("staff"), person_in("staff")
    app = make_app(ldap=search_then_bind(slapd))
    clients = {uid: app.test_client() for uid in (leaver, mover)}
    for uid, client in clients.items():
        assert log_in(client, uid, USER_PASSWORD).status_code == 302
        _make_config(client, "internet")

    with app.app_context():
        quiet = run_housekeeping(controller(), db())
    assert quiet.directory == {"checked": 2, "disabled": [], "profiles_revoked": {}, "error": None}

    slapd.delete(f"uid={leaver},ou=people,{SUFFIX}")
    slapd.remove_member("staff", mover)
    with app.app_context():
        report = run_housekeeping(controller(), db())
    assert report.directory is not None
    assert report.directory["disabled"] == [leaver]
    assert report.directory["profiles_revoked"] == {mover: ["internet"]}
    assert _active_names(app, "internet") == []
    gone = _user(app, leaver)
    assert gone is not None and gone.is_disabled
    assert clients[leaver].get("/").status_code == 302  # the leaver's portal session ended
    assert clients[mover].get("/").status_code == 200
    # Back in the directory, still refused: an admin enables the account here.
    slapd.add(person(leaver))
    assert log_in(app.test_client(), leaver, USER_PASSWORD).status_code == 401


def test_periodic_check_changes_nobody_while_the_directory_is_down(make_app, slapd, person_in):
    uid = person_in("staff")
    app = make_app(ldap=search_then_bind(slapd))
    assert log_in(app.test_client(), uid, USER_PASSWORD).status_code == 302
    down = make_app(ldap=search_then_bind(slapd, uri="ldaps://127.0.0.1:9"))
    with down.app_context():
        report = run_housekeeping(controller(), db())
    assert report.directory is not None
    assert report.directory["error"] and report.directory["disabled"] == []
    user = _user(down, uid)
    assert user is not None and not user.is_disabled
