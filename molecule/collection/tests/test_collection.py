"""The hosts that the installed collection deployed: the controller's portal answers over HTTPS
with the fleet's CA, the node's daemon and OpenVPN processes run, and the services run from the
wheels that the installed collection built (the scenario's converge checks where they came from)."""

import json
import ssl
import urllib.request

from lab_testinfra import lab_host

PORTAL = "https://203.0.113.10"

testinfra_hosts = ["controller"]


def test_controller_services_run():
    controller = lab_host("controller")
    for unit in ("vpnfleet-controller.socket", "vpnfleet-controller.service", "nginx.service"):
        assert controller.service(unit).is_running, unit


def test_portal_answers_with_the_fleets_ca():
    ca_pem = lab_host("controller").file("/var/lib/vpnfleet/ca/ca.crt").content_string
    context = ssl.create_default_context(cadata=ca_pem)
    url = PORTAL + "/.well-known/vpn-user-portal"
    with urllib.request.urlopen(url, context=context, timeout=30) as answer:  # noqa: S310 - a fixed https URL
        discovery = json.loads(answer.read())
    assert discovery["api"]["http://eduvpn.org/api#3"]["api_endpoint"] == PORTAL + "/api/v3"


def test_node_daemon_and_openvpn_processes_run():
    node = lab_host("node-x1")
    assert node.service("vpnfleet-daemon.service").is_running
    plan = json.loads(node.file("/etc/vpnfleet/openvpn-plan.json").content_string)
    units = [process["unit"] for profile in plan["profiles"] for process in profile["processes"]]
    assert units
    for unit in units:
        assert node.service(unit).is_running, unit
