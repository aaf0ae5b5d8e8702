"""bench/keepalive: what the failover keepalive costs a node with idle clients (docs/node.md).

    sudo .venv/bin/python -m bench.keepalive [--quick] [--clients N] [--seconds S]

One OpenVPN server process, its config rendered by the collection's renderer
(``plugins/module_utils/instances.py``, as the node role renders it), in a network namespace; N idle
clients (each its own certificate) in another, joined by a veth pair on 198.51.100.240/28. For each
keepalive — ``2 8`` (ours, failover in seconds) and ``10 60`` (before) — once every client is
connected it counts, over S seconds, the packets on the server's side of the veth and the server
process's CPU time (utime + stime from /proc/PID/stat), and prints packets per client per minute
and the CPU share 1000 idle clients would cost (linear in the clients: every ping is one packet
each way, handled alone). Needs root (namespaces) and openvpn; uses the service tests' netlab.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "services"))

from openvpn_netlab import (
    Namespaces,
    OpenVpnProcess,
    issue_files,
    stop_processes,
    wait_for,
    without_tun_setup,
)  # noqa: E402
from vpnfleet.shared import instances  # noqa: E402
from vpnfleet.shared.pki import authority, keys  # noqa: E402

SERVER, CLIENT, PREFIX = "198.51.100.241", "198.51.100.242", 28
KEEPALIVES = ("2 8", "10 60")


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _packets(namespace: str, link: str) -> int:
    read = ["ip", "netns", "exec", namespace, "cat"]
    stats = f"/sys/class/net/{link}/statistics"
    out = subprocess.run(
        [*read, f"{stats}/rx_packets", f"{stats}/tx_packets"], capture_output=True, text=True, check=True
    )
    return sum(int(value) for value in out.stdout.split())


def measure(workdir: Path, keepalive: str, clients: int, seconds: float) -> dict:
    namespaces = Namespaces.create("vfk", SERVER, CLIENT, PREFIX)
    processes = []
    try:
        ca = authority.CertificateAuthority.create(
            str(workdir / f"ca-{keepalive.replace(' ', '-')}"), common_name="bench CA"
        )
        server = issue_files(ca, workdir / "server", "server", "server")
        tls_crypt = workdir / "tls-crypt.key"
        tls_crypt.write_text(keys.make_tls_crypt_key())
        plan = instances.plan_profile(
            "bench", "198.18.200.0/23", None, listen=["udp/1194"], listen_address=SERVER
        )
        options = instances.ServerOptions(
            ca_path=ca.cert_path,
            cert_path=str(server.certificate),
            key_path=str(server.private_key),
            crl_path=str(Path(ca.cert_path).parent / "crl.pem"),
            tls_crypt_path=str(tls_crypt),
            full_tunnel=False,
            routes=(),
            user=None,
            group=None,
        )
        [process] = plan.processes
        text = instances.render_server_config(plan, process, options)
        socket_path = instances.management_socket("bench", 0)
        text = text.replace(f"management {socket_path} unix", f"management {workdir}/bench.sock unix")
        text = re.sub(r"^keepalive .*$", f"keepalive {keepalive}", text, flags=re.MULTILINE)
        assert f"keepalive {keepalive}" in text
        server_process = OpenVpnProcess.start(
            namespaces.server, text, workdir / f"server-{keepalive[:2].strip()}.conf"
        )
        processes.append(server_process.process)
        server_process.wait_until_up()
        started = []
        for number in range(clients):
            credentials = issue_files(ca, workdir / f"client-{number}", f"client-{number}", "client")
            config = "\n".join(
                [
                    "client",
                    "dev tun",
                    "nobind",
                    f"remote {SERVER} 1194 udp",
                    f"ca {ca.cert_path}",
                    f"cert {credentials.certificate}",
                    f"key {credentials.private_key}",
                    f"tls-crypt {tls_crypt}",
                    "remote-cert-tls server",
                    "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
                    "verb 1",
                ]
            )
            client = OpenVpnProcess.start(
                namespaces.client, without_tun_setup(config), workdir / f"client-{number}.conf"
            )
            processes.append(client.process)
            started.append(client)
        for client in started:
            wait_for(client.connected, "every client to connect", timeout=120)
        time.sleep(3)  # past the handshakes' last packets
        link = f"vfk-{namespaces.token}s"
        ticks, packets, began = (
            _ticks(server_process.process.pid),
            _packets(namespaces.server, link),
            time.monotonic(),
        )
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        cpu_seconds = (_ticks(server_process.process.pid) - ticks) / os.sysconf("SC_CLK_TCK")
        counted = _packets(namespaces.server, link) - packets
        return {
            "keepalive": keepalive,
            "clients": clients,
            "seconds": round(elapsed, 1),
            "packets_per_client_per_minute": round(counted / clients / (elapsed / 60), 1),
            "server_cpu_seconds": round(cpu_seconds, 2),
            "cpu_percent_per_1000_clients": round(100 * cpu_seconds / elapsed * 1000 / clients, 2),
        }
    finally:
        stop_processes(processes)
        namespaces.remove()


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.keepalive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, help="idle clients (default 50)")
    parser.add_argument("--seconds", type=float, help="counted per keepalive (default 60)")
    parser.add_argument(
        "--quick", action="store_true", help="defaults of 4 clients and 5 s: checks that it works (CI)"
    )
    arguments = parser.parse_args()
    arguments.clients = arguments.clients or (4 if arguments.quick else 50)
    arguments.seconds = arguments.seconds or (5.0 if arguments.quick else 60.0)
    workdir = Path(tempfile.mkdtemp(prefix="vfk-"))
    try:
        results = [
            measure(workdir, keepalive, arguments.clients, arguments.seconds) for keepalive in KEEPALIVES
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        "| keepalive | idle clients | packets per client a minute | server CPU | CPU per 1000 idle clients |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in results:
        print(
            f"| {row['keepalive']} | {row['clients']} | {row['packets_per_client_per_minute']} | "
            f"{row['server_cpu_seconds']} s in {row['seconds']} s | "
            f"{row['cpu_percent_per_1000_clients']} % of a core |"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
