"""vpnfleet-lab: real Debian test hosts on this machine, made from an Ansible inventory.

    vpnfleet-lab up [--hosts a,b]    build the base image if needed, boot the hosts, wait for SSH
    vpnfleet-lab status              a table of the hosts and what they are doing
    vpnfleet-lab exec HOST -- CMD    run a command on a host (systemd's namespaces, no SSH)
    vpnfleet-lab down                stop every host and remove every mount, link and namespace made

The state (image cache, host overlays, the lab's SSH key) lives in /var/lib/vpnfleet-lab, or
in $VPNFLEET_LAB_DIR. Only one lab command runs at a time: the others wait for its lock.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .image import BaseImage, debian_mirror
from .machines import BOOTED_STATES, Machine
from .network import LabNetwork, check_no_clash_with
from .progress import Progress
from .spec import Host, LabSpec, LabSpecError, Network, read_spec

DEFAULT_STATE_DIR = Path("/var/lib/vpnfleet-lab")
BOOT_TIMEOUT = 180.0


def state_dir() -> Path:
    return Path(os.environ.get("VPNFLEET_LAB_DIR", DEFAULT_STATE_DIR))


@contextmanager
def lab_lock(folder: Path, progress: Progress):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.say("another lab command is running; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def lab_key(folder: Path) -> str:
    key = folder / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vpnfleet-lab", "-f", str(key)], check=True
        )
    return key.with_suffix(".pub").read_text()


def _record_networks(folder: Path, spec: LabSpec) -> None:
    """Remember the networks made, so `down` removes them even if the inventory changed since."""
    path = folder / "networks.json"
    known = {entry["name"]: entry for entry in (json.loads(path.read_text()) if path.exists() else [])}
    for network in spec.networks:
        known[network.name] = {"name": network.name, "ipv4": str(network.ipv4), "ipv6": str(network.ipv6)}
    path.write_text(json.dumps(list(known.values()), indent=2))


def _recorded_networks(folder: Path) -> tuple[Network, ...]:
    path = folder / "networks.json"
    if not path.exists():
        return ()
    return tuple(
        Network(entry["name"], ipaddress.IPv4Network(entry["ipv4"]), ipaddress.IPv6Network(entry["ipv6"]))
        for entry in json.loads(path.read_text())
    )


def _machines(folder: Path, hosts: tuple[Host, ...]) -> list[Machine]:
    return [Machine.of(folder, host) for host in hosts]


def command_up(spec: LabSpec, names: list[str] | None, progress: Progress) -> int:
    folder = state_dir()
    hosts = spec.select(names)
    with lab_lock(folder, progress):
        images = {image: BaseImage(folder, image) for image in spec.images(hosts)}
        for image in images.values():
            image.ensure(progress)
        check_no_clash_with(spec, debian_mirror())
        made = LabNetwork(spec).up()
        _record_networks(folder, spec)
        progress.say("networks: " + (", ".join(made) if made else "already up"))
        key = lab_key(folder)
        machines = _machines(folder, hosts)
        started = []
        for machine in machines:
            if machine.nspawn_pid() is not None:
                continue
            machine.prepare(images[machine.known_host.image], spec, key)
            machine.start()
            started.append(machine.known_host.name)
        progress.say("booting " + ", ".join(started) if started else "every host is already up")
        waiting = {machine.known_host.name: machine for machine in machines}
        deadline = time.monotonic() + BOOT_TIMEOUT
        while waiting and time.monotonic() < deadline:
            for name, machine in list(waiting.items()):
                if machine.nspawn_pid() is None:
                    tail = machine.console_log.read_text(errors="replace").splitlines()[-10:]
                    progress.say(f"{name}: systemd-nspawn exited; its console said:\n  " + "\n  ".join(tail))
                    return 1
                if machine.system_state() in BOOTED_STATES and machine.ssh_answers():
                    progress.say(f"{name}: up ({machine.known_host.ipv4})")
                    del waiting[name]
            if waiting:
                progress.status("waiting for " + ", ".join(sorted(waiting)))
                time.sleep(0.5)
        if waiting:
            progress.say(
                "timed out waiting for " + ", ".join(sorted(waiting)) + "; see `vpnfleet-lab status`"
            )
            return 1
    print_status(spec, hosts)
    return 0


def command_down(spec: LabSpec | None, progress: Progress) -> int:
    folder = state_dir()
    with lab_lock(folder, progress):
        hosts_dir = folder / "hosts"
        # Every host this lab made, whether or not the inventory still names it.
        names = sorted(path.name for path in hosts_dir.iterdir()) if hosts_dir.is_dir() else []
        for name in names:
            Machine(folder, name).stop()
            progress.say(f"{name}: stopped and removed")
        networks = {n.name: n for n in _recorded_networks(folder)}
        networks.update({n.name: n for n in (spec.networks if spec else ())})
        scratch = LabSpec(inventory=(), networks=tuple(networks.values()), hosts=())
        removed = LabNetwork(scratch).down()
        (folder / "networks.json").unlink(missing_ok=True)
        progress.say("removed " + (", ".join(removed) if removed else "no links (none were up)"))
    return 0


def print_status(spec: LabSpec, hosts: tuple[Host, ...] | None = None) -> None:
    folder = state_dir()
    rows = [("HOST", "ROLE", "ADDRESS", "NETWORK", "SUITE", "SYSTEMD", "SSH")]
    for machine in _machines(folder, hosts or spec.hosts):
        state = machine.system_state()
        ssh = "yes" if state in BOOTED_STATES and machine.ssh_answers() else "no"
        rows.append(
            (
                machine.known_host.name,
                machine.known_host.role,
                str(machine.known_host.ipv4),
                machine.known_host.network.bridge,
                machine.known_host.image.suite,
                state,
                ssh,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for spec_of_image in spec.images(hosts):
        image = BaseImage(folder, spec_of_image)
        print(f"base image: {image.root.name} ({'cached' if image.ready else 'not built'})")
    print(f"state in {folder}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpnfleet-lab", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument(
        "-i",
        "--inventory",
        type=Path,
        action="append",
        help="the Ansible inventory that describes the lab (default: inventories/lab); "
        "more than one merge as they do for ansible-playbook",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build and boot the lab (idempotent)")
    up.add_argument("--hosts", help="comma-separated subset of the inventory's hosts")
    commands.add_parser("down", help="stop and remove everything the lab made")
    commands.add_parser("status", help="print a table of the lab's hosts")
    run = commands.add_parser("exec", help="run a command on a lab host")
    run.add_argument("host")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    inventories = tuple(args.inventory or [Path(os.environ.get("VPNFLEET_LAB_INVENTORY", "inventories/lab"))])

    if os.geteuid() != 0:
        parser.error("the lab makes mounts, links and containers: run it as root")
    progress = Progress()
    try:
        if args.command == "down":
            spec = read_spec(inventories) if all(path.exists() for path in inventories) else None
            return command_down(spec, progress)
        spec = read_spec(inventories)
        if args.command == "up":
            return command_up(spec, args.hosts.split(",") if args.hosts else None, progress)
        if args.command == "status":
            print_status(spec)
            return 0
        (host,) = spec.select([args.host])
        command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        result = Machine.of(state_dir(), host).run(*(command or ["true"]), timeout=3600)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    except (LabSpecError, RuntimeError) as error:
        print(f"vpnfleet-lab: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
