"""bench/storm: reconnect storms. Many real OpenVPN clients on one node; then a process, all of the
node's processes, the node itself or the controller restarts, and the clients come back.

    python -m bench.storm [--quick] [--clients N] [--events process,node,full,reboot,controller]

How (see docs/bench.md):

- the lab is deployed with playbooks/site.yml from a copy of its inventory whose profile
  "internet" has a /22 (STORM_RANGE): each of node-x1's two processes a /25, 124 clients;
- the controller issues one config per test user
  (``storm-0`` ... ``storm-N``) through its own code, run on the controller host as the service's
  user (the same ``create_config`` as the portal and the API), not through N portal logins;
- each client runs in its own network namespace on the client host (a bridge in 198.19.252.0/22,
  masqueraded to the client host's address), with the config's remotes cut to the processes under
  test, so that "one process" really is one process; each pings the tunnel's gateway twice a
  second through its tunnel (a route of its namespace makes 198.18.0.0/15 unreachable outside it);
- a client is back when its first reply after its outage arrives. For each event: seconds from
  the command until 50 / 90 / 100 % are back, the handshakes per second the node logged, the
  connect check's latency as the nodes' hooks measured it (the controller's answer with network
  and TLS, p50/p99), the node's load, and the OpenVPN processes' CPU seconds and memory per client.

Clients fill the first process up to its max-clients, then the next. Events: ``process``
(systemctl restart of the first process; figures over its clients), ``node`` (all of the node's
processes), ``full`` (one more client, with the controller's config for it, meets the full first
process: seconds until it passes traffic through another process or node), ``reboot`` (the node
host reboots), ``controller`` (the controller's service restarts while the clients and the
hooks' worker stay: nobody should drop). ``--quick`` (CI's mode): 4 clients, the process and
full events, on a lab of the controller, node-x1 and the client with the profile under test alone
(no WireGuard) and a range that makes each of its two processes a /29 (4 clients: full at once).

It holds the lab's session lock for the whole run, starts from a clean lab and takes it down at
the end, also on failure. It prints a table, draws bench/results/storm-<timestamp>.png (clients
back over time) and writes bench/results/storm-<timestamp>.json and storm-latest.json.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

import bench.lab
from bench.lab import (
    BenchError,
    interrupt_on_sigterm,
    lab,
    put,
    result_stamp,
    say,
    session_lock,
    sh_on,
    site_playbook,
    take_lab_arguments,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

NODE, CLIENT, CONTROLLER = "node-x1", "client", "controller"
NODE_ADDRESS = "198.51.100.10"
PROFILE = "internet"
# The client namespaces' own network, inside the benchmarking range and away from every VPN range.
NAMESPACE_NETWORK = ipaddress.ip_network("198.19.252.0/22")
# The profile's IPv4 range for the run: the lab's /24, cut into four node parts (max_nodes) and two
# processes, gives a process 28 clients; a /22 gives each process a /25, 124 clients (the issue's
# full process), and the node 248.
STORM_RANGE = "198.18.16.0/22"
# Quick's: a node part of /28, two /29 processes of 4 clients, so that 4 clients fill the first.
QUICK_RANGE = "198.18.16.0/26"
WORK = "/root/vfl-storm"
CONTROLLER_VENV = "/opt/vpnfleet/controller"
CONTROLLER_SETTINGS = "/etc/vpnfleet/controller.yml"
CONTROLLER_USER = "vpnfleet-controller"
# The controller's prometheus_client multiprocess files (roles/controller: its RuntimeDirectory).
CONTROLLER_METRICS = "/run/vpnfleet-controller-metrics"
HOOKS_WORKER = "vpnfleet-hooks.service"
EVENTS = ("process", "node", "full", "reboot", "controller")
PING_INTERVAL = 0.5
# A client has lost its tunnel when no reply came for this long.
OUTAGE = 1.5

ISSUER = """
import datetime, json, secrets, sys
from sqlalchemy import select
from vpnfleet.controller.accounts import ensure_user
from vpnfleet.controller.app import create_app
from vpnfleet.controller.configs import create_config
from vpnfleet.controller.models import User, utcnow
from vpnfleet.controller.settings import load_settings
from vpnfleet.controller.state import controller, db

