"""The portal's login session: who is logged in, and until when (the session expiry).

Sessions live in the database (portal_sessions); the signed cookie carries only a random token.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import datetime
from urllib.parse import urlsplit

from flask import abort, g, redirect, request, session, url_for
from sqlalchemy import delete, select

from vpnfleet.controller.models import PortalSession, User, utcnow
from vpnfleet.controller.state import controller, db


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(user: User) -> None:
    """A new login: a fresh token (never one the browser brought along) and its row."""
    session.clear()
    token = secrets.token_urlsafe(32)
    now = utcnow()
    database = db()
    database.add(
        PortalSession(
            token_hash=_token_hash(token),
            user_id=user.id,
            created_at=now,
            expires_at=now + controller().settings.session_expiry,
        )
    )
    database.commit()
    session.permanent = True
    session["token"] = token


def end_session() -> None:
    """Logout: this login's row goes, so a copy of the cookie is worth nothing either."""
    token = session.get("token")
    session.clear()
    g.pop("current_user", None)
    g.pop("portal_session", None)
    if isinstance(token, str):
        database = db()
        database.execute(delete(PortalSession).where(PortalSession.token_hash == _token_hash(token)))
        database.commit()


def _portal_session() -> PortalSession | None:
    if "portal_session" not in g:
        token = session.get("token")
        row = None
        if isinstance(token, str):
            row = db().scalar(select(PortalSession).where(PortalSession.token_hash == _token_hash(token)))
        if row is not None and (utcnow() >= row.expires_at or row.user.is_disabled):
            row = None
        if row is None and token is not None:
            session.clear()  # a login that ended: its token is worth nothing, so it goes
        g.portal_session = row
    return g.portal_session


def session_expires_at() -> datetime:
    """When this login ends (naive UTC); a config made in it never outlives it."""
    row = _portal_session()
    if row is None:
        abort(401, "not logged in")
    return row.expires_at


def current_user() -> User | None:
    if "current_user" not in g:
        row = _portal_session()
        g.current_user = row.user if row is not None else None
    return g.current_user


def signed_in_user() -> User:
    """The user of a view behind login_required, which has made sure that there is one."""
    user = current_user()
    if user is None:
        abort(401, "not logged in")
    return user


def safe_next(target: str | None) -> str:
    """Only a local path is a place to go back to after login (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("portal.home")


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user() is None:
            return redirect(url_for("portal.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def admin_required(view):
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not signed_in_user().is_admin:
            abort(403, "this page is for administrators")
        return view(*args, **kwargs)

    return wrapped
