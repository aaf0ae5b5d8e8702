"""The connection log as an auditor uses it: who had an address at a time, all sessions of a user,
on the admin page, as CSV and with `vpnfleet-controller connection-log`; bad input is a 4xx (or
exit status 2) with a reason. Sessions are opened and closed through the node API, as the hooks do."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import datetime

import pytest
import yaml
from controller_helpers import (
    NODE_TOKENS,
    add_user,
    log_in,
    log_rows,
    portal_config,
    run_sql,
    settings_mapping,
)
from sqlalchemy import update

from vpnfleet.controller import cli
from vpnfleet.controller.models import ConnectionLogEntry

NODE_X1 = ("node-x1", NODE_TOKENS["node-x1"])
ADDRESS = "198.19.64.7"


def session(client, app, username, ipv4, ipv6, start, end):
    """One session of the user's new config, then moved to [start, end] (end None: still connected)."""
    common_name = portal_config(client, app, username)
    opened = client.post(
        "/node-api/v1/connect",
        auth=NODE_X1,
        json={
            "common_name": common_name,
            "profile_id": "office",
            "ipv4": ipv4,
            "ipv6": ipv6,
            "real_address": "203.0.113.99",
        },
    )
    connection_id = opened.get_json()["connection_id"]
    if end is not None:
        client.post("/node-api/v1/disconnect", auth=NODE_X1, data={"common_name": common_name, "ipv4": ipv4})
    run_sql(
        app,
        update(ConnectionLogEntry)
        .where(ConnectionLogEntry.id == connection_id)
        .values(connected_at=start, disconnected_at=end),
    )


@pytest.fixture
def history(app):
    """198.19.64.7 was alice's in the morning and bob's in the afternoon; bob is still connected."""
    client = app.test_client()
    session(
        client, app, "alice", ADDRESS, "2001:db8:f2::1000", datetime(2026, 3, 1, 9), datetime(2026, 3, 1, 11)
    )
    session(client, app, "bob", ADDRESS, "2001:db8:f2::2000", datetime(2026, 3, 1, 14), None)
    session(client, app, "alice", "198.19.64.9", None, datetime(2026, 3, 2, 8), datetime(2026, 3, 2, 9))
    add_user(app, "root", admin=True)
    admin = app.test_client()
    log_in(admin, "root")
    return admin


def users_in(page_html: str) -> list[str]:
    table = page_html.split('<table id="log">')[1].split("</table>")[0]
    return re.findall(r"<tr><td>([^<]*)</td>", table)


# (time asked, who had ADDRESS then); one history for all, since making it takes seconds.
WHO_HAD_IT = [
    ("2026-03-01 10:00", ["alice"]),
    ("2026-03-01T11:00:00Z", ["alice"]),  # the moment it ended still counts
    ("2026-03-01T12:00:00+01:00", ["alice"]),  # 11:00 UTC
    ("2026-03-01 12:00", []),
    ("2026-03-01T15:00:00Z", ["bob"]),
    ("2026-03-02 08:30", ["bob"]),
]
BAD_SEARCHES = [
    ({"address": "198.19.64.300"}, "address: '198.19.64.300' is not an IP address"),
    ({"address": "alice"}, "address: 'alice' is not an IP address"),
    ({"at": "yesterday"}, "at: 'yesterday' is not a time like"),
    ({"at": "2026-02-30 10:00"}, "at: '2026-02-30 10:00' is not a time like"),
    ({"user": "x" * 256}, "user: must be 1 to 255 printable characters"),
    ({"format": "xml"}, "format must be html or csv"),
    ({"address": "nonsense", "format": "csv"}, "address: 'nonsense' is not an IP address"),
]


def test_who_had_an_address_at_a_time_and_bad_searches(history):
    for at, expected in WHO_HAD_IT:
        page = history.get("/admin/log", query_string={"address": ADDRESS, "at": at})
        assert page.status_code == 200
        assert users_in(page.get_data(as_text=True)) == expected, at
    page = history.get("/admin/log", query_string={"address": "2001:DB8:F2:0:0:0:0:1000"})
    assert users_in(page.get_data(as_text=True)) == ["alice"]  # IPv6, however it is written
    for query, reason in BAD_SEARCHES:
        answer = history.get("/admin/log", query_string=query)
        text = html.unescape(answer.get_data(as_text=True))
        assert answer.status_code == 400 and reason in text, (query, text)


