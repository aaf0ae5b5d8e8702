"""Lab hosts: an overlay of the base image per host, booted with systemd-nspawn.

Each host keeps its own folder under the lab's state directory: the overlay's upper and
work layers, the merged root it boots from, the nspawn process id and its console log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .image import BaseImage
from .spec import Host, LabSpec

BOOTED_STATES = ("running", "degraded")
CGROUP_PARENT = "vpnfleet-lab"


def cgroup_hierarchies() -> list[Path]:
    """The cgroup mounts a host's systemd manages: cgroup2 and the named systemd hierarchy."""
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            fs_type, super_options = fields[separator + 1], fields[separator + 3]
            if fs_type == "cgroup2" or (fs_type == "cgroup" and "name=systemd" in super_options.split(",")):
                found.append(Path(fields[4]))
    return found


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == target for line in mountinfo)


def _process_args(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


@dataclass
class Machine:
    state_dir: Path
    name: str
    # None for a host the lab made that the inventory no longer names: it can still be stopped.
    host: Host | None = None

    @classmethod
    def of(cls, state_dir: Path, host: Host) -> Machine:
        return cls(state_dir, host.name, host)

    @property
    def known_host(self) -> Host:
        """The inventory's host: only a machine the inventory names is made, started and reached."""
        if self.host is None:
            raise RuntimeError(f"{self.name}: the inventory no longer names this host")
        return self.host

    @property
    def folder(self) -> Path:
        return self.state_dir / "hosts" / self.name

    @property
    def cgroups(self) -> list[Path]:
        return [hierarchy / CGROUP_PARENT / self.name for hierarchy in cgroup_hierarchies()]

    def _enter_own_cgroup(self) -> None:
        """Runs in the child before exec: without a host systemd and with --keep-unit, nspawn puts
        its payload beside its own cgroup, so two hosts started from one cgroup would share theirs
        and their systemds would fight over it."""
        for cgroup in self.cgroups:
            (cgroup / "cgroup.procs").write_text(f"{os.getpid()}\n")

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def pid_file(self) -> Path:
        return self.folder / "nspawn.pid"

    @property
    def console_log(self) -> Path:
        return self.folder / "console.log"

    def nspawn_pid(self) -> int | None:
        """The nspawn process of this host, if the one we started is still running."""
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        args = _process_args(pid)
        # A reused process id would not be our nspawn for this very root.
        if args[:1] == ["systemd-nspawn"] and f"--directory={self.root}" in args:
            return pid
        return None

    def leader_pid(self) -> int | None:
        """PID 1 of the host, seen from outside."""
        pid = self.nspawn_pid()
        if pid is None:
            return None
        children = Path(f"/proc/{pid}/task/{pid}/children")
        try:
            found = children.read_text().split()
        except FileNotFoundError:
            return None
        return int(found[0]) if found else None

    def prepare(self, image: BaseImage, spec: LabSpec, authorized_key: str) -> None:
        """Mount the host's overlay and give it its identity; safe to repeat."""
        upper, work = self.folder / "upper", self.folder / "work"
        for folder in (upper, work, self.root):
            folder.mkdir(parents=True, exist_ok=True)
        if not is_mounted(self.root):
            subprocess.run(
                [
                    "mount",
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    f"lowerdir={image.rootfs},upperdir={upper},workdir={work}",
                    str(self.root),
                ],
                check=True,
            )
        (self.folder / "image").write_text(image.root.name + "\n")
        root = self.root
        (root / "etc/hostname").write_text(self.known_host.name + "\n")
        hosts_lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        hosts_lines += [f"{other.ipv4} {other.name}" for other in spec.hosts]
        hosts_lines += [f"{other.ipv6} {other.name}" for other in spec.hosts]
        (root / "etc/hosts").write_text("\n".join(hosts_lines) + "\n")
        network = self.known_host.network
        (root / "etc/systemd/network/10-lab-host0.network").write_text(
            "# Written by the vpnfleet lab: this host's place on its lab network.\n"
            "[Match]\nName=host0\n\n[Network]\n"
            f"Address={self.known_host.ipv4}/{network.ipv4.prefixlen}\n"
            f"Address={self.known_host.ipv6}/{network.ipv6.prefixlen}\n"
            f"Gateway={network.gateway4}\nGateway={network.gateway6}\n"
            "IPv6AcceptRA=no\nLLMNR=no\nMulticastDNS=no\n"
        )
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(authorized_key)
        authorized.chmod(0o600)
        host_key = root / "etc/ssh/ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"root@{self.known_host.name}",
                    "-f",
                    str(host_key),
                ],
                check=True,
            )

    def start(self) -> None:
        command = [
            "systemd-nspawn",
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--directory={self.root}",
            f"--machine={self.known_host.name}",
            f"--network-bridge={self.known_host.network.bridge}",
            "--bind=/dev/net/tun",
            "--capability=CAP_NET_ADMIN",
            "--resolv-conf=off",
            "--timezone=off",
            "--console=read-only",
        ]
        for cgroup in self.cgroups:
            cgroup.mkdir(parents=True, exist_ok=True)
        with open(self.console_log, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._enter_own_cgroup,
            )
        self.pid_file.write_text(f"{process.pid}\n")

    def run(self, *command: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command inside the host (all its namespaces), like a shell on it would."""
        leader = self.leader_pid()
        if leader is None:
            raise RuntimeError(f"lab host {self.name} is not running")
        return subprocess.run(
            ["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "--", *command],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def system_state(self) -> str:
        if self.leader_pid() is None:
            return "stopped" if self.folder.exists() else "absent"
        try:
            state = self.run("systemctl", "is-system-running").stdout.strip()
        except subprocess.TimeoutExpired:
            return "unresponsive"
        return state or "starting"

    def ssh_answers(self, timeout: float = 1.0) -> bool:
        try:
            with socket.create_connection((str(self.known_host.ipv4), 22), timeout=timeout) as connection:
                return connection.recv(4).startswith(b"SSH")
        except OSError:
            return False

    def stop(self, grace: float = 30.0) -> None:
        pid = self.nspawn_pid()
        if pid is not None:
            # nspawn turns SIGTERM into an orderly shutdown of the host's systemd.
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.nspawn_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.nspawn_pid() is not None:
                os.killpg(pid, signal.SIGKILL)
                while self.nspawn_pid() is not None:
                    time.sleep(0.1)
        if is_mounted(self.root):
            subprocess.run(["umount", str(self.root)], check=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        for cgroup in self.cgroups:
            _remove_cgroup(cgroup)


def _remove_cgroup(cgroup: Path) -> None:
    """cgroups are removed with rmdir, innermost first, once no process is left in them."""
    if not cgroup.is_dir():
        return
    for child in sorted(
        (p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        child.rmdir()
    cgroup.rmdir()
    parent = cgroup.parent
    if parent.name == CGROUP_PARENT and not any(p.is_dir() for p in parent.iterdir()):
        parent.rmdir()
