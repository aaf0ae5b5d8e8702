"""The calls of eduVPN's vpn-daemon API v3 that concern OpenVPN, plus what vpnfleet adds.

Every call answers JSON. The upstream fields keep their names and types, so eduVPN's portal
can talk to us; our additions are extra fields next to them.
"""

import datetime
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from . import node
from .management import ProcessFleet, ProcessReport

# X.509 allows at most 64 characters in a common name (RFC 5280, ub-common-name).
MAX_COMMON_NAME_LENGTH = 64

Parameters = dict[str, list[str]]


class ApiError(Exception):
    """A request we refuse; the status is a 4xx and the reason goes back to the caller."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Route:
    method: str
    # A dict is answered as JSON, bytes as Prometheus' text format.
    call: Callable[[ProcessFleet, Parameters], dict | bytes]


def daemon_version() -> str:
    try:
        return importlib.metadata.version("vpnfleet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def node_info(fleet: ProcessFleet, query: Parameters) -> dict:
    """GET /i/node: cores, load and uptime; with include_client_peer_count=yes also the clients per process.

    Counting is optional, as upstream: it asks every OpenVPN process, which a caller that only
    wants the load does not need.
    """
    count_clients = _yes_no(query, "include_client_peer_count", default=False)
    cores = node.cpu_count()
    load = node.load_average()
    info: dict = {
        "cpu_count": cores,
        "load_average": load,
        "rel_load_average": node.relative_load_average(load, cores),
        # vpnfleet has no maintenance mode; the field stays for the portal, which reads it.
        "maintenance_mode": False,
        "v": daemon_version(),
    }
    uptime = node.uptime_seconds()
    if uptime is not None:
        # Left out rather than null where unknown: the portal reads it as an integer.
        info["node_uptime"] = uptime
    if count_clients:
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


def connection_list(fleet: ProcessFleet, query: Parameters) -> dict:
    """GET /o/connection_list: every client connected to any OpenVPN process of the node."""
    reports = fleet.connection_reports()
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


def disconnect_client(fleet: ProcessFleet, form: Parameters) -> dict:
    """POST /o/disconnect_client (form field common_name): disconnect it from every process."""
    common_name = _single(form, "common_name")
    if common_name is None:
        raise ApiError(HTTPStatus.BAD_REQUEST, "common_name is required")
    if not 0 < len(common_name) <= MAX_COMMON_NAME_LENGTH or not common_name.isprintable():
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            f"common_name must be 1 to {MAX_COMMON_NAME_LENGTH} printable characters",
        )
    reports = fleet.disconnect(common_name)
    return {
        "common_name": common_name,
        "disconnected_count": sum(report.disconnected for report in reports),
        "unreachable_process_list": _unreachable(reports),
    }


ROUTES = {
    "/i/node": Route("GET", node_info),
    "/o/connection_list": Route("GET", connection_list),
    "/o/disconnect_client": Route("POST", disconnect_client),
}


def _process_fields(report: ProcessReport) -> dict:
    return {"profile_id": report.process.profile_id, "process": report.process.name}


def _unreachable(reports: list[ProcessReport]) -> list[dict]:
    return [{**_process_fields(report), "error": report.error} for report in reports if report.error]


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
