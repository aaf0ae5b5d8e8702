"""The OpenVPN management interface of every process on the node, asked in parallel.

Each OpenVPN process listens on its own unix socket, /run/openvpn-server/<profile>-<index>.sock.
The daemon asks them all at once, each with a short deadline, so one hung process costs the
controller at most that deadline and is reported instead of failing the whole request.
"""

import glob
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A client told HALT stops for good; the default RESTART would make it reconnect at once and
# undo the disconnect the controller asked for.
DISCONNECT_MESSAGE = "HALT"
# A client of a node going into maintenance is told to restart with the next remote of its
# config ("[N]", as `explicit-exit-notify 2` tells it when a server stops), which is another
# node: the order of the remotes sees to that (controller/fleet.py).
MOVE_ON_MESSAGE = "RESTART,[N]"
# Enough for one thread per OpenVPN process of a large node; more processes simply queue.
MAX_PARALLEL_SESSIONS = 64
# How long a client told HALT has to leave before its instance is ended without a word. A client
# that acts on the HALT is gone within a round trip; one that does not read its connection (a
# stuck client, one that ignores the HALT on purpose) would keep its instance until the server's
# own delayed exit 5 s later, and a UDP client's instance stays for those 5 s although it halted.
HALT_GRACE_SECONDS = 0.5
STATUS_POLL_SECONDS = 0.05
# A status line is about 200 bytes; this bounds memory if a socket talks nonsense.
MAX_LINE_BYTES = 64 * 1024


class ManagementError(Exception):
    """A management socket did not give a usable answer; the message is shown to the controller."""


@dataclass(frozen=True)
class OpenVpnProcess:
    """One OpenVPN process, known by its management socket."""

    socket_path: Path

    @property
    def name(self) -> str:
        return self.socket_path.stem

    @property
    def profile_id(self) -> str:
        # "<profile>-<index>": profile ids may contain dashes themselves, the index never does.
        profile, dash, index = self.name.rpartition("-")
        return profile if dash and index.isdigit() else self.name


@dataclass(frozen=True)
class ConnectedClient:
    common_name: str
    client_id: int
    real_address: str
    virtual_ipv4: str
    virtual_ipv6: str
    bytes_received: int
    bytes_sent: int
    connected_since: int


@dataclass(frozen=True)
class ProcessReport:
    """What one process answered: its clients (and how many were disconnected), or why not."""

    process: OpenVpnProcess
    clients: tuple[ConnectedClient, ...] = ()
    disconnected: int = 0
    error: str | None = None


# Columns of the `status 3` CLIENT_LIST rows, by their names in the HEADER row.
_CLIENT_COLUMNS = {
    "common_name": "Common Name",
    "client_id": "Client ID",
    "real_address": "Real Address",
    "virtual_ipv4": "Virtual Address",
    "virtual_ipv6": "Virtual IPv6 Address",
    "bytes_received": "Bytes Received",
    "bytes_sent": "Bytes Sent",
    "connected_since": "Connected Since (time_t)",
}
_INTEGER_FIELDS = ("client_id", "bytes_received", "bytes_sent", "connected_since")
# OpenVPN 2.7 (one process, several sockets) names the socket before the address:
# "udp6:198.51.100.130:52578", "tcp6-server:[2001:db8::2]:40000"; 2.6 gives the address alone.
_SOCKET_PREFIX = re.compile(r"^(?:udp|tcp)[46]?(?:-server|-client)?:(?=[\[0-9a-fA-F])")


