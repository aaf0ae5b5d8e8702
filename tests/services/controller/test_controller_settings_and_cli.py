"""Settings are checked at start with a message naming the setting; the CLI the role calls is
idempotent; bad requests get a 4xx with a reason, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from controller_helpers import settings_mapping
from vpnfleet.shared import fleet

from vpnfleet.controller import cli
from vpnfleet.controller.oauth_clients import DEFAULT_OAUTH_CLIENTS
from vpnfleet.controller.settings import SettingsError, load_settings, settings_from_mapping

REPO = Path(__file__).resolve().parents[3]
# node-x1's WireGuard interface of office, as the fleet plan writes it.
_WIREGUARD = {
    "profile": "office",
    "interface": "wg-office",
    "port": 51820,
    "ipv4_range": "198.19.96.0/26",
    "ipv6_range": "2001:db8:f3::/112",
    "ipv4_address": "198.19.96.1",
    "ipv6_address": "2001:db8:f3::1",
}


def _offer_wireguard(mapping) -> None:
    mapping["profiles"][0]["protocols"] = ["openvpn", "wireguard"]


def test_wireguard_settings_load(mapping):
    _offer_wireguard(mapping)
    mapping["nodes"][0]["wireguard"] = [_WIREGUARD]
    settings = settings_from_mapping(mapping)
    office = settings.profile("office")
    assert (office.protocols, office.routes, office.dns) == (
        ("openvpn", "wireguard"),
        ("203.0.113.0/24", "2001:db8:ff::/48"),
        ("203.0.113.53",),
    )
    assert settings.profile("internet").protocols == ("openvpn",)
    interface = settings.node("node-x1").wireguard_of("office")
    assert (interface.interface, interface.port, interface.ipv4_range) == (
        "wg-office",
        51820,
        "198.19.96.0/26",
    )
    assert settings.wireguard_holder_of("198.19.96.9") == (settings.node("node-x1"), interface)
    assert settings.wireguard_holder_of("198.19.97.9") is None


def test_the_fleet_plans_controller_view_of_the_lab_loads_with_its_wireguard(mapping):
    """What the controller role writes from the plan (templates/controller.yml.j2: the view's
    profiles and nodes as they are) is what the settings read: protocols, routes, DNS, and each
    node's WireGuard interface of its slice."""
    profiles = yaml.safe_load((REPO / "inventories/lab/group_vars/all/profiles.yml").read_text())[
        "vpnfleet_profiles"
    ]
    node = fleet.HostInput(
        "node-x1",
        ("vpnfleet_nodes", "vpnfleet_location_x"),
        {"vpnfleet_profiles": profiles, "vpnfleet_location": "x", "vpnfleet_public_address": "198.51.100.10"},
        2,
    )
    controller = fleet.HostInput("controller", ("vpnfleet_controllers",), {"vpnfleet_profiles": profiles})
    groups = {
        "vpnfleet_controllers": ["controller"],
        "vpnfleet_nodes": ["node-x1"],
        "vpnfleet_location_x": ["node-x1"],
    }
    view = fleet.plan_fleet({"controller": controller, "node-x1": node}, groups).as_dict()["controller"]
    nodes = [dict(entry, api_token_sha256="a" * 64) for entry in view["nodes"]]
    settings = settings_from_mapping(dict(mapping, profiles=view["profiles"], nodes=nodes))
    internet = settings.profile("internet")
    assert internet.protocols == ("wireguard", "openvpn") and internet.dns_search == ("lab.example",)
    interface = settings.node("node-x1").wireguard_of("internet")
    assert (interface.interface, interface.port, interface.ipv4_address) == (
        "wg-internet",
        51820,
        "198.18.4.1",
    )


@pytest.fixture
def mapping(pki_dir):
    return settings_mapping(pki_dir, "sqlite:///unused.sqlite", 41194)


def test_valid_settings_load(mapping, tmp_path):
    path = tmp_path / "controller.yml"
    path.write_text(yaml.safe_dump(mapping))
    settings = load_settings(path)
    assert [profile.id for profile in settings.profiles] == ["office", "internet"]
    assert settings.max_configs_per_user == 3 and settings.session_expiry.days == 90
    assert settings.node("node-y1").location == "location-y"
    assert (settings.api_connect_limit, settings.api_connect_window.total_seconds()) == (20, 3600)
    assert settings.login_delay_max.total_seconds() == 300


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["profiles"][0].update(id="Office!"), "profiles[0].id: profile id 'Office!': use 1"),
        (lambda m: m["profiles"][0].update(default_gateway="maybe"), "profiles[0].default_gateway"),
        (lambda m: m["profiles"][1].update(id="office"), "profile id is used twice"),
        (lambda m: m["nodes"][0]["processes"][0].update(profile="nosuch"), "nodes[0].processes[0].profile"),
        (
            lambda m: m["nodes"][0]["processes"][1].update(proto="udp"),
            "udp/1194 is used twice on node node-x1",
        ),
        (lambda m: m["nodes"][0]["processes"][0].update(port=70000), "is not a port number"),
        (lambda m: m["nodes"][0].update(api_token_sha256="abc"), "nodes[0].api_token_sha256"),  # noqa: S106
        (lambda m: m.update(session_expiry="forever"), "session_expiry"),
        (lambda m: m.update(secret_key="short"), "secret_key"),  # noqa: S106
        (lambda m: m.pop("daemon_client"), "daemon_client: is required"),
        (lambda m: m.update(max_configs_per_user=True), "max_configs_per_user: must be an integer"),
        (lambda m: m.update(api_connect_limit=0), "api_connect_limit: must be at least 1"),
        (lambda m: m.update(crl_lifetime="10s"), "crl_lifetime: must be at least 20s"),
        (lambda m: m.update(crl_push_timeout_seconds=0), "crl_push_timeout_seconds: must be more than 0"),
        (lambda m: m.update(api_connect_window="soon"), "api_connect_window"),
        (lambda m: m.update(login_delay_max="0s"), "login_delay_max"),
        (lambda m: m["profiles"][0].update(protocols=["ipsec"]), "profiles[0].protocols: must list openvpn"),
        (lambda m: m["profiles"][0].update(protocols=[]), "profiles[0].protocols: must list"),
        (
            lambda m: m["profiles"][0].update(routes=["198.51.100.1/24"]),
            "profiles[0].routes: 198.51.100.1/24",
        ),
        (
            lambda m: m["nodes"][0].update(wireguard=[dict(_WIREGUARD, profile="internet")]),
            "nodes[0].wireguard[0].profile: no WireGuard profile 'internet'",
        ),
        (
            lambda m: (
                _offer_wireguard(m)
                or m["nodes"][0].update(wireguard=[dict(_WIREGUARD, ipv4_range="2001:db8::/64")])
            ),
            "nodes[0].wireguard[0].ipv4_range: '2001:db8::/64' is not IPv4",
        ),
        (
            lambda m: _offer_wireguard(m) or m["nodes"][0].update(wireguard=[dict(_WIREGUARD, port=0)]),
            "nodes[0].wireguard[0].port: 0 is not a port number",
        ),
    ],
)
def test_wrong_settings_name_the_setting(mapping, change, message):
    change(mapping)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings_from_mapping(mapping)