count, profile = int(sys.argv[1]), sys.argv[2]
app = create_app(load_settings(sys.argv[3]))
texts = []
with app.app_context():
    session = db()
    for number in range(count):
        name = "storm-%d" % number
        # A password nobody knows: these users never log in, their configs are all they are for.
        ensure_user(session, name, secrets.token_urlsafe(24), is_admin=False, groups=[])
        session.commit()
        user = session.scalar(select(User).where(User.username == name))
        expires_at = utcnow() + datetime.timedelta(days=1)
        made = create_config(controller(), session, user, profile, "storm", expires_at)
        texts.append(made.text)
print(json.dumps(texts))
"""


# ----------------------------------------------------------------------------- configs and clients


def storm_inventory(directory: Path, quick: bool = False) -> Path:
    """A copy of the lab's inventory whose profile under test has STORM_RANGE. Quick (CI's mode,
    there so the code does not rot) keeps only the hosts and the profile the run uses, without
    WireGuard, and with QUICK_RANGE: the deploy is most of its time, and the other node, the
    internet host, the second profile and WireGuard would only add to it."""
    copy = directory / "inventory"
    shutil.copytree(bench.lab.INVENTORY, copy)
    path = copy / "group_vars" / "all" / "profiles.yml"
    data = yaml.safe_load(path.read_text())
    if quick:
        data["vpnfleet_profiles"] = [p for p in data["vpnfleet_profiles"] if p["id"] == PROFILE]
    for profile in data["vpnfleet_profiles"]:
        if profile["id"] == PROFILE:
            profile["ipv4_range"] = QUICK_RANGE if quick else STORM_RANGE
            if quick:
                # Two OpenVPN processes (UDP, TCP) and no WireGuard: the least site.yml that
                # still has a process to restart and another to get into when one is full.
                profile.update(protocols=["openvpn"], processes=2)
                for key in [key for key in profile if key.startswith("wireguard_")]:
                    del profile[key]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if quick:
        hosts_path = copy / "hosts.yml"
        hosts = yaml.safe_load(hosts_path.read_text())
        _keep_hosts(hosts["all"], {CONTROLLER, NODE, CLIENT})
        hosts_path.write_text(yaml.safe_dump(hosts, sort_keys=False))
    return copy


def _keep_hosts(group: dict, keep: set[str]) -> bool:
    """Drop every host not in `keep` from an inventory group and its children, and the groups left
    with none (a location without a node); whether this group still has a host."""
    hosts = group.get("hosts") or {}
    for name in [name for name in hosts if name not in keep]:
        del hosts[name]
    children = group.get("children") or {}
    for name in [name for name, child in children.items() if not _keep_hosts(child or {}, keep)]:
        del children[name]
    return bool(hosts or children)


def issue_configs(count: int) -> list[str]:
    put(CONTROLLER, f"{WORK}/issue.py", ISSUER)
    out = sh_on(
        CONTROLLER,
        # The script on standard input: the service's user cannot read root's files.
        f"cd / && runuser -u {CONTROLLER_USER} -- {CONTROLLER_VENV}/bin/python - "
        f"{count} {PROFILE} {CONTROLLER_SETTINGS} < {WORK}/issue.py",
        timeout=600,
    )
    return json.loads(out.strip().splitlines()[-1])


def fill_processes(count: int, processes: list[dict]) -> list[dict]:
    """The process each client is for: the first process up to its max-clients, then the next,
    so that the first one is full when the clients are more than it takes (the ``full`` event
    needs a full process; a random pick would overfill one now and then)."""
    plan: list[dict] = []
    for process in processes:
        plan += [process] * min(process["max_clients"], count - len(plan))
    return plan


def first_remote(config: str, process: dict) -> str:
    """The controller's config with the remote of ``process`` on the node under test first and
    the others after it in their order: the client that meets this process first, as a client
    does whose config names this node first."""
    lines = config.splitlines()
    remotes = [line for line in lines if line.split()[:1] == ["remote"]]
    chosen = [line for line in remotes if _is_remote_of(line, {(process["proto"], process["port"])})]
    if not chosen:
        raise BenchError(f"the controller's config names no remote of {process['instance']}")
    ordered = iter(chosen + [line for line in remotes if line not in chosen])
    return "\n".join(next(ordered) if line in remotes else line for line in lines) + "\n"


def _is_remote_of(line: str, ports: set[tuple[str, int]]) -> bool:
    words = line.split()
    host, port, proto = words[1], int(words[2]), (words[3] if len(words) > 3 else "udp")
    return host == NODE_ADDRESS and (_base_proto(proto), port) in ports


def keep_remotes(config: str, ports: set[tuple[str, int]]) -> str:
    """The config with only the remotes of the node's processes under test, and with the tunnel
    alone carrying 198.18.0.0/15 in the namespace."""
    lines = [
        line for line in config.splitlines() if line.split()[:1] != ["remote"] or _is_remote_of(line, ports)
    ]
    return "\n".join(lines) + "\n"


def _base_proto(proto: str) -> str:
    """udp or tcp, whatever OpenVPN's spelling (udp6, tcp6-server, tcp-client)."""
    return proto.removesuffix("-server").removesuffix("-client").rstrip("46")


