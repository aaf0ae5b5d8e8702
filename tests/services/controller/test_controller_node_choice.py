"""Node choice as pure functions: which nodes a new config names and in which order, from the
nodes' health as their daemons report it (no lab needed), and the health cache's bound."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from vpnfleet.controller.daemons import NodeAnswer, NodeHealth, NodeHealthCache
from vpnfleet.controller.fleet import (
    AUTOMATIC,
    NoNodeAvailable,
    candidates,
    choose_remotes,
    last_in_location,
    node_rows,
    rank_for_months,
    rank_now,
    remote_lines,
)
from vpnfleet.controller.settings import DaemonClientTLS, EntryPoint, Node, NodeProcess, Profile, Settings

NOW = datetime(2026, 12, 1, 12, 0, 0)


def _node(name: str, location: str, address: str, processes: list[tuple[str, int, int]]) -> Node:
    return Node(
        name=name,
        location=location,
        public_address=address,
        daemon_address=address,
        api_token_sha256="0" * 64,
        processes=tuple(NodeProcess("office", proto, port, slots) for proto, port, slots in processes),
    )


X1 = _node("node-x1", "x", "198.51.100.10", [("udp", 1194, 100), ("udp", 1195, 100), ("tcp", 443, 100)])
X2 = _node("node-x2", "x", "198.51.100.11", [("udp", 1194, 100), ("tcp", 443, 100)])
Y1 = _node("node-y1", "y", "198.51.100.74", [("udp", 1194, 100), ("tcp", 443, 100)])


def _settings(*nodes: Node, fallback: int = 2) -> Settings:
    nowhere = Path("/nonexistent")
    return Settings(
        base_url="https://vpn.example",
        secret_key="s" * 40,
        database_url="sqlite://",
        ca_dir=nowhere,
        daemon_client=DaemonClientTLS(nowhere, nowhere, nowhere),
        profiles=(Profile("office", "Office", False, (), nowhere),),
        nodes=nodes,
        config_fallback_nodes=fallback,
    )


def _health(
    node: Node,
    clients: list[int | None] | None = None,
    *,
    load: int = 10,
    maintenance: bool = False,
    error: str | None = None,
) -> NodeHealth:
    counts = clients if clients is not None else [0] * len(node.processes)
    info = {
        "cpu_count": 4,
        "rel_load_average": [load, load, load],
        "maintenance_mode": maintenance,
        "o_process_list": [
            {"process": f"office-{index}", "profile_id": "office", "client_count": count}
            for index, count in enumerate(counts)
        ],
    }
    return NodeHealth(
        node=node,
        asked_at=NOW,
        info=None if error else info,
        error=error,
        last_answer_at=None if error else NOW,
    )


def _states(*healths: NodeHealth) -> dict[str, NodeHealth]:
    return {health.node.name: health for health in healths}


def test_the_least_loaded_node_comes_first_and_clients_count_against_address_slots():
    settings = _settings(X1, Y1)
    health = _states(_health(X1, [40, 40, 10]), _health(Y1, [5, 5]))
    ranked = rank_now(candidates(settings, "office", health))
    assert [c.node.name for c in ranked] == ["node-y1", "node-x1"]
    # 90 of 300 slots plus 10 % CPU against 10 of 200 slots plus 10 % CPU.
    assert ranked[1].load == pytest.approx(90 / 300 + 0.1)


def test_cpu_load_counts_as_much_as_clients():
    settings = _settings(X1, Y1)
    # node-y1 has fewer clients but its cores are busy: node-x1 comes first.
    health = _states(_health(X1, [10, 10, 10], load=5), _health(Y1, [1, 1], load=90))
    assert [c.node.name for c in rank_now(candidates(settings, "office", health))] == ["node-x1", "node-y1"]


def test_down_drained_and_processless_nodes_are_no_candidates():
    settings = _settings(X1, X2, Y1)
    health = _states(
        _health(X1, error="no answer within 2 s"),
        _health(X2, maintenance=True),
        # node-y1 answers, but none of its OpenVPN processes does (stopped).
        _health(Y1, [None, None]),
    )
    assert candidates(settings, "office", health) == []
    with pytest.raises(NoNodeAvailable, match="no node serving profile office"):
        choose_remotes(settings, "office", health, lives_for_months=False)


def test_a_node_missing_from_the_health_is_no_candidate():
    assert candidates(_settings(X1), "office", {}) == []


def test_the_chosen_location_comes_first_even_when_busier():
    settings = _settings(X1, Y1)
    health = _states(_health(X1, [50, 50, 50]), _health(Y1, [0, 0]))
    assert [c.node.name for c in rank_now(candidates(settings, "office", health), "x")] == [
        "node-x1",
        "node-y1",
    ]
    assert [c.node.name for c in rank_now(candidates(settings, "office", health))] == ["node-y1", "node-x1"]


def test_an_unknown_location_is_refused():
    settings = _settings(X1, Y1)
    with pytest.raises(ValueError, match="not served in location z"):
        choose_remotes(
            settings, "office", _states(_health(X1), _health(Y1)), lives_for_months=True, location="z"
        )


def test_remotes_go_protocol_first_one_entry_point_per_node_and_the_emptier_process():
    settings = _settings(X1, Y1)
    # node-x1's second UDP process is emptier: it is node-x1's UDP entry point.
    health = _states(_health(X1, [9, 2, 0]), _health(Y1, [20, 20]))
    assert choose_remotes(settings, "office", health, lives_for_months=False) == [
        "remote 198.51.100.10 1195 udp",
        "remote 198.51.100.74 1194 udp",
        "remote 198.51.100.10 443 tcp",
        "remote 198.51.100.74 443 tcp",
    ]
    tcp_first = choose_remotes(settings, "office", health, lives_for_months=False, prefer_tcp=True)
    assert [line.split()[-1] for line in tcp_first] == ["tcp", "tcp", "udp", "udp"]


def test_the_number_of_fallback_nodes_is_bounded():
    settings = _settings(X1, X2, Y1, fallback=1)
    health = _states(_health(X1, [0, 0, 0]), _health(X2, [50, 50]), _health(Y1, [90, 90]))
    remotes = choose_remotes(settings, "office", health, lives_for_months=False)
    assert {line.split()[1] for line in remotes} == {X1.public_address, X2.public_address}
    assert remote_lines(rank_now(candidates(settings, "office", health)), 0) == [
        "remote 198.51.100.10 1194 udp",
        "remote 198.51.100.10 443 tcp",
    ]


def _seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - a repeatable shuffle for the test, no secret


def test_portal_configs_spread_over_the_location_rather_than_pin_the_least_loaded():
    settings = _settings(X1, X2, Y1)
    health = _states(_health(X1, [0, 0, 0]), _health(X2, [60, 60]), _health(Y1, [0, 0]))
    found = candidates(settings, "office", health)
    firsts = {rank_for_months(found, "x", _seeded(seed))[0].node.name for seed in range(40)}
    # Both nodes of location x come first in some configs, however loaded; never node-y1.
    assert firsts == {"node-x1", "node-x2"}
    for seed in range(10):
        assert rank_for_months(found, "x", _seeded(seed))[-1].node.name == "node-y1"
    anywhere = {rank_for_months(found, AUTOMATIC, _seeded(seed))[0].node.name for seed in range(40)}
    assert anywhere == {"node-x1", "node-x2", "node-y1"}


def test_draining_the_last_node_of_a_location_is_noticed():
    settings = _settings(X1, X2, Y1)
    health = _states(_health(X1), _health(X2), _health(Y1))
    assert last_in_location(settings, X1, health) == []
    assert last_in_location(settings, Y1, health) == ["office"]
    # With node-x2 drained already, node-x1 is the last of location x.
    health["node-x2"] = _health(X2, maintenance=True)
    assert last_in_location(settings, X1, health) == ["office"]


def test_the_node_table_names_slots_cpu_estimate_and_per_process_clients():
    settings = _settings(X1, Y1)
    [x1, y1] = node_rows(settings, _states(_health(X1, [3, None, 1]), _health(Y1, error="refused")))
    assert (x1.address_slots, x1.cpu_estimate, x1.clients) == (300, 4 * 64, 4)
    assert [(p.name, p.entry, p.clients) for p in x1.processes] == [
        ("office-0", "udp/1194", 3),
        ("office-1", "udp/1195", None),
        ("office-2", "tcp/443", 1),
    ]
    assert (y1.clients, y1.cpu_estimate, y1.health.up) == (None, None, False)


def test_the_health_cache_asks_once_per_ttl_and_never_waits_longer_than_its_timeout():
    asked: list[str] = []
    release = threading.Event()

    def ask(node: Node) -> NodeAnswer:
        asked.append(node.name)
        if node is Y1:
            release.wait(10)  # a node that hangs
        return NodeAnswer(node, data={"maintenance_mode": False, "o_process_list": []})

    clock = [100.0]
    cache = NodeHealthCache(ask, (X1, Y1), ttl=5.0, timeout=0.5, clock=lambda: clock[0])
    try:
        started = time.monotonic()
        health = cache.get()
        took = time.monotonic() - started
        assert took < 1.5, took
        assert health["node-x1"].up and health["node-x1"].last_answer_at is not None
        assert not health["node-y1"].up and "no answer within 0.5 s" in str(health["node-y1"].error)
        assert health["node-y1"].last_answer_at is None
        clock[0] += 4.9
        cache.get()
        assert sorted(asked) == ["node-x1", "node-y1"]  # still cached
        clock[0] += 0.2
        release.set()
        cache.get()
        assert sorted(asked) == ["node-x1", "node-x1", "node-y1", "node-y1"]
        cache.get(max_age=0)  # a metrics scrape: afresh, whatever the ttl
        assert sorted(asked) == ["node-x1"] * 3 + ["node-y1"] * 3
    finally:
        release.set()


def test_a_node_with_a_public_port_is_named_by_it_for_the_protocols_that_answer():
    public = Node(
        name="node-p1",
        location="x",
        public_address="198.51.100.12",
        daemon_address="198.51.100.12",
        api_token_sha256="0" * 64,
        processes=(
            NodeProcess("office", "udp", 1301, 100, "office-0"),
            NodeProcess("office", "udp", 1302, 100, "office-1"),
            NodeProcess("office", "tcp", 1303, 100, "office-2"),
        ),
        entry_points=(EntryPoint("office", "udp", 1194), EntryPoint("office", "tcp", 443)),
    )
    settings = _settings(public)
    assert choose_remotes(
        settings, "office", _states(_health(public, [3, 0, 1])), lives_for_months=False
    ) == [
        "remote 198.51.100.12 1194 udp",
        "remote 198.51.100.12 443 tcp",
    ]
    # Its TCP process does not answer: the TCP public port would lead nowhere, so it is left out.
    only_udp = choose_remotes(
        settings, "office", _states(_health(public, [3, 0, None])), lives_for_months=False
    )
    assert only_udp == ["remote 198.51.100.12 1194 udp"]
