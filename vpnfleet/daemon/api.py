"""The calls of eduVPN's vpn-daemon API v3 (OpenVPN's /o/, WireGuard's /w/), plus what vpnfleet adds.

Every call answers JSON. The upstream fields keep their names and types, so eduVPN's portal
can talk to us; our additions are extra fields next to them.
"""

import datetime
import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from . import node
from .crl import CrlFile, CrlRefused
from .management import ManagementError, ProcessFleet, ProcessReport
from .wireguard import (
    InterfaceReport,
    PeerRefused,
    WireGuard,
    WireGuardError,
    check_peer_networks,
    check_public_key,
)

# X.509 allows at most 64 characters in a common name (RFC 5280, ub-common-name).
MAX_COMMON_NAME_LENGTH = 64
# Names per /o/disconnect_clients: as many as one form may carry (server.MAX_FORM_FIELDS).
MAX_DISCONNECT_NAMES = 16

Parameters = dict[str, list[str]]


class ApiError(Exception):
    """A request we refuse; the status is a 4xx and the reason goes back to the caller."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class NodeState:
    """What the calls act on: the OpenVPN processes, the CRL file they check (if configured) and
    the WireGuard interfaces (none where the node serves no WireGuard profile)."""

    fleet: ProcessFleet
    crl: CrlFile | None = None
    wireguard: WireGuard = field(default_factory=lambda: WireGuard(()))


@dataclass(frozen=True)
class Route:
    method: str
    # A dict is answered as JSON, bytes as Prometheus' text format (the metrics port's route).
    call: (
        Callable[[NodeState, Parameters], dict]
        | Callable[[NodeState, Parameters], bytes]
        | Callable[[NodeState, bytes], dict]
    )
    # "form": parameters (query or urlencoded form); "crl": the body is a CRL (PEM or DER).
    body: str = "form"


def daemon_version() -> str:
    try:
        return importlib.metadata.version("vpnfleet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def node_info(state: NodeState, query: Parameters) -> dict:
    """GET /i/node: cores, load and uptime; with include_client_peer_count=yes also the clients per process.

    Counting is optional, as upstream: it asks every OpenVPN process, which a caller that only
    wants the load does not need.
    """
    fleet = state.fleet
    count_clients = _yes_no(query, "include_client_peer_count", default=False)
    cores = node.cpu_count()
    load = node.load_average()
    info: dict = {
        "cpu_count": cores,
        "load_average": load,
        "rel_load_average": node.relative_load_average(load, cores),
        # eduVPN 3.8's field: a node in maintenance gets no new clients (POST /i/maintenance_mode).
        "maintenance_mode": fleet.in_maintenance(),
        "v": daemon_version(),
    }
    info["crl"] = crl_status(state)
    uptime = node.uptime_seconds()
    if uptime is not None:
        # Left out rather than null where unknown: the portal reads it as an integer.
        info["node_uptime"] = uptime
    wireguard_reports = state.wireguard.reports()
    # The controller learns each interface's public key here, at run time: the key is made on
    # the node and never leaves it otherwise.
    info["wireguard"] = [
        {
            "profile_id": report.interface.profile_id,
            "interface": report.interface.name,
            "public_key": report.public_key,
            "port": report.interface.port,
        }
        for report in wireguard_reports
    ]
    info["unreachable_interface_list"] = _unreachable_interfaces(wireguard_reports)
    if count_clients:
        now = time.time()
        # Per interface as well (ours), for the controller's metrics of each node and profile; an
        # interface that did not answer has no counts.
        for entry, report in zip(info["wireguard"], wireguard_reports, strict=True):
            if report.error is None:
                entry["peer_count"] = sum(peer.connected(now) for peer in report.peers)
                entry["configured_peer_count"] = len(report.peers)
        info["w_peer_count"] = sum(entry.get("peer_count", 0) for entry in info["wireguard"])
        # Ours: every peer the interfaces hold, connected or not (the controller's reconcile compares).
        info["w_configured_peer_count"] = sum(
            entry.get("configured_peer_count", 0) for entry in info["wireguard"]
        )
        reports = fleet.connection_reports()
        info["o_client_count"] = sum(len(report.clients) for report in reports)
        info["o_process_list"] = [
            {**_process_fields(report), "client_count": None if report.error else len(report.clients)}
            for report in reports
        ]
        info["unreachable_process_list"] = _unreachable(reports)
    else:
        info["o_process_list"] = [
            {"process": process.name, "profile_id": process.profile_id} for process in fleet.processes()
        ]
    return info


def connection_list(state: NodeState, query: Parameters) -> dict:
    """GET /o/connection_list: every client connected to any OpenVPN process of the node."""
    reports = state.fleet.connection_reports()
    connections = [
        {
            "common_name": client.common_name,
            "ip_four": client.virtual_ipv4,
            "ip_six": client.virtual_ipv6,
            **_process_fields(report),
            "real_address": client.real_address,
            "bytes_in": client.bytes_received,
            "bytes_out": client.bytes_sent,
            "connected_since": _isoformat_utc(client.connected_since),
        }
        for report in reports
        for client in report.clients
    ]
    return {"connection_list": connections, "unreachable_process_list": _unreachable(reports)}


def disconnect_client(state: NodeState, form: Parameters) -> dict:
    """POST /o/disconnect_client (form field common_name): disconnect it from every process."""
    common_name = _checked_common_name(_required(form, "common_name"))
    reports = state.fleet.disconnect({common_name})
    return {
        "common_name": common_name,
        "disconnected_count": sum(report.disconnected for report in reports),
        "unreachable_process_list": _unreachable(reports),
    }


def disconnect_clients(state: NodeState, form: Parameters) -> dict:
    """POST /o/disconnect_clients (ours; common_name 1 to MAX_DISCONNECT_NAMES times): each of
    them from every process, with one status per process for all of them."""
    names = list(dict.fromkeys(_checked_common_name(name) for name in form.get("common_name", [])))
    if not 0 < len(names) <= MAX_DISCONNECT_NAMES:
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            f"common_name must be given 1 to {MAX_DISCONNECT_NAMES} times, not {len(names)}",
        )
    reports = state.fleet.disconnect(names)
    return {
        "common_name_list": names,
        "disconnected_count": sum(report.disconnected for report in reports),
        "unreachable_process_list": _unreachable(reports),
    }


def _checked_common_name(common_name: str) -> str:
    if not 0 < len(common_name) <= MAX_COMMON_NAME_LENGTH or not common_name.isprintable():
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            f"common_name must be 1 to {MAX_COMMON_NAME_LENGTH} printable characters",
        )
    return common_name


def install_crl(state: NodeState, body: bytes) -> dict:
    """POST /crl (ours): a new CRL for the file OpenVPN's crl-verify reads; 400 for one that is
    not our CA's or has expired, 409 for one older than the one in place (a replay)."""
    if state.crl is None:
        raise ApiError(HTTPStatus.CONFLICT, "this daemon has no tls_crl to keep")
    try:
        installed, facts = state.crl.install(body)
    except CrlRefused as refusal:
        status = HTTPStatus.CONFLICT if refusal.conflict else HTTPStatus.BAD_REQUEST
        raise ApiError(status, refusal.reason) from None
    return {"installed": installed, "crl": facts.as_dict(datetime.datetime.now(datetime.UTC))}


