"""Debian 13 nodes in a fleet whose controller runs Debian 12: node-x1 with OpenVPN 2.7 from
trixie-backports, node-y1 with trixie's own 2.6. Each reports the OpenVPN it runs, runs every
planned process and its daemon (Python 3.13), and carries a real client that connects with a
config from the portal; the admin page shows the connection, so the controller reached the
node's daemon too.
"""

import json
import os
import pathlib
import re
import ssl
import subprocess

import pytest
from lab_portal import ADMIN, ALICE, NODES, Browser, PortalClient, csrf
from lab_testinfra import lab_host, wait_for

# What each node must run: the suite its image has and where its OpenVPN comes from.
EXPECTED = {
    "node-x1": {"release": "trixie", "openvpn": "2.7.", "package_suffix": "~bpo13+"},
    "node-y1": {"release": "trixie", "openvpn": "2.6.", "package_suffix": None},
}

testinfra_hosts = ["controller"]


@pytest.fixture(scope="module")
def tls_context():
    """Trust only the fleet's CA."""
    ca_pem = lab_host("controller").file("/var/lib/vpnfleet/ca/ca.crt").content_string
    return ssl.create_default_context(cadata=ca_pem)


@pytest.fixture(scope="module")
def config(tls_context):
    """The config alice downloads from the portal."""
    alice = Browser(tls_context)
    home = alice.login(*ALICE)
    _, _, text = alice.post(
        "/configs", {"csrf_token": csrf(home), "profile_id": "internet", "display_name": "trixie"}
    )
    return text


@pytest.fixture(scope="module")
def admin(tls_context):
    browser = Browser(tls_context)
    browser.login(*ADMIN)
    return browser


def node_facts(node):
    """The node's facts as the collection's node_facts module reports them."""
    return node.ansible("vpnfleet.server.node_facts", check=False)["ansible_facts"]["vpnfleet_node"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_node_runs_debian_13_and_reports_the_openvpn_it_runs(name):
    node, expected = lab_host(name), EXPECTED[name]
    assert node.system_info.codename == expected["release"]
    reported = node_facts(node)["openvpn"]
    banner = node.check_output("openvpn --version | head -n1")
    assert reported == {"version": banner.split()[1], "banner": banner}
    assert reported["version"].startswith(expected["openvpn"]), reported
    package = node.check_output("dpkg-query -W -f '${Version}' openvpn")
    print(f"{name}: {banner} (Debian package {package})")
    if expected["package_suffix"]:
        assert expected["package_suffix"] in package
    else:
        assert "~bpo" not in package


def test_wanting_backports_where_the_hosts_apt_has_none_stops_naming_host_and_variable():
    node = lab_host("node-y1")
    before = node.check_output("dpkg-query -W -f '${Version}' openvpn")
    scenario = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    run = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(pathlib.Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent),
            str(scenario / "want_backports.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        # molecule forces colours on; the message is matched as plain text.
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
    )
    # ansible-core 2.19 writes the failure to stderr, the play to stdout.
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert (
        "host node-y1: node_openvpn_backports is true, but its apt offers no OpenVPN from trixie-backports"
        in " ".join(output.split())
    ), output
    assert node.check_output("dpkg-query -W -f '${Version}' openvpn") == before


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_planned_process_and_the_daemon_run(name):
    node = lab_host(name)
    plan = json.loads(node.file("/etc/vpnfleet/openvpn-plan.json").content_string)
    for profile in plan["profiles"]:
        for process in profile["processes"]:
            assert node.service(process["unit"]).is_running, process["unit"]
            listening = node.check_output(f"ss -H -ln{process['proto'][0]}p sport = :{process['port']}")
            assert "openvpn" in listening, f"{name}: nothing on {process['proto']}/{process['port']}"
    for unit in ("vpnfleet-daemon.service", "nftables.service"):
        assert node.service(unit).is_running, f"{name}: {unit}"
    python = node.check_output("/opt/vpnfleet/daemon/bin/python -c 'import sys; print(sys.version_info[:2])'")
    assert python == "(3, 13)"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_client_with_the_portals_config_connects_through_the_node(name, client, config, admin):
    """The portal's config lists every node; the test keeps the remotes of one, so each node is tried."""
    address = next(address for address, (node, _) in NODES.items() if node == name)
    remotes = re.findall(r"^remote \S+ .*$", config, re.MULTILINE)
    assert {line.split()[1] for line in remotes} == set(NODES), config
    only_this_node = "\n".join(
        line for line in config.splitlines() if not line.startswith("remote ") or line.split()[1] == address
    )
    vpn = PortalClient(client, f"trixie-{name}", only_this_node).start()
    try:
        wait_for(
            lambda: "Initialization Sequence Completed" in vpn.log_text(),
            f"the client to connect through {name}:\n" + vpn.log_text(),
            timeout=45,
        )
        assert vpn.node()[0] == name
        gateway = vpn.interface().network.network_address + 1
        client.check_output(f"ping -c 3 -W 2 {gateway}")
        # The admin page lists it with its node: the controller asked the node's daemon.
        wait_for(
            lambda: any(
                "trixie" in row and f"<td>{name}</td>" in row
                for row in re.findall(r"<tr>(.*?)</tr>", admin.get("/admin/")[2], re.DOTALL)
            ),
            f"the admin page to list the connection through {name}",
        )
    finally:
        vpn.stop()
