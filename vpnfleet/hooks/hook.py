"""What one hook run does: read OpenVPN's environment, ask the controller, decide, log one line.

client-connect: allow on the controller's explicit ``{"allow": true}``. A 4xx or ``allow: false``
always denies. Anything else is no answer, never a yes (refused, timeout, TLS failure, 3xx, 5xx,
not JSON, a 2xx without a true or false ``allow``): then the client gets in only while the node's
CRL is fresh (OpenVPN has checked the certificate against it already), and is refused once it is
stale. In deferred mode the decision goes to OpenVPN's ``client_connect_deferred_file`` ("1" allow,
"0" deny) instead of the exit status.

client-disconnect: tell the controller (bytes, address); nothing to decide.
"""

from __future__ import annotations

import datetime
import os
import sys
import syslog
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import node_api
from .settings import HookSettings, profile_from

CONNECT, DISCONNECT = "client-connect", "client-disconnect"
# Beyond timeout_seconds, a hook's own hard limit: a client is never left deferred for ever.
DEADLINE_MARGIN_SECONDS = 2.0

# How a hook reaches the controller: node_api.post (one connection per run) or a worker's pool.
Post = Callable[[HookSettings, str, dict], "node_api.Answer"]


@dataclass(frozen=True)
class ClientEvent:
    """The client as OpenVPN describes it to a client-connect/-disconnect script."""

    script_type: str
    common_name: str | None
    profile_id: str | None
    ipv4: str | None
    ipv6: str | None
    real_address: str | None
    bytes_received: str | None
    bytes_sent: str | None
    deferred_file: str | None

    @classmethod
    def from_environment(cls, environment: dict, settings: HookSettings | None, profile: str | None = None):
        def get(name: str) -> str | None:
            return environment.get(name) or None

        return cls(
            script_type=environment.get("script_type", ""),
            common_name=get("common_name"),
            profile_id=profile_from(settings, profile, environment),
            ipv4=get("ifconfig_pool_remote_ip"),
            ipv6=get("ifconfig_pool_remote_ip6"),
            real_address=get("trusted_ip") or get("trusted_ip6"),
            bytes_received=get("bytes_received"),
            bytes_sent=get("bytes_sent"),
            deferred_file=get("client_connect_deferred_file"),
        )

    def describe(self) -> str:
        parts = [f"cn={self.common_name or '-'}", f"profile={self.profile_id or '-'}"]
        parts += [
            f"{label}={value}"
            for label, value in (
                ("ipv4", self.ipv4),
                ("ipv6", self.ipv6),
                ("real", self.real_address),
                ("bytes_received", self.bytes_received if self.script_type == DISCONNECT else None),
                ("bytes_sent", self.bytes_sent if self.script_type == DISCONNECT else None),
            )
            if value
        ]
        return " ".join(parts)


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str


def decide_connect(settings: HookSettings, event: ClientEvent, post: Post = node_api.post) -> Decision:
    refusal = refusal_before_asking(event)
    if refusal is not None:
        return refusal
    try:
        answer = post(settings, "connect", connect_fields(event))
    except node_api.ControllerUnavailable as exc:
        return without_answer(settings, f"controller unavailable ({exc})")
    return decision_of(settings, answer)


def refusal_before_asking(event: ClientEvent) -> Decision | None:
    """What the controller need not be asked about: a client the node cannot even name."""
    if not event.common_name:
        return Decision(False, "OpenVPN passed no common_name")
    if not event.profile_id:
        return Decision(False, "no profile id: set VPNFLEET_PROFILE (setenv), profile_id or --profile")
    return None


def connect_fields(event: ClientEvent) -> dict:
    """The node API's connect check of ``event``, as /connect and each of /connect_batch's checks take it."""
    fields = {
        "common_name": event.common_name,
        "profile_id": event.profile_id,
        "ipv4": event.ipv4,
        "ipv6": event.ipv6,
        "real_address": event.real_address,
    }
    return {name: value for name, value in fields.items() if value}


def decision_of(settings: HookSettings, answer: node_api.Answer) -> Decision:
    """The decision in the controller's answer to one connect check (2xx and 4xx answers)."""
    said = answer.body.get("reason") or answer.body.get("error")
    if answer.status >= 300:
        return Decision(False, f"controller refused (HTTP {answer.status}): {said or 'no reason given'}")
    allow = answer.body.get("allow")
    if allow is True:
        connection = answer.body.get("connection_id")
        return Decision(True, "controller allowed" + (f" (connection {connection})" if connection else ""))
    if allow is False:
        return Decision(False, f"controller did not allow: {said or 'no reason given'}")
    return without_answer(settings, f"not a controller answer (HTTP {answer.status} without allow)")


def without_answer(settings: HookSettings, why: str) -> Decision:
    """No valid answer: in only while the node's CRL is fresh, so that a revocation the node may
    have missed counts for at most the time the CRL is valid without renewal."""
    fresh, crl = crl_freshness(settings)
    return Decision(fresh, f"{why}; {crl}")


def late_decision(settings: HookSettings) -> Decision:
    """The hard limit has passed without a decision: decide as with no answer."""
    late = f"no decision within {settings.timeout_seconds + DEADLINE_MARGIN_SECONDS:g} s"
    try:
        return without_answer(settings, late)
    except Exception as exc:  # noqa: BLE001 - refuse rather than leave the client deferred
        return Decision(False, f"{late}; the CRL check failed: {exc}")


