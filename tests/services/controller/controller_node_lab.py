"""node-x1 for real: OpenVPN servers, the real VPN daemon, real clients with configs the controller issued.

From the shared ``openvpn_netlab``: a server namespace holds one real `openvpn` server per process
that the controller's settings plan for node-x1 (configs rendered by ``vpnfleet.shared.instances``
as the node role renders them, certificates from the controller's own CA, the CRL file the daemon
keeps), and real clients in the client namespace use the .ovpn files the controller hands out. The real daemon
(``vpnfleet.daemon``, its HTTPS server with mutual TLS) serves the processes' management sockets.
It runs on 127.0.0.1 in the test's own namespace, where the controller reaches it; a unix socket
is reached through the file system, so the daemon needs no place in the server namespace.
node-y1's daemon address, 127.0.0.2, has nothing listening: a node that does not answer.

Every name starts with "vfn-", the underlay is 198.51.100.224/28; the profiles' ranges (in
controller_helpers) are 198.19.64.0/19 and 2001:db8:f2::/64.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from openvpn_netlab import (
    Namespaces,
    OpenVpnProcess,
    VpnClients,
    in_namespace,
    issue_files,
    stop_processes,
    wait_for,
    without_tun_setup,
)
from vpnfleet.shared import instances
from vpnfleet.shared.pki import authority

from vpnfleet.daemon.server import DaemonHTTPServer, create_server
from vpnfleet.daemon.settings import DaemonSettings
from vpnfleet.settings_file import SettingsError

NAME_PREFIX = "vfn"
UNDERLAY_PREFIX = 28
NODE_X1_ADDRESS = "198.51.100.225"  # node-x1's public address: its OpenVPN processes listen here
CLIENT_ADDRESS = "198.51.100.226"
DAEMON_ADDRESS = "127.0.0.1"  # node-x1's daemon
SILENT_DAEMON_ADDRESS = "127.0.0.2"  # node-y1's daemon: nothing listens there


@dataclass
class NodeLab:
    workdir: Path
    namespaces: Namespaces
    pki_dir: Path
    servers: dict[str, OpenVpnProcess] = field(default_factory=dict)
    daemon: DaemonHTTPServer | None = None
    daemon_thread: threading.Thread | None = None

    @property
    def crl_path(self) -> Path:
        return self.workdir / "crl.pem"

    @property
    def daemon_port(self) -> int:
        return self.daemon.server_address[1]

    def listed(self) -> list[dict] | None:
        """node-x1's connections, as its daemon lists them (asked as the controller would);
        None while a process did not answer in time (a busy machine), so callers ask again."""
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca" / "ca.crt"))
        context.load_cert_chain(self.pki_dir / "daemon_client.crt", self.pki_dir / "daemon_client.key")
        url = f"https://{DAEMON_ADDRESS}:{self.daemon_port}/o/connection_list"
        with urllib.request.urlopen(url, context=context, timeout=30) as response:  # noqa: S310 - https
            answer = json.load(response)
        return None if answer["unreachable_process_list"] else answer["connection_list"]

    def wait_until_listed(self, *common_names: str) -> list[dict]:
        """Wait until the daemon lists a connection of each of these names; their entries."""

        def entries() -> list[dict] | None:
            listed = self.listed() or []
            mine = [entry for entry in listed if entry["common_name"] in common_names]
            return mine if {entry["common_name"] for entry in mine} == set(common_names) else None

        return wait_for(entries, f"the daemon to list {', '.join(common_names)}")

    def wait_until_only(self, *common_names: str) -> None:
        """Wait until the daemon lists exactly these names (a client told to halt leaves the
        server's list a moment after it was killed)."""

        def only() -> bool:
            listed = self.listed()
            return listed is not None and sorted(e["common_name"] for e in listed) == sorted(common_names)

        wait_for(only, f"node-x1 to list only {', '.join(common_names) or 'nobody'}")

    def wait_until_empty(self) -> None:
        self.wait_until_only()

    def wait_until_refused_by_crl(self, common_name: str) -> None:
        """Wait until a process of node-x1 turned this certificate away as revoked (its CRL check)."""
        refusal = f"error=certificate revoked: CN={common_name},"
        wait_for(
            lambda: any(refusal in server.log() for server in self.servers.values()),
            f"node-x1 to refuse the revoked certificate of {common_name}",
        )

    def multicast_to_clients(self) -> None:
        """One IPv6 multicast packet out of every process's tun device, which the process sends
        on to each of its clients, as it does with the router solicitations the kernel sends
        there by itself (at times no test chooses)."""
        configs = [server.log_path.with_suffix(".conf").read_text() for server in self.servers.values()]
        devices = [re.search(r"^dev (\S+)$", config, re.M).group(1) for config in configs]

        def send() -> None:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
                for device in devices:
                    sender.sendto(b"vfn", ("ff02::1", 9, 0, socket.if_nametoindex(device)))

        in_namespace(self.namespaces.server, send)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.shutdown()
            self.daemon.server_close()
        stop_processes([server.process for server in self.servers.values()])
        self.namespaces.remove()
        # VFN_KEEP=1 keeps the files (configs, logs) for a look after a failure.
        if os.environ.get("VFN_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)


def client_config(ovpn: str, proto: str | None = "tcp") -> str:
    """The .ovpn as a client in location-x uses it: node-x1's remotes only (node-y1 is not in
    this lab), of one protocol unless ``proto`` is None, and the tun device left unconfigured
    (clients share the client namespace).

    TCP unless a test is about UDP: the server drops a TCP client the moment it goes, while a
    UDP client's exit notification leaves its entry listed for some seconds more."""
    lines = [
        line
        for line in ovpn.splitlines()
        if not line.startswith("remote ")
        or (line.split()[1] == NODE_X1_ADDRESS and proto in (None, line.split()[3]))
    ]
    return without_tun_setup("\n".join(lines))


def _server_configs(lab: NodeLab, settings: dict, socket_dir: Path) -> dict[str, str]:
    """The config of every process node-x1 has in the controller's settings, as the node role renders it."""
    [node] = [node for node in settings["nodes"] if node["name"] == "node-x1"]
    ca = authority.CertificateAuthority.load(str(lab.pki_dir / "ca"))
    server = issue_files(ca, lab.workdir / "node-x1", "node-x1", "vpn_server")
    configs = {}
    for profile in settings["profiles"]:
        listen = [f"{p['proto']}/{p['port']}" for p in node["processes"] if p["profile"] == profile["id"]]
        if not listen:
            continue
        plan = instances.plan_profile(
            profile["id"],
            profile["ipv4_range"],
            profile.get("ipv6_range"),
            listen=listen,
            listen_address=NODE_X1_ADDRESS,
        )
        options = instances.ServerOptions(
            ca_path=str(lab.pki_dir / "ca" / "ca.crt"),
            cert_path=str(server.certificate),
            key_path=str(server.private_key),
            crl_path=str(lab.crl_path),  # kept by the daemon: the controller pushes every new CRL
            tls_crypt_path=profile["tls_crypt_key_file"],
            full_tunnel=profile["default_gateway"],
            routes=tuple(profile.get("routes", ())),
            user=None,  # the files live in the test's private directories
            group=None,
        )
        for process in plan.processes:
            text = instances.render_server_config(plan, process, options)
            socket_path = instances.management_socket(profile["id"], process.index)
            configs[process.name] = text.replace(
                f"management {socket_path} unix", f"management {socket_dir / f'{process.name}.sock'} unix"
            )
    return configs


def start_daemon(lab: NodeLab, maintenance_flag: Path, **settings: object) -> DaemonHTTPServer:
    """A real daemon's HTTPS server for node-x1 on a free port of 127.0.0.1 (not yet serving):
    its processes' management sockets, its CRL, and ``settings`` beside them."""
    for _ in range(10):
        with socket.socket() as probe:
            probe.bind((DAEMON_ADDRESS, 0))
            port = probe.getsockname()[1]
        checked = DaemonSettings.from_mapping(
            {
                "listen_address": DAEMON_ADDRESS,
                "listen_port": port,
                "tls_certificate": str(lab.pki_dir / "daemon_server.crt"),
                "tls_private_key": str(lab.pki_dir / "daemon_server.key"),
                "tls_ca": str(lab.pki_dir / "ca" / "ca.crt"),
                "tls_crl": str(lab.crl_path),
                "management_socket_glob": f"{lab.workdir / 'sockets'}/*.sock",
                "management_timeout": 10,  # generous: this machine may be busy
                "maintenance_flag_file": str(maintenance_flag),
                **settings,
            }
        )
        try:
            return create_server(checked)
        except SettingsError:  # someone took the port in between: take another
            continue
    raise AssertionError("found no free port for the daemon")


def _start_daemon(lab: NodeLab) -> None:
    """The real daemon, serving in a thread."""
    lab.daemon = start_daemon(lab, lab.workdir / "maintenance")
    lab.daemon_thread = threading.Thread(target=lab.daemon.serve_forever, name="vpnfleet-daemon", daemon=True)
    lab.daemon_thread.start()


def start_node_lab(pki_dir: Path, settings: dict) -> NodeLab:
    # Directly under /tmp: unix socket paths must stay below 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}-"))
    try:
        namespaces = Namespaces.create(NAME_PREFIX, NODE_X1_ADDRESS, CLIENT_ADDRESS, UNDERLAY_PREFIX)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    lab = NodeLab(workdir, namespaces, pki_dir)
    # The node starts with the CA's own CRL, as the node role seeds it.
    shutil.copyfile(pki_dir / "ca" / "crl.pem", lab.crl_path)
    try:
        socket_dir = workdir / "sockets"
        socket_dir.mkdir()
        for name, text in _server_configs(lab, settings, socket_dir).items():
            lab.servers[name] = OpenVpnProcess.start(namespaces.server, text, workdir / f"{name}.conf")
        for server in lab.servers.values():
            server.wait_until_up()
        _start_daemon(lab)
        return lab
    except BaseException:
        lab.stop()
        raise


def vpn_clients(lab: NodeLab) -> VpnClients:
    return VpnClients(lab.namespaces.client, lab.workdir)
