"""The controller's side of the node daemons (eduVPN vpn-daemon v3 calls) over mutual TLS.

Every node is asked in parallel; a node that does not answer is reported as such rather than
holding up or breaking the page that asked.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from vpnfleet.controller.settings import Node, Settings
from vpnfleet.shared.pki import keys

DAEMON_SERVER_PURPOSE = "daemon_server"


class DaemonPurposeError(OSError):
    """The peer proved a certificate of our CA, but not one of a node's daemon."""


class _DaemonHTTPSConnection(http.client.HTTPSConnection):
    # The CA also signs VPN servers, the web front and users' configs, all valid TLS peers to
    # OpenSSL: a daemon must show the daemon_server purpose as well, or we tell it nothing.
    def connect(self) -> None:
        super().connect()
        der = self.sock.getpeercert(binary_form=True)
        purpose = keys.certificate_purpose(x509.load_der_x509_certificate(der)) if der else "none"
        if purpose != DAEMON_SERVER_PURPOSE:
            self.sock.close()
            raise DaemonPurposeError(f"daemon certificate purpose is {purpose}, not {DAEMON_SERVER_PURPOSE}")


class _DaemonHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext):
        super().__init__(context=context)
        self._daemon_context = context

    def https_open(self, req):
        return self.do_open(_DaemonHTTPSConnection, req, context=self._daemon_context)


# What POST /crl of our daemons takes (docs/daemon.md).
CRL_CONTENT_TYPE = "application/x-pem-file"
# Names per POST /o/disconnect_clients (the daemon's limit, vpnfleet.daemon.api.MAX_DISCONNECT_NAMES).
DISCONNECT_BATCH = 16
# After a 404 for /o/disconnect_clients (a daemon from before it), one call per name this long.
SINGLE_DISCONNECT_SECONDS = 300.0


@dataclass(frozen=True)
class NodeAnswer:
    node: Node
    data: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ProcessHealth:
    name: str  # "<profile>-<index>", as the node's daemon names its processes
    profile_id: str
    index: int
    clients: int | None  # None: the process did not answer its daemon (stopped, hung)


@dataclass(frozen=True)
class NodeHealth:
    """One node as its daemon last described it (GET /i/node with the client counts)."""

    node: Node
    asked_at: datetime  # UTC, naive as the database's times
    info: dict | None  # the daemon's answer; None when it did not answer this time
    error: str | None
    last_answer_at: datetime | None  # the last time it answered at all (this process's memory)

    @property
    def up(self) -> bool:
        return self.error is None

    @property
    def maintenance(self) -> bool:
        return bool(self.info and self.info.get("maintenance_mode") is True)

    @property
    def rel_load(self) -> int | None:
        """The 1-minute load in percent of the node's cores, as the daemon reports it."""
        load = self.info.get("rel_load_average") if self.info else None
        if isinstance(load, list) and load and isinstance(load[0], int | float):
            return int(load[0])
        return None

    @property
    def processes(self) -> list[ProcessHealth]:
        listed = self.info.get("o_process_list") if self.info else None
        found = []
        for entry in listed if isinstance(listed, list) else []:
            if not isinstance(entry, dict):
                continue
            name = str(entry.get("process", ""))
            profile, dash, index = name.rpartition("-")
            if not dash or not index.isdigit():
                continue
            count = entry.get("client_count")
            found.append(ProcessHealth(name, profile, int(index), count if isinstance(count, int) else None))
        return found

    def _wireguard_entry(self, interface: str) -> dict:
        listed = self.info.get("wireguard") if self.info else None
        for entry in listed if isinstance(listed, list) else []:
            if isinstance(entry, dict) and entry.get("interface") == interface:
                return entry
        return {}

    def wireguard_key(self, interface: str) -> str | None:
        """The public key of the node's WireGuard interface, as its daemon reports it (the private
        key never leaves the node; the key changes only when the node makes a new one)."""
        key = self._wireguard_entry(interface).get("public_key")
        return key if isinstance(key, str) and key else None

    def wireguard_counts(self, interface: str) -> tuple[int | None, int | None]:
        """The interface's peers and, of those, the ones with a recent handshake, as its daemon
        counted them; None where it did not (the interface did not answer)."""
        entry = self._wireguard_entry(interface)
        return _count_in(entry, "configured_peer_count"), _count_in(entry, "peer_count")

    @property
    def wireguard_peers(self) -> int | None:
        """The peers the node's interfaces hold, connected or not (eduVPN's w_peer_count counts
        only those with a recent handshake): what the controller's records must match."""
        return self._count("w_configured_peer_count")

    @property
    def wireguard_connected(self) -> int | None:
        return self._count("w_peer_count")

    def _count(self, name: str) -> int | None:
        return _count_in(self.info or {}, name)

    def answering(self, profile_id: str) -> dict[str, int]:
        """Client counts of the profile's processes that answered, by process name."""
        return {
            process.name: process.clients
            for process in self.processes
            if process.profile_id == profile_id and process.clients is not None
        }


