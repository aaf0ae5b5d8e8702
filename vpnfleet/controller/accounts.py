"""Local users: password hashing (argon2), idempotent create/update, login throttling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vpnfleet.controller.database import delete_rows
from vpnfleet.controller.models import LoginFailure, User, utcnow
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
        changed = True
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


class LoginThrottle:
    """Refuses logins for a name, or from an address, after too many recent failures."""

    def __init__(self, settings: Settings):
        self.max_failures = settings.login_max_failures
        self.window = settings.login_failure_window

    def is_throttled(self, db: Session, username: str, remote_addr: str, now: datetime) -> bool:
        since = now - self.window
        recent = select(func.count()).select_from(LoginFailure).where(LoginFailure.failed_at > since)
        by_name = db.scalar(recent.where(LoginFailure.username == username)) or 0
        by_address = db.scalar(recent.where(LoginFailure.remote_addr == remote_addr)) or 0
        return by_name >= self.max_failures or by_address >= self.max_failures * _ADDRESS_FACTOR

    def record_failure(self, db: Session, username: str, remote_addr: str, now: datetime) -> None:
        db.add(LoginFailure(username=username, remote_addr=remote_addr, failed_at=now))
        db.commit()

    def record_success(self, db: Session, username: str) -> None:
        db.execute(delete(LoginFailure).where(LoginFailure.username == username))
        db.commit()

    def purge(self, db: Session, now: datetime) -> int:
        purged = delete_rows(db, delete(LoginFailure).where(LoginFailure.failed_at <= now - self.window))
        db.commit()
        return purged


def authenticate(
    db: Session, throttle: LoginThrottle, username: str, password: str, remote_addr: str
) -> tuple[User | None, str | None]:
    """The user, or None and the reason to show. A disabled user cannot log in."""
    now = utcnow()
    if throttle.is_throttled(db, username, remote_addr, now):
        return None, "throttled"
    user = db.scalar(select(User).where(User.username == username))
    if not password_matches(user.password_hash if user else _DUMMY_HASH, password) or user is None:
        throttle.record_failure(db, username, remote_addr, now)
        return None, "invalid"
    if user.is_disabled:
        return None, "disabled"
    throttle.record_success(db, username)
    return user, None
