"""The node: its own key and certificate, one OpenVPN process per planned listener run by
systemd, each on its planned port; then the profile scaled down to one process (the surplus
unit stopped, disabled and its config gone), check mode of that play reporting no change,
and the profile scaled back up to where converge left it.

The tests run in file order: the scaling tests change the node and restore it at the end."""

import pytest
from modules_converge import converge

testinfra_hosts = ["ansible://node-x1"]

PROFILE_DIR = "/etc/openvpn/server/internet"
# The plan converge asks for: 2 processes of 198.18.64.0/24 and 2001:db8:200::/64. With two
# processes one is TCP (networks that block UDP are served), UDP first; equal /25 slices.
PLAN = [
    ("internet-0", "udp", 1194, "198.18.64.0 255.255.255.128", "2001:db8:200::/112"),
    ("internet-1", "tcp", 1194, "198.18.64.128 255.255.255.128", "2001:db8:200::1:0/112"),
]


def unit(name):
    return "openvpn-server@" + name


def main_pid(host, name):
    return int(host.check_output("systemctl show -p MainPID --value %s", unit(name)))


def listeners(host, proto, port):
    """The sockets listening on proto/port, as ss prints them (with the owning processes)."""
    flag = "-u" if proto == "udp" else "-t"
    return host.check_output(f"ss -Hlnp {flag} 'sport = :{int(port)}'")


def assert_running(host, name, proto, port):
    service = host.service(unit(name))
    assert service.is_running, host.run("journalctl -u %s -n 30 --no-pager", unit(name)).stdout
    assert service.is_enabled
    pid = main_pid(host, name)
    sockets = listeners(host, proto, port)
    # udp6/tcp6-server: one dual-stack socket on [::], owned by the unit's main process.
    assert '"openvpn",pid=%d,' % pid in sockets, sockets
    assert "*:%d" % port in sockets or "[::]:%d" % port in sockets, sockets
    assert host.file("/run/openvpn-server/%s.sock" % name).is_socket


def assert_gone(host, name, proto, port):
    service = host.service(unit(name))
    assert not service.is_running
    assert not service.is_enabled
    assert not host.file("/etc/openvpn/server/%s.conf" % name).exists
    assert listeners(host, proto, port).strip() == ""


def test_key_stays_on_the_node_and_matches_its_certificate(host):
    key = host.file(PROFILE_DIR + "/server.key")
    assert (key.user, key.mode) == ("root", 0o600)
    key_pub = host.check_output("openssl pkey -in %s/server.key -pubout", PROFILE_DIR)
    cert_pub = host.check_output("openssl x509 -in %s/server.crt -noout -pubkey", PROFILE_DIR)
    assert key_pub == cert_pub
    ca, crl, cert = (PROFILE_DIR + name for name in ("/ca.crt", "/crl.pem", "/server.crt"))
    host.run_expect([0], "openssl verify -crl_check -CAfile %s -CRLfile %s %s", ca, crl, cert)


@pytest.mark.parametrize(("name", "proto", "port", "ipv4", "ipv6"), PLAN)
def test_each_planned_process_has_its_config(host, name, proto, port, ipv4, ipv6):
    config = host.file("/etc/openvpn/server/%s.conf" % name)
    assert (config.user, config.mode) == ("root", 0o644)
    lines = config.content_string.splitlines()
    assert ("proto udp6" if proto == "udp" else "proto tcp6-server") in lines
    assert "port %d" % port in lines
    assert "server %s" % ipv4 in lines
    assert "server-ipv6 %s" % ipv6 in lines
    assert "management /run/openvpn-server/%s.sock unix" % name in lines
    assert "key %s/server.key" % PROFILE_DIR in lines
    assert "BEGIN" not in config.content_string  # key material stays in its files


@pytest.mark.parametrize(("name", "proto", "port", "ipv4", "ipv6"), PLAN)
def test_each_planned_process_runs_as_its_unit_on_its_port(host, name, proto, port, ipv4, ipv6):
    assert_running(host, name, proto, port)


def test_no_other_process_of_the_profile(host):
    configs = host.check_output("ls /etc/openvpn/server/").split()
    assert sorted(c for c in configs if c.endswith(".conf")) == ["internet-0.conf", "internet-1.conf"]
    units = host.check_output(
        "systemctl list-units --all --plain --no-legend 'openvpn-server@*' | awk '{print $1}'"
    ).split()
    assert sorted(units) == [unit("internet-0") + ".service", unit("internet-1") + ".service"]


def test_scale_down_removes_the_surplus_process(host):
    changed, output = converge(1)
    # Only the instances task changes: the CA, key, CSR, certificate and files are kept.
    assert changed == {"controller": 0, "node-x1": 1}, output[-6000:]
    assert "openvpn-server@internet-1" in output  # in the module's 'removed'
    assert_gone(host, "internet-1", "tcp", 1194)
    # Nothing answers on its management socket any more. (OpenVPN has dropped to nobody by the
    # time it stops and cannot unlink the socket in /run/openvpn-server: the file may stay.)
    assert host.check_output("ss -Hlx src /run/openvpn-server/internet-1.sock").strip() == ""
    # The remaining process now serves the whole range and was restarted with its new config.
    lines = host.file("/etc/openvpn/server/internet-0.conf").content_string.splitlines()
    assert "server 198.18.64.0 255.255.255.0" in lines
    assert_running(host, "internet-0", "udp", 1194)


def test_check_mode_of_the_scaled_down_play_changes_nothing(host):
    changed, output = converge(1, check=True)
    assert changed == {"controller": 0, "node-x1": 0}, output[-6000:]
    assert_gone(host, "internet-1", "tcp", 1194)


def test_scale_back_up_restores_the_converged_node(host):
    changed, output = converge(2)
    assert changed == {"controller": 0, "node-x1": 1}, output[-6000:]
    for name, proto, port, _, _ in PLAN:
        assert_running(host, name, proto, port)
    changed, output = converge(2, check=True)
    assert changed == {"controller": 0, "node-x1": 0}, output[-6000:]
