"""`vpnfleet-hook`: OpenVPN's client-connect/-disconnect hooks, their shim and a settings check.

    vpnfleet-hook [--settings FILE] check-settings      exit 2 with the reason when the file is wrong
    vpnfleet-hook [--settings FILE] install-shim PATH   write the /bin/sh shim OpenVPN runs; prints
                                                        {"changed": true|false}
    vpnfleet-hook [--settings FILE] run [--deferred] [--profile ID] [OPENVPN_FILE]
                                                        one hook run, from OpenVPN's environment
    vpnfleet-hook [--settings FILE] fetch-crl           the node's pull timer: the controller's CRL
                                                        into crl_file; prints {"installed": ...}

OpenVPN runs the shim (``client-connect PATH`` and ``client-disconnect PATH``). For a connect the
shim writes "2" (deferred) to ``$client_connect_deferred_file``, starts ``run --deferred`` in the
background and returns at once; the worker later writes "1" or "0". For a disconnect it starts the
report in the background and returns. The OpenVPN process never waits for the controller.
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
    DISCONNECT,
    ClientEvent,
    Decision,
    DecisionLog,
    deliver,
    run_connect,
    run_disconnect,
    without_answer,
)
from .settings import DEFAULT_SETTINGS_PATH, HookSettings

EXIT_SETTINGS_ERROR = 2
# Beyond timeout_seconds, the worker's own hard limit: a client is never left deferred for ever.
DEADLINE_MARGIN_SECONDS = 2.0

SHIM_TEMPLATE = """#!/bin/sh
# Written by `vpnfleet-hook install-shim`; changes here are overwritten.
# OpenVPN runs this as client-connect and client-disconnect. It returns at once: the call to the
# controller runs in the background, so this OpenVPN process never waits for it. For a connect it
# first tells OpenVPN "deferred" (2); the worker then writes 1 (allow) or 0 (deny).
PYTHON={python}
SETTINGS={settings}
# Checked here, as OpenVPN's user: a worker that cannot start would leave the client waiting.
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
    ;;
client-disconnect)
    ;;
*)
    echo "vpnfleet-hook: run by OpenVPN as '$script_type'; only client-connect and client-disconnect" >&2
    exit 1
    ;;
esac
"$PYTHON" -I -m vpnfleet.hooks --settings "$SETTINGS" run --deferred </dev/null >/dev/null &
exit 0
"""


def render_shim(settings_path: str | os.PathLike[str], python: str = sys.executable) -> str:
    return SHIM_TEMPLATE.format(python=shlex.quote(str(python)), settings=shlex.quote(str(settings_path)))


def install_shim(
    destination: Path, settings_path: str | os.PathLike[str], python: str = sys.executable
) -> bool:
    """Write the shim (0755) atomically; True when the file changed."""
    text = render_shim(settings_path, python)
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
    commands.add_parser("fetch-crl", help="fetch the controller's CRL into crl_file (the pull timer)")
    run = commands.add_parser("run", help="one hook run from OpenVPN's environment")
    run.add_argument("--deferred", action="store_true", help="write the decision to the deferred file")
    run.add_argument("--profile", help="the profile of this OpenVPN process (default: $VPNFLEET_PROFILE)")
    # OpenVPN appends the client_connect_config_file; the worker writes no per-client config.
    run.add_argument("openvpn_file", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.command == "install-shim":
        print(json.dumps({"changed": install_shim(args.path, Path(args.settings).absolute())}))
        return 0
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
            late = f"no decision within {settings.timeout_seconds + DEADLINE_MARGIN_SECONDS:g} s"
            try:
                decision = without_answer(settings, late)
            except Exception as exc:  # noqa: BLE001 - refuse rather than leave the client deferred
                decision = Decision(False, f"{late}; the CRL check failed: {exc}")
            allow = decision.allow
            log.line(
                f"connect {'ALLOW' if allow else 'DENY'} {event.describe()} node={settings.node_name}: "
                f"{decision.reason}",
                warning=True,
            )
            if deferred:
                deliver(event, allow, log)
            os._exit(0 if allow or deferred else 1)
        log.line(f"disconnect {event.describe()}: not reported: no answer in time", warning=True)
        os._exit(0)

    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout_seconds + DEADLINE_MARGIN_SECONDS)
