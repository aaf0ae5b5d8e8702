"""The portal: login, the profiles a user may use, creating, downloading and deleting configs."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, session, url_for

from vpnfleet.controller.accounts import authenticate
from vpnfleet.controller.configs import ConfigRefused, active_configs, create_config, revoke_configs
from vpnfleet.controller.forms import ActionForm, CreateConfigForm, LoginForm
from vpnfleet.controller.models import VpnConfig, utcnow
from vpnfleet.controller.state import controller, db
from vpnfleet.controller.web_session import (
    login_required,
    safe_next,
    session_expires_at,
    signed_in_user,
    start_session,
)

blueprint = Blueprint("portal", __name__)

_LOGIN_REFUSALS = {
    "invalid": (401, "Wrong user name or password."),
    "throttled": (429, "Too many failed logins; wait a few minutes and try again."),
    "disabled": (403, "This account is disabled."),
}


@blueprint.get("/login")
@blueprint.post("/login")
def login():
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("login.html", form=form), status
    user, refusal = authenticate(
        db(), controller().throttle, form.username.data, form.password.data, request.remote_addr or "unknown"
    )
    if user is None:
        status, message = _LOGIN_REFUSALS[refusal or "invalid"]
        return render_template("login.html", form=form, error=message), status
    start_session(user)
    return redirect(safe_next(form.next.data))


@blueprint.post("/logout")
def logout():
    if not ActionForm().validate_on_submit():
        abort(400, "the logout form was not valid")
    session.clear()
    return redirect(url_for("portal.login"))


def _profiles_for(user):
    return [profile for profile in controller().settings.profiles if profile.allows(user.groups)]


def _create_form(user) -> CreateConfigForm:
    form = CreateConfigForm()
    form.profile_id.choices = [(profile.id, profile.display_name) for profile in _profiles_for(user)]
    return form


@blueprint.get("/")
@login_required
def home():
    user = signed_in_user()
    return _render_home(user, _create_form(user))


def _render_home(user, form, error: str | None = None, status: int = 200):
    now = utcnow()
    return render_template(
        "home.html",
        user=user,
        profiles=_profiles_for(user),
        form=form,
        action_form=ActionForm(),
        configs=active_configs(db(), user, now),
        session_expires_at=session_expires_at(),
        max_configs=controller().settings.max_configs_per_user,
        error=error,
    ), status


@blueprint.post("/configs")
@login_required
def create():
    user = signed_in_user()
    form = _create_form(user)
    if not form.validate_on_submit():
        return _render_home(user, form, "Choose a profile and give the config a name.", 400)
    try:
        config, text = create_config(
            controller(),
            db(),
            user,
            form.profile_id.data,
            form.display_name.data.strip(),
            session_expires_at(),
        )
    except ConfigRefused as refusal:
        return _render_home(user, form, str(refusal), 409)
    filename = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{config.profile_id}-{config.display_name}") + ".ovpn"
    return Response(
        text,
        mimetype="application/x-openvpn-profile",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


@blueprint.post("/configs/<int:config_id>/delete")
@login_required
def delete(config_id: int):
    if not ActionForm().validate_on_submit():
        abort(400, "the delete form was not valid")
    config = db().get(VpnConfig, config_id)
    if config is None or config.user_id != signed_in_user().id:
        abort(404, "no such config")
    unreachable = revoke_configs(controller(), db(), [config])
    message = f'Deleted "{config.display_name}".'
    if unreachable:
        message += " Some nodes could not be told now; it is refused there at its next connect."
    flash(message)
    return redirect(url_for("portal.home"))
