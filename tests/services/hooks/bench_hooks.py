"""How long a connect blocks the OpenVPN process: numbers, not assertions.

    sudo .venv/bin/pytest tests/services/hooks/bench_hooks.py -s     (not collected by default)

1. the shim as OpenVPN runs it (fork, exec, wait), with OpenVPN's environment: what every connect
   costs the process with our deferred hook;
2. a synchronous Python hook doing the same HTTPS call (what a plain client-connect script costs);
3. the real OpenVPN server under strace: from its fork of the shim to its wait4() returning.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openvpn_netlab import in_namespace, stop_process, wait_for

ROUNDS = 40


def _table(rows: list[tuple[str, list[float]]]) -> str:
    lines = [f"{'what':58} {'n':>4} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}"]
    for what, samples in rows:
        ordered = sorted(samples)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        lines.append(
            f"{what:58} {len(samples):>4} {statistics.median(samples) * 1000:>10.2f} "
            f"{p90 * 1000:>8.2f} {ordered[-1] * 1000:>8.2f}"
        )
    return "\n".join(lines)


def _environment(lab, common_name: str, script_type: str, deferred_file: str | None) -> dict:
    environment = {
        "script_type": script_type,
        "common_name": common_name,
        "VPNFLEET_PROFILE": "office",
        "ifconfig_pool_remote_ip": "198.19.128.200",
        "trusted_ip": "198.51.100.194",
    }
    if deferred_file:
        environment["client_connect_deferred_file"] = deferred_file
    return environment


def _timed(command: list, environment: dict, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(command, env=environment, check=True, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def test_bench_blocking(lab, hooks, vpn_client):
    common_name, ovpn = lab.new_config()
    files = []

    def shim_rounds(paced: bool) -> list[float]:
        times = []
        for _ in range(ROUNDS):
            handle, deferred = tempfile.mkstemp(prefix="vfk-ccr-")
            os.close(handle)
            files.append(deferred)
            environment = _environment(lab, common_name, "client-connect", deferred)
            times += _timed([str(lab.shim), "/dev/null"], environment, 1)
            if paced:
                # One connect at a time, as when clients arrive seconds apart.
                wait_for(lambda path=deferred: Path(path).read_text() != "2", "the worker's decision")
        return times

    baseline = _timed(["/bin/true"], {}, ROUNDS)
    paced_times = in_namespace(lab.namespaces.server, lambda: shim_rounds(True))
    burst_times = in_namespace(lab.namespaces.server, lambda: shim_rounds(False))
    # Every background worker delivers its decision (the real controller answers).
    wait_for(lambda: all(Path(path).read_text() in ("0", "1") for path in files), "the workers' decisions")
    decisions = {Path(path).read_text() for path in files}
    for path in files:
        os.unlink(path)

    python = lab.shim.read_text().split("PYTHON=", 1)[1].split("\n", 1)[0].strip("'")
    command = [python, "-I", "-m", "vpnfleet.hooks", "--settings", str(lab.hooks_config), "run"]
    environment = _environment(lab, common_name, "client-connect", None)
    sync_times = in_namespace(lab.namespaces.server, lambda: _timed(command, environment, ROUNDS // 2))

    openvpn_times = _under_strace(lab, vpn_client, ovpn)
    print()
    print(
        _table(
            [
                ("harness baseline: /bin/true via subprocess", baseline),
                ("shim, one connect at a time (incl. baseline)", paced_times),
                (f"shim, {ROUNDS} connects back to back, workers running", burst_times),
                ("synchronous Python hook + HTTPS call (incl. baseline)", sync_times),
                ("real OpenVPN under strace: fork of the shim to wait4()", openvpn_times),
            ]
        )
    )
    print(f"workers' decisions: {sorted(decisions)}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


def _under_strace(lab, vpn_client, ovpn: str) -> list[float]:
    """Connect clients one after another while strace records the server's clone and wait4."""
    trace = lab.workdir / "server.strace"
    strace = subprocess.Popen(
        [
            "strace",
            "-ttt",
            "-e",
            "trace=clone,clone3,vfork,wait4,execve",
            "-o",
            str(trace),
            "-p",
            str(lab.server.process.pid),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: trace.exists(), "strace to attach")
        for _ in range(8):
            client = vpn_client(ovpn)
            client.wait_until_up()
            client.stop()
    finally:
        stop_process(strace)
    times, forked = [], None
    for line in trace.read_text().splitlines():
        stamp = float(line.split()[0])
        if re.search(r"\b(clone3?|vfork)\(", line):
            forked = stamp
        elif "--- SIGCHLD" in line and forked is not None:
            # -ttt stamps a call when it starts; the blocking wait4() returns with the child's exit.
            times.append(stamp - forked)
            forked = None
    return times


STORM = 60


def test_bench_storm_worker_against_fallback(lab, hooks, worker):
    """A reconnect storm at the hooks: STORM connects handed to the shim at once, as a restarted
    process sees them. Time until every deferred file holds its decision, through the resident
    worker and then with the worker stopped (each shim falls back to a Python run)."""
    names = [lab.new_config()[0] for _ in range(STORM)]

    def storm() -> tuple[float, float, float]:
        deferred = []
        for _ in names:
            handle, path = tempfile.mkstemp(prefix="vfk-ccr-")
            os.close(handle)
            deferred.append(path)
        cpu_before = _machine_cpu()
        started = time.perf_counter()
        shims = [
            subprocess.Popen(
                [str(lab.shim), "/dev/null"],
                env=_environment(lab, name, "client-connect", path),
                stderr=subprocess.DEVNULL,
            )
            for name, path in zip(names, deferred, strict=True)
        ]
        for shim in shims:
            shim.wait()
        returned = time.perf_counter() - started
        wait_for(lambda: all(Path(path).read_text() in ("0", "1") for path in deferred), "every decision", 60)
        decided = time.perf_counter() - started
        allowed = sum(Path(path).read_text() == "1" for path in deferred)
        for path in deferred:
            os.unlink(path)
        assert allowed == STORM, allowed
        return returned, decided, _machine_cpu() - cpu_before

    through_worker = in_namespace(lab.namespaces.server, storm)
    worker.stop()
    fallback = in_namespace(lab.namespaces.server, storm)
    print()
    print(f"{STORM} connects at once     shims returned s   all decided s   machine CPU s")
    for what, (returned, decided, cpu) in (("worker", through_worker), ("fallback", fallback)):
        print(f"{what:24} {returned:>17.2f} {decided:>15.2f} {cpu:>19.2f}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs (machine CPU: other sessions too)")


def _machine_cpu() -> float:
    """CPU seconds this machine spent so far, every process, from /proc/stat (user, nice, system)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / os.sysconf("SC_CLK_TCK")
