"""bench/dataplane: iperf3 through OpenVPN tunnels between the lab hosts node-x1 and client.

    python -m bench.dataplane [--seconds S] [--rounds R] [--quick] [--max-processes N] [--wireguard]

What it measures, each pair side by side in one run (see docs/bench.md):

(a) the throughput of one OpenVPN server process of ours (its config rendered by the collection's
    planner/renderer, ``plugins/module_utils/instances.py``, key material from ``pki/``) against a
    minimal hand-written OpenVPN server config with the same data cipher (AES-256-GCM), on the same
    hosts at the same time; runs alternate ours/hand-written (ABBA), the median of the rounds counts;
(b) the node's CPU seconds per GB moved, from the server process's own accounting
    (``/proc/PID/stat`` utime+stime before and after each run, bytes from iperf3's JSON);
(c) ``openssl speed -evp aes-256-gcm`` per core (16 KiB blocks) on the same machine as the ceiling;
(d) the aggregate throughput of 1, 2, ... of our processes, each pinned to its own core.

With ``--wireguard``, a WireGuard interface joins (a)-(c) as a contender on the same hosts, pinned
the same way: userspace wireguard-go (this machine's kernel has no WireGuard), set up as the node role
sets it up here; its CPU is the wireguard-go process's, its ceiling ``openssl speed`` of its cipher,
ChaCha20-Poly1305. Without it (and so in ``--quick``, which CI runs) nothing changes.

It holds the lab's session lock (/run/vpnfleet-lab.session) for the whole run, boots node-x1 and
client itself and takes the lab down at the end, also on failure. It prints a table and writes
bench/results/dataplane-<timestamp>.json and bench/results/dataplane-latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import ipaddress
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import lab as lab_hosts
from bench.lab import (
    BenchError,
    Processes,
    cpu_ticks,
    interrupt_on_sigterm,
    lab,
    put,
    result_stamp,
    run_on,
    say,
    session_lock,
    sh_on,
    start_daemon,
    take_lab_arguments,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

NODE, CLIENT = "node-x1", "client"
NODE_ADDRESS = "198.51.100.10"
# Tunnel ranges: inside 198.18.0.0/15 (benchmarking), IPv6 in 2001:db8::/32 outside the lab's /48.
OURS_IPV4, OURS_IPV6 = "198.18.200.0/24", "2001:db8:200::/64"
HAND_IPV4 = "198.18.201.0/24"
SCALE_IPV4, SCALE_IPV6 = "198.18.202.0/24", "2001:db8:202::/64"
DIAG_IPV4, DIAG_IPV6 = "198.18.203.0/24", "2001:db8:203::/64"
WIREGUARD_IPV4, WIREGUARD_IPV6 = "198.18.204.0/24", "2001:db8:204::/64"
EDUVPN_IPV4, EDUVPN_IPV6 = "198.18.205.0/24", "2001:db8:205::/64"
# The ablation's variants of ours: 198.18.210.0/24, 198.18.211.0/24, ... one each.
ABLATION_IPV4_BASE, ABLATION_IPV6_BASE = "198.18.210.0", "2001:db8:210::"
# Ports away from the node role's 1194 and up (and WireGuard's 51820): nothing of ours may answer
# by accident.
OURS_PORT, HAND_PORT, SCALE_PORT_BASE, DIAG_PORT = 21194, 21294, 21394, 21494
WIREGUARD_PORT = 21594
EDUVPN_PORT, ABLATION_PORT_BASE = 21694, 21794
WIREGUARD_CLIENT_INTERFACE = "wgc-bench"
IPERF_PORT_BASE = 5201
# Above the scaling rows' IPERF_PORT_BASE + 10 + i (up to 64 processes).
ABLATION_IPERF_PORT_BASE = IPERF_PORT_BASE + 100
CIPHER = "AES-256-GCM"
# The fixed offered load: UDP datagrams small enough that the encrypted packet (inner 1428 bytes,
# plus OpenVPN's 24 and the outer IPv4+UDP 28) fits the lab's 1500-byte links unfragmented.
FIXED_LOAD_DATAGRAM = 1400
# Without --rate: this share of the slowest saturated run of any contender, so that every
# contender carries it with room to spare.
FIXED_LOAD_SHARE = 0.5
# A fixed-load run that lost more than this share of its datagrams did not carry the load.
LOSS_LIMIT_PERCENT = 0.5

# Where the files go inside the hosts.
REMOTE_DIR = "/etc/vpnfleet-bench"
RUN_DIR = "/run/vpnfleet-bench"


# ----------------------------------------------------------------------------- PKI and configs


def make_pki(folder: Path):
    from vpnfleet.shared import files
    from vpnfleet.shared.pki import authority, keys

    ca = authority.CertificateAuthority.create(str(folder / "ca"), common_name="vpnfleet bench CA")
    server_key, server_cert = ca.issue("node-x1.bench", "server", dns_names=["node-x1.bench"])
    client_key, client_cert = ca.issue("bench-client", "client")
    return {
        "ca.crt": keys.certificate_pem(ca.cert),
        "crl.pem": files.read_file(ca.crl_path),
        "server.crt": keys.certificate_pem(server_cert),
        "server.key": keys.private_key_pem(server_key),
        "client.crt": keys.certificate_pem(client_cert),
        "client.key": keys.private_key_pem(client_key),
        "tls-crypt.key": keys.make_tls_crypt_key(),
    }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def server_options():
    from vpnfleet.shared import instances

    return instances.ServerOptions(
        ca_path=f"{REMOTE_DIR}/ca.crt",
        cert_path=f"{REMOTE_DIR}/server.crt",
        key_path=f"{REMOTE_DIR}/server.key",
        crl_path=f"{REMOTE_DIR}/crl.pem",
        tls_crypt_path=f"{REMOTE_DIR}/tls-crypt.key",
        # Split tunnel without routes: the benchmark's client must keep its own default route.
        full_tunnel=False,
    )


def our_configs(profile_id: str, ipv4: str, ipv6: str, count: int, port_base: int):
    """(process plan dict, rendered config) for each process of a UDP-only profile, from the
    collection's own planner and renderer."""
    from vpnfleet.shared import instances

    plan = instances.plan_profile(
        profile_id, ipv4, ipv6, processes=count, tcp_share=0, udp_port_base=port_base
    )
    options = server_options()
    return [
        (process.as_dict(), instances.render_server_config(plan, process, options))
        for process in plan.processes
    ]


def hand_written_config() -> str:
    """What an administrator would write by hand for the same cipher: the minimum that works."""
    network = ipaddress.ip_network(HAND_IPV4)
    return "\n".join(
        [
            "# minimal hand-written OpenVPN server, for comparison",
            "verb 3",
            "dev tun-hand",
            "dev-type tun",
            "proto udp",
            f"port {HAND_PORT}",
            "topology subnet",
            f"server {network.network_address} {network.netmask}",
            f"ca {REMOTE_DIR}/ca.crt",
            f"cert {REMOTE_DIR}/server.crt",
            f"key {REMOTE_DIR}/server.key",
            "dh none",
            f"data-ciphers {CIPHER}",
            "",
        ]
    )


