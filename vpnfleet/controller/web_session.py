"""The portal's login session: who is logged in, and until when (the session expiry)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import abort, g, redirect, request, session, url_for

from vpnfleet.controller.models import User, utcnow
from vpnfleet.controller.state import controller, db


def start_session(user: User) -> None:
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["login_at"] = utcnow().replace(tzinfo=UTC).timestamp()


def session_expires_at() -> datetime:
    """When this login ends (naive UTC); a config made in it never outlives it."""
    login_at = datetime.fromtimestamp(session["login_at"], UTC).replace(tzinfo=None)
    return login_at + controller().settings.session_expiry


def current_user() -> User | None:
    if "current_user" in g:
        return g.current_user
    user = None
    if "user_id" in session and "login_at" in session:
        candidate = db().get(User, session["user_id"])
        if candidate is not None and not candidate.is_disabled and utcnow() < session_expires_at():
            user = candidate
        else:
            session.clear()
    g.current_user = user
    return user


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
