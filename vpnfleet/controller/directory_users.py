"""Users whose account is the institution's (LDAP, OpenID Connect): made at their first login,
their groups and admin flag taken from the directory at each login, and, when the directory
no longer has them, disabled as an admin disables a local user (every config revoked).

The inventory's local users stay as they are: a directory login never takes over a local
account of the same name, so a break-glass admin cannot be replaced from the directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from vpnfleet.controller.accounts import LoginResult
from vpnfleet.controller.configs import active_configs, disable_user, revoke_configs
from vpnfleet.controller.ldap_directory import DirectoryUnavailable, LdapDirectory
from vpnfleet.controller.models import User, utcnow
from vpnfleet.controller.state import Controller

log = logging.getLogger(__name__)

# A directory user has no password here; this is no argon2 hash, so no password matches it.
NO_LOCAL_PASSWORD = "!directory"  # noqa: S105 - the opposite: no password at all


@dataclass(frozen=True)
class SyncedUser:
    user: User | None
    refusal: str | None = None  # "conflict": the name is another source's account; "disabled"
    revoked_profiles: tuple[str, ...] = ()


def sync_directory_user(
    controller: Controller, db: Session, source: str, user_id: str, groups: tuple[str, ...], is_admin: bool
) -> SyncedUser:
    """The user row after a successful directory login: made, or refreshed from the directory.

    Configs of profiles the new groups no longer allow are revoked now: removed from a group,
    a user loses its profile and the configs made for it."""
    user = db.scalar(select(User).where(User.username == user_id))
    if user is None:
        user = User(username=user_id, password_hash=NO_LOCAL_PASSWORD, groups=[], source=source)
        db.add(user)
    elif user.source != source:
        log.warning("%s login of %r refused: the name is a %s account", source, user_id, user.source)
        return SyncedUser(None, "conflict")
    if user.is_disabled:
        # An admin (or the periodic check) disabled the account here; it stays so until enabled.
        db.rollback()
        return SyncedUser(None, "disabled")
    user.groups = sorted(groups)
    user.is_admin = is_admin
    db.commit()
    allowed = {profile.id for profile in controller.settings.profiles if profile.allows(user.groups)}
    lost = [config for config in active_configs(db, user, utcnow()) if config.profile_id not in allowed]
    if lost:
        revoke_configs(controller, db, lost)
    return SyncedUser(user, revoked_profiles=tuple(sorted({config.profile_id for config in lost})))


def ldap_password_check(controller: Controller, db: Session):
    """The password check of accounts.authenticate for names that are not local users."""
    settings = controller.settings.ldap
    assert settings is not None  # noqa: S101 - only called when LDAP is configured
    directory = LdapDirectory(settings)

    def check(username: str, password: str) -> LoginResult:
        try:
            found = directory.authenticate(username, password)
            if found is None and settings.can_search:
                # Refused: if the directory no longer has this user, their access ends now
                # rather than at the next periodic check.
                _disable_if_gone(controller, db, directory, username)
        except DirectoryUnavailable as error:
            log.warning("LDAP login of %r: the directory cannot be reached: %s", username, error)
            return LoginResult(None, "unavailable")
        if found is None:
            return LoginResult(None, "invalid")
        synced = sync_directory_user(controller, db, "ldap", found.user_id, found.groups, found.is_admin)
        if synced.user is None:
            return LoginResult(None, "invalid" if synced.refusal == "disabled" else synced.refusal)
        return LoginResult(synced.user)

    return check


def _disable_if_gone(controller: Controller, db: Session, directory: LdapDirectory, username: str) -> None:
    user = db.scalar(select(User).where(User.username == username, User.source == "ldap"))
    if user is not None and not user.is_disabled and directory.lookup(username) is None:
        log.warning("LDAP user %r is gone from the directory: disabled, configs revoked", username)
        disable_user(controller, db, user)


@dataclass
class DirectoryCheckReport:
    checked: int = 0
    disabled: list[str] = field(default_factory=list)
    profiles_revoked: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


def check_ldap_users(controller: Controller, db: Session) -> DirectoryCheckReport:
    """The periodic check: every LDAP user still in the directory keeps access with the groups
    it has there now; one that is gone (removed, or filtered out as disabled) is disabled.

    While the directory cannot be asked, nobody changes: an outage must not lock out everyone."""
    report = DirectoryCheckReport()
    settings = controller.settings.ldap
    if settings is None or not settings.can_search:
        return report
    directory = LdapDirectory(settings)
    users = list(db.scalars(select(User).where(User.source == "ldap", User.is_disabled.is_(False))))
    try:
        found = {user.id: directory.lookup(user.username) for user in users}
    except DirectoryUnavailable as error:
        report.error = str(error)
        log.warning("directory check skipped: %s", error)
        return report
    for user in users:
        report.checked += 1
        now_there = found[user.id]
        if now_there is None:
            disable_user(controller, db, user)
            report.disabled.append(user.username)
            continue
        synced = sync_directory_user(
            controller, db, "ldap", user.username, now_there.groups, now_there.is_admin
        )
        if synced.revoked_profiles:
            report.profiles_revoked[user.username] = list(synced.revoked_profiles)
    return report