def crl_status(state: NodeState) -> dict:
    """The CRL the node's processes check: its dates, and stale once its nextUpdate passed."""
    if state.crl is None:
        return {"stale": True, "error": "no tls_crl configured"}
    facts = state.crl.installed()
    if facts is None:
        return {"stale": True, "error": f"no CRL of this node's CA in {state.crl.path}"}
    return facts.as_dict(datetime.datetime.now(datetime.UTC))


def maintenance_mode(state: NodeState, form: Parameters) -> dict:
    """POST /i/maintenance_mode (form field maintenance_mode=yes|no), a vpnfleet call.

    yes: the node holds the flag (its /i/node says so, the controller names it in no new config)
    and every client of it is told to move on to the next remote of its config; asked again, it
    moves on whoever connected since. no: the flag goes; clients come back with new configs.
    """
    if _single(form, "maintenance_mode") is None:
        raise ApiError(HTTPStatus.BAD_REQUEST, "maintenance_mode is required")
    on = _yes_no(form, "maintenance_mode", default=False)
    fleet = state.fleet
    try:
        changed = fleet.set_maintenance(on)
    except ManagementError as error:
        raise ApiError(HTTPStatus.CONFLICT, str(error)) from None
    except OSError as error:
        raise ApiError(
            HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot change the maintenance flag: {error.strerror or error}"
        ) from None
    reports = fleet.move_everyone_on() if on else []
    return {
        "maintenance_mode": on,
        "changed": changed,
        "moved_count": sum(report.disconnected for report in reports),
        "unreachable_process_list": _unreachable(reports),
    }


