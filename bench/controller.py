"""bench/controller: how many configs and connect checks the controller serves, and whether that
depends on how many certificates it has issued before.

    python -m bench.controller [--quick] [--seconds S] [--parallel 1,4,8] [--issued 0,10000,50000]
                               [--databases sqlite,postgresql] [--workers W] [--baseline REV]
                               [--check-batch 1,16]

What it measures, every row in one run (see docs/bench.md):

(a) configs issued per second through ``POST /api/v3/connect`` with real OAuth tokens (each
    parallel caller is its own user who logged in to the portal, approved the app and exchanged
    the code for a token over HTTP), and the p50/p99 latency of one call;
(b) connect checks per second through the node API (``POST /node-api/v1/connect``, what the
    nodes' hooks call when a client connects), p50/p99; with ``--check-batch 1,16`` also in
    batches of 16 (``POST /node-api/v1/connect_batch``, what the hooks' worker sends in a storm:
    checks per second, the p50/p99 of one batch);
(c) both at 1..K parallel callers, on SQLite and on PostgreSQL, with 0, 10,000 and 50,000
    certificates already issued (rows in the controller's database; the CA records none of
    them), side by side in one run, so a ratio reads through the noise;
(d) with ``--baseline REV``: every row twice, once with the controller of git revision REV (its
    ``vpnfleet`` and ``plugins/module_utils`` from ``git archive``, as gunicorn's working
    directory, which it puts first on sys.path) and once with this tree's, alternating which
    goes first, and the ratios
    this/REV: a change's effect measured in one run.

The controller is the real one: the service's package under gunicorn (as the role runs it, with
``--workers W``), on 127.0.0.1, signing through the real signer over the CA, with a real
database (a throwaway PostgreSQL 15 cluster, the tests' own), and node-x1 as the service tests
run it (its real OpenVPN servers and daemon in a network namespace): node choice names only
nodes that answer, and every /connect that replaces a config pushes the new CRL and the
disconnect to it. nginx is left out, so the figures are the controller's own cost. The callers
run on the same 2 cores as the server: the figures are a floor of what a controller with its
own cores serves.

It prints a table and writes bench/results/controller-<timestamp>.json and
bench/results/controller-latest.json. It uses no lab host, so it takes no lab lock.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import http.client
import http.cookiejar
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import create_engine, insert, select

from bench.lab import BenchError, result_stamp, say, write_results
from vpnfleet.controller.accounts import ensure_user
from vpnfleet.controller.crl import MAX_PACE_SECONDS
from vpnfleet.controller.database import migrate
from vpnfleet.controller.models import User, VpnConfig

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# The service tests' throwaway PostgreSQL cluster, their real node-x1 and its settings, shared on purpose.
sys.path[:0] = [str(REPO / "tests" / "services"), str(REPO / "tests" / "services" / "controller")]
import postgres_cluster  # noqa: E402
from controller_helpers import NODE_TOKENS, make_pki, settings_mapping  # noqa: E402
from controller_node_lab import start_node_lab  # noqa: E402
from signer_process import start_signer  # noqa: E402

CLIENT_ID = "org.eduvpn.app.linux"
REDIRECT_URI = "http://127.0.0.1:41234/callback"
NODE_NAME = "node-x1"
NODE_TOKEN = NODE_TOKENS[NODE_NAME]
PASSWORD = "bench password of a test user"  # noqa: S105
PROFILE = "office"  # the tests' profile for every user


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ----------------------------------------------------------------------------- the controller


def settings_for(pki: Path, ca_dir: Path, database_url: str, daemon_port: int) -> dict:
    """The service tests' settings (node-x1 real, its OpenVPN servers and daemon), this run's CA
    copy, and no per-app rate limit: the bench calls /connect as fast as it can."""
    settings = settings_mapping(pki, database_url, daemon_port)
    settings.update(
        base_url="http://127.0.0.1",
        ca_dir=str(ca_dir),
        signer_socket=str(ca_dir.parent / "signer.sock"),
        api_connect_limit=1_000_000,
    )
    # node-y1 of the tests never answers: a node that is down is not what this bench measures.
    settings["nodes"] = [node for node in settings["nodes"] if node["name"] == NODE_NAME]
    return settings


class Gunicorn:
    """The controller's WSGI app under gunicorn, as the role runs it, on a port of 127.0.0.1."""

    def __init__(
        self, settings_file: Path, workers: int, log: Path, code: Path | None = None, threads: int = 1
    ):
        self.port = free_port()
        environment = dict(os.environ, VPNFLEET_CONTROLLER_SETTINGS=str(settings_file))
        # gunicorn puts its working directory first on sys.path (the repository here, with this
        # tree's vpnfleet): another revision's code must be that directory.
        where = ["--chdir", str(code)] if code is not None else []
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.log = log.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own venv's gunicorn
            [
                str(gunicorn),
                *where,
                "--workers",
                str(workers),
                # gthread: each worker answers several requests at once, in threads.
                *(["--worker-class", "gthread", "--threads", str(threads)] if threads > 1 else []),
                "--bind",
                f"127.0.0.1:{self.port}",
                "vpnfleet.controller.wsgi:app",
            ],
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn ended at start, see {log}")
            try:
                status, _ = request("GET", self.port, "/.well-known/vpn-user-portal")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"gunicorn did not answer within 60 s, see {log}")

    def stop(self) -> None:
        # Only the gunicorn this bench started: its own process group.
        with _ignored(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


class _ignored:
    def __init__(self, *errors):
        self.errors = errors

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, self.errors)


