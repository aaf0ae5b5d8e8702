"""A real Prometheus on the monitoring host scrapes the controller (bearer token) and node-x1's
daemon (mutual TLS, pinned certificate): every target is up, and a real client connecting with a
config from the portal moves the clients of its node, profile and process by one, in what the
controller reports and in what the node reports.

In molecule/directory, after test_directory.py (its client is gone by then): the converge that
serves the directory's tests serves these. alice, the inventory's local user, is in staff, so the
staff-only internet profile is offered to her as well."""

import csv
import io
import json
import shlex
import ssl
import time

import pytest
from lab_portal import ADMIN, ALICE, Browser, PortalClient, csrf
from lab_testinfra import lab_host, wait_for

testinfra_hosts = ["monitoring"]

JOBS = {"prometheus", "vpnfleet-controller", "vpnfleet-node"}


def query(expression):
    """An instant query to the real Prometheus; its result vector as {labels: value}."""
    answer = lab_host("monitoring").check_output(
        "curl -sf http://127.0.0.1:9090/api/v1/query --data-urlencode " + shlex.quote(f"query={expression}")
    )
    data = json.loads(answer)
    assert data["status"] == "success", data
    return {
        tuple(sorted(sample["metric"].items())): float(sample["value"][1])
        for sample in data["data"]["result"]
    }


def per_process(job):
    """Clients of every internet process of node-x1 as the job's scraped target reports them now.

    The target's own instance only: for 5 minutes a query also returns the last sample of a series
    whose target is gone (Prometheus restarted by a handler writes no staleness mark), and such a
    series never moves."""
    instance = scraped_instance(job)
    found = query(
        f'openvpn_server_connected_clients{{job="{job}",instance="{instance}",node="node-x1",profile="internet"}}'
    )
    return {dict(labels)["process"]: value for labels, value in found.items()}


@pytest.fixture(scope="module")
def tls_context():
    ca_pem = lab_host("controller").file("/var/lib/vpnfleet/ca/ca.crt").content_string
    return ssl.create_default_context(cadata=ca_pem)


def scraped_instance(job):
    [instance] = [t["labels"]["instance"] for t in active_targets() if t["labels"].get("job") == job]
    return instance


def active_targets():
    """Each target Prometheus scrapes now: its labels, health and last scrape error."""
    answer = lab_host("monitoring").check_output("curl -sf http://127.0.0.1:9090/api/v1/targets")
    return json.loads(answer)["data"]["activeTargets"]


def test_prometheus_scrapes_every_target_and_each_is_up():
    # Each target's own `up` series: a query of all of `up` also returns, for 5 minutes, the
    # last sample of series whose target is gone (a restart of Prometheus writes no staleness mark).
    def all_up():
        targets = active_targets()
        found = {}
        for target in targets:
            labels = target["labels"]
            selector = ",".join(f'{name}="{value}"' for name, value in sorted(labels.items()))
            found.update(query(f"up{{{selector}}}"))
        return (
            len(targets) >= 3 and len(found) == len(targets) and all(v == 1 for v in found.values()) and found
        )

    try:
        found = wait_for(all_up, "every target up", timeout=90)
    except AssertionError as error:
        seen = [
            (t["labels"].get("job"), t["scrapeUrl"], t["health"], t["lastError"]) for t in active_targets()
        ]
        raise AssertionError(f"{error}: targets {seen}; all of up: {query('up')}") from None
    assert {dict(labels)["job"] for labels in found} == JOBS
    node = [dict(labels) for labels in found if dict(labels)["job"] == "vpnfleet-node"]
    assert [(target["node"], target["location"]) for target in node] == [("node-x1", "x")]


VIEWS = ("vpnfleet-controller", "vpnfleet-node")
SCRAPE_INTERVAL = 5  # monitoring_scrape_interval in this scenario's inventory


def settled_views():
    """Both views of the clients per process, when they agree now and two scrapes later."""
    first = {job: per_process(job) for job in VIEWS}
    if not first["vpnfleet-node"] or first["vpnfleet-controller"] != first["vpnfleet-node"]:
        return None
    time.sleep(2 * SCRAPE_INTERVAL + 1)
    second = {job: per_process(job) for job in VIEWS}
    return second if second == first else None


def test_a_client_connecting_moves_its_node_profile_and_process_by_one(client, tls_context):
    # Both views, settled: the controller's (which asks the daemon) and the node's own agree, and
    # still do two scrapes later. A client of an earlier test that is still leaving would otherwise
    # be counted in one view and not the other, or leave the process the new client joins.
    before = wait_for(settled_views, "both views settled and the same", timeout=90)
    assert len(before["vpnfleet-node"]) == 2  # the internet profile's two processes

    alice = Browser(tls_context)
    home = alice.login(*ALICE)
    _, _, config = alice.post(
        "/configs", {"csrf_token": csrf(home), "profile_id": "internet", "display_name": "metrics"}
    )
    vpn = PortalClient(client, "metrics", config).start()
    try:
        vpn.wait_connected()
        started = time.monotonic()

        def moved_by_one(job):
            # Up only: a client of an earlier test may still be leaving a process (its keepalive runs out).
            now = per_process(job)
            moved = {
                name: now[name] - before[job].get(name, 0)
                for name in now
                if now[name] > before[job].get(name, 0)
            }
            return len(moved) == 1 and list(moved.values()) == [1] and next(iter(moved))

        process = wait_for(lambda: moved_by_one("vpnfleet-controller"), "the controller's view", timeout=30)
        assert wait_for(lambda: moved_by_one("vpnfleet-node"), "the node's view", timeout=30) == process
        print(f"{process}: moved by one in Prometheus {time.monotonic() - started:.1f} s after the connect")
        # The controller's series carries the protocol too.
        instance = scraped_instance("vpnfleet-controller")
        [labels] = query(
            f'openvpn_server_connected_clients{{job="vpnfleet-controller",instance="{instance}",process="{process}"}}'
        )
        assert dict(labels)["protocol"] in ("udp", "tcp")
        who_had_the_address(vpn, tls_context)
    finally:
        vpn.stop()


def who_had_the_address(vpn, tls_context):
    """The auditor's question for this real session: who had its 198.18.x.y at time T (now), by the
    CLI on the controller and by the admin page's CSV."""
    address = str(vpn.interface().ip)
    assert address.startswith("198.18."), address
    controller = lab_host("controller")
    moment = controller.check_output("date -u +%Y-%m-%dT%H:%M:%SZ")
    answer = controller.check_output(
        "runuser -u vpnfleet-controller -- /opt/vpnfleet/controller/bin/vpnfleet-controller "
        f"connection-log --address {address} --at {moment} --csv"
    )
    rows = list(csv.DictReader(io.StringIO(answer)))
    assert [(row["username"], row["node"], row["vpn_ipv4"], row["disconnected_at"]) for row in rows] == [
        ("alice", "node-x1", address, "")
    ], answer
    admin = Browser(tls_context)
    admin.login(*ADMIN)
    _, headers, export = admin.get(f"/admin/log?address={address}&at={moment}&format=csv")
    assert headers["Content-Type"].startswith("text/csv")
    assert [row["username"] for row in csv.DictReader(io.StringIO(export))] == ["alice"]
    print(f"who had {address} at {moment}: alice (CLI and admin CSV)")


def test_the_readme_queries_answer():
    free = query("sum by (location) (vpnfleet_process_free_addresses)")
    assert [dict(labels)["location"] for labels in free] == ["x"] and all(v > 0 for v in free.values())
    assert query('eduvpn_free_ips{profile="internet"}')
    assert query("vpnfleet_crl_next_update_timestamp_seconds - time()")
