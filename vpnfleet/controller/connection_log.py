"""The connection log as an auditor asks it: who had address X at time T, all sessions of user U.

One search for the admin pages, their CSV export and `vpnfleet-controller connection-log`. It
reads only what every VPN protocol has (user, node, profile, the tunnel's addresses, the real
address, from and until), so WireGuard peers, logged in the same table from their address's
allocation to its release (controller/wireguard.py), answer too.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from vpnfleet.controller.models import ConnectionLogEntry

PAGE_SIZE = 200
EXPORT_LIMIT = 100_000
MAX_USERNAME_LENGTH = 255

CSV_COLUMNS = (
    "username",
    "profile",
    "node",
    "process",
    "location",
    "vpn_ipv4",
    "vpn_ipv6",
    "real_address",
    "connected_at",
    "disconnected_at",
    "bytes_received",
    "bytes_sent",
    "close_reason",
    "protocol",
)
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class LogSearchError(ValueError):
    """A search that cannot run; names the field and the reason."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field


def parse_moment(text: str) -> datetime:
    """ISO 8601 ('2026-12-01T14:30:00Z', '2026-12-01 14:30', with or without an offset), as naive
    UTC like the log's columns; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not a time like 2026-12-01 14:30 or 2026-12-01T14:30:00Z") from None
    return moment


@dataclass(frozen=True)
class LogSearch:
    username: str | None = None
    address: str | None = None  # normalized: as the node API stores it
    at: datetime | None = None

    @classmethod
    def parse(cls, username: str | None, address: str | None, at: str | None) -> LogSearch:
        """From what a person typed; empty fields are left out. Raises LogSearchError."""
        username = (username or "").strip() or None
        if username is not None and (len(username) > MAX_USERNAME_LENGTH or not username.isprintable()):
            raise LogSearchError("user", f"must be 1 to {MAX_USERNAME_LENGTH} printable characters")
        normalized = None
        if (address or "").strip():
            try:
                normalized = str(ipaddress.ip_address((address or "").strip()))
            except ValueError:
                raise LogSearchError("address", f"{address!r} is not an IP address (IPv4 or IPv6)") from None
        moment = None
        if (at or "").strip():
            try:
                moment = parse_moment(at or "")
            except ValueError as problem:
                raise LogSearchError("at", str(problem)) from None
        return cls(username, normalized, moment)

    def statement(self) -> Select[ConnectionLogEntry]:
        query = select(ConnectionLogEntry)
        if self.username is not None:
            query = query.where(ConnectionLogEntry.username == self.username)
        if self.address is not None:
            query = query.where(
                or_(
                    ConnectionLogEntry.ipv4 == self.address,
                    ConnectionLogEntry.ipv6 == self.address,
                    ConnectionLogEntry.real_address == self.address,
                )
            )
        if self.at is not None:
            # Connected at that moment: started by then and not ended before it.
            query = query.where(
                ConnectionLogEntry.connected_at <= self.at,
                or_(
                    ConnectionLogEntry.disconnected_at.is_(None),
                    ConnectionLogEntry.disconnected_at >= self.at,
                ),
            )
        return query.order_by(ConnectionLogEntry.connected_at.desc(), ConnectionLogEntry.id.desc())


def search(db: Session, log_search: LogSearch, limit: int = PAGE_SIZE) -> list[ConnectionLogEntry]:
    return list(db.scalars(log_search.statement().limit(limit)))


def _timestamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_rows(entries: Iterable[ConnectionLogEntry]) -> list[list[str]]:
    return [
        [
            _cell(value)
            for value in (
                entry.username,
                entry.profile_id,
                entry.node,
                entry.process,
                entry.location,
                entry.ipv4,
                entry.ipv6,
                entry.real_address,
                _timestamp(entry.connected_at),
                _timestamp(entry.disconnected_at),
                entry.bytes_received,
                entry.bytes_sent,
                entry.close_reason,
                entry.protocol,
            )
        ]
        for entry in entries
    ]


def csv_text(entries: Iterable[ConnectionLogEntry]) -> str:
    """The entries as CSV with a header row; times in UTC (ISO 8601), an empty until: still connected."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(entries))
    return out.getvalue()
