"""The settings file is checked at start-up, and every refusal names the setting and the reason."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from vpnfleet.shared import files
from vpnfleet.shared.pki import authority, keys

from vpnfleet.daemon.api import crl_status
from vpnfleet.daemon.server import create_server
from vpnfleet.daemon.settings import DaemonSettings
from vpnfleet.daemon.tls import metrics_server_context
from vpnfleet.settings_file import SettingsError


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    ca = authority.CertificateAuthority.create(str(tmp_path / "ca"), common_name="vfd settings CA")
    key, cert = ca.issue("vfd-node-daemon", "daemon_server")
    files.write_file_atomic(tmp_path / "daemon.crt", keys.certificate_pem(cert))
    files.write_file_atomic(tmp_path / "daemon.key", keys.private_key_pem(key), 0o600)
    return {
        "tls_certificate": str(tmp_path / "daemon.crt"),
        "tls_private_key": str(tmp_path / "daemon.key"),
        "tls_ca": ca.cert_path,
    }


def test_defaults_fill_what_the_file_leaves_out(tls_files):
    settings = DaemonSettings.from_mapping(tls_files)
    assert settings.listen_port == 41194
    assert settings.listen_address == "::"
    assert settings.management_socket_glob == "/run/openvpn-server/*.sock"
    assert settings.tls_ca == Path(tls_files["tls_ca"])


def test_the_wireguard_interfaces_are_read_with_their_ranges(tls_files):
    settings = DaemonSettings.from_mapping(
        {**tls_files, "wireguard": [{**WG, "ipv6_range": "2001:db8:104::/66"}]}
    )
    [interface] = settings.wireguard
    assert (interface.name, interface.port, str(interface.ipv4_range), str(interface.ipv6_range)) == (
        "wg-internet",
        51820,
        "198.18.4.0/26",
        "2001:db8:104::/66",
    )
    assert DaemonSettings.from_mapping(tls_files).wireguard == ()


def test_json_is_read_as_well_as_yaml(tls_files, tmp_path):
    config = tmp_path / "daemon.json"
    config.write_text(
        '{"listen_address": "198.51.100.129", "management_timeout": 1, %s}'
        % (", ".join(f'"{name}": "{path}"' for name, path in tls_files.items()))
    )
    settings = DaemonSettings.from_file(config)
    assert (settings.listen_address, settings.management_timeout) == ("198.51.100.129", 1.0)


WG = {"profile_id": "internet", "interface": "wg-internet", "port": 51820, "ipv4_range": "198.18.4.0/26"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"listen_port": 0}, "listen_port: must be an integer from 1 to 65535"),
        ({"listen_port": "41194"}, "listen_port: must be an integer"),
        ({"listen_port": True}, "listen_port: must be an integer"),
        ({"listen_address": "node.example"}, "listen_address: not an IPv4 or IPv6 address"),
        ({"management_timeout": 0}, "management_timeout: must be more than 0"),
        ({"management_timeout": "2s"}, "management_timeout: must be a number"),
        ({"management_socket_glob": "*.sock"}, "management_socket_glob: must be an absolute path"),
        ({"tls_ca": "ca.crt"}, "tls_ca: must be an absolute path"),
        ({"tls_certificate": "/nonexistent/daemon.crt"}, "tls_certificate: no such file"),
        ({"listen_prot": 41194}, "unknown setting(s) listen_prot"),
        ({"metrics_listen_port": 70000}, "metrics_listen_port: must be an integer from 1 to 65535"),
        ({"metrics_listen_port": 41194}, "metrics_listen_port: must differ from listen_port"),
        ({"metrics_listen_port": 9194}, "metrics_client_certificates: is required with metrics_listen_port"),
        (
            {"metrics_listen_port": 9194, "metrics_client_certificates": "/nonexistent/monitoring.crt"},
            "metrics_client_certificates: no such file",
        ),
        (
            {"metrics_listen_port": 9194, "metrics_client_certificates": "/etc/hostname"},
            "metrics_tls_certificate: is required with metrics_listen_port",
        ),
        (
            {
                "metrics_listen_port": 9194,
                "metrics_client_certificates": "/etc/hostname",
                "metrics_tls_certificate": "/etc/hostname",
            },
            "metrics_tls_private_key: is required with metrics_listen_port",
        ),
        ({"metrics_tls_certificate": "metrics.crt"}, "metrics_tls_certificate: must be an absolute path"),
        ({"metrics_tls_private_key": "/nonexistent/metrics.key"}, "metrics_tls_private_key: no such file"),
        ({"tls_private_key": None}, "tls_private_key: is required"),
        (
            {"wireguard": [{**WG, "interface": "wg-a-name-far-too-long"}]},
            "wireguard[0].interface: 'wg-a-name-far",
        ),
        ({"wireguard": [{**WG, "port": 0}]}, "wireguard[0].port: must be an integer from 1 to 65535"),
        (
            {"wireguard": [{**WG, "ipv4_range": "198.18.4.1/26"}]},
            "wireguard[0].ipv4_range: not a CIDR network",
        ),
        (
            {"wireguard": [{**WG, "ipv4_range": "2001:db8::/64"}]},
            "wireguard[0].ipv4_range: ipv4_range must be",
        ),
        ({"wireguard": [{**WG, "slice": 1}]}, "wireguard[0]: unknown setting(s) slice"),
        (
            {"wireguard": [WG, {**WG, "interface": "wg-office"}]},
            "wireguard[1].ipv4_range: 198.18.4.0/26 overlaps",
        ),
        (
            {"wireguard": [WG, {**WG, "ipv4_range": "198.18.5.0/26"}]},
            "wireguard[1].interface: wg-internet is named twice",
        ),
        ({"wireguard_command": "wg"}, "wireguard_command: must be an absolute path"),
    ],
)
def test_a_wrong_setting_is_named_with_the_file_and_the_reason(tls_files, tmp_path, change, reason):
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump({**tls_files, **change}))
    with pytest.raises(SettingsError) as refusal:
        DaemonSettings.from_file(path)
    assert str(refusal.value).startswith(f"{path}: {reason}")


def test_a_key_that_does_not_match_the_certificate_is_refused_at_start(tls_files, tmp_path):
    other_key = tmp_path / "other.key"
    files.write_file_atomic(other_key, keys.private_key_pem(keys.make_private_key()), 0o600)
    settings = DaemonSettings.from_mapping({**tls_files, "tls_private_key": str(other_key)})
    with pytest.raises(SettingsError, match="tls_certificate/tls_private_key: cannot use"):
        create_server(settings)


def test_a_metrics_key_that_does_not_match_its_certificate_is_refused_at_start(tls_files, tmp_path):
    other_key = tmp_path / "other.key"
    files.write_file_atomic(other_key, keys.private_key_pem(keys.make_private_key()), 0o600)
    settings = DaemonSettings.from_mapping(
        {
            **tls_files,
            "metrics_listen_port": 9194,
            "metrics_client_certificates": tls_files["tls_ca"],
            "metrics_tls_certificate": tls_files["tls_certificate"],
            "metrics_tls_private_key": str(other_key),
        }
    )
    with pytest.raises(SettingsError, match="metrics_tls_certificate/metrics_tls_private_key: cannot use"):
        metrics_server_context(settings)


def test_the_command_exits_2_with_a_clear_message(tls_files, tmp_path):
    config = tmp_path / "daemon.yaml"
    config.write_text(yaml.safe_dump({**tls_files, "listen_port": 70000}))
    result = subprocess.run(
        [sys.executable, "-m", "vpnfleet.daemon", "--settings", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert f"vpnfleet-daemon: {config}: listen_port: must be an integer from 1 to 65535" in result.stderr
    assert "Traceback" not in result.stderr

    missing = subprocess.run(
        [sys.executable, "-m", "vpnfleet.daemon", "--settings", str(tmp_path / "absent.yaml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "cannot read the settings file" in missing.stderr


def test_a_file_that_is_no_crl_starts_the_daemon_which_says_so(tls_files, tmp_path):
    """The daemon starts all the same: the controller's next push (POST /crl) repairs the file."""
    not_a_crl = tmp_path / "crl.pem"
    not_a_crl.write_text("not a CRL\n")
    server = create_server(DaemonSettings.from_mapping({**tls_files, "tls_crl": str(not_a_crl)}))
    try:
        assert crl_status(server.state) == {
            "stale": True,
            "error": f"no CRL of this node's CA in {not_a_crl}",
        }
    finally:
        server.server_close()