def node_processes() -> list[dict]:
    """The profile's processes on the node under test, from the node's own plan on disk."""
    out = sh_on(NODE, f"grep -H -E '^(proto|port|max-clients|server) ' /etc/openvpn/server/{PROFILE}-*.conf")
    processes: dict[str, dict] = {}
    for line in out.splitlines():
        path, rest = line.split(":", 1)
        name = Path(path).stem
        key, value = rest.split(None, 1)
        processes.setdefault(name, {"instance": name})[key] = value.strip()
    result = []
    for name in sorted(processes):
        process = processes[name]
        proto = _base_proto(process["proto"])
        network = process["server"].split()
        gateway = ipaddress.ip_network(f"{network[0]}/{network[1]}").network_address + 1
        result.append(
            {
                "instance": name,
                "unit": f"openvpn-server@{name}",
                "proto": proto,
                "port": int(process["port"]),
                "max_clients": int(process["max-clients"]),
                "gateway": str(gateway),
            }
        )
    return result


def namespaces_script(count: int) -> str:
    hosts = list(NAMESPACE_NETWORK.hosts())
    bridge_address = f"{hosts[0]}/{NAMESPACE_NETWORK.prefixlen}"
    lines = [
        "set -e",
        f"mkdir -p {WORK}",
        "ip link add vfs-br type bridge && ip link set vfs-br up",
        f"ip address add {bridge_address} dev vfs-br",
        "sysctl -q -w net.ipv4.ip_forward=1",
        "nft add table ip vfl_storm",
        "nft add chain ip vfl_storm post '{ type nat hook postrouting priority srcnat; }'",
        f"nft add rule ip vfl_storm post ip saddr {NAMESPACE_NETWORK} oifname != vfs-br masquerade",
    ]
    for number in range(count):
        name = f"vfs-{number}"
        lines += [
            f"ip netns add {name}",
            f"ip link add {name}-h type veth peer name eth0 netns {name}",
            f"ip link set {name}-h master vfs-br up",
            f"ip -n {name} link set lo up && ip -n {name} link set eth0 up",
            f"ip -n {name} address add {hosts[number + 1]}/{NAMESPACE_NETWORK.prefixlen} dev eth0",
            f"ip -n {name} route add default via {hosts[0]}",
            f"ip -n {name} route add unreachable 198.18.0.0/15",
        ]
    return "\n".join(lines) + "\n"


CLEANUP = f"""
for pid_file in {WORK}/*.pid; do
  [ -e "$pid_file" ] || continue
  pid=$(cat "$pid_file"); kill "$pid" 2>/dev/null || true
done
sleep 1
for pid_file in {WORK}/*.pid; do
  [ -e "$pid_file" ] || continue
  pid=$(cat "$pid_file"); kill -9 "$pid" 2>/dev/null || true
done
for name in $(ip netns list | awk '/^vfs-/ {{print $1}}'); do ip netns delete "$name"; done
ip link delete vfs-br 2>/dev/null || true
nft delete table ip vfl_storm 2>/dev/null || true
rm -rf {WORK}
"""


def start_clients(configs: list[str]) -> None:
    for number, config in enumerate(configs):
        put(CLIENT, f"{WORK}/{number}.ovpn", config, 0o600)
    # Started in one shell run, each writes its own PID file (CLEANUP stops exactly those).
    sh_on(
        CLIENT,
        " ; ".join(
            f"ip netns exec vfs-{number} openvpn --config {WORK}/{number}.ovpn --daemon vfl-storm-{number} "
            f"--writepid {WORK}/{number}.openvpn.pid --log {WORK}/{number}.log --verb 3"
            for number in range(len(configs))
        ),
        timeout=600,
    )


