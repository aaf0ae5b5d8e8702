"""The network-namespace OpenVPN lab the service suites share (daemon, hooks, controller).

Everything here is real: the namespaces and the veth pair are kernel objects, the servers and
clients are Debian's `openvpn`. Each suite picks its own name prefix and underlay addresses
(see the suite's lab module), so suites and parallel runs never meet. Every process is stopped
by the PID we started it with, and the namespaces are deleted again, also on failure.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from vpnfleet.shared import files
from vpnfleet.shared.pki import authority, keys

# Waiting for a process to come up or go away; generous, because a 2-core CI machine is slow.
WAIT_SECONDS = 60.0

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def require_lab(what: str) -> None:
    """Skip unless this machine can build the lab: root, iproute2 and openvpn."""
    if os.geteuid() != 0 or not shutil.which("openvpn") or not shutil.which("ip"):
        pytest.skip(f"{what} needs root, iproute2 and openvpn")


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_SECONDS):
    """Poll until ``condition()`` returns something truthy and return it; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """Stop them all at once: an openvpn that tells its peers it leaves takes a moment to exit."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        stop_process(process)


def in_namespace(namespace: str, work: Callable[[], object]):
    """Run ``work()`` in a short-lived thread that joined ``namespace`` and return its result.

    setns() moves only the calling thread, so the test process itself never leaves its own
    namespace; what ``work`` makes (a socket, a child process) lives in ``namespace``.
    """
    result: dict = {}

    def target() -> None:
        try:
            with open(f"/run/netns/{namespace}") as handle:
                if _libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {namespace}")
            result["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


@dataclass
class Namespaces:
    """A server and a client namespace joined by a veth pair on a small underlay network."""

    prefix: str
    server_address: str
    client_address: str
    prefix_length: int
    token: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def server(self) -> str:
        return f"{self.prefix}-s{self.token}"

    @property
    def client(self) -> str:
        return f"{self.prefix}-c{self.token}"

    @classmethod
    def create(cls, prefix: str, server_address: str, client_address: str, prefix_length: int) -> Namespaces:
        namespaces = cls(prefix, server_address, client_address, prefix_length)
        try:
            namespaces._build()
        except BaseException:
            namespaces.remove()
            raise
        return namespaces

    def _build(self) -> None:
        server_link, client_link = f"{self.prefix}-{self.token}s", f"{self.prefix}-{self.token}c"
        run("ip", "netns", "add", self.server)
        run("ip", "netns", "add", self.client)
        run("ip", "link", "add", server_link, "type", "veth", "peer", "name", client_link)
        run("ip", "link", "set", server_link, "netns", self.server)
        run("ip", "link", "set", client_link, "netns", self.client)
        for namespace, link, address in (
            (self.server, server_link, self.server_address),
            (self.client, client_link, self.client_address),
        ):
            run("ip", "-n", namespace, "addr", "add", f"{address}/{self.prefix_length}", "dev", link)
            run("ip", "-n", namespace, "link", "set", link, "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")

    def remove(self) -> None:
        # Deleting a namespace deletes the veth end inside it, and with it the peer.
        for namespace in (self.server, self.client):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)

    def socket_in(self, namespace: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """An IPv4 socket that lives in ``namespace`` (a socket stays where it was made)."""
        return in_namespace(namespace, lambda: socket.socket(socket.AF_INET, kind))

    def listening_socket(self, namespace: str, address: str = "127.0.0.1") -> socket.socket:
        """A listening TCP socket on a free port in ``namespace``."""
        listener = self.socket_in(namespace)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, 0))
        listener.listen(16)
        return listener


@dataclass
class Credentials:
    """The files of one TLS identity."""

    certificate: Path
    private_key: Path
    serial: int


def issue_files(
    ca: authority.CertificateAuthority,
    stem: Path,
    common_name: str,
    purpose: str,
    ip_addresses=(),
    lifetime_days=2,
) -> Credentials:
    """Issue a key and certificate from ``ca`` and write them as ``<stem>.crt`` and ``<stem>.key``."""
    private_key, certificate = ca.issue(
        common_name, purpose, ip_addresses=ip_addresses, lifetime_days=lifetime_days
    )
    certificate_path, key_path = Path(f"{stem}.crt"), Path(f"{stem}.key")
    files.write_file_atomic(certificate_path, keys.certificate_pem(certificate))
    files.write_file_atomic(key_path, keys.private_key_pem(private_key), 0o600)
    return Credentials(certificate_path, key_path, serial=certificate.serial_number)


@dataclass
class OpenVpnProcess:
    """A running `openvpn` and its log file."""

    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, namespace: str, config_text: str, config_path: Path) -> OpenVpnProcess:
        config_path.write_text(config_text)
        log_path = config_path.with_suffix(".log")
        # `ip netns exec` execs openvpn in place, so the PID we hold is openvpn's own.
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                "openvpn",
                "--config",
                str(config_path),
                "--log",
                str(log_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return cls(process, log_path)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connected(self) -> bool:
        return "Initialization Sequence Completed" in self.log()

    def wait_until_up(self) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"openvpn exited with {self.process.returncode}:\n{self.log()}")
            return self.connected()

        wait_for(up, f"openvpn to come up ({self.log_path})")

    def wait_until_refused(self) -> None:
        """A client the server refuses hears AUTH_FAILED and exits by itself."""
        wait_for(lambda: self.process.poll() is not None, f"the refused client to exit ({self.log_path})")
        assert "AUTH_FAILED" in self.log(), self.log()
        assert not self.connected(), self.log()

    def wait_until_halted(self) -> None:
        """A client the server disconnected with `client-kill <CID> HALT` stops by itself."""
        wait_for(lambda: self.process.poll() is not None, f"the halted client to exit ({self.log_path})")
        assert self.process.returncode == 0, self.log()
        assert "Halt command was pushed by server" in self.log(), self.log()

    def log_size(self) -> int:
        return len(self.log())

    def wait_until_dropped(self, since: int) -> None:
        """The server told this client to halt and the client heard it (it stops by itself; the
        daemon may end the client's instance on the server a moment later). ``since``: the log's
        size when the server was asked to drop it."""
        wait_for(
            lambda: "Halt command was pushed by server" in self.log()[since:],
            f"the client to hear its HALT ({self.log_path})",
        )

    def stop(self) -> None:
        stop_process(self.process)


class VpnClients:
    """Starts real openvpn clients in one namespace; ``stop_all`` stops whichever still run."""

    _numbers = itertools.count()  # numbers the clients' files across all tests of the session

    def __init__(self, namespace: str, directory: Path):
        self.namespace = namespace
        self.directory = directory
        self.started: list[OpenVpnProcess] = []

    def start(self, config_text: str, label: str = "client") -> OpenVpnProcess:
        path = self.directory / f"client-{next(self._numbers)}-{label}.conf"
        client = OpenVpnProcess.start(self.namespace, config_text, path)
        self.started.append(client)
        return client

    def stop_all(self) -> None:
        stop_processes([client.process for client in self.started])
        self.started.clear()


def without_tun_setup(client_config: str) -> str:
    """A client config for a namespace that several clients share: their tun devices get no
    addresses and no routes, so their pushed ones cannot clash. The server assigns and reports
    the addresses all the same.

    The device is still brought up, as `ifconfig` would: a tun device that is down never polls
    writable (a write gets EIO), and an OpenVPN client holding a packet for its tun device waits
    for that before it reads its socket again. One multicast packet from the server's side (the
    server forwards its tun device's IPv6 router solicitations to every client) would leave such
    a client deaf: no HALT heard, no ping, a ping-restart 8 s later."""
    bring_up = "up \"/bin/sh -c 'exec ip link set dev $dev up'\""
    return client_config.rstrip("\n") + f"\nifconfig-noexec\nroute-noexec\nscript-security 2\n{bring_up}\n"


def replace_credentials(ovpn: str, certificate_pem: str, key_pem: str) -> str:
    """The same .ovpn with another certificate and key (a certificate the controller never issued)."""
    ovpn = re.sub(
        r"<cert>.*?</cert>", lambda _m: f"<cert>\n{certificate_pem.strip()}\n</cert>", ovpn, flags=re.S
    )
    return re.sub(r"<key>.*?</key>", lambda _m: f"<key>\n{key_pem.strip()}\n</key>", ovpn, flags=re.S)
