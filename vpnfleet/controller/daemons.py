"""The controller's side of the node daemons (eduVPN vpn-daemon v3 calls) over mutual TLS.

Every node is asked in parallel; a node that does not answer is reported as such rather than
holding up or breaking the page that asked.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
        self._tls: urllib.request.OpenerDirector | None = None

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

    def _call(self, node: Node, path: str, form: dict[str, str] | None = None) -> NodeAnswer:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        # Always https to a configured node (S310 warns about file: and custom schemes).
        request = urllib.request.Request(self._url(node, path), data=body)  # noqa: S310
        try:
            with self._opener().open(request, timeout=self.settings.daemon_timeout_seconds) as response:
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
