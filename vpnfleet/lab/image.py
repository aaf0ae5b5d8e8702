"""The base image every lab host boots from: Debian made with debootstrap, cached on disk.

The cache key covers the suite and the package lists, so an image is rebuilt only when one
of them changes, and hosts of different suites (a mixed fleet) boot from one image each.
The build runs into a scratch folder and is renamed into place when it is complete: an
interrupted build never passes for a good one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .progress import Progress
from .spec import ImageSpec

# Units that make noise or reach out in a host that is booted offline; roles that need
# one of them enable it themselves.
UNITS_DISABLED_IN_IMAGE = ("nginx.service", "openvpn.service", "apt-daily.timer", "apt-daily-upgrade.timer")
UNITS_MASKED_IN_IMAGE = ("systemd-networkd-wait-online.service",)


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses, so the lab needs no address of its own."""
    override = os.environ.get("VPNFLEET_LAB_MIRROR")
    if override:
        return override
    candidates = []
    sources_dir = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (key.strip().lower(), value.strip())
                for key, unused_separator, value in (
                    line.partition(":") for line in stanza.splitlines() if not line.startswith("#")
                )
            )
            suites = fields.get("suites", "").split()
            if fields.get("types", "").split()[:1] == ["deb"] and not any(
                s.endswith("-security") for s in suites
            ):
                candidates.extend(fields.get("uris", "").split())
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.is_file():
        for line in sources_list.read_text().splitlines():
            match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and not match.group(2).endswith("-security"):
                candidates.append(match.group(1))
    debian = [uri for uri in candidates if uri.rstrip("/").endswith("/debian")]
    if not debian:
        raise RuntimeError(
            "no Debian archive found in this machine's apt sources; set VPNFLEET_LAB_MIRROR to one"
        )
    return debian[0]


class BaseImage:
    def __init__(self, state_dir: Path, spec: ImageSpec):
        self.spec = spec
        self.root = state_dir / "images" / spec.key()

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def ready(self) -> bool:
        return (self.root / "complete").is_file()

    def ensure(self, progress: Progress) -> None:
        if self.ready:
            progress.say(f"base image {self.root.name}: cached")
            return
        if shutil.which("debootstrap") is None:
            raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
        scratch = self.root.with_name(self.root.name + ".partial")
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        started = time.monotonic()
        mirror = debian_mirror()
        self._debootstrap(scratch / "rootfs", mirror, progress)
        if self.spec.backports:
            self._install_backports(scratch / "rootfs", mirror, progress)
        self._prepare_for_lab(scratch / "rootfs")
        (scratch / "packages").write_text(
            "".join(f"{name}\n" for name in sorted(self.spec.packages))
            + "".join(f"{name}/{self.spec.backports_suite}\n" for name in sorted(self.spec.backports))
        )
        (scratch / "complete").write_text(f"{time.monotonic() - started:.0f}\n")
        if self.root.exists():
            shutil.rmtree(self.root)
        scratch.rename(self.root)
        progress.say(f"base image {self.root.name}: built in {time.monotonic() - started:.0f} s")

    def _debootstrap(self, target: Path, mirror: str, progress: Progress) -> None:
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(sorted(self.spec.packages))}",
            self.spec.suite,
            str(target),
            mirror,
        ]
        count = len(self.spec.packages)
        progress.say(f"base image {self.root.name}: debootstrap {self.spec.suite} with {count} packages")
        # debootstrap says "I: Retrieving foo 1.2", "I: Configuring bar...": show the phase.
        _run_logged(command, target.parent / "debootstrap.log", r"I: (.*)", progress, "debootstrap")

    def _install_backports(self, rootfs: Path, mirror: str, progress: Progress) -> None:
        """Install the wanted packages from the suite's backports, and leave the suite in the
        image's apt sources and lists: a role that asks apt for the backports version then finds
        it installed and current, offline."""
        suite = self.spec.backports_suite
        (rootfs / "etc/apt/sources.list.d/vpnfleet-lab-backports.sources").write_text(
            "# Written by the vpnfleet lab: the base image took packages from here.\n"
            f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        names = sorted(self.spec.backports)
        progress.say(f"base image {self.root.name}: {', '.join(names)} from {suite}")
        log_path = rootfs.parent / "backports.log"
        # Services the packages bring must not start inside the build's chroot.
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        try:
            in_chroot = ["chroot", str(rootfs), "env", "DEBIAN_FRONTEND=noninteractive"]
            _run_logged([*in_chroot, "apt-get", "update"], log_path, r"(?:Get|Hit):\d+ (.*)", progress, "apt")
            _run_logged(
                [*in_chroot, "apt-get", "install", "--yes", "--no-install-recommends", "-t", suite, *names],
                log_path,
                r"(?:Unpacking|Setting up) (.*)",
                progress,
                "apt",
            )
        finally:
            policy.unlink()

    def _prepare_for_lab(self, rootfs: Path) -> None:
        def in_image(*args: str) -> None:
            subprocess.run(
                ["chroot", str(rootfs), *args],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        in_image("systemctl", "enable", "systemd-networkd.service")
        in_image("systemctl", "mask", *UNITS_MASKED_IN_IMAGE)
        for unit in UNITS_DISABLED_IN_IMAGE:
            if (rootfs / "lib/systemd/system" / unit).exists():
                in_image("systemctl", "disable", unit)
        # Host keys, host name and machine id belong to each host, not to the image.
        for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (rootfs / "etc/hostname").unlink(missing_ok=True)
        (rootfs / "etc/machine-id").write_text("")
        (rootfs / "etc/resolv.conf").unlink(missing_ok=True)
        (rootfs / "etc/resolv.conf").write_text("# lab hosts resolve no names\n")
        (rootfs / "etc/ssh/sshd_config.d/vpnfleet-lab.conf").write_text(
            "# Lab hosts: root logs in with the lab key only.\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nUseDNS no\n"
        )
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _run_logged(command: list[str], log_path: Path, phase: str, progress: Progress, what: str) -> None:
    """Run a build step into its log, showing the lines that match ``phase`` as progress."""
    with (
        open(log_path, "a") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            match = re.match(phase, line)
            if match:
                progress.status(f"base image: {match.group(1).strip()[:70]}")
    if process.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise RuntimeError(f"{what} failed ({' '.join(command[:6])}...):\n" + "\n".join(tail))
