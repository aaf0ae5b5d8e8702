"""The controller's side of the node daemons (eduVPN vpn-daemon v3 calls) over mutual TLS.

Every node is asked in parallel; a node that does not answer is reported as such rather than
holding up or breaking the page that asked.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vpnfleet.controller.settings import Node, Settings


@dataclass(frozen=True)
class NodeAnswer:
    node: Node
    data: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class NodeDaemons:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            tls = self.settings.daemon_client
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            context.load_cert_chain(str(tls.cert), str(tls.key))
            self._tls = context
        return self._tls

    def _url(self, node: Node, path: str) -> str:
        host = node.daemon_address
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        return f"https://{host}:{self.settings.daemon_port}{path}"

    def _call(self, node: Node, path: str, form: dict[str, str] | None = None) -> NodeAnswer:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        # Always https to a configured node (S310 warns about file: and custom schemes).
        request = urllib.request.Request(self._url(node, path), data=body)  # noqa: S310
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, context=self._tls_context(), timeout=self.settings.daemon_timeout_seconds
            ) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            return NodeAnswer(node, error=f"HTTP {error.code}")
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

    def node_client_counts(self) -> list[NodeAnswer]:
        """GET /i/node with the clients of every OpenVPN process (o_process_list), of every node."""
        return self._each_node(lambda node: self._call(node, "/i/node?include_client_peer_count=yes"))

    def disconnect(self, common_names: list[str]) -> list[NodeAnswer]:
        """POST /o/disconnect_client for each common name on every node."""
        if not common_names:
            return []

        def disconnect_on(node: Node) -> NodeAnswer:
            errors = [
                answer.error
                for name in common_names
                if not (answer := self._call(node, "/o/disconnect_client", {"common_name": name})).ok
            ]
            return NodeAnswer(node, data={}, error=errors[0] if errors else None)

        return self._each_node(disconnect_on)