def eduvpn_config() -> str:
    """What eduVPN v3's portal renders for one OpenVPN process (vpn-user-portal,
    ``src/OpenVpn/ServerConfig.php``, ``getProcess``; read at 3.4.1, commit 5ae1483e), for a
    profile with one UDP port, listening on ``::`` (so ``proto udp6``), no default gateway, no
    routes and no DNS (the bench's split tunnel), AES preferred. Written from the options it
    renders, in our own words; the same hosts, cipher and key material as ours. Left out, as in
    ours here: the client-connect/-disconnect scripts (eduVPN's node runs its own; they cost
    nothing per packet) and ``log /dev/null`` (the bench reads the server's log; at verb 3 nothing
    is logged per packet). Key material by path instead of inline: the same options."""
    network = ipaddress.ip_network(EDUVPN_IPV4)
    return "\n".join(
        [
            "# eduVPN v3 (vpn-user-portal ServerConfig.php) options for one UDP process, for comparison",
            "verb 3",
            "dev-type tun",
            "user nobody",
            "group nogroup",
            "topology subnet",
            "persist-key",
            "persist-tun",
            "remote-cert-tls client",
            "dh none",
            "tls-version-min 1.3",
            "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
            "reneg-sec 36000",
            f"server {network.network_address} {network.netmask}",
            f"server-ipv6 {EDUVPN_IPV6}",
            # eduVPN's rule: the hosts of the range less two (OpenVPN keeps the last one out).
            f"max-clients {network.num_addresses - 2 - 2}",
            "keepalive 10 60",
            "script-security 2",
            "dev tun-edu",
            f"port {EDUVPN_PORT}",
            f"management {RUN_DIR}/eduvpn.sock unix",
            "setenv PROFILE_ID bench-edu",
            "proto udp6",
            f"ca {REMOTE_DIR}/ca.crt",
            f"cert {REMOTE_DIR}/server.crt",
            f"key {REMOTE_DIR}/server.key",
            f"tls-crypt {REMOTE_DIR}/tls-crypt.key",
            "explicit-exit-notify 1",
            'push "explicit-exit-notify 1"',
            "",
        ]
    )


class Variant:
    """One option of the ablation: lines added to ours' baseline config (and to its client's, where
    the option needs both ends), or ours with its server unpinned."""

    def __init__(self, label: str, title: str, server: tuple = (), client: tuple = (), pinned: bool = True):
        self.label, self.title = label, title
        self.server, self.client, self.pinned = server, client, pinned


SOCKET_BUFFER = 524288
ABLATION = (
    Variant("fast_io", "fast-io", ("fast-io",)),
    Variant(
        "socket_buffers",
        f"sndbuf/rcvbuf {SOCKET_BUFFER // 1024}K, pushed",
        (
            f"sndbuf {SOCKET_BUFFER}",
            f"rcvbuf {SOCKET_BUFFER}",
            f'push "sndbuf {SOCKET_BUFFER}"',
            f'push "rcvbuf {SOCKET_BUFFER}"',
        ),
    ),
    Variant("txqueuelen", "txqueuelen 1000", ("txqueuelen 1000",)),
    # Jumbo packets inside the tunnel, fragmented outside: what fewer, bigger packets buy.
    Variant("tun_mtu", "tun-mtu 9000, mssfix 0", ("tun-mtu 9000", "mssfix 0"), ("tun-mtu 9000", "mssfix 0")),
    Variant("unpinned", "server not pinned", pinned=False),
)
# Every line an ablation variant adds: ours' baseline is ours without them, so that the ablation
# measures each option against the same config whether or not the role already has it.
ABLATION_BASELINE = "ablation_baseline"
ABLATION_LINES = frozenset(line for variant in ABLATION for line in variant.server)


def ablation_baseline(conf: str) -> str:
    return "".join(line for line in conf.splitlines(keepends=True) if line.rstrip("\n") not in ABLATION_LINES)


def with_lines(conf: str, lines) -> str:
    missing = [line for line in lines if line not in conf.splitlines()]
    return conf + "".join(line + "\n" for line in missing)


def client_config(port: int, dev: str, tls_crypt: bool, extra: tuple = ()) -> str:
    lines = [
        "client",
        "verb 3",
        f"dev {dev}",
        "dev-type tun",
        "proto udp",
        f"remote {NODE_ADDRESS} {port}",
        "nobind",
        f"ca {REMOTE_DIR}/ca.crt",
        f"cert {REMOTE_DIR}/client.crt",
        f"key {REMOTE_DIR}/client.key",
        "remote-cert-tls server",
        f"data-ciphers {CIPHER}",
    ]
    if tls_crypt:
        lines.append(f"tls-crypt {REMOTE_DIR}/tls-crypt.key")
    return "\n".join([*lines, *extra]) + "\n"


def diagnostic_tunnel(server_core, client_core):
    """Ours with one difference to the hand-written config taken out: an IPv4 UDP socket
    (``proto udp``) instead of the dual-stack ``proto udp6`` the renderer writes."""
    ((plan, conf),) = our_configs("diag", DIAG_IPV4, DIAG_IPV6, 1, DIAG_PORT)
    conf = conf.replace("\nproto udp6\n", "\nproto udp\n")
    return Tunnel(
        "diag",
        conf,
        client_config(DIAG_PORT, "tunc-diag", True),
        plan["ipv4_gateway"],
        IPERF_PORT_BASE + 3,
        server_core,
        client_core,
    )


