"""The signer service: a threaded unix-socket server over the CA (vpnfleet.shared.pki)."""

from __future__ import annotations

import grp
import logging
import os
import re
import socket
import socketserver
import struct
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

from vpnfleet.shared.pki import authority, keys

from .protocol import OPERATIONS, SignerError, encode, parse_time, read_message
from .settings import SignerSettings

log = logging.getLogger("vpnfleet.signer")

# The controller names users' certificates by 128 random bits (vpnfleet/controller/certificates.py):
# nothing else may reach a subject through the signer.
_CLIENT_COMMON_NAME = re.compile(r"^[0-9a-f]{32}$")
_SERIAL = re.compile(r"^[0-9A-Fa-f]{1,40}$")
# The clocks of the controller and the signer are the same host's; this covers backdating.
_CLOCK_SLACK_SECONDS = 3600
MAX_CRL_ENTRIES = 1_000_000
_READ_TIMEOUT_SECONDS = 30
# systemd's socket activation (sd_listen_fds): the first passed descriptor is 3.
_SD_LISTEN_FDS_START = 3


class Signer:
    """The requests, checked; a refusal raises SignerError with the reason."""

    def __init__(self, settings: SignerSettings):
        self.settings = settings
        self.ca = authority.CertificateAuthority.load(str(settings.ca_dir))
        # The pairs of the last sign_crl request, checked: the next one repeats nearly all of them.
        self._checked_revoked: dict[tuple[str, str], tuple[str, datetime]] = {}

    def answer(self, request: dict[str, Any], now: datetime) -> dict[str, Any]:
        op = request.get("op")
        if op not in OPERATIONS:
            raise SignerError(
                f"unknown request {str(op)[:40]!r}; the signer only does {', '.join(sorted(OPERATIONS))}"
            )
        unknown = sorted(set(request) - {"op", *OPERATIONS[op]})
        if unknown:
            raise SignerError(f"{op}: unknown field(s) {', '.join(name[:40] for name in unknown)}")
        missing = [name for name in OPERATIONS[op] if name not in request]
        if missing:
            raise SignerError(f"{op}: missing field(s) {', '.join(missing)}")
        return getattr(self, op)(request, now)

    def ca_certificate(self, request: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {
            "certificate": keys.certificate_pem(self.ca.cert).decode(),
            "max_client_lifetime_seconds": int(self.settings.max_client_lifetime.total_seconds()),
            "max_crl_lifetime_seconds": int(self.settings.max_crl_lifetime.total_seconds()),
        }

    def issue_client(self, request: dict[str, Any], now: datetime) -> dict[str, Any]:
        common_name = request["common_name"]
        if not isinstance(common_name, str) or not _CLIENT_COMMON_NAME.match(common_name):
            raise SignerError("issue_client: common_name must be 32 lower-case hex digits")
        not_after = parse_time(request["not_after"], "issue_client: not_after")
        if not_after <= now:
            raise SignerError("issue_client: not_after is in the past")
        if not_after - now > self.settings.max_client_lifetime:
            raise SignerError(
                f"issue_client: a lifetime of {not_after - now} is longer than the bound of "
                f"{self.settings.max_client_lifetime}"
            )
        public_key = _public_key(request["public_key"])
        cert = self.ca.sign_public_key(public_key, common_name, "client", record=False, valid_until=not_after)
        log.info(
            "issued client certificate %s for %s until %s",
            keys.serial_hex(cert.serial_number),
            common_name,
            keys.isoformat(keys.not_after(cert)),
        )
        return {"certificate": keys.certificate_pem(cert).decode()}

    def sign_crl(self, request: dict[str, Any], now: datetime) -> dict[str, Any]:
        this_update = parse_time(request["this_update"], "sign_crl: this_update")
        next_update = parse_time(request["next_update"], "sign_crl: next_update")
        if abs((this_update - now).total_seconds()) > _CLOCK_SLACK_SECONDS:
            raise SignerError("sign_crl: this_update is more than an hour away from now")
        if next_update <= this_update:
            raise SignerError("sign_crl: next_update must be after this_update")
        if next_update - this_update > self.settings.max_crl_lifetime:
            raise SignerError(
                f"sign_crl: a CRL lifetime of {next_update - this_update} is longer than the bound of "
                f"{self.settings.max_crl_lifetime}"
            )
        self._checked_revoked = _checked_revoked(request["revoked"], now, self._checked_revoked)
        revoked = list(self._checked_revoked.values())
        crl = self.ca.publish_crl(revoked, this_update, next_update)
        log.info(
            "signed a CRL with %d client certificates, next update %s",
            len(revoked),
            keys.isoformat(next_update),
        )
        return {"crl": crl.decode()}


def _public_key(pem: object):
    if not isinstance(pem, str) or not pem.strip():
        raise SignerError("issue_client: public_key must be a PEM text")
    if "PRIVATE KEY" in pem:
        # The key the controller made for the user stays with the controller and the user.
        raise SignerError("issue_client: that is a private key; send the public key only")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise SignerError("issue_client: public_key is not a PEM public key") from None
    if keys.key_type_of(key) is None:
        raise SignerError(f"issue_client: unsupported key; use one of {', '.join(keys.KEY_TYPES)}")
    return key


def _checked_revoked(
    revoked: object, now: datetime, checked_before: dict[tuple[str, str], tuple[str, datetime]]
) -> dict[tuple[str, str], tuple[str, datetime]]:
    """Each [serial, revoked_at] pair of the request -> (serial, revoked_at) checked; a pair that
    ``checked_before`` holds passed these checks before (a revocation time once past stays past)."""
    if not isinstance(revoked, list):
        raise SignerError("sign_crl: revoked must be a list of [serial, revoked_at] pairs")
    if len(revoked) > MAX_CRL_ENTRIES:
        raise SignerError(f"sign_crl: more than {MAX_CRL_ENTRIES} revoked certificates")
    checked = {}
    for position, entry in enumerate(revoked):
        where = f"sign_crl: revoked[{position}]"
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise SignerError(f"{where} must be a [serial, revoked_at] pair")
        pair = (entry[0], entry[1]) if isinstance(entry[1], str) else None
        if pair in checked_before:
            checked[pair] = checked_before[pair]
            continue
        if not _SERIAL.match(entry[0]) or int(entry[0], 16) == 0:
            raise SignerError(f"{where}: serial must be 1 to 40 hex digits, not zero")
        revoked_at = parse_time(entry[1], f"{where}: revoked_at")
        if (revoked_at - now).total_seconds() > _CLOCK_SLACK_SECONDS:
            raise SignerError(f"{where}: revoked_at is in the future")
        checked[entry[0], entry[1]] = (entry[0].upper(), revoked_at)
    return checked


class _Handler(socketserver.BaseRequestHandler):
    server: SignerServer

    def handle(self) -> None:
        connection: socket.socket = self.request
        connection.settimeout(_READ_TIMEOUT_SECONDS)
        peer = _peer(connection)
        try:
            request = read_message(connection)
            answer = {"ok": True, **self.server.signer.answer(request, keys.utcnow())}
        except SignerError as refusal:
            log.warning("refused a request of %s: %s", peer, refusal)
            answer = {"ok": False, "error": str(refusal)}
        except (OSError, ValueError) as error:
            log.warning("request of %s failed: %s", peer, error)
            answer = {"ok": False, "error": f"the request could not be carried out: {error}"}
        try:
            connection.sendall(encode(answer))
        except OSError:
            pass  # the client gave up; nothing was handed out that it did not get


def _peer(connection: socket.socket) -> str:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", credentials)
    return f"pid {pid} uid {uid} gid {gid}"


class SignerServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, settings: SignerSettings):
        self.signer = Signer(settings)
        self.settings = settings
        super().__init__(str(settings.socket), _Handler, bind_and_activate=False)
        if _systemd_socket_passed():
            self.socket.close()
            self.socket = socket.socket(fileno=_SD_LISTEN_FDS_START)
            self.server_address = self.socket.getsockname()
        else:
            self._make_socket()

    def _make_socket(self) -> None:
        path = self.settings.socket
        if path.is_socket():
            path.unlink()  # left by an earlier run
        # Made closed, then opened to the group: never a moment in which anyone may connect.
        old_umask = os.umask(0o177)
        try:
            self.server_bind()
        finally:
            os.umask(old_umask)
        if self.settings.socket_group is not None:
            os.chown(path, -1, grp.getgrnam(self.settings.socket_group).gr_gid)
            os.chmod(path, 0o660)
        self.server_activate()


def _systemd_socket_passed() -> bool:
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return False
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return True
