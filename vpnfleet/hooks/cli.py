"""`vpnfleet-hook`: OpenVPN's client-connect/-disconnect hooks, their shim and a settings check.

    vpnfleet-hook [--settings FILE] check-settings      exit 2 with the reason when the file is wrong
    vpnfleet-hook [--settings FILE] install-shim [--worker-socket SOCK] PATH
                                                        write the /bin/sh shim OpenVPN runs; prints
                                                        {"changed": true|false}
    vpnfleet-hook [--settings FILE] serve [--socket SOCK [--socket-group G]]
                                                        the resident worker the shim hands events to
    vpnfleet-hook [--settings FILE] run [--deferred] [--profile ID] [OPENVPN_FILE]
                                                        one hook run, from OpenVPN's environment
    vpnfleet-hook [--settings FILE] fetch-crl           the node's pull timer: the controller's CRL
                                                        into crl_file; prints {"installed": ...}

OpenVPN runs the shim (``client-connect PATH`` and ``client-disconnect PATH``). For a connect the
shim writes "2" (deferred) to ``$client_connect_deferred_file``, hands the event to the resident
worker (``serve``) in the background and returns at once; "1" or "0" replaces the "2" when the
worker has decided. For a disconnect it hands over the report and returns. Without a worker the
shim starts ``run --deferred`` (one Python run per event) instead. The OpenVPN process never
waits for the controller.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from vpnfleet.settings_file import SettingsError, add_settings_argument

from . import node_api
from .hook import (
    CONNECT,
    DEADLINE_MARGIN_SECONDS,
    DISCONNECT,
    ClientEvent,
    DecisionLog,
    deliver,
    late_decision,
    log_connect,
    run_connect,
    run_disconnect,
)
from .settings import DEFAULT_SETTINGS_PATH, MAX_TIMEOUT_SECONDS, HookSettings
from .worker import DEFAULT_CONCURRENCY, bound_listener, serve, systemd_listener

EXIT_SETTINGS_ERROR = 2

DEFAULT_WORKER_SOCKET = Path("/run/vpnfleet-hooks/worker.sock")
# curl's own limit on the worker's answer, beyond the worker's hard limit for a decision.
WORKER_ANSWER_MARGIN_SECONDS = 1.0

SHIM_TEMPLATE = """#!/bin/sh
# Written by `vpnfleet-hook install-shim`; changes here are overwritten.
# OpenVPN runs this as client-connect and client-disconnect. It returns at once: the call to the
# controller runs in the background, so this OpenVPN process never waits for it. For a connect it
# first tells OpenVPN "deferred" (2); then 1 (allow) or 0 (deny) replaces it.
PYTHON={python}
SETTINGS={settings}
SOCKET={socket}
# Checked here, as OpenVPN's user: without the worker the fallback run needs them.
if [ ! -x "$PYTHON" ] || [ ! -r "$SETTINGS" ]; then
    echo "vpnfleet-hook: $PYTHON is not executable or $SETTINGS not readable as $(id -un)" >&2
    exit 1
fi
case "$script_type" in
client-connect)
    if [ -z "$client_connect_deferred_file" ]; then
        echo "vpnfleet-hook: no client_connect_deferred_file: OpenVPN 2.6 or later is needed" >&2
        exit 1
    fi
    printf 2 >"$client_connect_deferred_file" || exit 1
    event=connect
    ;;
client-disconnect)
    event=disconnect
    ;;
*)
    echo "vpnfleet-hook: run by OpenVPN as '$script_type'; only client-connect and client-disconnect" >&2
    exit 1
    ;;
