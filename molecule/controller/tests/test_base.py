"""The base layer of site.yml, checked on every host it converges (the controller and a node of each
location): systemd up with no failed unit after the whole converge, the configuration directory,
the host's record of its place in the fleet, the packages every vpnfleet host needs."""

import yaml

testinfra_hosts = ["controller", "node-x1", "node-y1"]

# The lab inventory's locations; the controller is in none.
LOCATIONS = {"node-x1": "x", "node-y1": "y"}


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
    location = LOCATIONS.get(hostname, "")
    assert record["location"] == location
    if location:
        assert f"vpnfleet_location_{location}" in record["groups"]
        assert "vpnfleet_nodes" in record["groups"]
    else:
        assert "vpnfleet_controllers" in record["groups"]


def test_packages_from_the_image(host):
    for package in ("openssl", "ca-certificates", "python3-cryptography", "python3-venv"):
        assert host.package(package).is_installed