def request(method: str, port: int, path: str, body: str = "", headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def code_of_revision(revision: str, directory: Path) -> Path:
    """The controller package of a git revision, laid out as the wheel has it (module_utils as
    vpnfleet.shared), for gunicorn's --chdir."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(  # noqa: S603 - git, on this repository
        ["git", "archive", "--format=tar", revision, "vpnfleet", "plugins/module_utils"],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {revision} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)  # noqa: S603,S607
    (directory / "plugins" / "module_utils").rename(directory / "vpnfleet" / "shared")
    return directory


# ----------------------------------------------------------------------------- users and tokens


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def app_token(port: int, username: str) -> str:
    """The real flow of an eduVPN app: portal login, approval, code for token (PKCE)."""
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect
    )

    def call(path: str, data: dict | None = None, query: dict | None = None):
        url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with opener.open(url, data=body, timeout=30) as response:  # noqa: S310 - 127.0.0.1
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as answer:
            return answer.code, dict(answer.headers), answer.read().decode()

    _, _, page = call("/login")
    call("/login", {"username": username, "password": PASSWORD, "next": "", "csrf_token": _csrf(page)})
    verifier = secrets.token_urlsafe(48)
    challenge = urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "config",
        "state": "bench",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    status, _, page = call("/oauth/authorize", query=params)
    if status != 200:
        raise BenchError(f"{username}: the approval page answered {status}")
    status, headers, _ = call("/oauth/authorize", {"csrf_token": _csrf(page), "decision": "approve"}, params)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(headers.get("Location", "")).query).get("code")
    if status != 302 or not code:
        raise BenchError(f"{username}: approving the app answered {status}, no code")
    status, _, body = call(
        "/oauth/token",
        {
            "grant_type": "authorization_code",
            "code": code[0],
            "redirect_uri": REDIRECT_URI,
            "client_id": CLIENT_ID,
            "code_verifier": verifier,
        },
    )
    if status != 200:
        raise BenchError(f"{username}: the token endpoint answered {status}: {body[:200]}")
    return json.loads(body)["access_token"]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    if not match:
        raise BenchError("no CSRF token on the page")
    return match.group(1)


def seed_issued(database_url: str, count: int) -> None:
    """`count` certificates issued before the run, to a user of their own: rows in the database (the
    CA keeps no record of users' certificates: the signer issues them unrecorded)."""
    if count == 0:
        return
    engine = create_engine(database_url)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        user_id = connection.scalar(select(User.id).where(User.username == "bench-history"))
        serials = [secrets.token_hex(16) for _ in range(count)]
        rows = [
            {
                "user_id": user_id,
                "profile_id": PROFILE,
                "display_name": "history",
                "common_name": secrets.token_hex(16),
                "serial_number": serial,
                "created_at": now,
                "expires_at": now + datetime.timedelta(days=90),
                # Most configs of a long-running controller are past: revoked or replaced.
                "revoked_at": now if index % 3 else None,
            }
            for index, serial in enumerate(serials)
        ]
        for start in range(0, count, 5000):
            connection.execute(insert(VpnConfig), rows[start : start + 5000])
    engine.dispose()


# ----------------------------------------------------------------------------- load


@dataclass
class Load:
    calls: int = 0
    checks_per_call: int = 1  # a batch of connect checks is one call of many
    errors: dict = field(default_factory=dict)
    latencies: list = field(default_factory=list)
    seconds: float = 0.0
    callers_cpu: float = 0.0  # CPU seconds of the caller threads themselves

    @property
    def rate(self) -> float:
        return self.calls * self.checks_per_call / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU of one process (all its threads), from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _ticks_per_second()


def group_cpu_seconds(pgid: int) -> float:
    """The CPU of every process of a process group (gunicorn's master and workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                total += (int(fields[11]) + int(fields[12])) / _ticks_per_second()
    return total


@dataclass
class CpuMeter:
    """CPU seconds over a load of the callers (their threads), node-x1's daemon (the rest of this
    process: it serves in threads of it), the controller (gunicorn) and the signer: the callers
    share the 2 cores with the server, and this says how much they take."""

    gunicorn_pgid: int
    signer_pid: int

    def read(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "bench process": usage.ru_utime + usage.ru_stime,
            "controller": group_cpu_seconds(self.gunicorn_pgid),
            "signer": process_cpu_seconds(self.signer_pid),
        }

    def per_call_ms(self, before: dict[str, float], load: Load) -> dict[str, float]:
        after = self.read()
        spent = {name: after[name] - before[name] for name in after}
        spent["node daemon"] = spent.pop("bench process") - load.callers_cpu
        spent["callers"] = load.callers_cpu
        calls = max(1, load.calls * load.checks_per_call)
        return {name: round(seconds * 1000 / calls, 2) for name, seconds in sorted(spent.items())}

    def wait_until_idle(self, window: float, limit: float = 30.0) -> float:
        """Seconds until the controller, the signer and node-x1's daemon are done with what a
        load left behind (CRL pushes, disconnects): below a tenth of a core over ``window``, which
        must outlast the CRL pace's waits between signatures (``quiet_window``)."""

        def used() -> float:
            # Less this thread's own CPU: reading /proc for every process costs some.
            return sum(self.read().values()) - time.thread_time()

        began = time.monotonic()
        readings = [(began, used())]
        while readings[-1][0] - began < limit + window:
            time.sleep(0.25)
            now, cpu = time.monotonic(), used()
            readings.append((now, cpu))
            # The last reading at least ``window`` seconds old starts the window.
            before = [reading for reading in readings if reading[0] <= now - window]
            if before and cpu - before[-1][1] < (now - before[-1][0]) / 10:
                return round(before[-1][0] - began, 1)
        return round(limit, 1)


def quiet_window(issued_before: int) -> float:
    """How long the controller must stay quiet to be done: with a large CRL (tens of thousands of
    entries, 1 s to sign) its pushers wait up to MAX_PACE_SECONDS between signatures."""
    return 1.0 + (MAX_PACE_SECONDS if issued_before >= 10_000 else 0.0)


def run_load(callers: list, seconds: float, checks_per_call: int = 1) -> Load:
    """Each caller (a function returning (status, ok)) in its own thread, as fast as it can."""
    load, lock = Load(checks_per_call=checks_per_call), threading.Lock()
    stop_at = time.monotonic() + seconds
    barrier = threading.Barrier(len(callers) + 1)

    def loop(call):
        barrier.wait()
        mine, errors = [], {}
        cpu_started = time.thread_time()
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            status, ok = call()
            if ok:
                mine.append(time.perf_counter() - started)
            else:
                errors[status] = errors.get(status, 0) + 1
        cpu = time.thread_time() - cpu_started
        with lock:
            load.callers_cpu += cpu
            load.latencies.extend(mine)
            load.calls += len(mine)
            for status, number in errors.items():
                load.errors[status] = load.errors.get(status, 0) + number

    with concurrent.futures.ThreadPoolExecutor(len(callers)) as pool:
        futures = [pool.submit(loop, call) for call in callers]
        barrier.wait()
        began = time.monotonic()
        for future in futures:
            future.result()
        load.seconds = time.monotonic() - began
    return load


def connect_caller(port: int, token: str, issued: list):
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/x-openvpn-profile",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = urllib.parse.urlencode({"profile_id": PROFILE})

    def call():
        status, text = request("POST", port, "/api/v3/connect", body, headers)
        if status == 201 and len(issued) < 256:
            issued.append(text)
        return status, status == 201

    return call


def check_caller(port: int, common_names: list[str], batch: int = 1):
    """A node's hooks: one connect check per call, or ``batch`` of them per /connect_batch."""
    credentials = urlsafe_b64encode(f"{NODE_NAME}:{NODE_TOKEN}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}
    position = [secrets.randbelow(len(common_names))]

    def check() -> dict:
        position[0] = (position[0] + 1) % len(common_names)
        return {
            "common_name": common_names[position[0]],
            "profile_id": PROFILE,
            "ipv4": "198.18.0.2",
            "real_address": "203.0.113.70",
        }

    def call():
        if batch == 1:
            status, text = request("POST", port, "/node-api/v1/connect", json.dumps(check()), headers)
            return status, status == 200 and b'"allow":true' in text.replace(b" ", b"")
        body = json.dumps({"checks": [check() for _ in range(batch)]})
        status, text = request("POST", port, "/node-api/v1/connect_batch", body, headers)
        answers = json.loads(text).get("answers", []) if status == 200 else []
        return status, len(answers) == batch and all(answer.get("allow") is True for answer in answers)

    return call


# ----------------------------------------------------------------------------- one setup


def measure_database(
    kind: str,
    issued_counts,
    parallels,
    seconds,
    workers,
    cluster,
    pki,
    node,
    codes,
    flip=False,
    threads=1,
    check_batches=(1,),
) -> list[dict]:
    rows = []
    # ABBA: with two codes, every other count of issued certificates (and database) starts with
    # the other one.
    turns = [
        (issued, code)
        for index, issued in enumerate(issued_counts)
        for code in (codes if (index + flip) % 2 == 0 else codes[::-1])
    ]
    for issued_count, (label, code) in turns:
        directory = Path(tempfile.mkdtemp(prefix="vpnfleet-bench-controller-"))
        try:
            # The same CA for node-x1 and every row; a fresh copy of its index and files for each.
            shutil.copytree(pki / "ca", directory / "ca")
            url = (
                f"sqlite:///{directory / 'controller.sqlite'}" if kind == "sqlite" else cluster.new_database()
            )
            migrate(url)
            settings_file = directory / "controller.yml"
            settings = settings_for(pki, directory / "ca", url, node.daemon_port)
            settings_file.write_text(yaml.safe_dump(settings))
            users = [f"bench-{number}" for number in range(max(parallels))]
            _make_users(url, [*users, "bench-history"])
            seed_started = time.monotonic()
            seed_issued(url, issued_count)
            say(
                f"{kind}: {issued_count} certificates issued before the run "
                f"(seeded in {time.monotonic() - seed_started:.1f} s)"
            )
            # The controller signs through the signer, as on a controller host.
            # The signer of the same code: the CA's CRL signing is part of what a revision changes.
            signer = start_signer(directory / "ca", directory, cwd=code)
            try:
                server = Gunicorn(settings_file, workers, directory / "gunicorn.log", code, threads)
            except BaseException:
                signer.stop()
                raise
            try:
                tokens = [app_token(server.port, user) for user in users]
                meter = CpuMeter(server.process.pid, signer.process.pid)
                for parallel in parallels:
                    issued: list[str] = []
                    started = meter.read()
                    configs = run_load(
                        [connect_caller(server.port, tokens[n], issued) for n in range(parallel)], seconds
                    )
                    configs_cpu = meter.per_call_ms(started, configs)
                    configs_drained = meter.wait_until_idle(quiet_window(issued_count))
                    common_names = _active_common_names(url)
                    row = {
                        "code": label,
                        "database": kind,
                        "issued_before": issued_count,
                        "parallel": parallel,
                        "workers": workers,
                        "threads": threads,
                        "configs_per_s": round(configs.rate, 1),
                        "configs_p50_ms": round(configs.percentile(0.50), 1),
                        "configs_p99_ms": round(configs.percentile(0.99), 1),
                        "configs_errors": configs.errors,
                        # CPU ms per call; the configs' include the CRL work their replacements cause.
                        "configs_cpu_ms": configs_cpu,
                        # Seconds until what the configs left behind (CRL pushes, disconnects) was done.
                        "configs_drain_s": configs_drained,
                    }
                    for batch in check_batches:
                        started = meter.read()
                        checks = run_load(
                            [check_caller(server.port, common_names, batch) for _ in range(parallel)],
                            seconds,
                            batch,
                        )
                        # "checks_..." for single checks; "checks_b16_..." for batches of 16.
                        prefix = "checks" if batch == 1 else f"checks_b{batch}"
                        row |= {
                            f"{prefix}_per_s": round(checks.rate, 1),
                            f"{prefix}_p50_ms": round(checks.percentile(0.50), 1),
                            f"{prefix}_p99_ms": round(checks.percentile(0.99), 1),
                            f"{prefix}_errors": checks.errors,
                            # CPU ms per check, whether alone or in a batch.
                            f"{prefix}_cpu_ms": meter.per_call_ms(started, checks),
                        }
                        meter.wait_until_idle(quiet_window(issued_count))
                    say(
                        f"{label}: {kind} issued={issued_count} parallel={parallel}: "
                        f"{row['configs_per_s']} configs/s, {row['checks_per_s']} checks/s"
                        + "".join(
                            f", {row[f'checks_b{batch}_per_s']} checks/s in batches of {batch}"
                            for batch in check_batches[1:]
                        )
                        + f"; CPU ms per config {_cpu(configs_cpu)}, per check {_cpu(row['checks_cpu_ms'])}"
                    )
                    rows.append(row)
            finally:
                server.stop()
                signer.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return rows


def _make_users(url: str, usernames: list[str]) -> None:
    from sqlalchemy.orm import Session

    engine = create_engine(url)
    with Session(engine) as session:
        for username in usernames:
            ensure_user(session, username, PASSWORD, is_admin=False, groups=[])
        session.commit()
    engine.dispose()


def _active_common_names(url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as connection:
        names = list(
            connection.scalars(
                select(VpnConfig.common_name).where(
                    VpnConfig.revoked_at.is_(None), VpnConfig.display_name != "history"
                )
            )
        )
    engine.dispose()
    if not names:
        raise BenchError("no config was issued: nothing to check")
    return names


# ----------------------------------------------------------------------------- report


def _batches_in(rows: list[dict]) -> list[int]:
    """The batch sizes of connect checks measured beside single checks (``checks_b16_per_s``)."""
    names = {name for row in rows for name in row if name.startswith("checks_b") and name.endswith("_per_s")}
    return sorted(int(name.removeprefix("checks_b").removesuffix("_per_s")) for name in names)


def print_table(rows: list[dict]) -> None:
    batches = _batches_in(rows)
    head = (
        f"{'code':<11}{'database':<11}{'issued':>8}{'par':>5}{'configs/s':>11}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'drain s':>8}{'checks/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
        + "".join(f"{f'b{batch} chk/s':>11}{'p99 ms':>8}" for batch in batches)
        + "  errors"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        errors = {
            **{f"c{k}": v for k, v in row["configs_errors"].items()},
            **{f"k{k}": v for k, v in row["checks_errors"].items()},
            **{f"b{b}/{k}": v for b in batches for k, v in row.get(f"checks_b{b}_errors", {}).items()},
        }
        print(
            f"{row['code']:<11}{row['database']:<11}{row['issued_before']:>8}{row['parallel']:>5}{row['configs_per_s']:>11}"
            f"{row['configs_p50_ms']:>8}{row['configs_p99_ms']:>8}{row.get('configs_drain_s', '-'):>8}"
            f"{row['checks_per_s']:>10}{row['checks_p50_ms']:>8}{row['checks_p99_ms']:>8}"
            + "".join(
                f"{row.get(f'checks_b{b}_per_s', '-'):>11}{row.get(f'checks_b{b}_p99_ms', '-'):>8}"
                for b in batches
            )
            + f"  {errors or '-'}"
        )
    print()
    codes = list(dict.fromkeys(row["code"] for row in rows))
    for code in codes:
        for kind in sorted({row["database"] for row in rows}):
            for parallel in sorted({row["parallel"] for row in rows}):
                mine = {
                    row["issued_before"]: row
                    for row in rows
                    if row["code"] == code and row["database"] == kind and row["parallel"] == parallel
                }
                if 0 in mine and len(mine) > 1:
                    most = max(mine)
                    base, last = mine[0], mine[most]
                    print(
                        f"{code} {kind} parallel={parallel}: with {most} issued / with 0 issued: configs "
                        f"{_ratio(last['configs_per_s'], base['configs_per_s'])}, checks "
                        f"{_ratio(last['checks_per_s'], base['checks_per_s'])}"
                    )
    if len(codes) == 2:
        this, baseline = codes
        print(f"\n{this}/{baseline}, per round and measure, then the median (min-max) over the rounds:")
        for key, ratios in baseline_ratios(rows, this, baseline).items():
            database, issued, parallel = key
            cells = ", ".join(
                f"{measure} {statistics.median(values):.3f} ({min(values):.2f}-{max(values):.2f})"
                for measure, values in ratios.items()
            )
            print(f"  {database} issued={issued} parallel={parallel}: {cells}")


def baseline_ratios(rows: list[dict], this: str, baseline: str) -> dict[tuple, dict[str, list[float]]]:
    """this/baseline of each round's pair of rows: configs/s, configs p99, checks/s, checks p99."""
    key = lambda row: (row["database"], row["issued_before"], row["parallel"])  # noqa: E731
    before = {(key(row), row.get("round", 0)): row for row in rows if row["code"] == baseline}
    ratios: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        old = before.get((key(row), row.get("round", 0)))
        if row["code"] != this or old is None:
            continue
        mine = ratios.setdefault(key(row), {})
        measures = [
            ("configs/s", "configs_per_s"),
            ("configs p99", "configs_p99_ms"),
            ("checks/s", "checks_per_s"),
            ("checks p99", "checks_p99_ms"),
        ] + [(f"b{batch} checks/s", f"checks_b{batch}_per_s") for batch in _batches_in([row])]
        for measure, name in measures:
            if name not in old:
                continue
            if old[name] and row[name] == row[name] and old[name] == old[name]:  # not NaN
                mine.setdefault(measure, []).append(row[name] / old[name])
    return ratios


def _cpu(per_call: dict[str, float]) -> str:
    return " ".join(f"{name} {value}" for name, value in per_call.items())


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.3f}" if base else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controller", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="defaults of 2 s runs, 0 and 1,000 issued, 1 and 4 callers"
    )
    parser.add_argument("--seconds", type=float, help="per measurement (default 10)")
    parser.add_argument("--parallel", help="parallel callers, comma-separated (default 1,4,8)")
    parser.add_argument(
        "--issued", help="certificates issued before, comma-separated (default 0,10000,50000)"
    )
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="gunicorn workers (default 2, the controller role's controller_workers)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per worker: above 1, gunicorn's gthread workers (default 1: sync workers)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="every row this many times, alternating the order (default 1)"
    )
    parser.add_argument(
        "--check-batch",
        default="1,16",
        help="connect checks per call, comma-separated; above 1 through /connect_batch (default 1,16; "
        "single checks are always measured)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the controller of this git revision, side by side, with ratios this/REV",
    )
    arguments = parser.parse_args(argv)
    defaults = (2.0, "1,4", "0,1000") if arguments.quick else (10.0, "1,4,8", "0,10000,50000")
    arguments.seconds = arguments.seconds or defaults[0]
    arguments.parallel = arguments.parallel or defaults[1]
    arguments.issued = arguments.issued or defaults[2]
    parallels = [int(value) for value in arguments.parallel.split(",")]
    issued_counts = [int(value) for value in arguments.issued.split(",")]
    check_batches = sorted({1, *(int(value) for value in arguments.check_batch.split(","))})
    databases = arguments.databases.split(",")
    unknown = set(databases) - {"sqlite", "postgresql"}
    if unknown or min(parallels) < 1 or min(issued_counts) < 0 or not 1 <= max(check_batches) <= 256:
        parser.error(
            "--databases takes sqlite and postgresql; --parallel at least 1; --issued at least 0; "
            "--check-batch 1 to 256"
        )
    if os.geteuid() != 0:
        parser.error("node-x1 (network namespaces, OpenVPN servers) needs root")
    cluster = node = None
    pki = Path(tempfile.mkdtemp(prefix="vpnfleet-bench-pki-"))
    rows: list[dict] = []
    try:
        if "postgresql" in databases:
            if not postgres_cluster.available():
                raise BenchError("PostgreSQL 15 is not installed (bash scripts/setup installs it)")
            cluster = postgres_cluster.PostgresCluster().start()
        make_pki(pki, common_name="bench CA")
        say("node-x1 as the service tests run it: its OpenVPN servers and daemon in a network namespace")
        node = start_node_lab(pki, settings_for(pki, pki / "ca", "sqlite://", 0))
        codes: list[tuple[str, Path | None]] = [("this", None)]
        if arguments.baseline:
            say(f"the controller of {arguments.baseline} beside this tree's")
            codes.append((arguments.baseline, code_of_revision(arguments.baseline, pki / "baseline")))
        for round_number in range(arguments.rounds):
            for index, kind in enumerate(databases):
                measured = measure_database(
                    kind,
                    issued_counts,
                    parallels,
                    arguments.seconds,
                    arguments.workers,
                    cluster,
                    pki,
                    node,
                    codes,
                    flip=bool((index + round_number) % 2),
                    threads=arguments.threads,
                    check_batches=check_batches,
                )
                rows += [dict(row, round=round_number) for row in measured]
    except BenchError as error:
        say(f"failed: {error}")
        return 1
    finally:
        if node is not None:
            node.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(pki, ignore_errors=True)
    print_table(rows)
    stamp = result_stamp()
    result = {
        "benchmark": "controller",
        "when": stamp,
        "quick": arguments.quick,
        "seconds": arguments.seconds,
        "cores": os.cpu_count(),
        "workers": arguments.workers,
        "threads": arguments.threads,
        "baseline": arguments.baseline,
        "rounds": arguments.rounds,
        "rows": rows,
    }
    write_results("controller", result, stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