def connected(count: int) -> int:
    out = sh_on(
        CLIENT, f"grep -l 'Initialization Sequence Completed' {WORK}/*.log 2>/dev/null | wc -l", check=False
    )
    return int(out.strip() or 0)


def start_pings(gateways: list[str]) -> None:
    sh_on(
        CLIENT,
        " ; ".join(
            f"(ip netns exec vfs-{number} ping -D -n -i {PING_INTERVAL} -W 1 {gateway} "
            f"> {WORK}/{number}.ping 2>&1 & echo $! > {WORK}/{number}.ping.pid)"
            for number, gateway in enumerate(gateways)
        ),
    )


# The worker's line: "connect ALLOW cn=... [0.016 s] (queued 0.000 s, batch of 12, pooled connection)"
# ("single call" for a check sent alone; neither in a worker from before /connect_batch).
CHECK_LINE = re.compile(
    r"connect ALLOW .*\[(?P<total>\d+\.\d+) s\]"
    r"(?: \(queued (?P<queued>\d+\.\d+) s, (?:(?:batch of (?P<batch>\d+)|single call), )?"
    r"(?P<connection>new|pooled) connection\))?"
)
REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from")


def reply_times(count: int) -> list[list[float]]:
    out = sh_on(
        CLIENT, f'for i in $(seq 0 {count - 1}); do echo "== $i"; cat {WORK}/$i.ping; done', timeout=120
    )
    times: list[list[float]] = [[] for _ in range(count)]
    current = -1
    for line in out.splitlines():
        if line.startswith("== "):
            current = int(line[3:])
        elif (match := REPLY.match(line)) and current >= 0:
            times[current].append(float(match.group(1)))
    return times


def back_after(times: list[float], started: float) -> float | None:
    """Seconds from ``started`` until the first reply after the client's first outage; 0 if it had none."""
    after = [stamp for stamp in times if stamp >= started]
    previous = started
    for stamp in after:
        if stamp - previous > OUTAGE:
            return stamp - started
        previous = stamp
    if after and time.time() - after[-1] < OUTAGE * 2:
        return 0.0  # replies never stopped
    return None


def wait_all_back(count: int, affected: list[int], started: float, limit: float) -> list[float | None]:
    """Each affected client's seconds until it was back (None: not within ``limit``)."""
    deadline = started + limit
    while True:
        times = reply_times(count)
        backs = [back_after(times[n], started) for n in affected]
        if all(back is not None for back in backs) or time.time() > deadline:
            return backs
        time.sleep(2)


# ----------------------------------------------------------------------------- the node's view


def node_figures(processes: list[dict]) -> dict:
    """CPU seconds (utime+stime) and resident memory of the node's OpenVPN processes and of the
    hooks' worker; the load."""
    units = [(process["instance"], process["unit"]) for process in processes] + [("worker", HOOKS_WORKER)]
    script = (
        " ; ".join(
            f'pid=$(systemctl show -p MainPID --value {unit}); [ "$pid" != 0 ] && '
            f"echo {name} $pid $(sed 's/^.*) //' /proc/$pid/stat) $(grep VmRSS /proc/$pid/status)"
            for name, unit in units
        )
        + " ; echo load $(cut -d' ' -f1 /proc/loadavg)"
    )
    ticks_per_second = int(sh_on(NODE, "getconf CLK_TCK").strip())
    figures: dict = {"cpu_seconds": 0.0, "rss_kib": 0, "pids": [], "worker_cpu_seconds": None}
    for line in sh_on(NODE, script, check=False).splitlines():
        words = line.split()
        if words[:1] == ["load"]:
            figures["load1"] = float(words[1])
            continue
        if len(words) < 15 or "VmRSS:" not in words:
            continue
        # After "pid (comm) ": state is the 3rd field of /proc/PID/stat, utime the 14th, stime the 15th.
        cpu = (int(words[13]) + int(words[14])) / ticks_per_second
        rss = int(words[words.index("VmRSS:") + 1])
        if words[0] == "worker":
            figures.update(worker_cpu_seconds=cpu, worker_rss_kib=rss)
            continue
        figures["cpu_seconds"] += cpu
        figures["rss_kib"] += rss
        figures["pids"].append(int(words[1]))
    return figures


