"""Planning a profile's OpenVPN processes and rendering their configs."""

import ipaddress
import os
import shutil
import subprocess
import threading

import pytest
from vpnfleet.shared import files, instances
from vpnfleet.shared.pki import authority, keys

V4 = "198.18.0.0/24"
V6 = "2001:db8:100::/64"


def slices(plan):
    return [str(process.ipv4) for process in plan.processes]


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 16, 64])
def test_one_process_per_core_covering_the_range(cores):
    plan = instances.plan_profile("internet", "198.18.0.0/20", V6, cores=cores)
    assert len(plan.processes) == cores
    networks = [process.ipv4 for process in plan.processes]
    # The slices cover the range exactly: nothing wasted, nothing overlapping.
    assert list(ipaddress.collapse_addresses(networks)) == [ipaddress.ip_network("198.18.0.0/20")]
    assert sum(network.num_addresses for network in networks) == 4096
    prefixes = {network.prefixlen for network in networks}
    assert max(prefixes) - min(prefixes) <= 1
    assert all(process.max_clients == process.ipv4.num_addresses - 4 for process in plan.processes)
    assert [process.index for process in plan.processes] == list(range(cores))
    ipv6 = [process.ipv6 for process in plan.processes]
    assert all(network.prefixlen == 112 and network.subnet_of(ipaddress.ip_network(V6)) for network in ipv6)
    assert len(set(ipv6)) == cores


def test_powers_of_two_match_eduvpn_equal_split():
    plan = instances.plan_profile("internet", V4, V6, cores=4)
    assert slices(plan) == ["198.18.0.0/26", "198.18.0.64/26", "198.18.0.128/26", "198.18.0.192/26"]
    assert [process.max_clients for process in plan.processes] == [60] * 4
    assert [str(process.ipv6) for process in plan.processes] == [
        "2001:db8:100::/112",
        "2001:db8:100::1:0/112",
        "2001:db8:100::2:0/112",
        "2001:db8:100::3:0/112",
    ]


def test_three_cores_use_the_whole_range_with_bigger_slices_for_udp():
    plan = instances.plan_profile("internet", V4, V6, cores=3)
    assert slices(plan) == ["198.18.0.0/25", "198.18.0.128/26", "198.18.0.192/26"]
    assert [process.proto for process in plan.processes] == ["udp", "udp", "tcp"]
    assert plan.capacity == 124 + 60 + 60


@pytest.mark.parametrize(
    "count, udp, tcp",
    [(1, 1, 0), (2, 1, 1), (3, 2, 1), (4, 3, 1), (5, 4, 1), (8, 6, 2), (16, 12, 4), (64, 48, 16)],
)
def test_default_mix_is_three_quarters_udp(count, udp, tcp):
    assert instances.protocol_mix(count) == ["udp"] * udp + ["tcp"] * tcp


def test_mix_can_be_udp_only_or_tcp_only():
    assert instances.protocol_mix(4, 0) == ["udp"] * 4
    assert instances.protocol_mix(4, 1) == ["tcp"] * 4
    assert instances.protocol_mix(4, 0.5) == ["udp", "udp", "tcp", "tcp"]
    with pytest.raises(instances.PlanError, match="between 0 and 1"):
        instances.protocol_mix(4, 1.5)


def test_ports_count_up_per_protocol_from_their_bases():
    plan = instances.plan_profile("p", V4, cores=8, udp_port_base=1200, tcp_port_base=443)
    assert plan.listeners() == [
        "udp/1200",
        "udp/1201",
        "udp/1202",
        "udp/1203",
        "udp/1204",
        "udp/1205",
        "tcp/443",
        "tcp/444",
    ]


def test_explicit_listeners_override_cores_and_put_udp_first():
    plan = instances.plan_profile(
        "p", V4, V6, cores=16, listen=["tcp/443", "udp/1194", {"proto": "udp", "port": 53}]
    )
    assert plan.listeners() == ["udp/1194", "udp/53", "tcp/443"]
    assert slices(plan) == ["198.18.0.0/25", "198.18.0.128/26", "198.18.0.192/26"]


def test_explicit_process_count_overrides_cores():
    assert len(instances.plan_profile("p", V4, cores=16, processes=2).processes) == 2