def peer_list(state: NodeState, query: Parameters) -> dict:
    """GET /w/peer_list: the peers of every WireGuard interface of the node. show_all=no keeps only
    the connected ones (a handshake within 3 minutes); the default lists all, which is what the
    controller's reconcile compares with its records."""
    show_all = _yes_no(query, "show_all", default=True)
    now = time.time()
    reports = state.wireguard.reports()
    peers = []
    for report in reports:
        for peer in report.peers:
            if not show_all and not peer.connected(now):
                continue
            entry = {
                "public_key": peer.public_key,
                "ip_net": list(peer.allowed_ips),
                "bytes_in": peer.bytes_received,
                "bytes_out": peer.bytes_sent,
                "profile_id": peer.interface.profile_id,
                "interface": peer.interface.name,
            }
            if peer.latest_handshake:
                entry["last_handshake_time"] = _isoformat_utc(peer.latest_handshake)
            peers.append(entry)
    return {"peer_list": peers, "unreachable_interface_list": _unreachable_interfaces(reports)}


def add_peer(state: NodeState, form: Parameters) -> dict:
    """POST /w/add_peer (public_key, ip_net once per address): the peer on the interface of the
    profile its addresses belong to. 400 for a bad key or address, 409 for an address another
    peer holds."""
    public_key = _required(form, "public_key")
    try:
        check_public_key(public_key)
        networks = check_peer_networks(form.get("ip_net", []))
        interface = state.wireguard.add_peer(public_key, networks)
    except PeerRefused as refusal:
        status = HTTPStatus.CONFLICT if refusal.conflict else HTTPStatus.BAD_REQUEST
        raise ApiError(status, refusal.reason) from None
    except WireGuardError as error:
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, str(error)) from None
    return {
        "public_key": public_key,
        "ip_net": [str(network) for network in networks],
        "profile_id": interface.profile_id,
        "interface": interface.name,
    }


def remove_peer(state: NodeState, form: Parameters) -> dict:
    """POST /w/remove_peer (public_key): the peer off the node, with its byte counts (for the
    connection log); 404 when no interface has it."""
    public_key = _required(form, "public_key")
    try:
        check_public_key(public_key)
        peer = state.wireguard.remove_peer(public_key)
    except PeerRefused as refusal:
        raise ApiError(HTTPStatus.BAD_REQUEST, refusal.reason) from None
    except WireGuardError as error:
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, str(error)) from None
    if peer is None:
        raise ApiError(HTTPStatus.NOT_FOUND, f"no WireGuard interface of this node has peer {public_key}")
    return {
        "public_key": public_key,
        "bytes_in": peer.bytes_received,
        "bytes_out": peer.bytes_sent,
        "profile_id": peer.interface.profile_id,
        "interface": peer.interface.name,
    }


ROUTES = {
    "/i/node": Route("GET", node_info),
    "/o/connection_list": Route("GET", connection_list),
    "/o/disconnect_client": Route("POST", disconnect_client),
    "/o/disconnect_clients": Route("POST", disconnect_clients),
    "/crl": Route("POST", install_crl, body="crl"),
    "/i/maintenance_mode": Route("POST", maintenance_mode),
    "/w/peer_list": Route("GET", peer_list),
    "/w/add_peer": Route("POST", add_peer),
    "/w/remove_peer": Route("POST", remove_peer),
}


def _process_fields(report: ProcessReport) -> dict:
    return {"profile_id": report.process.profile_id, "process": report.process.name}


def _unreachable(reports: list[ProcessReport]) -> list[dict]:
    return [{**_process_fields(report), "error": report.error} for report in reports if report.error]


def _unreachable_interfaces(reports: list[InterfaceReport]) -> list[dict]:
    return [
        {"profile_id": report.interface.profile_id, "interface": report.interface.name, "error": report.error}
        for report in reports
        if report.error
    ]


def _required(parameters: Parameters, name: str) -> str:
    value = _single(parameters, name)
    if value is None:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} is required")
    return value


def _single(parameters: Parameters, name: str) -> str | None:
    values = parameters.get(name, [])
    if len(values) > 1:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} given more than once")
    return values[0] if values else None


def _yes_no(parameters: Parameters, name: str, default: bool) -> bool:
    value = _single(parameters, name)
    if value is None:
        return default
    if value not in ("yes", "no"):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be yes or no")
    return value == "yes"


def _isoformat_utc(unix_time: int) -> str:
    return datetime.datetime.fromtimestamp(unix_time, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