def _count_in(answer: dict, name: str) -> int | None:
    count = answer.get(name)
    return count if isinstance(count, int) and not isinstance(count, bool) else None


class NodeHealthCache:
    """Every node's /i/node, asked in parallel and kept for a few seconds.

    A config must not wait for a dead node: the nodes are asked at most once per ``ttl``, and
    one round takes at most ``timeout`` (a node slower than that counts as not answering), so a
    request that needs the health waits at most about ``timeout``. Concurrent requests share
    one round rather than each asking every node.
    """

    def __init__(
        self,
        ask: Callable[[Node], NodeAnswer],
        nodes: tuple[Node, ...],
        ttl: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._ask, self._nodes, self._ttl, self._timeout, self._clock = ask, nodes, ttl, timeout, clock
        # Told of every fresh round, with the names of the nodes that answer again after they did
        # not (or answer for the first time): the WireGuard reconcile (controller/wireguard.py).
        self.on_round: Callable[[dict[str, NodeHealth], list[str]], None] | None = None
        self._lock = threading.Lock()
        self._fetched_at: float | None = None
        self._health: dict[str, NodeHealth] = {}
        self._last_answer: dict[str, datetime] = {}
        # Twice the nodes: a node that hung in the last round may still hold a worker in this one.
        self._pool = ThreadPoolExecutor(
            max_workers=max(2, min(64, 2 * len(nodes))), thread_name_prefix="health"
        )

    def get(self, max_age: float | None = None) -> dict[str, NodeHealth]:
        """The health of every node by name, at most ``max_age`` (default ``ttl``) seconds old."""
        oldest = self._ttl if max_age is None else max_age
        with self._lock:
            came_back = None
            if self._fetched_at is None or self._clock() - self._fetched_at >= oldest:
                before = {name: state.up for name, state in self._health.items()}
                self._refresh()
                came_back = [
                    name for name, state in self._health.items() if state.up and not before.get(name)
                ]
            health = dict(self._health)
        if came_back is not None and self.on_round is not None:
            self.on_round(health, came_back)
        return health

    def invalidate(self) -> None:
        """Ask again at the next get (after a drain, say)."""
        with self._lock:
            self._fetched_at = None

    def _refresh(self) -> None:
        asked_at = datetime.now(UTC).replace(tzinfo=None)
        futures: dict[Node, Future] = {node: self._pool.submit(self._ask, node) for node in self._nodes}
        wait(futures.values(), timeout=self._timeout)
        health = {}
        for node, future in futures.items():
            if future.done() and future.exception() is None:
                answer = future.result()
            else:
                future.cancel()
                answer = NodeAnswer(node, error=f"no answer within {self._timeout:g} s")
            if answer.ok and not isinstance(answer.data, dict):
                answer = NodeAnswer(node, error="answer is not a JSON object")
            if answer.ok:
                self._last_answer[node.name] = asked_at
            health[node.name] = NodeHealth(
                node=node,
                asked_at=asked_at,
                info=answer.data if answer.ok else None,
                error=answer.error,
                last_answer_at=self._last_answer.get(node.name),
            )
        self._health = health
        self._fetched_at = self._clock()


class NodeDaemons:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._tls: urllib.request.OpenerDirector | None = None
        self._single_disconnects_until: dict[str, float] = {}
        self.health = NodeHealthCache(
            lambda node: self._call(
                node,
                "/i/node?include_client_peer_count=yes",
                timeout=settings.node_health_timeout_seconds,
            ),
            settings.nodes,
            settings.node_health_ttl_seconds,
            settings.node_health_timeout_seconds,
        )

    def _opener(self) -> urllib.request.OpenerDirector:
        if self._tls is None:
            tls = self.settings.daemon_client
            # The default context checks the name too: the certificate must be that node's.
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            context.load_cert_chain(str(tls.cert), str(tls.key))
            self._tls = urllib.request.build_opener(_DaemonHTTPSHandler(context))
        return self._tls

    def _url(self, node: Node, path: str) -> str:
        host = node.daemon_address
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        return f"https://{host}:{self.settings.daemon_port}{path}"

    def _call(
        self,
        node: Node,
        path: str,
        form: dict[str, str] | list[tuple[str, str]] | None = None,
        *,
        crl_pem: bytes | None = None,
        timeout: float | None = None,
    ) -> NodeAnswer:
        body = urllib.parse.urlencode(form).encode() if form is not None else crl_pem
        headers = {"Content-Type": CRL_CONTENT_TYPE} if crl_pem is not None else {}
        # Always https to a configured node (S310 warns about file: and custom schemes).
        request = urllib.request.Request(self._url(node, path), data=body, headers=headers)  # noqa: S310
        try:
            with self._opener().open(
                request, timeout=timeout or self.settings.daemon_timeout_seconds
            ) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            return NodeAnswer(node, error=f"HTTP {error.code}{_reason(error)}")
        except (OSError, ssl.SSLError) as error:
            return NodeAnswer(node, error=str(getattr(error, "reason", None) or error))
        if not payload:
            return NodeAnswer(node, data={})
        try:
            return NodeAnswer(node, data=json.loads(payload))
        except ValueError:
            return NodeAnswer(node, error="answer is not JSON")

    def _each_node(self, call) -> list[NodeAnswer]:
        nodes = self.settings.nodes
        if not nodes:
            return []
        with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
            return list(pool.map(call, nodes))

    def connection_lists(self) -> list[NodeAnswer]:
        """GET /o/connection_list of every node; data is the list of its connections."""
        answers = []
        for answer in self._each_node(lambda node: self._call(node, "/o/connection_list")):
            if answer.ok:
                connections = answer.data.get("connection_list") if isinstance(answer.data, dict) else None
                if not isinstance(connections, list):
                    answer = NodeAnswer(answer.node, error="answer has no connection_list")
                else:
                    answer = NodeAnswer(answer.node, data=[c for c in connections if isinstance(c, dict)])
            answers.append(answer)
        return answers

    def node_infos(self) -> list[NodeAnswer]:
        """GET /i/node of every node (load, CPUs, uptime and whatever else the daemon reports)."""
        return self._each_node(lambda node: self._call(node, "/i/node"))

    def set_maintenance(self, node: Node, on: bool) -> NodeAnswer:
        """POST /i/maintenance_mode: the node holds the flag; going on, it moves its clients on."""
        answer = self._call(node, "/i/maintenance_mode", {"maintenance_mode": "yes" if on else "no"})
        self.health.invalidate()
        return answer

    def peer_list(self, node: Node) -> NodeAnswer:
        """GET /w/peer_list: data is the list of the node's WireGuard peers (every interface)."""
        answer = self._call(node, "/w/peer_list")
        if not answer.ok:
            return answer
        peers = answer.data.get("peer_list") if isinstance(answer.data, dict) else None
        if not isinstance(peers, list):
            return NodeAnswer(node, error="answer has no peer_list")
        return NodeAnswer(node, data=[peer for peer in peers if isinstance(peer, dict)])

    def add_peer(self, node: Node, public_key: str, ip_nets: list[str]) -> NodeAnswer:
        """POST /w/add_peer: the daemon finds the interface from the addresses."""
        return self._call(
            node, "/w/add_peer", [("public_key", public_key), *(("ip_net", net) for net in ip_nets)]
        )

    def remove_peer(self, node: Node, public_key: str) -> NodeAnswer:
        """POST /w/remove_peer; a peer the node does not have (404) is gone as asked."""
        answer = self._call(node, "/w/remove_peer", {"public_key": public_key})
        return NodeAnswer(node, data={}) if (answer.error or "").startswith("HTTP 404") else answer

    def disconnect(self, common_names: list[str]) -> list[NodeAnswer]:
        """These common names off every node, each node in batches (see ``_disconnect_on``)."""
        if not common_names:
            return []

        return self._each_node(lambda node: self._disconnect_on(node, common_names))

    def _disconnect_on(self, node: Node, common_names: list[str]) -> NodeAnswer:
        """POST /o/disconnect_clients with up to DISCONNECT_BATCH names at a time; to a daemon
        without that call (404), /o/disconnect_client per name, for SINGLE_DISCONNECT_SECONDS."""
        errors: list[str | None] = []
        for start in range(0, len(common_names), DISCONNECT_BATCH):
            batch = common_names[start : start + DISCONNECT_BATCH]
            if time.monotonic() >= self._single_disconnects_until.get(node.name, 0.0):
                answer = self._call(node, "/o/disconnect_clients", [("common_name", name) for name in batch])
                if not (answer.error or "").startswith("HTTP 404"):
                    errors.append(answer.error)
                    continue
                self._single_disconnects_until[node.name] = time.monotonic() + SINGLE_DISCONNECT_SECONDS
            errors += [
                self._call(node, "/o/disconnect_client", {"common_name": name}).error for name in batch
            ]
        return NodeAnswer(node, data={}, error=next((error for error in errors if error), None))

    def push_crl_and_disconnect(self, crl_pem: bytes, common_names: list[str]) -> list[NodeAnswer]:
        """POST /crl (ours), then the names' disconnects (``_disconnect_on``), on every node at once.

        The CRL goes first so that a client that reconnects at once meets it in the handshake;
        a node that takes too long for the CRL holds up only its own disconnects."""

        def on(node: Node) -> NodeAnswer:
            pushed = self._call(node, "/crl", crl_pem=crl_pem, timeout=self.settings.crl_push_timeout_seconds)
            disconnected = self._disconnect_on(node, common_names) if common_names else pushed
            error = pushed.error and f"CRL not taken: {pushed.error}"
            return NodeAnswer(node, data=pushed.data, error=error or disconnected.error)

        return self._each_node(on)


def _reason(error: urllib.error.HTTPError) -> str:
    """The daemon's {"error": ...} text, where it sent one."""
    try:
        reason = json.loads(error.read() or b"{}").get("error")
    except (ValueError, AttributeError, OSError):
        return ""
    return f": {reason}" if isinstance(reason, str) else ""
