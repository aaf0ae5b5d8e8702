"""The hooks' settings file, the shim installer and the deferred-file protocol (no root needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vpnfleet.hooks.cli import install_shim, main
from vpnfleet.hooks.hook import write_deferred_result
from vpnfleet.hooks.settings import HookSettings
from vpnfleet.settings_file import SettingsError


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "hooks.token"
    path.write_text("secret-token-value\n")
    path.chmod(0o640)
    return path


def _settings(token_path: Path, **overrides) -> dict:
    data = {
        "controller_url": "https://vpn.example.org/",
        "node_name": "node-x1",
        "token_file": str(token_path),
    }
    data.update(overrides)
    return data


def test_defaults_and_no_token_in_repr(token_file):
    settings = HookSettings.from_mapping(_settings(token_file))
    assert settings.node_api_url == "https://vpn.example.org/node-api/v1"
    assert (settings.timeout_seconds, settings.crl_file, settings.ca_file) == (3.0, None, None)
    assert settings.token == "secret-token-value" and "secret" not in repr(settings)  # noqa: S105


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"controller_url": "http://vpn.example.org"},
            "controller_url: 'http://vpn.example.org' must be an https://",
        ),
        ({"node_name": None}, "node_name: is required"),
        (
            {"unreachable_policy": "allow"},
            "unreachable_policy: retired: with no valid answer from the controller",
        ),
        ({"unreachable_policy": "deny"}, "only while the node's CRL (crl_file) is fresh, never on a policy"),
        ({"crl_file": "crl.pem"}, "crl_file: must be an absolute path (got 'crl.pem')"),
        ({"crl_ca_file": "/etc/ca.crt"}, "crl_ca_file: is set without crl_file"),
        ({"timeout_seconds": 60}, "timeout_seconds: 60 is not between 0.1 and 30.0"),
        ({"timeout_seconds": "3"}, "timeout_seconds: must be a number, got '3'"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file: cannot read /nonexistent/ca.pem"),
        ({"token_file": "/nonexistent/token"}, "token_file: cannot read /nonexistent/token"),
        ({"profile_id": "Office!"}, "profile_id: profile id 'Office!': use 1 to 32 of a-z"),
        ({"timeout": 3}, "unknown setting(s) timeout"),
    ],
)
def test_wrong_settings_are_named(token_file, overrides, message):
    with pytest.raises(SettingsError) as error:
        HookSettings.from_mapping(_settings(token_file, **overrides))
    assert message in str(error.value)


def test_token_readable_by_others_is_refused(token_file):
    token_file.chmod(0o644)
    with pytest.raises(
        SettingsError, match=r"token_file: .* is accessible to others \(mode 0644\); make it 0640"
    ):
        HookSettings.from_mapping(_settings(token_file))


def test_check_settings_cli(tmp_path, token_file, capsys):
    config = tmp_path / "hooks.yaml"
    config.write_text(yaml.safe_dump(_settings(token_file, crl_file="/var/lib/vpnfleet-crl/crl.pem")))
    assert main(["--settings", str(config), "check-settings"]) == 0
    assert "CRL /var/lib/vpnfleet-crl/crl.pem" in capsys.readouterr().out
    config.write_text("controller_url: [")
    assert main(["--settings", str(config), "check-settings"]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_install_shim_is_idempotent_and_runs_under_sh(tmp_path):
    shim = tmp_path / "libexec" / "vpnfleet-openvpn-hook"
    assert install_shim(shim, tmp_path / "hooks.yaml") is True
    assert install_shim(shim, tmp_path / "hooks.yaml") is False
    assert shim.stat().st_mode & 0o777 == 0o755
    subprocess.run(["sh", "-n", str(shim)], check=True)
    assert install_shim(shim, tmp_path / "other.yaml") is True


def test_shim_refuses_when_the_worker_cannot_start(tmp_path):
    """A worker that cannot start would leave the client deferred: the shim fails the connect."""
    shim = tmp_path / "hook"
    install_shim(shim, tmp_path / "missing.yaml")
    deferred = tmp_path / "ccr"
    deferred.write_text("")
    result = subprocess.run(
        [str(shim), str(tmp_path / "ccf")],
        env={"script_type": "client-connect", "client_connect_deferred_file": str(deferred)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "not readable" in result.stderr
    assert deferred.read_text() == ""


def test_deferred_result_overwrites_in_place(tmp_path):
    deferred = tmp_path / "ccr"
    deferred.write_text("2")
    write_deferred_result(str(deferred), True)
    assert deferred.read_text() == "1"
    write_deferred_result(str(deferred), False)
    assert deferred.read_text() == "0"
    # OpenVPN is done with the client and removed its file: nothing is created.
    deferred.unlink()
    with pytest.raises(FileNotFoundError):
        write_deferred_result(str(deferred), True)


def test_worker_with_broken_settings_denies_a_deferred_connect(tmp_path):
    deferred = tmp_path / "ccr"
    deferred.write_text("2")
    environment = {
        "script_type": "client-connect",
        "common_name": "abc",
        "client_connect_deferred_file": str(deferred),
        "PATH": os.environ.get("PATH", ""),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vpnfleet.hooks",
            "--settings",
            str(tmp_path / "none.yaml"),
            "run",
            "--deferred",
        ],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert deferred.read_text() == "0"
    assert "connect DENY cn=abc" in result.stderr and "cannot read the settings file" in result.stderr