def test_a_refusal_in_the_file_names_the_file_the_setting_and_the_reason(mapping, tmp_path):
    path = tmp_path / "controller.yml"
    path.write_text(yaml.safe_dump({**mapping, "max_configs_per_user": 0}))
    with pytest.raises(SettingsError) as refusal:
        load_settings(path)
    assert str(refusal.value) == f"{path}: max_configs_per_user: must be at least 1"


def test_default_oauth_clients_are_the_eduvpn_and_lets_connect_apps():
    clients = {client.client_id: client for client in DEFAULT_OAUTH_CLIENTS}
    assert set(clients) == {
        f"org.{brand}.app.{platform}"
        for brand in ("eduvpn", "letsconnect-vpn")
        for platform in ("windows", "android", "ios", "macos", "linux")
    }
    assert clients["org.eduvpn.app.windows"].accepts_redirect_uri("http://127.0.0.1:54321/callback")
    assert clients["org.eduvpn.app.windows"].accepts_redirect_uri("http://[::1]:8080/callback")
    assert not clients["org.eduvpn.app.windows"].accepts_redirect_uri("http://127.0.0.1:54321/callback/x")
    assert not clients["org.eduvpn.app.windows"].accepts_redirect_uri(
        "http://127.0.0.1.evil.example:1/callback"
    )
    assert clients["org.eduvpn.app.android"].accepts_redirect_uri("org.eduvpn.app:/api/callback")
    assert clients["org.letsconnect-vpn.app.ios"].accepts_redirect_uri(
        "org.letsconnect-vpn.app.ios:/api/callback"
    )


def test_cli_user_is_idempotent(pki_dir, database_url, tmp_path, monkeypatch, capsys):
    path = tmp_path / "controller.yml"
    path.write_text(yaml.safe_dump(settings_mapping(pki_dir, database_url, 41194)))
    assert cli.main(["--settings", str(path), "migrate"]) == 0
    assert cli.main(["--settings", str(path), "migrate"]) == 0  # a second migrate is a no-op

    def run_user(*arguments, password="a password of alice"):  # noqa: S107
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        capsys.readouterr()
        assert cli.main(["--settings", str(path), "user", "alice", "--password-stdin", *arguments]) == 0
        return json.loads(capsys.readouterr().out)

    assert run_user("--group", "staff") == {"changed": True, "created": True}
    assert run_user("--group", "staff") == {"changed": False, "created": False}
    assert run_user("--group", "staff", "--admin") == {"changed": True, "created": False}
    assert run_user("--group", "staff", "--admin", password="a new one") == {  # noqa: S106
        "changed": True,
        "created": False,
    }
    assert run_user("--group", "staff", "--admin", password="a new one") == {  # noqa: S106
        "changed": False,
        "created": False,
    }
    assert cli.main(["--settings", str(path), "user", "bob"]) == 2  # no password to create with
    assert cli.main(["--settings", str(path), "check-settings"]) == 0
    capsys.readouterr()
    assert cli.main(["--settings", str(path), "housekeeping"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes_unreachable"] == ["node-x1", "node-y1"]


def test_cli_reports_a_bad_settings_file(tmp_path, capsys):
    path = tmp_path / "controller.yml"
    path.write_text("base_url: [unclosed")
    assert cli.main(["--settings", str(path), "migrate"]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_bad_requests_get_4xx_with_a_reason(client):
    cases = [
        (client.get("/api/v3/nosuch"), 404),
        (client.get("/api/v3/connect"), 405),
        (client.post("/oauth/token", data={"grant_type": "password"}), 400),
        (client.post("/oauth/token", data={}), 400),
        (client.post("/login", data={"username": "x" * 200_000}), 413),
        (client.get("/configs/abc/delete"), 404),
        (client.post("/login", data={"username": "x"}), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.get_data(as_text=True)
        body = response.get_data(as_text=True)
        assert "Traceback" not in body
        if response.is_json:
            assert response.get_json()["error"]
        else:
            assert 'id="reason"' in body or "error" in body.lower()
