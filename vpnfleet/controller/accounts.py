"""Local users: password hashing (argon2), idempotent create/update, login throttling."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vpnfleet.controller.database import delete_rows
from vpnfleet.controller.models import LoginThrottleEntry, PortalSession, User, utcnow
from vpnfleet.controller.settings import Settings

_hasher = PasswordHasher()
# Verifying against this keeps an unknown user name as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")
# One address may try more names than one name may be tried (several people behind one NAT).
_ADDRESS_FACTOR = 4


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def end_user_sessions(database: Session, user_id: int) -> int:
    """Every portal login of this user ends (password change, disable, an admin's "end sessions")."""
    return delete_rows(database, delete(PortalSession).where(PortalSession.user_id == user_id))


@dataclass(frozen=True)
class UserChange:
    created: bool
    changed: bool


def ensure_user(
    db: Session,
    username: str,
    password: str | None,
    *,
    is_admin: bool,
    groups: list[str],
    is_disabled: bool = False,
) -> UserChange:
    """Create or update a user so it matches; reports whether anything changed (for Ansible).

    The password is only rehashed when it no longer matches, so a second run changes nothing.
    """
    user = db.scalar(select(User).where(User.username == username))
    created = user is None
    if user is None:
        if not password:
            raise ValueError(f"user {username!r} does not exist; a password is needed to create it")
        user = User(username=username, password_hash=hash_password(password), groups=[])
        db.add(user)
    changed = created
    if password and not created and not password_matches(user.password_hash, password):
        user.password_hash = hash_password(password)
        # A new password ends every login made with the old one.
        end_user_sessions(db, user.id)
        changed = True
    if is_disabled and not user.is_disabled:
        end_user_sessions(db, user.id)
    for attribute, wanted in (
        ("is_admin", is_admin),
        ("groups", sorted(groups)),
        ("is_disabled", is_disabled),
    ):
        if getattr(user, attribute) != wanted:
            setattr(user, attribute, wanted)
            changed = True
    db.commit()
    return UserChange(created=created, changed=changed)


@dataclass(frozen=True)
class ThrottleKey:
    """One thing whose failed logins are counted: a user at an address, an address, a user."""

    kind: str
    free_failures: int  # failures answered without delay
    key_hash: str


def _key_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    at: datetime
    wait_seconds: int | None = None  # set when the try is refused for a delay
    previous_failure_at: dict[str, datetime | None] = field(default_factory=dict)


class LoginThrottle:
    """Slows password guessing without a lock anyone could set off for long.

    Each key has a number of free failures; after them every further try waits for a delay
    that doubles with each failure (1 s, 2 s, 4 s, ...) up to login_delay_max. A key forgets its
    failures after login_failure_window without one. Each try is recorded as a failure before
    its password is checked, under the keys' row locks, so parallel tries count one after the
    other; a right password takes the count back. Tries refused for a delay are not counted:
    refusing is cheap, and so an attacker cannot push the delay past the cap.

    The user-at-address key is strict; the address key allows a NAT's worth of users; the user
    key (guessing one user from many addresses) is skipped for a browser that logged in as that
    user before (a signed device cookie), so such an attack does not slow the user down.
    """

    def __init__(self, settings: Settings):
        self.free_failures = settings.login_max_failures
        self.window = settings.login_failure_window
        self.max_delay = settings.login_delay_max

    def keys(self, username: str, remote_addr: str, *, known_device: bool) -> list[ThrottleKey]:
        keys = [
            ThrottleKey("user+address", self.free_failures, _key_hash("user+address", username, remote_addr)),
            ThrottleKey("address", self.free_failures * _ADDRESS_FACTOR, _key_hash("address", remote_addr)),
        ]
        if not known_device:
            keys.append(
                ThrottleKey("user", self.free_failures * _ADDRESS_FACTOR, _key_hash("user", username))
            )
        # One lock order for every try, so that two tries never wait on each other's rows.
        return sorted(keys, key=lambda key: key.key_hash)

    def delay(self, failures: int, free_failures: int) -> timedelta:
        if failures < free_failures:
            return timedelta(0)
        # Past 2**20 s the cap has long been reached; the bound keeps the number small.
        return min(timedelta(seconds=2 ** min(failures - free_failures, 20)), self.max_delay)

    def begin_attempt(self, db: Session, keys: list[ThrottleKey]) -> Attempt:
        """Count this try as a failure, or say how many seconds to wait (the try is not counted)."""
        rows = _locked_rows(db, [key.key_hash for key in keys])
        # The time is read once the rows are ours: a try that waited for them comes after the
        # failure it waited for, never before it.
        now = utcnow()
        wait = timedelta(0)
        for key in keys:
            row = rows[key.key_hash]
            if row.last_failure_at is None or now - row.last_failure_at >= self.window:
                row.failures = 0
            else:
                ready_at = row.last_failure_at + self.delay(row.failures, key.free_failures)
                wait = max(wait, ready_at - now)
        if wait > timedelta(0):
            db.rollback()
            return Attempt(now, wait_seconds=max(1, math.ceil(wait.total_seconds())))
        previous = {key_hash: row.last_failure_at for key_hash, row in rows.items()}
        for row in rows.values():
            row.failures += 1
            row.last_failure_at = now
        db.commit()
        return Attempt(now, previous_failure_at=previous)

    def forgive(self, db: Session, keys: list[ThrottleKey], attempt: Attempt) -> None:
        """A right password: the user's keys start over; the address only drops this try, and
        gets back the time of its last real failure unless another came since."""
        rows = _locked_rows(db, [key.key_hash for key in keys])
        for key in keys:
            row = rows[key.key_hash]
            if key.kind != "address":
                row.failures, row.last_failure_at = 0, None
                continue
            row.failures = max(0, row.failures - 1)
            if row.last_failure_at == attempt.at:
                row.last_failure_at = attempt.previous_failure_at.get(key.key_hash)
        db.commit()

    def purge(self, db: Session, now: datetime) -> int:
        purged = delete_rows(
            db, delete(LoginThrottleEntry).where(LoginThrottleEntry.last_failure_at <= now - self.window)
        )
        db.commit()
        return purged


def _locked_rows(db: Session, key_hashes: list[str]) -> dict[str, LoginThrottleEntry]:
    """The keys' rows, made where missing and locked until commit (an upsert: PostgreSQL locks
    the rows, SQLite takes its write lock), read fresh."""
    dialect_insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(LoginThrottleEntry).values(
        [{"key_hash": key_hash, "failures": 0} for key_hash in key_hashes]
    )
    db.execute(
        statement.on_conflict_do_update(
            index_elements=["key_hash"], set_={"failures": LoginThrottleEntry.failures}
        )
    )
    found = db.scalars(
        select(LoginThrottleEntry)
        .where(LoginThrottleEntry.key_hash.in_(key_hashes))
        .execution_options(populate_existing=True)
    )
    return {row.key_hash: row for row in found}


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    refusal: str | None = None  # "invalid", "throttled", "unavailable" (the directory) or "conflict"
    retry_after: int | None = None


def authenticate(
    db: Session,
    throttle: LoginThrottle,
    username: str,
    password: str,
    remote_addr: str,
    *,
    known_device: bool = False,
    directory: Callable[[str, str], LoginResult] | None = None,
) -> LoginResult:
    """The user, or why not. A disabled account is refused exactly as a wrong password: the
    same answer, after the same hash check, so that neither tells the account is disabled.

    ``directory`` checks the names that are not local users (LDAP), under the same throttle."""
    keys = throttle.keys(username, remote_addr, known_device=known_device)
    attempt = throttle.begin_attempt(db, keys)
    if attempt.wait_seconds is not None:
        return LoginResult(None, "throttled", attempt.wait_seconds)
    user = db.scalar(select(User).where(User.username == username))
    if directory is not None and (user is None or user.source != "local"):
        result = directory(username, password)
        if result.user is not None:
            throttle.forgive(db, keys, attempt)
        return result
    matches = password_matches(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not matches or user.is_disabled:
        return LoginResult(None, "invalid")
    throttle.forgive(db, keys, attempt)
    return LoginResult(user)