def crl_freshness(settings: HookSettings) -> tuple[bool, str]:
    if settings.crl_file is None:
        return False, "no crl_file to rely on"
    # Imported here: only a connect without an answer pays for loading cryptography.
    from vpnfleet.daemon.crl import CrlFile, CrlRefused, load_crl, next_update_of

    try:
        if settings.crl_ca_file is not None:
            facts = CrlFile(settings.crl_file, settings.crl_ca_file).installed()
            if facts is None:
                return False, f"no CRL of the node's CA in {settings.crl_file}"
            next_update: datetime.datetime | None = facts.next_update
        else:
            next_update = next_update_of(load_crl(settings.crl_file.read_bytes()))
    except (OSError, ValueError, CrlRefused) as exc:
        return False, f"cannot read the CRL {settings.crl_file}: {exc}"
    stamp = next_update.strftime("%Y-%m-%dT%H:%M:%SZ") if next_update else "never"
    if next_update is None or next_update <= datetime.datetime.now(datetime.UTC):
        return False, f"the node's CRL is stale (nextUpdate {stamp})"
    return True, f"the node's CRL is fresh (nextUpdate {stamp})"


def report_disconnect(settings: HookSettings, event: ClientEvent, post: Post = node_api.post) -> str:
    if not event.common_name:
        return "not reported: OpenVPN passed no common_name"
    try:
        answer = post(
            settings,
            "disconnect",
            {
                "common_name": event.common_name,
                "ipv4": event.ipv4,
                "bytes_received": event.bytes_received,
                "bytes_sent": event.bytes_sent,
            },
        )
    except node_api.ControllerUnavailable as exc:
        return f"not reported: controller unavailable ({exc})"
    if answer.status >= 300:
        said = answer.body.get("error") or answer.body.get("reason") or "no reason given"
        return f"not reported: controller refused (HTTP {answer.status}): {said}"
    return f"reported; controller closed {answer.body.get('closed', '?')} connection-log row(s)"


def write_deferred_result(path: str, allow: bool) -> None:
    """Overwrite the "2" the shim wrote with "1" or "0".

    One byte written in place, never truncated: OpenVPN reads an empty file as "no status yet",
    and right after the shim returns it would take an empty file for success. No O_CREAT: the file
    is OpenVPN's, and it is gone only when OpenVPN is done with this client.
    """
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(descriptor, b"1" if allow else b"0", 0)
    finally:
        os.close(descriptor)


class DecisionLog:
    """One line per decision to stderr (OpenVPN's log / the journal) and optionally syslog."""

    def __init__(self, use_syslog: bool = False):
        self.use_syslog = use_syslog
        if use_syslog:
            syslog.openlog("vpnfleet-hook", syslog.LOG_PID, syslog.LOG_DAEMON)

    def line(self, message: str, *, warning: bool = False) -> None:
        print(f"vpnfleet-hook[{os.getpid()}]: {message}", file=sys.stderr, flush=True)
        if self.use_syslog:
            syslog.syslog(syslog.LOG_WARNING if warning else syslog.LOG_INFO, message)


def run_connect(settings: HookSettings, event: ClientEvent, log: DecisionLog, *, deferred: bool) -> bool:
    started = time.monotonic()
    decision = safe_decision(settings, event)
    log_connect(log, settings, event, decision, time.monotonic() - started)
    if deferred:
        deliver(event, decision.allow, log)
    return decision.allow


def safe_decision(settings: HookSettings, event: ClientEvent, post: Post = node_api.post) -> Decision:
    try:
        return decide_connect(settings, event, post)
    except Exception as exc:  # noqa: BLE001 - a bug must refuse the client, never leave it deferred
        return Decision(False, f"hook failed: {type(exc).__name__}: {exc}")


def log_connect(
    log: DecisionLog,
    settings: HookSettings,
    event: ClientEvent,
    decision: Decision,
    elapsed: float | None,
    detail: str | None = None,
) -> None:
    took = f" [{elapsed:.3f} s]" if elapsed is not None else ""
    took += f" ({detail})" if detail else ""
    log.line(
        f"connect {'ALLOW' if decision.allow else 'DENY'} {event.describe()} node={settings.node_name}: "
        f"{decision.reason}{took}",
        warning=not decision.allow,
    )


def deliver(event: ClientEvent, allow: bool, log: DecisionLog) -> None:
    if not event.deferred_file:
        log.line(f"connect {event.describe()}: no client_connect_deferred_file to write to", warning=True)
        return
    try:
        write_deferred_result(event.deferred_file, allow)
    except FileNotFoundError:
        log.line(f"connect {event.describe()}: OpenVPN no longer waits for this client", warning=True)
    except OSError as exc:
        log.line(
            f"connect {event.describe()}: cannot write {event.deferred_file}: {exc.strerror}", warning=True
        )


def run_disconnect(
    settings: HookSettings, event: ClientEvent, log: DecisionLog, post: Post = node_api.post
) -> None:
    started = time.monotonic()
    try:
        outcome = report_disconnect(settings, event, post)
    except Exception as exc:  # noqa: BLE001 - one line in the log, whatever went wrong
        outcome = f"not reported: hook failed: {type(exc).__name__}: {exc}"
    log.line(
        f"disconnect {event.describe()} node={settings.node_name}: {outcome} "
        f"[{time.monotonic() - started:.3f} s]",
        warning=outcome.startswith("not"),
    )