def test_all_sessions_of_a_user_newest_first_and_as_csv(history):
    page = history.get("/admin/log", query_string={"user": "alice"}).get_data(as_text=True)
    assert users_in(page) == ["alice", "alice"]
    assert 'id="log-csv"' in page and "format=csv" in page
    export = history.get("/admin/log", query_string={"user": "alice", "format": "csv"})
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert export.headers["Content-Disposition"].startswith('attachment; filename="connection-log-')
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert [(row["vpn_ipv4"], row["connected_at"], row["disconnected_at"]) for row in rows] == [
        ("198.19.64.9", "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z"),
        (ADDRESS, "2026-03-01T09:00:00Z", "2026-03-01T11:00:00Z"),
    ]
    assert {(row["node"], row["location"], row["profile"], row["real_address"]) for row in rows} == {
        ("node-x1", "location-x", "office", "203.0.113.99")
    }


def test_the_search_is_for_admins_only_and_its_csv_runs_no_formula(app, history):
    client = app.test_client()
    assert client.get("/admin/log?format=csv").status_code == 302  # to the login page
    log_in(client, "alice")
    assert client.get("/admin/log?format=csv").status_code == 403
    session(client, app, "=HYPERLINK(1)", ADDRESS, None, datetime(2026, 3, 3, 9), datetime(2026, 3, 3, 10))
    export = history.get("/admin/log", query_string={"user": "=HYPERLINK(1)", "format": "csv"})
    [row] = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert row["username"] == "'=HYPERLINK(1)"  # a spreadsheet shows it as text


@pytest.fixture
def settings_file(history, pki_dir, database_url, node_lab, tmp_path):
    path = tmp_path / "controller.yml"
    path.write_text(yaml.safe_dump(settings_mapping(pki_dir, database_url, node_lab.daemon_port)))
    return path


def test_the_cli_answers_who_had_an_address_and_all_sessions_of_a_user(settings_file, capsys):
    command = ["--settings", str(settings_file), "connection-log", "--address", ADDRESS, "--at"]
    assert cli.main([*command, "2026-03-01T15:00:00Z", "--csv"]) == 0
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (row["username"], row["vpn_ipv4"], row["disconnected_at"]) == ("bob", ADDRESS, "")
    assert cli.main([*command, "2026-03-01 10:00"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["username", "profile", "node"]
    assert line.split()[:2] == ["alice", "office"] and "2026-03-01T09:00:00Z" in line
    assert cli.main(["--settings", str(settings_file), "connection-log", "--user", "alice", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["vpn_ipv4"] for row in rows] == ["198.19.64.9", ADDRESS]
    assert (
        cli.main(["--settings", str(settings_file), "connection-log", "--user", "alice", "--limit", "1"]) == 0
    )
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and "only the newest 1 sessions" in captured.err

    for arguments, reason in (
        (["--address", "198.18.0.256"], "--address: '198.18.0.256' is not an IP address"),
        (["--at", "noon"], "--at: 'noon' is not a time like"),
        (["--limit", "0"], "--limit: must be at least 1"),
    ):
        assert cli.main(["--settings", str(settings_file), "connection-log", *arguments]) == 2
        assert reason in capsys.readouterr().err


def test_the_log_names_the_process_whose_slice_holds_the_address(make_app, pki_dir, node_lab):
    """With the fleet plan's slices in the settings (as the role writes them), each row names the
    process of the reporting node that handed the address out; an address in no slice of that
    node names none."""
    nodes = settings_mapping(pki_dir, "sqlite://", node_lab.daemon_port)["nodes"]
    slices = {"office-0": "198.19.64.0/22", "office-2": "198.19.68.0/22", "office-1": "198.19.72.0/22"}
    for process in nodes[0]["processes"]:
        if process.get("name") in slices:
            process["ipv4"] = slices[process["name"]]
    nodes[0]["processes"][0]["ipv6"] = "2001:db8:f2::/112"
    app = make_app(nodes=nodes)
    client = app.test_client()
    for ipv4, ipv6 in (("198.19.73.5", None), (None, "2001:db8:f2::9"), ("198.19.80.5", None)):
        common_name = portal_config(client, app)
        allowed = client.post(
            "/node-api/v1/connect",
            auth=NODE_X1,
            json={"common_name": common_name, "profile_id": "office", "ipv4": ipv4, "ipv6": ipv6},
        )
        assert allowed.status_code == 200
    rows = sorted(log_rows(app), key=lambda row: row.id)
    assert [row.process for row in rows] == ["office-1", "office-0", None]
    add_user(app, "root", admin=True)
    admin = app.test_client()
    log_in(admin, "root")
    exported = admin.get("/admin/log", query_string={"user": "alice", "format": "csv"})
    listed = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert sorted(row["process"] for row in listed) == ["", "office-0", "office-1"]
