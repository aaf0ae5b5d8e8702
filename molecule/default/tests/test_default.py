"""The base role, checked on the real lab hosts."""

import yaml


def test_host_boots_with_systemd(host):
    state = host.run("systemctl is-system-running")
    assert state.stdout.strip() == "running", host.run("systemctl --failed --no-legend").stdout


def test_config_dir_is_roots(host):
    config_dir = host.file("/etc/vpnfleet")
    assert config_dir.is_directory
    assert (config_dir.user, config_dir.group, config_dir.mode) == ("root", "root", 0o755)


def test_host_record_names_its_place(host):
    record = yaml.safe_load(host.file("/etc/vpnfleet/host.yml").content_string)
    hostname = host.check_output("hostname")
    assert record["name"] == hostname
    if hostname.startswith("node-x"):
        assert record["location"] == "x"
        assert "vpnfleet_location_x" in record["groups"]
    else:
        assert record["location"] == ""


def test_packages_from_the_image(host):
    for package in ("openssl", "ca-certificates", "python3-cryptography", "python3-venv"):
        assert host.package(package).is_installed