class Tunnel:
    """One OpenVPN server process on the node and its client on the client host."""

    def __init__(
        self,
        name: str,
        server_config: str,
        client_conf: str,
        server_ip: str,
        iperf_port: int,
        server_core: int | None,
        client_core: int | None,
    ):
        self.name = name
        self.server_config = server_config
        self.client_conf = client_conf
        self.server_ip = server_ip
        self.iperf_port = iperf_port
        self.server_core = server_core
        self.client_core = client_core
        self.server_pid = self.client_pid = self.iperf_pid = None

    def _taskset(self, core):
        return f"taskset -c {core} " if core is not None else ""

    def start(self, procs: Processes) -> None:
        put(NODE, f"{REMOTE_DIR}/{self.name}.conf", self.server_config)
        put(CLIENT, f"{REMOTE_DIR}/{self.name}.conf", self.client_conf)
        self.server_pid = start_daemon(
            procs,
            NODE,
            f"{self._taskset(self.server_core)}openvpn --config {REMOTE_DIR}/{self.name}.conf --daemon "
            f"--writepid {RUN_DIR}/{self.name}.pid --log {RUN_DIR}/{self.name}.log",
            f"{RUN_DIR}/{self.name}.pid",
            f"openvpn server {self.name}",
        )
        self.iperf_pid = start_daemon(
            procs,
            NODE,
            f"iperf3 -s -p {self.iperf_port} -D --pidfile {RUN_DIR}/iperf-{self.name}.pid",
            f"{RUN_DIR}/iperf-{self.name}.pid",
            f"iperf3 server {self.name}",
        )
        self.client_pid = start_daemon(
            procs,
            CLIENT,
            f"{self._taskset(self.client_core)}openvpn --config {REMOTE_DIR}/{self.name}.conf --daemon "
            f"--writepid {RUN_DIR}/{self.name}.pid --log {RUN_DIR}/{self.name}.log",
            f"{RUN_DIR}/{self.name}.pid",
            f"openvpn client {self.name}",
        )

    def wait_connected(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = sh_on(CLIENT, f"cat {RUN_DIR}/{self.name}.log", check=False)
            if "Initialization Sequence Completed" in log:
                if sh_on(CLIENT, f"ping -c1 -W2 {self.server_ip} >/dev/null && echo ok", check=False).strip():
                    return
            time.sleep(0.5)
        raise BenchError(
            f"tunnel {self.name} did not come up in {timeout:.0f} s.\nserver log:\n"
            + sh_on(NODE, f"tail -n 30 {RUN_DIR}/{self.name}.log", check=False)
            + "\nclient log:\n"
            + sh_on(CLIENT, f"tail -n 30 {RUN_DIR}/{self.name}.log", check=False)
        )

    def server_log(self) -> str:
        return sh_on(NODE, f"cat {RUN_DIR}/{self.name}.log", check=False)

    def stop(self, procs: Processes) -> None:
        stop_tunnels(procs, [self])


def stop_tunnels(procs: Processes, tunnels: list[Tunnel]) -> None:
    # By host: a PID in one host's namespace may be another process's in the other host. The
    # clients first, so that no client reconnects to a server that is going.
    procs.stop_together(CLIENT, [t.client_pid for t in tunnels if t.client_pid])
    procs.stop_together(NODE, [pid for t in tunnels for pid in (t.iperf_pid, t.server_pid) if pid])


class WireGuardTunnel(Tunnel):
    """One WireGuard interface on the node, as the node role sets it up where the kernel has no
    WireGuard (roles/node/templates/vpnfleet-wireguard.service.j2: wireguard-go, then
    ``wg set ... listen-port ... private-key ...``, the node's address of the part, link up), and the
    client host's side made by hand with wireguard-go and ``wg`` (as molecule/node's tests do).

    The interface and its addresses come from the collection's planner
    (``instances.plan_wireguard``); the client's peer is added with the ``wg set ... peer ...
    allowed-ips ...`` the node's daemon runs for ``POST /w/add_peer``. Each side's key is made on its
    host with ``wg genkey`` and stays there. wireguard-go runs in the foreground, pinned like the
    OpenVPN processes, so its PID is the one whose CPU is counted (all its threads)."""

    def __init__(self, iperf_port: int, server_core: int | None, client_core: int | None):
        from vpnfleet.shared import instances

        self.plan = instances.plan_wireguard(
            "bench", WIREGUARD_IPV4, WIREGUARD_IPV6, WIREGUARD_PORT
        ).as_dict()
        self.interface = self.plan["interface"]
        ipv4 = ipaddress.ip_network(self.plan["ipv4_range"])
        ipv6 = ipaddress.ip_network(self.plan["ipv6_range"])
        # The client's address: the next one after the node's, as the controller would allocate it.
        self.client_addresses = (
            f"{ipv4.network_address + 2}/{ipv4.prefixlen}",
            f"{ipv6.network_address + 2}/{ipv6.prefixlen}",
        )
        self.peer_networks = (f"{ipv4.network_address + 2}/32", f"{ipv6.network_address + 2}/128")
        super().__init__("wireguard", "", "", self.plan["ipv4_address"], iperf_port, server_core, client_core)
        self.server_config = self.node_commands()

    def node_commands(self) -> str:
        """What the node runs, as shell lines (no key material): the benchmark's record of the setup."""
        plan, interface = self.plan, self.interface
        ipv4_prefix = plan["ipv4_range"].split("/")[1]
        ipv6_prefix = plan["ipv6_range"].split("/")[1]
        return "\n".join(
            [
                f"{self._taskset(self.server_core)}wireguard-go --foreground {interface}",
                f"wg set {interface} listen-port {plan['port']} private-key {REMOTE_DIR}/{interface}.key",
                f"ip address add {plan['ipv4_address']}/{ipv4_prefix} dev {interface}",
                f"ip address add {plan['ipv6_address']}/{ipv6_prefix} dev {interface}",
                f"ip link set {interface} up",
                f"wg set {interface} peer <client's public key> allowed-ips {','.join(self.peer_networks)}",
                "",
            ]
        )

    def _start_wireguard_go(self, procs: Processes, host: str, interface: str, core: int | None) -> int:
        sh_on(
            host,
            f"ip link delete {interface} 2>/dev/null; (umask 077; wg genkey > {REMOTE_DIR}/{interface}.key)",
        )
        pidfile = f"{RUN_DIR}/{interface}.pid"
        # In the foreground (as the role's unit runs it) and in the background of the shell, so
        # that $! is wireguard-go's own PID: taskset execs it.
        pid = start_daemon(
            procs,
            host,
            f"{{ {self._taskset(core)}wireguard-go --foreground {interface} "
            f">>{RUN_DIR}/{interface}.log 2>&1 & echo $! > {pidfile}; }}",
            pidfile,
            f"wireguard-go {interface}",
        )
        # Its control socket appears once it has made the interface.
        for _ in range(100):
            if sh_on(host, f"wg show {interface} >/dev/null 2>&1 && echo ok", check=False).strip():
                return pid
            time.sleep(0.1)
        raise BenchError(
            f"wireguard-go {interface} on {host} did not answer on its control socket:\n"
            + sh_on(host, f"tail -n 30 {RUN_DIR}/{interface}.log", check=False)
        )

    def start(self, procs: Processes) -> None:
        plan, node_if, client_if = self.plan, self.interface, WIREGUARD_CLIENT_INTERFACE
        self.server_pid = self._start_wireguard_go(procs, NODE, node_if, self.server_core)
        ipv4_prefix = plan["ipv4_range"].split("/")[1]
        ipv6_prefix = plan["ipv6_range"].split("/")[1]
        sh_on(
            NODE,
            f"wg set {node_if} listen-port {plan['port']} private-key {REMOTE_DIR}/{node_if}.key && "
            f"ip address add {plan['ipv4_address']}/{ipv4_prefix} dev {node_if} && "
            f"ip address add {plan['ipv6_address']}/{ipv6_prefix} dev {node_if} && "
            f"ip link set {node_if} up",
        )
        node_key = sh_on(NODE, f"wg show {node_if} public-key").strip()
        self.client_pid = self._start_wireguard_go(procs, CLIENT, client_if, self.client_core)
        # The client routes only the tunnel's own range through it: its default route stays.
        sh_on(
            CLIENT,
            f"wg set {client_if} private-key {REMOTE_DIR}/{client_if}.key peer {node_key} "
            f"endpoint {NODE_ADDRESS}:{plan['port']} "
            f"allowed-ips {plan['ipv4_range']},{plan['ipv6_range']} && "
            f"ip address add {self.client_addresses[0]} dev {client_if} && "
            f"ip address add {self.client_addresses[1]} dev {client_if} && "
            f"ip link set {client_if} up",
        )
        client_key = sh_on(CLIENT, f"wg show {client_if} public-key").strip()
        sh_on(NODE, f"wg set {node_if} peer {client_key} allowed-ips {','.join(self.peer_networks)}")
        self.iperf_pid = start_daemon(
            procs,
            NODE,
            f"iperf3 -s -p {self.iperf_port} -D --pidfile {RUN_DIR}/iperf-{self.name}.pid",
            f"{RUN_DIR}/iperf-{self.name}.pid",
            f"iperf3 server {self.name}",
        )

    def wait_connected(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sh_on(CLIENT, f"ping -c1 -W2 {self.server_ip} >/dev/null && echo ok", check=False).strip():
                return
            time.sleep(0.5)
        client_if = WIREGUARD_CLIENT_INTERFACE
        raise BenchError(
            f"WireGuard did not pass a ping to {self.server_ip} in {timeout:.0f} s.\nnode:\n"
            + sh_on(NODE, f"wg show {self.interface}; tail -n 30 {RUN_DIR}/{self.interface}.log", check=False)
            + "\nclient:\n"
            + sh_on(
                CLIENT,
                f"wg show {client_if}; tail -n 30 {RUN_DIR}/{client_if}.log",
                check=False,
            )
        )

    def server_log(self) -> str:
        return sh_on(NODE, f"cat {RUN_DIR}/{self.interface}.log", check=False)

    def report(self) -> dict:
        """What the table says about this WireGuard: userspace, which wireguard-go, from the node."""
        from vpnfleet.shared import node_facts

        version = run_on(NODE, "wireguard-go", "--version", check=False).strip().splitlines()
        package = sh_on(NODE, "dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null", check=False).strip()
        return {
            "implementation": "wireguard-go (userspace)",
            "wireguard_go_version": version[0] if version else "unknown",
            "debian_package_version": package or "unknown",
            "wg_version": run_on(NODE, "wg", "--version", check=False).strip(),
            # The lab's hosts run on this machine's kernel: what it offers is what they have.
            "kernel_wireguard": node_facts.wireguard_in_kernel(),
            "mtu": int(sh_on(NODE, f"cat /sys/class/net/{self.interface}/mtu").strip()),
            "cipher": "ChaCha20-Poly1305",
            "plan": self.plan,
            "node_commands": self.server_config,
        }


# ----------------------------------------------------------------------------- measuring


def iperf_command(
    target: str, port: int, seconds: float, reverse: bool, rate: float | None = None
) -> list[str]:
    """One TCP stream as fast as it goes, or with ``rate`` (bit/s) UDP at that offered load."""
    command = ["iperf3", "-c", target, "-p", str(port), "-t", str(seconds), "-J"]
    if rate is not None:
        command += ["-u", "-b", str(int(rate)), "-l", str(FIXED_LOAD_DATAGRAM)]
    return command + (["-R"] if reverse else [])


def iperf_figures(text: str) -> dict:
    data = json.loads(text)
    if "error" in data:
        raise BenchError("iperf3: " + data["error"])
    received = data["end"]["sum_received"]
    figures = {
        "bytes": received["bytes"],
        "seconds": received["seconds"],
        "bits_per_second": received["bits_per_second"],
        "retransmits": data["end"].get("sum_sent", {}).get("retransmits"),
    }
    total = data["end"].get("sum", {})
    if "lost_packets" in total:
        # UDP: the receiver's count of datagrams that never came.
        figures.update(
            lost_packets=total["lost_packets"], packets=total["packets"], lost_percent=total["lost_percent"]
        )
    return figures


def measure(tunnels: list[Tunnel], seconds: float, reverse: bool, hz: int, rate: float | None = None) -> dict:
    """Run iperf3 through every given tunnel at once (saturated TCP, or UDP at ``rate`` bit/s);
    the node's server CPU from /proc."""
    pids = [tunnel.server_pid for tunnel in tunnels]
    before = cpu_ticks(NODE, pids)
    wall = time.monotonic()
    runs = [
        subprocess.Popen(
            [
                lab_hosts.lab_tool(),
                "-i",
                str(lab_hosts.INVENTORY),
                "exec",
                CLIENT,
                "--",
                *iperf_command(tunnel.server_ip, tunnel.iperf_port, seconds, reverse, rate),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tunnel in tunnels
    ]
    outputs = [run.communicate(timeout=seconds + 120) for run in runs]
    wall = time.monotonic() - wall
    after = cpu_ticks(NODE, pids)
    per_tunnel = []
    for tunnel, (out, err) in zip(tunnels, outputs, strict=True):
        try:
            figures = iperf_figures(out)
        except (ValueError, KeyError) as error:
            raise BenchError(
                f"iperf3 through {tunnel.name} gave no result: {error}\n{out[-2000:]}{err}"
            ) from None
        figures["server_cpu_seconds"] = (after[tunnel.server_pid] - before[tunnel.server_pid]) / hz
        figures["tunnel"] = tunnel.name
        per_tunnel.append(figures)
    total_bytes = sum(f["bytes"] for f in per_tunnel)
    cpu = sum(f["server_cpu_seconds"] for f in per_tunnel)
    result = {
        "bits_per_second": sum(f["bits_per_second"] for f in per_tunnel),
        "bytes": total_bytes,
        "server_cpu_seconds": cpu,
        "cpu_seconds_per_gb": cpu / (total_bytes / 1e9) if total_bytes else None,
        "wall_seconds": wall,
        "tunnels": per_tunnel,
    }
    if rate is not None:
        result["offered_bits_per_second"] = rate
        result["lost_percent"] = max(f.get("lost_percent", 0.0) for f in per_tunnel)
    return result


def measure_plain(seconds: float, reverse: bool) -> dict:
    """The lab network itself, without a tunnel: what the hosts' path can carry."""
    out = run_on(
        CLIENT, *iperf_command(NODE_ADDRESS, IPERF_PORT_BASE, seconds, reverse), timeout=seconds + 120
    )
    return iperf_figures(out)


def openssl_ceiling(seconds: int, cores: int, cipher: str = "aes-256-gcm") -> dict:
    """`openssl speed -evp CIPHER`, one process pinned to each core in turn (16 KiB blocks)."""
    per_core = []
    for core in range(cores):
        out = run_on(
            NODE,
            "taskset",
            "-c",
            str(core),
            "openssl",
            "speed",
            "-mr",
            "-evp",
            cipher,
            "-bytes",
            "16384",
            "-seconds",
            str(seconds),
            timeout=seconds * 10 + 60,
        )
        match = re.search(r"^\+F:\d+:[^:]+:([0-9.]+)", out, re.MULTILINE)
        if not match:
            raise BenchError("openssl speed printed no +F line:\n" + out)
        per_core.append(float(match.group(1)))
    return {
        "command": f"taskset -c CORE openssl speed -mr -evp {cipher} -bytes 16384 -seconds {seconds}",
        "bytes_per_second_per_core": per_core,
        "bytes_per_second": statistics.median(per_core),
        "bits_per_second": statistics.median(per_core) * 8,
        "openssl_version": run_on(NODE, "openssl", "version").strip(),
    }


def dco_report(tunnels: list[Tunnel]) -> dict:
    version = run_on(NODE, "openvpn", "--version", check=False)
    modules = sh_on(NODE, "ls -d /sys/module/ovpn* 2>/dev/null", check=False).split()
    config = ""
    with contextlib.suppress(OSError):
        with gzip.open("/proc/config.gz", "rt") as handle:
            config = "\n".join(line for line in handle.read().splitlines() if "OVPN" in line)
    # The log's lines start with a date ("2025-01-01 12:00:00 "); keep what follows.
    log_lines = sorted(
        {
            re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", line)
            for tunnel in tunnels
            for line in tunnel.server_log().splitlines()
            if "dco" in line.lower()
        }
    )
    in_use = bool(modules) and not any(
        "disabling" in line.lower() or "missing" in line.lower() for line in log_lines
    )
    built = "[DCO]" in version.splitlines()[0] if version else False
    if in_use:
        verdict = "in use (ovpn module loaded, the server log does not disable it)"
    elif built and not modules:
        verdict = (
            "unavailable: openvpn is built with DCO, but the kernel has no ovpn/ovpn-dco module "
            "(%s); the data channel runs in user space" % (config.strip() or "no ovpn in /sys/module")
        )
    else:
        verdict = "unavailable: this openvpn is built without DCO"
    return {
        "in_use": in_use,
        "verdict": verdict,
        "openvpn_version": version.splitlines()[:3],
        "sys_module_ovpn": modules,
        "kernel_config": config.strip(),
        "server_log_dco_lines": log_lines,
    }


# ----------------------------------------------------------------------------- the run


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def spread(values: list[float]) -> dict:
    """min / median / max: on a shared, noisy machine a median alone hides how far runs wander."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def abba(contenders: list, round_number: int) -> list:
    # Every other round backwards, so that no contender always goes first.
    return list(reversed(contenders)) if round_number % 2 else list(contenders)


def contender_figures(saturated: list[dict], fixed: list[dict], ceiling: float) -> dict:
    throughput = spread([r["bits_per_second"] for r in saturated])
    return {
        "bits_per_second": throughput,
        "cpu_seconds_per_gb": spread([r["cpu_seconds_per_gb"] for r in saturated]),
        "fraction_of_openssl_core": throughput["median"] / ceiling,
        "fixed_load_cpu_seconds_per_gb": spread([r["cpu_seconds_per_gb"] for r in fixed]),
        "fixed_load_bits_per_second": spread([r["bits_per_second"] for r in fixed]),
        "fixed_load_lost_percent": spread([r["lost_percent"] for r in fixed]),
        "runs": saturated,
        "fixed_load_runs": fixed,
    }


def _ratio_spread(pairs) -> dict:
    return spread([a / b for a, b in pairs])


def ratios(saturated: dict, fixed: dict, label: str, other: str) -> dict:
    """label/other per round (the runs of a round are neighbours in time): their min/median/max."""
    return {
        "throughput": _ratio_spread(
            (a["bits_per_second"], b["bits_per_second"])
            for a, b in zip(saturated[label], saturated[other], strict=True)
        ),
        "cpu_per_gb_saturated": _ratio_spread(
            (a["cpu_seconds_per_gb"], b["cpu_seconds_per_gb"])
            for a, b in zip(saturated[label], saturated[other], strict=True)
        ),
        "cpu_per_gb_fixed_load": _ratio_spread(
            (a["cpu_seconds_per_gb"], b["cpu_seconds_per_gb"])
            for a, b in zip(fixed[label], fixed[other], strict=True)
        ),
    }


def ratios_to_better(saturated: dict, fixed: dict, label: str) -> dict:
    """Against the better of eduVPN's and the hand-written config in each round: the more
    throughput, the less CPU per GB (the goal's yardstick)."""
    others = ("eduvpn", "hand_written")
    return {
        "throughput": _ratio_spread(
            (runs[0]["bits_per_second"], max(r["bits_per_second"] for r in runs[1:]))
            for runs in zip(saturated[label], *(saturated[o] for o in others), strict=True)
        ),
        "cpu_per_gb_saturated": _ratio_spread(
            (runs[0]["cpu_seconds_per_gb"], min(r["cpu_seconds_per_gb"] for r in runs[1:]))
            for runs in zip(saturated[label], *(saturated[o] for o in others), strict=True)
        ),
        "cpu_per_gb_fixed_load": _ratio_spread(
            (runs[0]["cpu_seconds_per_gb"], min(r["cpu_seconds_per_gb"] for r in runs[1:]))
            for runs in zip(fixed[label], *(fixed[o] for o in others), strict=True)
        ),
    }


def ablation_tunnels(ours_conf: str, server_core: int | None, client_core: int | None) -> list:
    """Ours' baseline (ours without any line a variant adds; ours itself when it has none) and one
    tunnel per variant: its lines added to the baseline, each with its own range, port and device."""
    baseline = ablation_baseline(ours_conf)
    labelled = [] if baseline == ours_conf else [(ABLATION_BASELINE, None)]
    labelled += [(f"ablation_{variant.label}", variant) for variant in ABLATION]
    tunnels = []
    for i, (label, variant) in enumerate(labelled):
        ipv4 = f"{ipaddress.ip_address(ABLATION_IPV4_BASE) + 256 * i}/24"
        ipv6 = f"{ipaddress.ip_address(ABLATION_IPV6_BASE) + (i << 64)}/64"
        port = ABLATION_PORT_BASE + i
        ((plan, conf),) = our_configs(f"abl{i}", ipv4, ipv6, 1, port)
        conf = ablation_baseline(conf)
        if variant is not None:
            conf = with_lines(conf, variant.server)
        tunnel = Tunnel(
            label,
            conf,
            client_config(port, f"tunc-a{i}", True, variant.client if variant else ()),
            plan["ipv4_gateway"],
            ABLATION_IPERF_PORT_BASE + i,
            server_core if variant is None or variant.pinned else None,
            client_core,
        )
        tunnel.variant = variant
        tunnels.append((label, tunnel))
    return tunnels


def ablation_figures(ablation: list, saturated: dict, fixed: dict) -> dict:
    baseline = ABLATION_BASELINE if ablation and ablation[0][0] == ABLATION_BASELINE else "ours"
    return {
        "baseline": baseline,
        "baseline_is": "ours, which has none of the variants' lines"
        if baseline == "ours"
        else "ours without the variants' lines",
        "variants": {
            label: {
                "title": tunnel.variant.title,
                "server_lines": list(tunnel.variant.server),
                "client_lines": list(tunnel.variant.client),
                "server_pinned": tunnel.variant.pinned,
                "ratios_to_baseline": ratios(saturated, fixed, label, baseline),
            }
            for label, tunnel in ablation
            if tunnel.variant is not None
        },
    }


def gbit(bits: float) -> str:
    return "%.3f" % (bits / 1e9)


def run_benchmark(args) -> dict:
    hz = os.sysconf("SC_CLK_TCK")
    cores = os.cpu_count() or 1
    max_processes = min(args.max_processes or cores, 64)
    procs = Processes()
    results: dict = {
        "benchmark": "dataplane",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "parameters": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "direction": "node->client (iperf3 -R: the node's server encrypts)"
            if args.reverse
            else "client->node (the node's server decrypts)",
            "cipher": CIPHER,
            "max_processes": max_processes,
            "wireguard": args.wireguard,
            "fixed_rounds": args.fixed_rounds,
            "plain_rounds": args.plain_rounds,
            "scaling_rounds": args.scaling_rounds,
            "ablation": args.ablation,
            "command": args.command,
        },
        "machine": {
            "cores": cores,
            "cpu": _cpu_model(),
            "kernel": platform.release(),
            "clock_ticks_per_second": hz,
        },
    }
    tmp = Path(tempfile.mkdtemp(prefix="vpnfleet-bench-"))
    try:
        # A lab left up by an earlier session may run a deployed node (OpenVPN, firewall) that
        # would share the cores: start from freshly booted hosts.
        say("starting from a clean lab (vpnfleet-lab down), then up node-x1 and client")
        lab("down")
        lab("up", "--hosts", f"{NODE},{CLIENT}")
        for host in (NODE, CLIENT):
            sh_on(host, f"mkdir -p {REMOTE_DIR} {RUN_DIR} /run/openvpn-server")
        say("making a CA, certificates and a tls-crypt key with plugins/module_utils/pki/")
        material = make_pki(tmp)
        for name, text in material.items():
            secret = name.endswith(".key")
            if not name.startswith("client"):
                put(NODE, f"{REMOTE_DIR}/{name}", _text(text), 0o600 if secret else 0o644)
            if name in ("ca.crt", "tls-crypt.key") or name.startswith("client"):
                put(CLIENT, f"{REMOTE_DIR}/{name}", _text(text), 0o600 if secret else 0o644)

        say(f"openssl speed ceiling on each of {cores} cores")
        results["openssl"] = openssl_ceiling(args.openssl_seconds, cores)
        ceiling = results["openssl"]["bits_per_second"]
        ceilings = {}
        if args.wireguard:
            # WireGuard's data cipher is fixed: its tunnel against what a core can do of that one.
            results["openssl_chacha20_poly1305"] = openssl_ceiling(
                args.openssl_seconds, cores, "chacha20-poly1305"
            )
            ceilings["wireguard"] = results["openssl_chacha20_poly1305"]["bits_per_second"]

        # (a)+(b): one process of ours, eduVPN's and the hand-written one, all up, measured in turn.
        ((ours_plan, ours_conf),) = our_configs("bench", OURS_IPV4, OURS_IPV6, 1, OURS_PORT)
        server_core, client_core = 0, (1 if cores > 1 else 0)
        ours = Tunnel(
            "ours",
            ours_conf,
            client_config(OURS_PORT, "tunc-ours", True),
            ours_plan["ipv4_gateway"],
            IPERF_PORT_BASE + 1,
            server_core,
            client_core,
        )
        eduvpn = Tunnel(
            "eduvpn",
            eduvpn_config(),
            client_config(EDUVPN_PORT, "tunc-edu", True),
            str(ipaddress.ip_network(EDUVPN_IPV4).network_address + 1),
            IPERF_PORT_BASE + 5,
            server_core,
            client_core,
        )
        hand_ip = str(ipaddress.ip_network(HAND_IPV4).network_address + 1)
        hand = Tunnel(
            "hand",
            hand_written_config(),
            client_config(HAND_PORT, "tunc-hand", False),
            hand_ip,
            IPERF_PORT_BASE + 2,
            server_core,
            client_core,
        )
        contenders = [("ours", ours), ("eduvpn", eduvpn), ("hand_written", hand)]
        if args.diagnose:
            contenders.append(("ours_udp4", diagnostic_tunnel(server_core, client_core)))
        if args.wireguard:
            contenders.append(("wireguard", WireGuardTunnel(IPERF_PORT_BASE + 4, server_core, client_core)))
        ablation = ablation_tunnels(ours_conf, server_core, client_core) if args.ablation else []
        contenders += ablation
        plain_pid = start_daemon(
            procs,
            NODE,
            f"iperf3 -s -p {IPERF_PORT_BASE} -D --pidfile {RUN_DIR}/iperf-plain.pid",
            f"{RUN_DIR}/iperf-plain.pid",
            "iperf3 plain",
        )
        for _, tunnel in contenders:
            tunnel.start(procs)
        for _, tunnel in contenders:
            tunnel.wait_connected()
        openvpn = [t for _, t in contenders if not isinstance(t, WireGuardTunnel)]
        say("tunnels up; DCO: " + (dco := dco_report(openvpn))["verdict"])
        results["dco"] = dco
        for _, tunnel in contenders:
            if isinstance(tunnel, WireGuardTunnel):
                results["wireguard"] = tunnel.report()
                say("WireGuard: " + wireguard_summary(results["wireguard"]))
        results["configs"] = {label: tunnel.server_config for label, tunnel in contenders}
        results["configs"]["ours_plan"] = ours_plan

        saturated = {label: [] for label, _ in contenders}
        saturated["plain"] = []
        for round_number in range(args.rounds):
            for label, tunnel in abba(contenders, round_number):
                say(f"saturated, round {round_number + 1}/{args.rounds}: {label}, {args.seconds} s")
                saturated[label].append(measure([tunnel], args.seconds, args.reverse, hz))
            if round_number < args.plain_rounds:
                say(f"saturated, round {round_number + 1}/{args.rounds}: plain lab network, {args.seconds} s")
                saturated["plain"].append(measure_plain(args.seconds, args.reverse))
        procs.stop(NODE, plain_pid)

        # The cost at equal work: every contender at the same offered load, below what the slowest
        # of them carried saturated, so that CPU per GB compares the work per byte, not how far
        # each one got.
        slowest = min(run["bits_per_second"] for label, _ in contenders for run in saturated[label])
        rate = args.rate * 1e6 if args.rate else max(10e6, (slowest * FIXED_LOAD_SHARE) // 10e6 * 10e6)
        fixed = {label: [] for label, _ in contenders}
        for round_number in range(args.fixed_rounds):
            for label, tunnel in abba(contenders, round_number):
                say(
                    f"fixed load {rate / 1e6:.0f} Mbit/s UDP, round {round_number + 1}/{args.fixed_rounds}: "
                    f"{label}, {args.seconds} s"
                )
                fixed[label].append(measure([tunnel], args.seconds, args.reverse, hz, rate))
        results["fixed_load"] = {
            "offered_bits_per_second": rate,
            "chosen": "--rate" if args.rate else f"{FIXED_LOAD_SHARE} of the slowest saturated run",
            "slowest_saturated_bits_per_second": slowest,
            "datagram_bytes": FIXED_LOAD_DATAGRAM,
            "loss_limit_percent": LOSS_LIMIT_PERCENT,
            "rounds": args.fixed_rounds,
        }
        pair = {
            label: contender_figures(saturated[label], fixed[label], ceilings.get(label, ceiling))
            for label, _ in contenders
        }
        for label, _ in contenders:
            row = pair[label]
            for other in ("hand_written", "eduvpn"):
                row[f"ratios_to_{other}"] = ratios(saturated, fixed, label, other)
            row["ratios_to_better_of_eduvpn_and_hand_written"] = ratios_to_better(saturated, fixed, label)
        if "wireguard" in pair:
            pair["wireguard"]["ratios_to_ours"] = ratios(saturated, fixed, "wireguard", "ours")
        pair["plain"] = {
            "bits_per_second": spread([r["bits_per_second"] for r in saturated["plain"]]),
            "runs": saturated["plain"],
        }
        results["one_process"] = pair
        if ablation:
            results["ablation"] = ablation_figures(ablation, saturated, fixed)
        stop_tunnels(procs, [tunnel for _, tunnel in contenders])

        # (d): 1..N processes of ours, server i pinned to core i, client i to the core counted from
        # the other end, all measured at once.
        scaling = []
        for count in range(1, max_processes + 1):
            configs = our_configs("scale", SCALE_IPV4, SCALE_IPV6, count, SCALE_PORT_BASE)
            tunnels = [
                Tunnel(
                    f"scale{count}-{i}",
                    conf,
                    client_config(plan["port"], f"tunc-s{i}", True),
                    plan["ipv4_gateway"],
                    IPERF_PORT_BASE + 10 + i,
                    i % cores,
                    (cores - 1 - i) % cores,
                )
                for i, (plan, conf) in enumerate(configs)
            ]
            for tunnel in tunnels:
                tunnel.start(procs)
            for tunnel in tunnels:
                tunnel.wait_connected()
            rows = []
            for round_number in range(args.scaling_rounds):
                say(
                    f"scaling: {count} process(es), round {round_number + 1}/{args.scaling_rounds}, "
                    f"{args.seconds} s"
                )
                rows.append(measure(tunnels, args.seconds, args.reverse, hz))
            scaling.append(
                {
                    "processes": count,
                    "server_cores": [t.server_core for t in tunnels],
                    "client_cores": [t.client_core for t in tunnels],
                    "bits_per_second": spread([r["bits_per_second"] for r in rows]),
                    "cpu_seconds_per_gb": spread([r["cpu_seconds_per_gb"] for r in rows]),
                    "fraction_of_openssl_cores": median_of(rows, "bits_per_second") / (ceiling * count),
                    "runs": rows,
                }
            )
            stop_tunnels(procs, tunnels)
        results["scaling"] = scaling
        results["limits"] = limits_note(cores, scaling)
        results["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return results
    finally:
        procs.stop_all()
        say("taking the lab down (vpnfleet-lab down)")
        lab("down", check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def wireguard_summary(report: dict) -> str:
    kernel = report["kernel_wireguard"]
    verdict = (
        "the kernel has WireGuard, measured is wireguard-go" if kernel["kernel"] else "no kernel WireGuard"
    )
    return (
        f"userspace {report['wireguard_go_version']} (Debian package {report['debian_package_version']}), "
        f"{verdict} ({kernel['reason']}); {report['cipher']}, MTU {report['mtu']}"
    )


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def limits_note(cores: int, scaling: list[dict]) -> str:
    if cores >= 2 * len(scaling) + 2:
        return (
            f"{cores} cores: every server process had a core of its own; the clients ran on the "
            "remaining cores of the same machine."
        )
    return (
        f"This machine has {cores} core(s) and runs both ends: the node's OpenVPN servers, the client's "
        "OpenVPN processes and both iperf3 ends share them (server i pinned to core i, client i to core "
        f"{cores}-1-i, iperf3 unpinned). So a tunnel here is limited by the client's and iperf3's work as "
        "much as by the server's, and more processes cannot add throughput once the cores are busy: the "
        "scaling rows show the per-core cost (CPU s/GB) and that the planner's processes run side by "
        "side, not how a node with its own cores and remote clients scales. The ceiling is openssl's "
        "AES-256-GCM on one core; a tunnel also pays for tun I/O, UDP sockets and copies."
    )


# ----------------------------------------------------------------------------- output


def _spread_text(figures: dict, scale: float = 1.0, digits: int = 3) -> str:
    """median (min-max)"""
    low, mid, high = (figures[k] * scale for k in ("min", "median", "max"))
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


CONTENDER_NAMES = (
    ("ours", "ours (instances.py)"),
    ("eduvpn", "eduVPN v3's config"),
    ("hand_written", "hand-written minimal"),
    ("ours_udp4", "ours, proto udp (diag)"),
    ("wireguard", "WireGuard (userspace)"),
)


def table(results: dict) -> str:
    pair = results["one_process"]
    ceiling = results["openssl"]["bits_per_second"]
    fixed = results["fixed_load"]
    rate = f"{fixed['offered_bits_per_second'] / 1e6:.0f} Mbit/s"
    lines = []
    add = lines.append
    m = results["machine"]
    p = results["parameters"]
    add(
        f"vpnfleet dataplane benchmark  {results['started']}  ({m['cores']} cores, {m['cpu']}, "
        f"kernel {m['kernel']})"
    )
    add(f"command: {p.get('command', 'python -m bench.dataplane')}")
    add(
        f"saturated: iperf3 TCP, {p['seconds']} s per run, {p['rounds']} round(s); fixed load: iperf3 UDP "
        f"-b {rate} ({fixed['chosen']}), {fixed['datagram_bytes']}-byte datagrams, {fixed['rounds']} round(s)"
    )
    add(f"direction {p['direction']}")
    add(f"DCO: {results['dco']['verdict']}")
    add("")
    wireguard = "wireguard" in pair
    add(
        "(a)+(b)+(c) one OpenVPN process, UDP, AES-256-GCM"
        + (", and one WireGuard interface (ChaCha20-Poly1305)" if wireguard else "")
        + ", server pinned to core 0; median (min-max) over the rounds"
    )
    add(
        f"  {'config':<23}{'saturated Gbit/s':<22}{'CPU s/GB saturated':<22}"
        f"{'CPU s/GB at ' + rate:<24}{'lost % max':>10}{'of openssl':>12}"
    )
    for label, name in CONTENDER_NAMES:
        row = pair.get(label)
        if row is None:
            continue
        add(
            f"  {name:<23}{_spread_text(row['bits_per_second'], 1e-9):<22}"
            f"{_spread_text(row['cpu_seconds_per_gb'], digits=2):<22}"
            f"{_spread_text(row['fixed_load_cpu_seconds_per_gb'], digits=2):<24}"
            f"{row['fixed_load_lost_percent']['max']:>10.2f}{row['fraction_of_openssl_core'] * 100:>11.1f}%"
            + ("  (of ChaCha20-Poly1305)" if label == "wireguard" else "")
        )
    lossy = [
        f"{name} {row['fixed_load_lost_percent']['max']:.2f} %"
        for label, name in CONTENDER_NAMES
        if (row := pair.get(label)) and row["fixed_load_lost_percent"]["max"] > fixed["loss_limit_percent"]
    ]
    if lossy:
        add(
            f"  lost more than {fixed['loss_limit_percent']} % at the fixed load in a run: "
            + ", ".join(lossy)
            + " (that run did not carry the load; --rate lower)"
        )
    add(f"  {'lab network, no VPN':<23}{_spread_text(pair['plain']['bits_per_second'], 1e-9):<22}")
    add(
        f"  {'openssl speed 1 core':<23}{gbit(ceiling):<22}(AES-256-GCM, 16 KiB blocks, "
        f"per core: {', '.join(gbit(v * 8) for v in results['openssl']['bytes_per_second_per_core'])})"
    )
    if wireguard:
        chacha = results["openssl_chacha20_poly1305"]
        add(
            f"  {'openssl speed 1 core':<23}{gbit(chacha['bits_per_second']):<22}(ChaCha20-Poly1305, "
            f"16 KiB blocks, per core: {', '.join(gbit(v * 8) for v in chacha['bytes_per_second_per_core'])})"
        )
    add("")
    add("  ratios per round, median (min-max)")
    add(f"  {'':<30}{'throughput':<22}{'CPU/GB saturated':<22}{'CPU/GB at ' + rate:<22}")
    rows = [
        ("ours/eduVPN", pair["ours"]["ratios_to_eduvpn"]),
        ("ours/hand-written", pair["ours"]["ratios_to_hand_written"]),
        ("ours/better of the two", pair["ours"]["ratios_to_better_of_eduvpn_and_hand_written"]),
        ("eduVPN/hand-written", pair["eduvpn"]["ratios_to_hand_written"]),
    ]
    if "ours_udp4" in pair:
        rows.append(("diag/hand-written", pair["ours_udp4"]["ratios_to_hand_written"]))
    if wireguard:
        rows.append(("WireGuard/ours", pair["wireguard"]["ratios_to_ours"]))
    for name, ratio in rows:
        add(
            f"  {name:<30}{_spread_text(ratio['throughput']):<22}"
            f"{_spread_text(ratio['cpu_per_gb_saturated']):<22}{_spread_text(ratio['cpu_per_gb_fixed_load']):<22}"
        )
    better = pair["ours"]["ratios_to_better_of_eduvpn_and_hand_written"]
    met = better["throughput"]["median"] >= 1.0, better["cpu_per_gb_fixed_load"]["median"] <= 0.95
    add(
        "  goal, ours/better of the two: throughput >= 1.0 (%s), CPU/GB at the fixed load <= 0.95 (%s)"
        % tuple("met" if ok else "not met" for ok in met)
    )
    if wireguard:
        for chunk in _wrap("WireGuard: " + wireguard_summary(results["wireguard"]), 98):
            add("  " + chunk)
    if "ablation" in results:
        ablation = results["ablation"]
        add("")
        add(
            f"ablation: each option alone on ours' baseline ({ablation['baseline_is']}), same rounds; "
            "variant/baseline per round, median (min-max)"
        )
        add(f"  {'option':<30}{'throughput':<22}{'CPU/GB saturated':<22}{'CPU/GB at ' + rate:<22}")
        for variant in ablation["variants"].values():
            ratio = variant["ratios_to_baseline"]
            add(
                f"  {variant['title']:<30}{_spread_text(ratio['throughput']):<22}"
                f"{_spread_text(ratio['cpu_per_gb_saturated']):<22}{_spread_text(ratio['cpu_per_gb_fixed_load']):<22}"
            )
    add("")
    add("(d) processes of ours side by side, server i pinned to core i; median (min-max)")
    add(
        f"  {'processes':<11}{'aggregate Gbit/s':<22}{'per process':<13}{'node CPU s/GB':<22}"
        f"{'of openssl cores':>16}"
    )
    for row in results["scaling"]:
        middle = row["bits_per_second"]["median"]
        per = [
            gbit(t["bits_per_second"])
            for t in min(row["runs"], key=lambda r: abs(r["bits_per_second"] - middle))["tunnels"]
        ]
        add(
            f"  {row['processes']:<11}{_spread_text(row['bits_per_second'], 1e-9):<22}{'/'.join(per):<13}"
            f"{_spread_text(row['cpu_seconds_per_gb'], digits=2):<22}"
            f"{row['fraction_of_openssl_cores'] * 100:>15.1f}%"
        )
    add("")
    for chunk in _wrap(results["limits"], 100):
        add(chunk)
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dataplane", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each iperf3 run (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of ours/hand-written runs (default 5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 s runs, 2 saturated rounds, 1 fixed-load round, 1 scaling round: checks it works",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="the fixed offered load in Mbit/s (default: %d %%%% of the slowest saturated run)"
        % (FIXED_LOAD_SHARE * 100),
    )
    parser.add_argument(
        "--fixed-rounds", type=int, default=0, help="rounds at the fixed load (default: as --rounds)"
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also run one variant of ours per option (%s) against ours' baseline, in the same rounds"
        % ", ".join(v.title for v in ABLATION),
    )
    parser.add_argument(
        "--max-processes",
        type=int,
        default=0,
        help="largest process count for the scaling rows (default: the machine's cores)",
    )
    parser.add_argument(
        "--upload", dest="reverse", action="store_false", help="measure client->node instead of node->client"
    )
    parser.add_argument("--openssl-seconds", type=int, default=3)
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also run ours with `proto udp` instead of `udp6` as a third contender, to explain a gap",
    )
    parser.add_argument(
        "--wireguard",
        action="store_true",
        help="also run WireGuard (wireguard-go, as the node role sets it up here) as a contender",
    )
    parser.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="the lab's inventory (default: $VPNFLEET_LAB_INVENTORY or inventories/lab)",
    )
    args = parser.parse_args(argv)
    args.command = " ".join(["python -m bench.dataplane", *(sys.argv[1:] if argv is None else argv)])
    args.plain_rounds = args.scaling_rounds = args.rounds
    if args.quick:
        # CI runs this: the new parts in their smallest form, and the reference and scaling rows
        # once, so that it takes no longer than before the fixed load and eduVPN's config came.
        args.seconds, args.rounds, args.openssl_seconds = 3, 2, 1
        args.plain_rounds = args.scaling_rounds = 1
        args.fixed_rounds = args.fixed_rounds or 1
    args.fixed_rounds = args.fixed_rounds or args.rounds
    if args.seconds < 1 or args.rounds < 1 or args.fixed_rounds < 1 or args.rate < 0:
        parser.error("--seconds, --rounds and --fixed-rounds must be at least 1, --rate not negative")
    if args.seconds == int(args.seconds):
        args.seconds = int(args.seconds)
    take_lab_arguments(parser, args)
    os.chdir(REPO)
    interrupt_on_sigterm()
    try:
        with session_lock():
            results = run_benchmark(args)
    except BenchError as error:
        say(f"failed: {error}")
        return 1
    except KeyboardInterrupt as interrupt:
        say(f"interrupted ({interrupt or 'SIGINT'}); the lab was taken down")
        return 130
    path = write_results("dataplane", results, result_stamp())
    print(table(results))
    print(f"\nfigures: {path.relative_to(REPO)} (and bench/results/dataplane-latest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
