"""The ldap and oidc settings: a wrong one stops the service with the setting and the reason."""

from __future__ import annotations

import pytest
from controller_helpers import settings_mapping

from vpnfleet.controller.settings import settings_from_mapping
from vpnfleet.settings_file import SettingsError

LDAP = {"uri": "ldaps://directory.example.org", "user_search_base": "ou=people,dc=example,dc=org"}
OIDC = {"issuer": "https://login.example.org", "client_id": "vpn", "client_secret": "s" * 20}


@pytest.fixture
def mapping(pki_dir):
    return settings_mapping(pki_dir, "sqlite://", 0)


def test_valid_login_settings_load(mapping, tmp_path):
    secret = tmp_path / "bind-password"
    secret.write_text("the service account's password\n")
    mapping["ldap"] = {**LDAP, "bind_dn": "cn=portal,dc=example,dc=org", "bind_password_file": str(secret)}
    mapping["oidc"] = {**OIDC, "groups_claim": "groups"}
    settings = settings_from_mapping(mapping)
    assert settings.ldap is not None and settings.oidc is not None
    assert settings.ldap.bind_password == "the service account's password"  # noqa: S105
    assert settings.ldap.can_search and settings.ldap.user_id_attribute == "uid"
    assert settings.oidc.issuer == "https://login.example.org" and settings.oidc.user_id_claim == "sub"


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("ldap", {"uri": "https://directory"}, "ldap.uri: 'https://directory' must be ldap://"),
        ("ldap", {"start_tls": True}, "ldap.start_tls: ldaps:// is TLS already"),
        ("ldap", {"bind_dn_template": "uid={username},dc=x"}, "set exactly one of bind_dn_template"),
        ("ldap", {"user_search_base": None}, "set exactly one of bind_dn_template"),
        ("ldap", {"user_search_filter": "(uid=*)"}, "ldap.user_search_filter: must hold {username}"),
        ("ldap", {"bind_dn": "cn=portal"}, "ldap.bind_password: is required"),
        (
            "ldap",
            {"group_attribute": "member Of"},
            "ldap.group_attribute: 'member Of' is not an LDAP attribute",
        ),
        ("ldap", {"ca_file": "/nonexistent/ca.crt"}, "ldap.ca_file: /nonexistent/ca.crt is not a file"),
        ("ldap", {"timeout_seconds": 0}, "ldap.timeout_seconds: must be more than 0"),
        ("ldap", {"bind_pasword": "x"}, "ldap: unknown setting(s) bind_pasword"),
        (
            "oidc",
            {"issuer": "http://login.example.org"},
            "oidc.issuer: 'http://login.example.org' must be an https",
        ),
        ("oidc", {"client_secret": None}, "oidc.client_secret: is required"),
        ("oidc", {"scope": "profile"}, "oidc.scope: 'profile' must include openid"),
    ],
)
def test_wrong_login_settings_name_the_setting(mapping, section, change, message):
    mapping[section] = {**(LDAP if section == "ldap" else OIDC), **change}
    with pytest.raises(SettingsError) as refusal:
        settings_from_mapping(mapping)
    assert message in str(refusal.value)