def cost_between(before: dict, after: dict, clients: int) -> dict:
    """The OpenVPN processes' CPU per client from ``before`` to ``after`` (all of the new
    processes' CPU when they were restarted in between), and their memory per client after."""
    cpu = after["cpu_seconds"] - (before["cpu_seconds"] if before["pids"] == after["pids"] else 0.0)
    worker = None
    if before.get("worker_cpu_seconds") is not None and after.get("worker_cpu_seconds") is not None:
        worker = after["worker_cpu_seconds"] - before["worker_cpu_seconds"]
        worker = worker if worker >= 0 else after["worker_cpu_seconds"]
    return {
        "openvpn_cpu_ms_per_client": round(cpu * 1000 / max(1, clients), 2),
        "worker_cpu_ms_per_client": round(worker * 1000 / max(1, clients), 2) if worker is not None else None,
        "rss_kib_per_client": round(after["rss_kib"] / max(1, clients)),
        "load1": after.get("load1"),
    }


CONTROLLER_HISTOGRAM = """
import json, sys
from prometheus_client import CollectorRegistry, multiprocess
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=sys.argv[1])
buckets = {}
for metric in registry.collect():
    for sample in metric.samples:
        if sample.name == "vpnfleet_connect_check_duration_seconds_bucket":
            buckets[sample.labels["le"]] = buckets.get(sample.labels["le"], 0) + sample.value
print(json.dumps(buckets))
"""


def controller_checks() -> dict[str, float]:
    """The controller's own histogram of its connect-check answers (cumulative, by bucket)."""
    put(CONTROLLER, f"{WORK}/histogram.py", CONTROLLER_HISTOGRAM)
    out = sh_on(
        CONTROLLER, f"{CONTROLLER_VENV}/bin/python {WORK}/histogram.py {CONTROLLER_METRICS}", check=False
    )
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def controller_view(before: dict[str, float], after: dict[str, float]) -> dict:
    """The checks the controller answered in between, by its histogram's buckets: how many, and
    the bucket the median and the 99th percentile fall in (a bound, e.g. "<= 25 ms")."""
    if any(after.get(le, 0) < count for le, count in before.items()):
        before = {}  # the controller restarted in between: its counts began again
    delta = sorted(((float(le), after[le] - before.get(le, 0)) for le in after), key=lambda item: item[0])
    total = delta[-1][1] if delta else 0
    if not total:
        return {"controller_checks": 0, "controller_p50_le_ms": None, "controller_p99_le_ms": None}

    def bound(share: float):
        edge = next(le for le, count in delta if count >= share * total)
        return None if edge == float("inf") else round(edge * 1000)

    return {
        "controller_checks": int(total),
        "controller_p50_le_ms": bound(0.5),
        "controller_p99_le_ms": bound(0.99),
        "controller_within_50ms": round(next(count for le, count in delta if le >= 0.05) / total, 3),
    }


def node_log_figures(since: float) -> dict:
    """Handshakes per second and the hooks' connect-check latency, from the node's journal."""
    out = sh_on(NODE, f"journalctl --since @{int(since)} -o short-unix --no-pager", check=False, timeout=120)
    handshakes, latencies, queued, opened, calls, largest_batch = [], [], [], 0, 0.0, 0
    for line in out.splitlines():
        stamp = line.split(" ", 1)[0]
        if "Peer Connection Initiated" in line:
            handshakes.append(float(stamp))
        if match := CHECK_LINE.search(line):
            latencies.append(float(match["total"]) * 1000)
            if match["queued"]:
                queued.append(float(match["queued"]) * 1000)
                opened += match["connection"] == "new"
            # A batch of N has N lines: each is 1/N of a call to the controller.
            batch = int(match["batch"] or 1)
            calls += 1 / batch
            largest_batch = max(largest_batch, batch)
    per_second: dict[int, int] = {}
    for stamp in handshakes:
        per_second[int(stamp)] = per_second.get(int(stamp), 0) + 1
    latencies.sort()
    return {
        "handshakes": len(handshakes),
        "handshakes_per_second_peak": max(per_second.values(), default=0),
        "connect_checks": len(latencies),
        "check_p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
        "check_p99_ms": _percentile(latencies, 0.99),
        "check_queued_p99_ms": _percentile(queued, 0.99),
        "checks_on_new_connections": opened,
        "check_calls": round(calls),
        "check_batch_max": largest_batch,
    }


def _percentile(values: list[float], share: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 1) if ordered else None


# ----------------------------------------------------------------------------- events