def test_names_sockets_units_and_devices():
    process = instances.plan_profile("internet", V4, V6, cores=2).processes[1]
    facts = process.as_dict()
    assert facts["management_socket"] == "/run/openvpn-server/internet-1.sock"
    assert facts["unit"] == "openvpn-server@internet-1"
    assert facts["config_path"] == "/etc/openvpn/server/internet-1.conf"
    assert facts["device"] == "tun-internet-1"
    assert facts["ipv4_gateway"] == "198.18.0.129"


def test_long_profile_ids_get_short_stable_device_names():
    names = {instances.device_name("a-very-long-profile-name", index) for index in range(64)}
    assert len(names) == 64
    assert all(len(name) <= 15 and name.startswith("tun-") for name in names)
    assert instances.device_name("a-very-long-profile-name", 3) == instances.device_name(
        "a-very-long-profile-name", 3
    )


def test_process_index_of_never_claims_another_profiles_processes():
    assert instances.process_index_of("a", "openvpn-server@a-3.service") == 3
    assert instances.process_index_of("a", "a-12.conf") == 12
    assert instances.process_index_of("a", "a-1-0.conf") is None
    assert instances.process_index_of("a-1", "a-1-0.conf") == 0
    assert instances.process_index_of("a", "a-01.conf") is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ipv4_range="198.18.0.0/29", cores=2), r"too small for 2 processes.*a /28 or larger"),
        (dict(ipv4_range="198.18.0.0/26", cores=16), r"holds at most 8.*a /25 or larger"),
        (dict(ipv4_range=V4, ipv6_range="2001:db8::/120", cores=1), r"IPv6 range .* too small"),
        (dict(ipv4_range=V4, ipv6_range="2001:db8::/111", cores=4), r"IPv6 range .* too small.*/110"),
        (dict(ipv4_range="198.18.0.1/24", cores=1), r"not a valid CIDR.*host bits"),
        (dict(ipv4_range="198.18.0.0/33", cores=1), r"not a valid CIDR"),
        (dict(ipv4_range=V6, cores=1), r"not an IPv4 network"),
        (dict(ipv4_range=V4, ipv6_range=V4, cores=1), r"not an IPv6 network"),
        (dict(ipv4_range=V4), r"give cores, processes or listen"),
        (dict(ipv4_range=V4, listen=["udp/1194", "udp/1194"]), r"udp/1194 is listed twice"),
        (dict(ipv4_range=V4, listen=["sctp/1"]), r"udp or tcp"),
        (dict(ipv4_range=V4, listen=["udp/70000"]), r"1-65535"),
        (dict(ipv4_range=V4, listen=["udp1194"]), r"proto/port"),
        (dict(ipv4_range=V4, listen=["udp/1194"], processes=2), r"processes is 2 but listen names 1"),
        (dict(ipv4_range=V4, cores=2, udp_port_base=65535, tcp_share=0), r"past 65535"),
        (dict(ipv4_range=V4, cores=1, listen_address="any"), r"not an IP address"),
    ],
)
def test_impossible_plans_are_refused_naming_the_cause(kwargs, message):
    with pytest.raises(instances.PlanError, match=message):
        instances.plan_profile("p", **kwargs)


def test_port_collisions_across_profiles_name_the_other_profile():
    internet = instances.plan_profile("internet", V4, cores=4)
    with pytest.raises(
        instances.PlanError, match=r"profile office: udp/1194, udp/1195.* used by profile internet"
    ):
        instances.plan_profile(
            "office", "198.18.1.0/24", cores=2, tcp_share=0, ports_in_use={"internet": internet.listeners()}
        )
    office = instances.plan_profile(
        "office",
        "198.18.1.0/24",
        cores=2,
        udp_port_base=1294,
        tcp_port_base=1294,
        ports_in_use={"internet": internet.listeners(), "office": ["udp/1294"]},
    )
    assert office.listeners() == ["udp/1294", "tcp/1294"]


def test_bad_profile_ids_are_refused():
    for bad in ("", "Internet", "a b", "-x", "x/y", "a" * 33):
        with pytest.raises(instances.PlanError, match="profile id"):
            instances.plan_profile(bad, V4, cores=1)


