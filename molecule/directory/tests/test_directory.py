"""LDAP login on the lab's real hosts: an LDAP user logs in to the portal over HTTPS, gets the
profiles of their directory groups, downloads a config and connects; removed from the group in
the directory, at the next login they lose the profile, and their config of it is revoked and
dropped. A wrong password and an unknown user get the same answer; a directory that is down a
clear 503, while the inventory's local users still log in. The tests run in file order."""

import re
import urllib.error

import pytest
from lab_portal import ALICE, Browser, PortalClient, csrf
from lab_testinfra import lab_host, wait_for

DORA = ("dora", "lab-dora-directory-password")
SUFFIX = "dc=lab,dc=example"
ADMIN_BIND = ["-x", "-H", "ldapi:///", "-D", f"cn=admin,{SUFFIX}", "-w", "lab-directory-admin-password"]

testinfra_hosts = ["controller"]


@pytest.fixture(scope="module")
def tls_context(fleet_tls_context):
    return fleet_tls_context


@pytest.fixture(scope="module")
def state():
    return {}


def try_login(tls_context, username, password):
    """The portal's answer to a login: status and page (4xx and 5xx included)."""
    browser = Browser(tls_context)
    _, _, page = browser.get("/login")
    fields = {"csrf_token": csrf(page), "username": username, "password": password, "next": ""}
    try:
        status, _, answer = browser.post("/login", fields, "/login")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    return status, answer


def login_error(page):
    found = re.search(r'id="login-error">([^<]*)<', page)
    assert found, page
    return found.group(1)


def profiles_offered(home):
    return set(re.findall(r'<option value="([a-z0-9-]+)"', home))


def directory(command):
    return lab_host("directory").check_output(command)


def test_an_ldap_user_gets_the_profiles_of_their_groups_and_connects(tls_context, client, state):
    dora = Browser(tls_context)
    home = dora.login(*DORA)
    assert profiles_offered(home) == {"internet", "office"}  # internet is for staff
    _, headers, config = dora.post(
        "/configs", {"csrf_token": csrf(home), "profile_id": "internet", "display_name": "laptop"}
    )
    assert headers.get_content_type() == "application/x-openvpn-profile"
    vpn = PortalClient(client, "dora-laptop", config).start()
    state.update(vpn=vpn)
    vpn.wait_connected()
    gateway = vpn.interface().network.network_address + 1
    client.check_output(f"ping -c 3 -W 2 {gateway}")


def test_removed_from_the_group_at_next_login_the_profile_and_its_config_are_gone(tls_context, state):
    vpn = state["vpn"]
    before = len(vpn.log_text())
    ldif = (
        f"dn: cn=staff,ou=groups,{SUFFIX}\nchangetype: modify\n"
        f"delete: member\nmember: uid=dora,ou=people,{SUFFIX}\n"
    )
    directory(f"printf '{ldif}' | ldapmodify {' '.join(ADMIN_BIND)}")
    home = Browser(tls_context).login(*DORA)
    assert profiles_offered(home) == {"office"}
    assert "laptop" not in home  # the config of the lost profile is revoked
    wait_for(
        lambda: re.search(r"SIGUSR1|SIGTERM|Connection reset|AUTH_FAILED|RESTART", vpn.log_text()[before:]),
        "the node to drop the client:\n" + vpn.log_text()[before:],
    )
    vpn.stop()


def test_wrong_password_and_unknown_user_get_the_same_answer(tls_context):
    wrong = try_login(tls_context, DORA[0], "not-the-password")
    unknown = try_login(tls_context, "nobody", DORA[1])
    assert wrong[0] == unknown[0] == 401
    assert login_error(wrong[1]) == login_error(unknown[1]) == "Wrong user name or password."


def test_a_directory_that_is_down_is_a_clear_503_and_local_users_still_log_in(tls_context):
    directory("systemctl stop slapd")
    try:
        status, page = try_login(tls_context, *DORA)
        assert status == 503
        assert login_error(page).startswith("The directory cannot be reached now")
        Browser(tls_context).login(*ALICE)  # the inventory's local user: break-glass
    finally:
        directory("systemctl start slapd")
    wait_for(lambda: try_login(tls_context, *DORA)[0] == 200, "the directory to answer again")