def event_command(event: str, processes: list[dict]) -> tuple[str, str]:
    units = " ".join(process["unit"] for process in processes)
    return {
        "process": (NODE, f"systemctl restart {processes[0]['unit']}"),
        "node": (NODE, f"systemctl restart {units}"),
        "reboot": ("lab", "reboot"),
        "controller": (CONTROLLER, "systemctl restart vpnfleet-controller.service"),
    }[event]


def run_event(event: str, processes: list[dict], plan: list[dict], limit: float) -> dict:
    """One event; the figures over the clients it cuts off (the first process's for ``process``,
    everybody's else: a controller restart should cut off nobody)."""
    say(f"event {event}")
    time.sleep(3)  # every client is pinging steadily before the event
    affected = [n for n, process in enumerate(plan) if event != "process" or process is processes[0]]
    host, command = event_command(event, processes)
    before, checks_before = node_figures(processes), controller_checks()
    started = time.time()
    if host == "lab":
        _reboot_node()
    else:
        sh_on(host, command, timeout=300)
    command_seconds = time.time() - started
    backs = wait_all_back(len(plan), affected, started, limit)
    ok = sorted(back for back in backs if back is not None)
    row = {
        "event": event,
        "clients": len(affected),
        "command_seconds": round(command_seconds, 1),
        "never_back": len(affected) - len(ok),
        "back_seconds": [round(back, 2) for back in ok],
    }
    for share in (50, 90, 100):
        needed = max(1, -(-len(affected) * share // 100))
        row[f"p{share}_seconds"] = round(ok[needed - 1], 1) if len(ok) >= needed else None
    row.update(node_log_figures(started))
    row.update(controller_view(checks_before, controller_checks()))
    row.update(cost_between(before, node_figures(processes), len(plan)))
    return row


FULL_CLIENT = """
n={number}; log={work}/$n.log; deadline=$(( $(date +%s) + {limit} ))
give_up() {{ echo never $started; kill $(cat {work}/$n.openvpn.pid); exit 0; }}
started=$(date +%s.%N)
ip netns exec vfs-$n openvpn --config {work}/$n.ovpn --daemon vfl-storm-$n --writepid {work}/$n.openvpn.pid \
    --log $log --verb 3
until grep -q 'Initialization Sequence Completed' $log; do
    [ $(date +%s) -gt $deadline ] && give_up; sleep 0.1
done
gateway=$(grep -o 'route-gateway [0-9.]*' $log | tail -n 1 | cut -d' ' -f2)
until ip netns exec vfs-$n ping -n -c 1 -W 1 $gateway >/dev/null 2>&1; do
    [ $(date +%s) -gt $deadline ] && give_up; sleep 0.1
done
echo back $started $(date +%s.%N) $gateway
echo polls $(grep -c 'Server poll timeout' $log)
echo remote $(grep -E 'link remote:|TCP connection established with' $log | tail -n 1 \\
    | grep -o '[0-9.]*:[0-9]*$')
kill $(cat {work}/$n.openvpn.pid)
"""


def run_full(config: str, full: dict, processes: list[dict], plan: list[dict], limit: float) -> dict:
    """One more client, with the controller's config for it, meets the full process first (its
    remote moved to the top): seconds from its start until its first ping through a tunnel
    returns, and where it got in. It goes afterwards, so the next event finds the node as before."""
    say(f"event full: one more client meets {full['instance']} ({full['max_clients']} clients) first")
    number = len(plan)
    put(CLIENT, f"{WORK}/{number}.ovpn", first_remote(config, full), 0o600)
    checks_before = controller_checks()
    started = time.time()
    out = sh_on(CLIENT, FULL_CLIENT.format(number=number, work=WORK, limit=int(limit)), timeout=limit + 60)
    said = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()}
    back = float(said["back"][1]) - float(said["back"][0]) if "back" in said else None
    row = {
        "event": "full",
        "clients": 1,
        "command_seconds": 0.0,
        "never_back": 0 if back is not None else 1,
        "back_seconds": [round(back, 2)] if back is not None else [],
        "p50_seconds": round(back, 1) if back is not None else None,
        "p90_seconds": round(back, 1) if back is not None else None,
        "p100_seconds": round(back, 1) if back is not None else None,
        "server_poll_timeouts": int((said.get("polls") or ["0"])[0]),
        "got_in_at": (said.get("remote") or ["?"])[0],
        "full_process": f"{full['instance']} ({NODE_ADDRESS}:{full['port']}/{full['proto']})",
    }
    row.update(node_log_figures(started))
    row.update(controller_view(checks_before, controller_checks()))
    return row


def _reboot_node() -> None:
    """A reboot as the lab has it: the host's systemd reboots, its nspawn ends (as nspawn does on a
    reboot) and the lab boots it again from the same root."""
    sh_on(NODE, "systemctl reboot", check=False)
    deadline = time.time() + 120
    while lab("exec", NODE, "--", "true", check=False).returncode == 0:
        if time.time() > deadline:
            raise BenchError("node-x1 did not go down within 120 s of its reboot")
        time.sleep(0.5)
    lab("up", "--hosts", NODE, timeout=600)
    deadline = time.time() + 180
    while sh_on(NODE, "systemctl is-system-running || true", check=False).strip() not in (
        "running",
        "degraded",
    ):
        if time.time() > deadline:
            raise BenchError("node-x1 did not come back from its reboot within 180 s")
        time.sleep(1)


# ----------------------------------------------------------------------------- report


def print_table(results: dict) -> None:
    head = (
        f"{'event':<11}{'clients':>8}{'cmd s':>7}{'50% s':>7}{'90% s':>7}{'100% s':>8}{'lost':>6}"
        f"{'hs/s':>6}{'check p50':>11}{'p99 ms':>8}{'queued p99':>11}{'new conn':>9}{'calls':>6}"
        f"{'ctl p99 <=':>11}"
        f"{'CPU ms/cl':>10}{'KiB/cl':>8}"
    )
    print(head)
    print("-" * len(head))
    for row in results["events"]:
        print(
            f"{row['event']:<11}{row['clients']:>8}{row['command_seconds']:>7}{_cell(row['p50_seconds']):>7}"
            f"{_cell(row['p90_seconds']):>7}{_cell(row['p100_seconds']):>8}{row['never_back']:>6}"
            f"{row['handshakes_per_second_peak']:>6}{_cell(row['check_p50_ms']):>11}"
            f"{_cell(row['check_p99_ms']):>8}{_cell(row.get('check_queued_p99_ms')):>11}"
            f"{_cell(row.get('checks_on_new_connections')):>9}{_cell(row.get('check_calls')):>6}"
            f"{_cell(row.get('controller_p99_le_ms')):>11}"
            f"{_cell(row.get('openvpn_cpu_ms_per_client')):>10}{_cell(row.get('rss_kib_per_client')):>8}"
        )
        if row["event"] == "full":
            print(
                f"{'':<11}meets {row['full_process']} first; in through {row['got_in_at']} after "
                f"{row['server_poll_timeouts']} server poll timeout(s)"
            )
    steady = results["steady"]
    print(
        f"\nconnected: {results['connected']} of {results['clients']} clients "
        f"({', '.join(f'{name} {count}' for name, count in results['processes'].items())}) in "
        f"{results['connect_seconds']} s; node: load {steady['load1']}, "
        f"{steady['rss_kib'] / max(1, results['connected']):.0f} KiB and "
        f"{results['cpu_ms_per_client_minute']:.2f} ms CPU per idle client per minute (OpenVPN processes)"
    )


def _cell(value) -> str:
    return "-" if value is None else str(value)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    for row in results["events"]:
        backs = row["back_seconds"]
        axes.step(
            [0, *backs],
            [0, *[100 * (n + 1) / row["clients"] for n in range(len(backs))]],
            where="post",
            label=f"{row['event']} ({row['clients']} clients)",
        )
    axes.set_xlabel("seconds after the command")
    axes.set_ylabel("clients passing traffic again (%)")
    axes.set_ylim(0, 105)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("vpnfleet reconnect storms on the lab (node-x1)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


# ----------------------------------------------------------------------------- main


def run(arguments) -> dict:
    results: dict = {"benchmark": "storm", "quick": arguments.quick, "events": []}
    scratch = Path(tempfile.mkdtemp(prefix="vpnfleet-bench-storm-"))
    bench.lab.INVENTORY = storm_inventory(scratch, arguments.quick)
    results["ipv4_range"] = QUICK_RANGE if arguments.quick else STORM_RANGE
    with session_lock():
        try:
            say("starting from a clean lab (vpnfleet-lab down), then up and site.yml")
            lab("down")
            lab("up", timeout=1800)
            results["deploy_seconds"] = site_playbook()["seconds"]
            processes = node_processes()
            under_test = processes[:1] if arguments.clients <= processes[0]["max_clients"] else processes
            capacity = sum(process["max_clients"] for process in under_test)
            if arguments.clients > capacity:
                raise BenchError(
                    f"{arguments.clients} clients exceed the {capacity} the profile's processes take"
                )
            full_event = "full" in arguments.events
            if full_event and arguments.clients < under_test[0]["max_clients"]:
                raise BenchError(
                    f"the full event needs {under_test[0]['instance']} full: --clients "
                    f"{under_test[0]['max_clients']} or more"
                )
            plan = fill_processes(arguments.clients, under_test)
            results.update(
                clients=arguments.clients,
                processes={p["instance"]: sum(1 for q in plan if q is p) for p in under_test},
                capacity=capacity,
            )
            say(f"{arguments.clients} configs from the controller, for {len(under_test)} process(es)")
            configs = issue_configs(arguments.clients + full_event)
            spare = configs.pop() if full_event else ""
            configs = [
                keep_remotes(config, {(process["proto"], process["port"])})
                for config, process in zip(configs, plan, strict=True)
            ]
            sh_on(CLIENT, namespaces_script(arguments.clients + full_event), timeout=600)
            before = node_figures(under_test)
            started = time.time()
            start_clients(configs)
            while connected(arguments.clients) < arguments.clients and time.time() - started < 300:
                time.sleep(2)
            results["connected"] = connected(arguments.clients)
            results["connect_seconds"] = round(time.time() - started, 1)
            results["connect"] = node_log_figures(started)
            gateways = _gateways(arguments.clients)
            start_pings(gateways)
            # Quick only proves the path: a short settle and idle window.
            time.sleep(2 if arguments.quick else 20)
            idle_from, idle_start = node_figures(under_test), time.time()
            time.sleep(5 if arguments.quick else 30)
            steady = node_figures(under_test)
            idle_minutes = (time.time() - idle_start) / 60
            results["steady"] = steady
            results["cpu_ms_per_client_minute"] = (
                (steady["cpu_seconds"] - idle_from["cpu_seconds"])
                * 1000
                / idle_minutes
                / max(1, results["connected"])
            )
            results["cpu_seconds_to_connect_all"] = round(idle_from["cpu_seconds"] - before["cpu_seconds"], 2)
            for event in arguments.events:
                if event == "full":
                    row = run_full(spare, under_test[0], under_test, plan, arguments.limit)
                else:
                    row = run_event(event, under_test, plan, arguments.limit)
                results["events"].append(row)
        finally:
            say("cleaning up the client host and taking the lab down")
            sh_on(CLIENT, CLEANUP, check=False, timeout=300)
            lab("down", check=False)
            shutil.rmtree(scratch, ignore_errors=True)
    return results


def _gateways(count: int) -> list[str]:
    out = sh_on(
        CLIENT,
        f"for i in $(seq 0 {count - 1}); do grep -o 'route-gateway [0-9.]*' {WORK}/$i.log "
        "| tail -n 1 | cut -d' ' -f2 || echo none; done",
    )
    gateways = out.split()
    if len(gateways) != count or "none" in gateways:
        raise BenchError("a client's log names no route-gateway: not every client connected")
    return gateways


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4 clients, the process and full events, a lab of controller, node-x1 and client, one profile",
    )
    parser.add_argument("--clients", type=int, help="real OpenVPN clients (default 124: one full process)")
    parser.add_argument("--events", help=f"comma-separated: {','.join(EVENTS)} (default all)")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds an event may take to recover")
    parser.add_argument("--inventory", type=Path, help="the lab's inventory (default: inventories/lab)")
    arguments = parser.parse_args(argv)
    arguments.clients = arguments.clients or (4 if arguments.quick else 124)
    events = arguments.events or ("process,full" if arguments.quick else ",".join(EVENTS))
    arguments.events = events.split(",")
    if set(arguments.events) - set(EVENTS) or arguments.clients < 1:
        parser.error(f"--events takes {', '.join(EVENTS)}; --clients at least 1")
    take_lab_arguments(parser, arguments)
    interrupt_on_sigterm()
    try:
        results = run(arguments)
    except BenchError as error:
        say(f"failed: {error}")
        return 1
    print_table(results)
    results["when"] = stamp = result_stamp()
    path = write_results("storm", results, stamp)
    plot(results, path.with_suffix(".png"))
    say(f"drew {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