def test_ipv6_is_optional():
    plan = instances.plan_profile("v4only", V4, cores=2)
    assert all(process.ipv6 is None for process in plan.processes)
    assert plan.as_dict()["ipv6_range"] is None


def test_listening_on_an_ipv4_address_uses_ipv4_sockets():
    plan = instances.plan_profile("p", V4, cores=2, listen_address="203.0.113.5")
    assert [process.openvpn_proto for process in plan.processes] == ["udp", "tcp-server"]
    default = instances.plan_profile("p", V4, cores=2)
    assert [process.openvpn_proto for process in default.processes] == ["udp6", "tcp6-server"]


# --------------------------------------------------------------------------- rendering


def options(**overrides):
    paths = dict(
        ca_path="/etc/openvpn/server/internet/ca.crt",
        cert_path="/etc/openvpn/server/internet/server.crt",
        key_path="/etc/openvpn/server/internet/server.key",
        crl_path="/etc/openvpn/server/internet/crl.pem",
        tls_crypt_path="/etc/openvpn/server/internet/tls-crypt.key",
    )
    paths.update(overrides)
    return instances.ServerOptions(**paths)


def lines_of(text):
    return text.splitlines()


def test_full_tunnel_udp_config():
    plan = instances.plan_profile("internet", V4, V6, cores=4)
    text = instances.render_server_config(plan, plan.processes[0], options(dns_servers=("198.18.0.1",)))
    lines = lines_of(text)
    for expected in (
        "proto udp6",
        "port 1194",
        "dev tun-internet-0",
        "topology subnet",
        "server 198.18.0.0 255.255.255.192",
        "server-ipv6 2001:db8:100::/112",
        "max-clients 60",
        "tls-version-min 1.3",
        "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
        "tls-crypt /etc/openvpn/server/internet/tls-crypt.key",
        "crl-verify /etc/openvpn/server/internet/crl.pem",
        "verify-client-cert require",
        "remote-cert-tls client",
        "allow-compression no",
        "management /run/openvpn-server/internet-0.sock unix",
        # Stopping, the process sends its clients to their next remote (another node).
        "explicit-exit-notify 2",
        'push "explicit-exit-notify 1"',
        'push "redirect-gateway def1 ipv6"',
        'push "block-outside-dns"',
        'push "dhcp-option DNS 198.18.0.1"',
        # A silent node is given up after 8 s (failover within 20 s, docs/node.md).
        "keepalive 2 8",
    ):
        assert expected in lines, expected
    assert "client-to-client" not in lines
    assert not any(line.startswith(("comp-lzo", "compress")) for line in lines)
    assert "BEGIN" not in text  # no key material in a config


def test_tcp_process_gets_no_exit_notify():
    plan = instances.plan_profile("internet", V4, V6, cores=4)
    lines = lines_of(instances.render_server_config(plan, plan.processes[3], options()))
    assert "proto tcp6-server" in lines and "tcp-nodelay" in lines
    assert not any(line.startswith("explicit-exit-notify") for line in lines)
    # fast-io is for UDP sockets only (OpenVPN's manual).
    assert "fast-io" not in lines


def test_udp_processes_skip_the_poll_before_writes():
    plan = instances.plan_profile("internet", V4, V6, cores=4)
    for process in plan.processes:
        lines = lines_of(instances.render_server_config(plan, process, options()))
        assert ("fast-io" in lines) == (process.proto == "udp"), process.index


def test_split_tunnel_pushes_only_its_routes():
    plan = instances.plan_profile("office", V4, V6, cores=2)
    opts = options(
        full_tunnel=False,
        routes=("203.0.113.0/24", "2001:db8:ffff::/48"),
        dns_search_domains=("example.org",),
    )
    lines = lines_of(instances.render_server_config(plan, plan.processes[0], opts))
    assert 'push "route 203.0.113.0 255.255.255.0"' in lines
    assert 'push "route-ipv6 2001:db8:ffff::/48"' in lines
    assert 'push "dhcp-option DOMAIN-SEARCH example.org"' in lines
    assert not any("redirect-gateway" in line for line in lines)