def parse_client_list(status_lines: Iterable[str]) -> list[ConnectedClient]:
    """The clients in the lines of a `status 3` reply (tab separated, columns named by a HEADER row)."""
    columns: list[str] | None = None
    clients = []
    for line in status_lines:
        cells = line.split("\t")
        if cells[:2] == ["HEADER", "CLIENT_LIST"]:
            columns = cells[2:]
            missing = [name for name in _CLIENT_COLUMNS.values() if name not in columns]
            if missing:
                raise ManagementError(f"status reply lacks the column(s) {', '.join(missing)}")
        elif cells[0] == "CLIENT_LIST":
            if columns is None:
                raise ManagementError("status reply lists clients before naming its columns")
            if len(cells) - 1 != len(columns):
                raise ManagementError(f"status reply has a malformed client row: {line!r}")
            row = dict(zip(columns, cells[1:], strict=True))
            values: dict[str, Any] = {field: row[column] for field, column in _CLIENT_COLUMNS.items()}
            values["real_address"] = _SOCKET_PREFIX.sub("", row[_CLIENT_COLUMNS["real_address"]])
            try:
                for field in _INTEGER_FIELDS:
                    values[field] = int(values[field])
            except ValueError:
                raise ManagementError(f"status reply has a malformed client row: {line!r}") from None
            clients.append(ConnectedClient(**values))
    return clients


class ManagementSession:
    """One conversation with a management socket; every read and write shares one deadline."""

    def __init__(self, socket_path: Path, deadline: float):
        self._socket_path = socket_path
        self._deadline = deadline
        self._buffer = bytearray()
        self._sock: socket.socket | None = None

    def __enter__(self) -> "ManagementSession":
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(self._remaining())
            self._sock.connect(str(self._socket_path))
            greeting = self._read_line()
            if not greeting.startswith(">INFO:"):
                raise ManagementError(f"not an OpenVPN management socket (greeting {greeting[:60]!r})")
        except BaseException:
            self._sock.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self._sock is not None:
            self._sock.close()

    def status(self) -> list[ConnectedClient]:
        self._send("status 3")
        lines = []
        while (line := self._read_reply_line()) != "END":
            if line.startswith("ERROR:"):
                raise ManagementError(f"status refused: {line}")
            lines.append(line)
        return parse_client_list(lines)

    def kill_client(self, client_id: int, message: str = DISCONNECT_MESSAGE) -> bool:
        """True when OpenVPN disconnected the client; False when it was gone already."""
        self._send(f"client-kill {client_id} {message}")
        while True:
            line = self._read_reply_line()
            if line.startswith("SUCCESS:"):
                return True
            if line.startswith("ERROR:"):
                return False

    def kill_address(self, real_address: str) -> bool:
        """End the instance at this address at once (no message); False when it was gone."""
        self._send(f"kill {real_address}")
        while True:
            line = self._read_reply_line()
            if line.startswith("SUCCESS:"):
                return True
            if line.startswith("ERROR:"):
                return False

    def still_listed(self, client_ids: set[int], grace: float) -> list[ConnectedClient]:
        """Those of these clients that are still listed after ``grace`` seconds (or less, within
        the session's deadline), polled so that the answer comes as soon as they are gone."""
        until = min(time.monotonic() + grace, self._deadline - 2 * STATUS_POLL_SECONDS)
        while True:
            left = [client for client in self.status() if client.client_id in client_ids]
            if not left or time.monotonic() >= until:
                return left
            time.sleep(STATUS_POLL_SECONDS)

    @property
    def _connected(self) -> socket.socket:
        if self._sock is None:
            raise ManagementError("not connected: use the session as a context manager")
        return self._sock

    def _send(self, command: str) -> None:
        self._connected.settimeout(self._remaining())
        self._connected.sendall(command.encode("ascii") + b"\n")

    def _read_reply_line(self) -> str:
        # Lines starting with ">" are real-time notifications (log, bytecount, ...) that may
        # arrive between a command and its reply; they are not part of the reply.
        while (line := self._read_line()).startswith(">"):
            pass
        return line

    def _read_line(self) -> str:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_LINE_BYTES:
                raise ManagementError("reply line too long")
            self._connected.settimeout(self._remaining())
            chunk = self._connected.recv(65536)
            if not chunk:
                raise ManagementError("the process closed the management connection")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        # Deleting from the front of a bytearray is cheap, so long replies are not copied per line.
        del self._buffer[: end + 1]
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining


class ProcessFleet:
    """All OpenVPN processes of the node, found by a glob over their management sockets."""

    def __init__(self, socket_glob: str, timeout: float, maintenance_flag: Path | None = None):
        self._socket_glob = socket_glob
        self._timeout = timeout
        # The node's maintenance mode is a file, so that it outlives a restart of the daemon.
        self._maintenance_flag = maintenance_flag
        self._executor = ThreadPoolExecutor(MAX_PARALLEL_SESSIONS, thread_name_prefix="management")
        # OpenVPN serves one management client at a time and queues the rest, so our own
        # concurrent requests take turns per socket instead of timing each other out.
        self._socket_locks: dict[Path, threading.Lock] = {}
        self._socket_locks_guard = threading.Lock()

    def processes(self) -> list[OpenVpnProcess]:
        return [OpenVpnProcess(Path(path)) for path in sorted(glob.glob(self._socket_glob))]

    def connection_reports(self) -> list[ProcessReport]:
        return self._ask_all(lambda session: (session.status(), 0))

    def disconnect(self, common_names: Collection[str]) -> list[ProcessReport]:
        """Every client of these common names off every process: one status per process for all."""
        wanted = frozenset(common_names)

        def kill_matching(session: ManagementSession) -> tuple[list[ConnectedClient], int]:
            matching = [client for client in session.status() if client.common_name in wanted]
            # Killing by client id, never `kill <cn>`: no name ever reaches the command line.
            killed = sum(session.kill_client(client.client_id) for client in matching)
            if killed:
                told = {client.client_id for client in matching}
                for client in session.still_listed(told, HALT_GRACE_SECONDS):
                    # `kill IP:port` takes IPv4 only; an IPv6 client goes at the delayed exit.
                    if ":" in client.real_address.rpartition(":")[0]:
                        continue
                    session.kill_address(client.real_address)
            return matching, killed

        return self._ask_all(kill_matching)

    def move_everyone_on(self) -> list[ProcessReport]:
        """Every client of every process is told to take the next remote of its config."""

        def kill_all(session: ManagementSession) -> tuple[list[ConnectedClient], int]:
            clients = session.status()
            return clients, sum(session.kill_client(client.client_id, MOVE_ON_MESSAGE) for client in clients)

        return self._ask_all(kill_all)

    def in_maintenance(self) -> bool:
        return self._maintenance_flag is not None and self._maintenance_flag.exists()

    def set_maintenance(self, on: bool) -> bool:
        """Set or clear the flag; True when that changed it."""
        if self._maintenance_flag is None:
            raise ManagementError("this daemon has no maintenance_flag_file")
        if on == self.in_maintenance():
            return False
        if on:
            self._maintenance_flag.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        else:
            self._maintenance_flag.unlink(missing_ok=True)
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _ask_all(self, conversation: Callable) -> list[ProcessReport]:
        deadline = time.monotonic() + self._timeout
        processes = self.processes()
        return list(self._executor.map(lambda process: self._ask(process, conversation, deadline), processes))

    def _ask(self, process: OpenVpnProcess, conversation: Callable, deadline: float) -> ProcessReport:
        lock = self._socket_lock(process.socket_path)
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return ProcessReport(process, error=self._timeout_reason())
        try:
            with ManagementSession(process.socket_path, deadline) as session:
                clients, disconnected = conversation(session)
            return ProcessReport(process, tuple(clients), disconnected)
        except TimeoutError:
            return ProcessReport(process, error=self._timeout_reason())
        except ConnectionRefusedError:
            return ProcessReport(process, error="connection refused: the process is not running")
        except FileNotFoundError:
            return ProcessReport(process, error="the management socket disappeared")
        except PermissionError:
            return ProcessReport(process, error="permission denied on the management socket")
        except ManagementError as exc:
            return ProcessReport(process, error=str(exc))
        except OSError as exc:
            return ProcessReport(process, error=f"management socket error: {exc.strerror or exc}")
        finally:
            lock.release()

    def _socket_lock(self, socket_path: Path) -> threading.Lock:
        with self._socket_locks_guard:
            return self._socket_locks.setdefault(socket_path, threading.Lock())

    def _timeout_reason(self) -> str:
        return f"no answer within {self._timeout:g} s"
