"""What the benchmarks share of the lab: its session lock, its hosts (commands and files in them)
and the processes a benchmark starts there, stopped by their PIDs and nothing else."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SESSION_LOCK = Path("/run/vpnfleet-lab.session")
LAB_STATE = Path(os.environ.get("VPNFLEET_LAB_DIR", "/var/lib/vpnfleet-lab"))
# The benchmark's --inventory sets it.
INVENTORY = Path(os.environ.get("VPNFLEET_LAB_INVENTORY", REPO / "inventories" / "lab")).resolve()


def say(message: str) -> None:
    name = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "bench"
    print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- the lab


def lab_tool() -> str:
    beside = Path(sys.executable).parent / "vpnfleet-lab"
    return str(beside) if beside.exists() else (shutil.which("vpnfleet-lab") or "vpnfleet-lab")


def lab(
    *args: str, check: bool = True, timeout: float = 900, inventory: Path | None = None
) -> subprocess.CompletedProcess:
    command = [lab_tool(), "-i", str(inventory or INVENTORY), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise BenchError(
            "vpnfleet-lab %s failed (%d):\n%s%s"
            % (" ".join(args), result.returncode, result.stdout, result.stderr)
        )
    return result


def run_on(host: str, *command: str, check: bool = True, timeout: float = 300) -> str:
    return lab("exec", host, "--", *command, check=check, timeout=timeout).stdout


def sh_on(host: str, script: str, check: bool = True, timeout: float = 300) -> str:
    return run_on(host, "sh", "-c", script, check=check, timeout=timeout)


def host_root(host: str) -> Path:
    return LAB_STATE / "hosts" / host / "root"


def put(host: str, path: str, text: str, mode: int = 0o644) -> None:
    """Write a file into a running host through its root (an overlay mount)."""
    target = host_root(host) / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    os.chmod(target, mode)


def _held_by_an_ancestor() -> bool:
    """Whether a process this one descends from holds the session lock (the benchmark was started
    as ``flock /run/vpnfleet-lab.session python -m bench...``): it would wait for itself forever."""
    status = os.stat(SESSION_LOCK)
    lock_file = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    ancestors, pid = set(), os.getppid()
    while pid > 1 and pid not in ancestors:
        ancestors.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF"; waiters' lines have "->" after N:.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == lock_file and fields[3] == "WRITE":
            if fields[4].isdigit() and int(fields[4]) in ancestors:
                return True
    return False


@contextlib.contextmanager
def session_lock():
    SESSION_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(SESSION_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if _held_by_an_ancestor():
                say("the lab session lock is held by the command that started this benchmark (flock)")
                yield
                return
            say(f"the lab is in use by another session ({SESSION_LOCK}); waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        say("holding the lab session lock")
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            say("released the lab session lock")


class Processes:
    """Every process this benchmark started inside the hosts, by host and PID, so that exactly
    these (and nothing else) are stopped at the end."""

    def __init__(self):
        self.started: list[tuple[str, int, str]] = []

    def add(self, host: str, pid: int, what: str) -> None:
        self.started.append((host, pid, what))

    def stop(self, host: str, pid: int) -> None:
        sh_on(
            host,
            f"kill {pid} 2>/dev/null; for i in $(seq 50); do kill -0 {pid} 2>/dev/null || exit 0; "
            "sleep 0.1; done; kill -9 %d 2>/dev/null; true" % pid,
            check=False,
        )
        self.started = [entry for entry in self.started if entry[:2] != (host, pid)]

    def stop_together(self, host: str, pids: list[int]) -> None:
        """Stop several processes of one host at once: each may take seconds to exit (an OpenVPN
        server tells its clients first), and in turn those seconds add up."""
        if not pids:
            return
        listed = " ".join(str(pid) for pid in pids)
        sh_on(
            host,
            f"kill {listed} 2>/dev/null; for i in $(seq 50); do alive=; for p in {listed}; do "
            'kill -0 $p 2>/dev/null && alive="$alive $p"; done; [ -z "$alive" ] && exit 0; sleep 0.1; '
            "done; kill -9 $alive 2>/dev/null; true",
            check=False,
        )
        self.started = [entry for entry in self.started if not (entry[0] == host and entry[1] in pids)]

    def stop_all(self) -> None:
        for host, pid, _ in list(reversed(self.started)):
            try:
                self.stop(host, pid)
            except Exception as error:  # noqa: BLE001 - cleanup goes on; the lab goes down anyway
                say(f"could not stop {pid} on {host}: {error}")


def start_daemon(procs: Processes, host: str, command: str, pidfile: str, what: str) -> int:
    """Start a self-daemonising command (openvpn --daemon, iperf3 -D) and record its PID."""
    sh_on(host, f"rm -f {pidfile}; {command} </dev/null >/dev/null 2>&1")
    for _ in range(100):
        text = sh_on(host, f"cat {pidfile} 2>/dev/null", check=False).strip()
        if text.isdigit():
            pid = int(text)
            procs.add(host, pid, what)
            return pid
        time.sleep(0.1)
    raise BenchError(f"{what} on {host} wrote no pid file {pidfile}")


def cpu_ticks(host: str, pids: list[int]) -> dict[int, int]:
    """utime+stime of each process (clock ticks), read from /proc/PID/stat inside the host."""
    out = sh_on(host, " ; ".join(f"echo {pid} $(cat /proc/{pid}/stat)" for pid in pids))
    ticks = {}
    for line in out.splitlines():
        pid, rest = line.split(" ", 1)
        fields = rest.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
        ticks[int(pid)] = int(fields[11]) + int(fields[12])  # utime (14th), stime (15th)
    return ticks


RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<un>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def site_playbook(junit_dir: Path | None = None, inventory: Path | None = None) -> dict:
    """playbooks/site.yml once on the lab (or ``inventory``): wall time, the recap per host, the
    tasks that changed something and, given a directory for ansible-core's JUnit callback, the
    slowest tasks."""
    environment = dict(os.environ, ANSIBLE_INVENTORY=str(inventory or INVENTORY), ANSIBLE_FORCE_COLOR="0")
    if junit_dir is not None:
        environment.update(
            ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.junit",
            JUNIT_OUTPUT_DIR=str(junit_dir),
            JUNIT_TASK_CLASS="yes",
            JUNIT_HIDE_TASK_ARGUMENTS="yes",
        )
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/site.yml"]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise BenchError(
            f"site.yml failed ({result.returncode}):\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
        )
    recap = {
        match["host"]: {"changed": int(match["changed"]), "failed": int(match["failed"])}
        for match in RECAP.finditer(result.stdout)
    }
    slowest = slowest_tasks(junit_dir) if junit_dir is not None else []
    return {
        "seconds": round(seconds, 1),
        "recap": recap,
        "changed_tasks": changed_tasks(result.stdout),
        "slowest_tasks": slowest,
    }


TASK_HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<task>.*)\] \**$")
CHANGED_LINE = re.compile(r"^changed: \[(?P<host>[^\]]+)\]")


def changed_tasks(output: str) -> list[dict]:
    """Each task (and handler) that reported a change, with its hosts, from the default callback's
    output: what a run that should change nothing changed."""
    found: dict[str, list[str]] = {}
    task = None
    for line in output.splitlines():
        if header := TASK_HEADER.match(line):
            task = header["task"]
        elif (changed := CHANGED_LINE.match(line)) and task is not None:
            hosts = found.setdefault(task, [])
            if changed["host"] not in hosts:
                hosts.append(changed["host"])
    return [{"task": name, "hosts": hosts} for name, hosts in found.items()]


def slowest_tasks(junit_dir: Path, count: int = 8) -> list[dict]:
    most: dict[str, float] = {}
    for report in junit_dir.glob("*.xml"):
        tree = ElementTree.parse(report)  # noqa: S314 - written by ansible-core's callback, here
        for case in tree.getroot().iter("testcase"):
            # "[host] play: role : task": the task's longest time on one host, without the play.
            name = re.sub(r"^\[[^\]]+\]\s*", "", case.get("name", "")).split(": ", 1)[-1]
            most[name] = max(most.get(name, 0.0), float(case.get("time", 0) or 0))
        report.unlink()
    ranked = sorted(most.items(), key=lambda item: item[1], reverse=True)[:count]
    return [{"task": name, "seconds": round(seconds, 1)} for name, seconds in ranked]


def take_lab_arguments(parser, arguments) -> None:
    """What every benchmark on the lab checks first: root, and the inventory it was given."""
    if os.geteuid() != 0:
        parser.error("the lab needs root")
    if arguments.inventory:
        global INVENTORY
        INVENTORY = arguments.inventory.resolve()


def interrupt_on_sigterm() -> None:
    """SIGTERM as Ctrl-C, so that a benchmark stopped by CI still cleans up the lab."""

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def result_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_results(name: str, results: dict, stamp: str) -> Path:
    """bench/results/NAME-STAMP.json and NAME-latest.json; the first one's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    for file_name in (f"{name}-{stamp}.json", f"{name}-latest.json"):
        (RESULTS / file_name).write_text(text)
    say(f"wrote {RESULTS / f'{name}-{stamp}.json'}")
    return RESULTS / f"{name}-{stamp}.json"