def test_client_to_client_routes_the_whole_profile_range():
    plan = instances.plan_profile("office", V4, V6, cores=2)
    lines = lines_of(
        instances.render_server_config(
            plan, plan.processes[1], options(full_tunnel=False, client_to_client=True)
        )
    )
    assert "client-to-client" in lines
    assert 'push "route 198.18.0.0 255.255.255.0"' in lines
    assert 'push "route-ipv6 2001:db8:100::/64"' in lines


def test_options_tls12_no_aes_block_lan_hooks():
    plan = instances.plan_profile("internet", V4, cores=1)
    opts = options(
        tls_version_min="1.2",
        cpu_has_aes=False,
        block_lan=True,
        client_connect="/usr/libexec/vpnfleet/connect",
    )
    lines = lines_of(instances.render_server_config(plan, plan.processes[0], opts))
    assert "tls-version-min 1.2" in lines
    assert "data-ciphers CHACHA20-POLY1305:AES-256-GCM" in lines
    assert 'push "redirect-gateway def1 block-local"' in lines
    assert "script-security 2" in lines and "client-connect /usr/libexec/vpnfleet/connect" in lines


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(tls_version_min="1.1"), "tls_version_min"),
        (dict(routes=("198.18.0.1/24",)), "route"),
        (dict(dns_servers=("resolver",)), "DNS server"),
        (dict(extra_directives=('push "x"\nscript-security 3',)), "newlines"),
    ],
)
def test_bad_server_options_are_refused(overrides, message):
    with pytest.raises(instances.PlanError, match=message):
        options(**overrides)


def test_rendering_is_deterministic():
    plan = instances.plan_profile("internet", V4, V6, cores=4)
    first = [instances.render_server_config(plan, process, options()) for process in plan.processes]
    again = instances.plan_profile("internet", V4, V6, cores=4)
    assert first == [instances.render_server_config(again, process, options()) for process in again.processes]


needs_openvpn = pytest.mark.skipif(
    not (
        shutil.which("openvpn")
        and shutil.which("unshare")
        and os.geteuid() == 0
        and os.path.exists("/dev/net/tun")
    ),
    reason="needs openvpn, unshare, root and /dev/net/tun",
)


@needs_openvpn
@pytest.mark.parametrize("index", [0, 1], ids=["udp", "tcp"])
def test_openvpn_starts_with_the_rendered_config(tmp_path, index):
    """The real openvpn runs each rendered config up to "Initialization Sequence Completed", in a
    network namespace of its own so the host's interfaces and ports stay untouched."""
    ca = authority.CertificateAuthority.create(str(tmp_path / "ca"))
    key, cert = ca.issue("node", "server")
    (tmp_path / "server.crt").write_bytes(keys.certificate_pem(cert))
    files.write_file_atomic(str(tmp_path / "server.key"), keys.private_key_pem(key), 0o600)
    files.write_file_atomic(str(tmp_path / "tc.key"), keys.make_tls_crypt_key(), 0o600)
    opts = options(
        ca_path=ca.cert_path,
        cert_path=str(tmp_path / "server.crt"),
        key_path=str(tmp_path / "server.key"),
        crl_path=ca.crl_path,
        tls_crypt_path=str(tmp_path / "tc.key"),
        dns_servers=("198.18.0.1",),
    )
    plan = instances.plan_profile("internet", V4, V6, cores=2)
    config = tmp_path / "internet.conf"
    config.write_text(instances.render_server_config(plan, plan.processes[index], opts))
    # The management socket goes to the temporary directory; a later option overrides the config's.
    command = [
        "unshare",
        "--net",
        "openvpn",
        "--config",
        str(config),
        "--management",
        str(tmp_path / "m.sock"),
        "unix",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Only a guard against a hung process, never part of what is asserted.
    guard = threading.Timer(120, process.kill)
    guard.start()
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if "Initialization Sequence Completed" in line:
                break
    finally:
        process.terminate()
        process.wait()
        guard.cancel()
    log = "".join(output)
    assert "Initialization Sequence Completed" in log, log
    assert "WARNING" not in log and "DEPRECATED" not in log, log
    assert (
        "198.18.0.%d" % (1 + 128 * index) in log and "2001:db8:100::%s1/112" % ("1:" if index else "") in log
    )