esac
# In the background: the resident worker (vpnfleet-hook serve) decides, curl waits for its "1" or
# "0" and dd puts that byte over the "2" in place (no truncation, no creation: the file is
# OpenVPN's). Any other outcome (no worker, a worker gone mid-request, no curl) falls back to one
# Python run, which decides by the same rules.
(
    answer=$(curl --silent --fail --unix-socket "$SOCKET" --connect-timeout 1 --max-time {max_time} \\
        --data-urlencode "script_type=$script_type" --data-urlencode "common_name=$common_name" \\
        --data-urlencode "ifconfig_pool_remote_ip=$ifconfig_pool_remote_ip" \\
        --data-urlencode "ifconfig_pool_remote_ip6=$ifconfig_pool_remote_ip6" \\
        --data-urlencode "trusted_ip=$trusted_ip" --data-urlencode "trusted_ip6=$trusted_ip6" \\
        --data-urlencode "bytes_received=$bytes_received" --data-urlencode "bytes_sent=$bytes_sent" \\
        --data-urlencode "VPNFLEET_PROFILE=$VPNFLEET_PROFILE" "http://vpnfleet-hooks/$event" 2>/dev/null)
    case "$event:$answer" in
    connect:1 | connect:0)
        printf %s "$answer" | dd of="$client_connect_deferred_file" conv=notrunc,nocreat status=none ;;
    disconnect:queued) ;;
    *) exec "$PYTHON" -I -m vpnfleet.hooks --settings "$SETTINGS" run --deferred ;;
    esac
) </dev/null >/dev/null &
exit 0
"""


def render_shim(
    settings_path: str | os.PathLike[str],
    python: str = sys.executable,
    worker_socket: str | os.PathLike[str] = DEFAULT_WORKER_SOCKET,
) -> str:
    """The shim; curl waits for the worker as long as the worker may take (from the settings'
    timeout_seconds, the longest allowed when they cannot be read now)."""
    try:
        timeout = HookSettings.from_file(settings_path).timeout_seconds
    except SettingsError:
        timeout = MAX_TIMEOUT_SECONDS
    return SHIM_TEMPLATE.format(
        python=shlex.quote(str(python)),
        settings=shlex.quote(str(settings_path)),
        socket=shlex.quote(str(worker_socket)),
        max_time=f"{timeout + DEADLINE_MARGIN_SECONDS + WORKER_ANSWER_MARGIN_SECONDS:g}",
    )


def install_shim(
    destination: Path,
    settings_path: str | os.PathLike[str],
    python: str = sys.executable,
    worker_socket: str | os.PathLike[str] = DEFAULT_WORKER_SOCKET,
) -> bool:
    """Write the shim (0755) atomically; True when the file changed."""
    text = render_shim(settings_path, python, worker_socket)
    try:
        if destination.read_text() == text and (destination.stat().st_mode & 0o777) == 0o755:
            return False
    except OSError:
        pass
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.chmod(temporary, 0o755)  # noqa: S103 - OpenVPN (as nobody) runs it
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vpnfleet-hook",
        description="OpenVPN client-connect/-disconnect hooks for the vpnfleet controller.",
    )
    add_settings_argument(parser, DEFAULT_SETTINGS_PATH)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check-settings", help="load and check the settings file")
    shim = commands.add_parser("install-shim", help="write the shim that OpenVPN runs")
    shim.add_argument("path", type=Path)
    shim.add_argument(
        "--worker-socket", type=Path, default=DEFAULT_WORKER_SOCKET, help="the resident worker's socket"
    )
    serve = commands.add_parser("serve", help="the resident worker the shim hands its events to")
    serve.add_argument("--socket", type=Path, help="listen here (default: the socket systemd passes)")
    serve.add_argument("--socket-group", help="the group that may connect to --socket (OpenVPN's)")
    serve.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help=argparse.SUPPRESS)
    commands.add_parser("fetch-crl", help="fetch the controller's CRL into crl_file (the pull timer)")
    run = commands.add_parser("run", help="one hook run from OpenVPN's environment")
    run.add_argument("--deferred", action="store_true", help="write the decision to the deferred file")
    run.add_argument("--profile", help="the profile of this OpenVPN process (default: $VPNFLEET_PROFILE)")
    # OpenVPN appends the client_connect_config_file; the worker writes no per-client config.
    run.add_argument("openvpn_file", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.command == "install-shim":
        changed = install_shim(args.path, Path(args.settings).absolute(), worker_socket=args.worker_socket)
        print(json.dumps({"changed": changed}))
        return 0
    if args.command == "serve":
        return _serve(args)
    if args.command == "check-settings":
        try:
            settings = HookSettings.from_file(args.settings)
        except SettingsError as exc:
            print(f"vpnfleet-hook: {exc}", file=sys.stderr)
            return EXIT_SETTINGS_ERROR
        print(
            f"{args.settings}: ok (node {settings.node_name}, {settings.node_api_url}, "
            f"timeout {settings.timeout_seconds:g} s, CRL {settings.crl_file or 'none'})"
        )
        return 0
    if args.command == "fetch-crl":
        return _fetch_crl(args.settings)
    return _run(args)


def _serve(args) -> int:
    try:
        settings = HookSettings.from_file(args.settings)
    except SettingsError as exc:
        print(f"vpnfleet-hook: {exc}", file=sys.stderr)
        return EXIT_SETTINGS_ERROR
    listener = systemd_listener()
    if listener is None:
        if args.socket is None:
            print("vpnfleet-hook: serve: no socket from systemd and no --socket", file=sys.stderr)
            return EXIT_SETTINGS_ERROR
        listener = bound_listener(args.socket, args.socket_group)
    return serve(settings, listener, args.concurrency)


def _fetch_crl(settings_path: str) -> int:
    """Exit 0 when the CRL in place is the controller's current one (or newer), 1 when the
    controller gave none, 2 for settings without crl_file and crl_ca_file."""
    try:
        settings = HookSettings.from_file(settings_path)
    except SettingsError as exc:
        print(f"vpnfleet-hook: {exc}", file=sys.stderr)
        return EXIT_SETTINGS_ERROR
    if settings.crl_file is None or settings.crl_ca_file is None:
        print(f"vpnfleet-hook: {settings_path}: crl_file and crl_ca_file are needed", file=sys.stderr)
        return EXIT_SETTINGS_ERROR
    from vpnfleet.daemon.crl import CrlFile, CrlRefused

    try:
        crl_file = CrlFile(settings.crl_file, settings.crl_ca_file)
        installed, facts = crl_file.install(node_api.get_crl(settings))
    except node_api.ControllerUnavailable as exc:
        print(f"vpnfleet-hook: fetch-crl: controller unavailable ({exc})", file=sys.stderr)
        return 1
    except CrlRefused as exc:
        # Older than ours: a push brought a newer one in between; nothing to do.
        if exc.conflict:
            print(json.dumps({"installed": False, "reason": exc.reason}))
            return 0
        print(f"vpnfleet-hook: fetch-crl: the controller's CRL is refused: {exc.reason}", file=sys.stderr)
        return 1
    print(json.dumps({"installed": installed, **facts.as_dict(datetime.datetime.now(datetime.UTC))}))
    return 0


def _run(args) -> int:
    environment = dict(os.environ)
    try:
        settings = HookSettings.from_file(args.settings)
    except SettingsError as exc:
        # Without settings there is no policy to follow: refuse, and say why.
        event = ClientEvent.from_environment(environment, None, args.profile)
        log = DecisionLog()
        if event.script_type == CONNECT:
            log.line(f"connect DENY {event.describe()}: {exc}", warning=True)
            if args.deferred:
                deliver(event, False, log)
            return 1
        log.line(f"{event.script_type or 'run'} {event.describe()}: not reported: {exc}", warning=True)
        return EXIT_SETTINGS_ERROR
    event = ClientEvent.from_environment(environment, settings, args.profile)
    log = DecisionLog(settings.syslog)
    _hard_deadline(settings, event, log, args.deferred)
    if event.script_type == CONNECT:
        return 0 if run_connect(settings, event, log, deferred=args.deferred) or args.deferred else 1
    if event.script_type == DISCONNECT:
        run_disconnect(settings, event, log)
        return 0
    log.line(f"unexpected script_type {event.script_type!r}: run only as client-connect/-disconnect")
    return EXIT_SETTINGS_ERROR


def _hard_deadline(settings: HookSettings, event: ClientEvent, log: DecisionLog, deferred: bool) -> None:
    """Socket timeouts bound each step; this bounds the whole run, then follows the policy."""

    def expired(signum, frame) -> None:
        if event.script_type == CONNECT:
            decision = late_decision(settings)
            log_connect(log, settings, event, decision, None)
            if deferred:
                deliver(event, decision.allow, log)
            os._exit(0 if decision.allow or deferred else 1)
        log.line(f"disconnect {event.describe()}: not reported: no answer in time", warning=True)
        os._exit(0)

    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout_seconds + DEADLINE_MARGIN_SECONDS)
