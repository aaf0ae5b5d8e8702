"""vpnfleet-controller: the commands the role and the timers run."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from sqlalchemy import select

from vpnfleet.controller import connection_log
from vpnfleet.controller.accounts import ensure_user
from vpnfleet.controller.app import create_app
from vpnfleet.controller.configs import disable_user, disconnect_user_everywhere
from vpnfleet.controller.database import migrate
from vpnfleet.controller.fleet import DrainRefused, set_maintenance
from vpnfleet.controller.housekeeping import run_housekeeping
from vpnfleet.controller.models import User
from vpnfleet.controller.settings import load_settings
from vpnfleet.controller.state import controller, db
from vpnfleet.controller.wireguard import ReconcileReport, reconcile, serve
from vpnfleet.settings_file import SettingsError, add_settings_argument

DEFAULT_SETTINGS = "/etc/vpnfleet/controller.yml"
SETTINGS_ENVIRONMENT = "VPNFLEET_CONTROLLER_SETTINGS"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpnfleet-controller", description=__doc__)
    add_settings_argument(parser, DEFAULT_SETTINGS, SETTINGS_ENVIRONMENT)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check-settings", help="load and check the settings file")
    commands.add_parser("migrate", help="create or upgrade the database schema")
    user = commands.add_parser(
        "user", help="create or update a local user; prints JSON with 'changed' (idempotent)"
    )
    user.add_argument("username")
    user.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (never from the command line)",
    )
    user.add_argument("--admin", action=argparse.BooleanOptionalAction, default=False)
    user.add_argument("--group", action="append", default=[], help="a group of the user (repeatable)")
    user.add_argument("--disabled", action=argparse.BooleanOptionalAction, default=False)
    disconnect = commands.add_parser(
        "disconnect",
        help="what the admin page's Disconnect does: the user's OpenVPN clients dropped, their "
        "WireGuard configs ended; prints JSON",
    )
    disconnect.add_argument("username")
    commands.add_parser("housekeeping", help="disconnect what must go, close stale log rows, purge old rows")
    wireguard = commands.add_parser(
        "wireguard-reconcile",
        help="make every WireGuard node's peers those the controller holds; prints JSON",
    )
    wireguard.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="run again and again, this many seconds apart (the controller's reconcile service)",
    )
    log = commands.add_parser(
        "connection-log",
        help="search the connection log: who had an address at a time, all sessions of a user",
        description="Sessions newest first; times in UTC. Exit status 2: a search that cannot run.",
    )
    log.add_argument("--user", help="sessions of this user")
    log.add_argument("--address", help="sessions that had this VPN (IPv4 or IPv6) or real address")
    log.add_argument("--at", help="sessions connected at this time (ISO 8601; UTC unless it says otherwise)")
    log.add_argument("--csv", action="store_true", help="CSV with a header row instead of a table")
    log.add_argument("--limit", type=int, default=connection_log.EXPORT_LIMIT, help="at most this many rows")
    maintenance = commands.add_parser(
        "node-maintenance",
        help="drain a node (no new config names it, its clients move on) or undrain it; prints JSON",
    )
    maintenance.add_argument("node")
    maintenance.add_argument(
        "--drain", action=argparse.BooleanOptionalAction, required=True, help="--drain or --no-drain"
    )
    maintenance.add_argument("--force", action="store_true", help="drain even the last node of its location")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = load_settings(arguments.settings)
    except SettingsError as error:
        print(f"vpnfleet-controller: {error}", file=sys.stderr)
        return 2
    if arguments.command == "check-settings":
        print(f"{arguments.settings}: {len(settings.profiles)} profiles, {len(settings.nodes)} nodes")
        return 0
    if arguments.command == "migrate":
        migrate(settings.database_url)
        return 0
    app = create_app(settings)
    with app.app_context():
        if arguments.command == "user":
            return _user(arguments)
        if arguments.command == "connection-log":
            return _connection_log(arguments)
        if arguments.command == "node-maintenance":
            return _node_maintenance(arguments)
        if arguments.command == "wireguard-reconcile":
            return _wireguard_reconcile(arguments)
        if arguments.command == "disconnect":
            return _disconnect(arguments)
        print(json.dumps(run_housekeeping(controller(), db()).as_dict()))
    return 0


def _user(arguments: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n") if arguments.password_stdin else None
    try:
        change = ensure_user(
            db(),
            arguments.username,
            password,
            is_admin=arguments.admin,
            groups=arguments.group,
            is_disabled=arguments.disabled,
        )
    except ValueError as error:
        print(f"vpnfleet-controller: {error}", file=sys.stderr)
        return 2
    if arguments.disabled and change.changed:
        user = db().scalars(select(User).where(User.username == arguments.username)).one()
        disable_user(controller(), db(), user)
    print(json.dumps({"changed": change.changed, "created": change.created}))
    return 0


def _disconnect(arguments: argparse.Namespace) -> int:
    user = db().scalars(select(User).where(User.username == arguments.username)).one_or_none()
    if user is None:
        print(f"vpnfleet-controller: disconnect: no user {arguments.username!r}", file=sys.stderr)
        return 2
    done = disconnect_user_everywhere(controller(), db(), user)
    print(
        json.dumps(
            {
                "user": user.username,
                "openvpn_configs": done.openvpn_configs,
                "wireguard_ended": done.wireguard_ended,
                "nodes_unreachable": done.unreachable,
            }
        )
    )
    return 0


def _connection_log(arguments: argparse.Namespace) -> int:
    if arguments.limit < 1:
        print("vpnfleet-controller: --limit: must be at least 1", file=sys.stderr)
        return 2
    try:
        log_search = connection_log.LogSearch.parse(arguments.user, arguments.address, arguments.at)
    except connection_log.LogSearchError as error:
        print(f"vpnfleet-controller: --{error}", file=sys.stderr)
        return 2
    entries = connection_log.search(db(), log_search, arguments.limit)
    if arguments.csv:
        sys.stdout.write(connection_log.csv_text(entries))
    else:
        rows = [list(connection_log.CSV_COLUMNS), *connection_log.csv_rows(entries)]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if len(entries) == arguments.limit:
        print(f"vpnfleet-controller: only the newest {arguments.limit} sessions (--limit)", file=sys.stderr)
    return 0


def _wireguard_reconcile(arguments: argparse.Namespace) -> int:
    """Once, or as the service: every --every seconds for as long as it runs, and at each
    config's expiry between (wireguard.serve). One process that sleeps costs nothing, where a
    timer would start Python (a second of CPU) every few seconds."""
    if arguments.every is None:
        session = controller().sessions()
        try:
            print(json.dumps(reconcile(controller(), session).as_dict()))
        finally:
            session.close()
        return 0
    if arguments.every <= 0:
        print("vpnfleet-controller: --every: must be more than 0 seconds", file=sys.stderr)
        return 2

    def told(report: ReconcileReport) -> None:
        # Only what changed something (or could not): the journal stays readable.
        if report.added or report.removed or report.released or report.nodes_unreachable:
            print(json.dumps(report.as_dict()), flush=True)

    serve(controller(), arguments.every, threading.Event(), told)
    return 0


# The last node of a location is not drained without --force: the playbook tells this apart.
EXIT_NEEDS_FORCE = 3


def _node_maintenance(arguments: argparse.Namespace) -> int:
    try:
        change = set_maintenance(controller(), arguments.node, arguments.drain, arguments.force)
    except DrainRefused as refusal:
        print(f"vpnfleet-controller: {refusal}", file=sys.stderr)
        return EXIT_NEEDS_FORCE if refusal.needs_force else 2
    print(
        json.dumps(
            {
                "node": change.node.name,
                "maintenance_mode": change.on,
                "changed": change.changed,
                "moved": change.moved,
                "warning": change.warning,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
