"""The portal: login, the profiles a user may use, creating, downloading and deleting configs."""

from __future__ import annotations

import re

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import func, select

from vpnfleet.controller import metrics
from vpnfleet.controller.accounts import authenticate
from vpnfleet.controller.api import OPENVPN_PROFILE, WIREGUARD_PROFILE
from vpnfleet.controller.configs import (
    ConfigRefused,
    active_configs,
    create_config,
    end_authorization,
    revoke_configs,
)
from vpnfleet.controller.directory_users import ldap_password_check
from vpnfleet.controller.fleet import AUTOMATIC, profile_locations
from vpnfleet.controller.forms import ActionForm, CreateConfigForm, LoginForm
from vpnfleet.controller.models import OAuthAuthorization, VpnConfig, utcnow
from vpnfleet.controller.settings import OPENVPN, WIREGUARD
from vpnfleet.controller.state import controller, db
from vpnfleet.controller.web_session import (
    end_session,
    login_required,
    safe_next,
    session_expires_at,
    signed_in_user,
    start_session,
)

blueprint = Blueprint("portal", __name__)

_LOGIN_REFUSALS = {
    "invalid": (401, "Wrong user name or password."),
    "throttled": (429, "Too many failed logins; wait {retry_after} s and try again."),
    "unavailable": (503, "The directory cannot be reached now; try again in a few minutes."),
    "conflict": (403, "This name belongs to an account of another kind here; ask the administrators."),
}
# Set after a login: this browser may skip the throttle key that counts a user's failures from
# every address, so an attack on the user from elsewhere does not slow the user down here.
DEVICE_COOKIE = "vpnfleet_device"


def _device_signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(controller().settings.secret_key, salt="vpnfleet known device")


def _known_device(username: str) -> bool:
    cookie = request.cookies.get(DEVICE_COOKIE)
    if not cookie:
        return False
    max_age = int(controller().settings.session_expiry.total_seconds())
    try:
        return _device_signer().loads(cookie, max_age=max_age) == username
    except BadData:
        return False


@blueprint.get("/login")
@blueprint.post("/login")
def login():
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("login.html", form=form), status
    username = form.username.data
    result = authenticate(
        db(),
        controller().throttle,
        username,
        form.password.data,
        request.remote_addr or "unknown",
        known_device=_known_device(username),
        directory=ldap_password_check(controller(), db()) if controller().settings.ldap else None,
    )
    if result.user is None:
        # The one password form serves local and directory users alike.
        metrics.login_failed("password", result.refusal or "invalid")
        status, message = _LOGIN_REFUSALS[result.refusal or "invalid"]
        response = make_response(
            render_template("login.html", form=form, error=message.format(retry_after=result.retry_after)),
            status,
        )
        if result.retry_after:
            response.headers["Retry-After"] = str(result.retry_after)
        return response
    start_session(result.user)
    response = make_response(redirect(safe_next(form.next.data)))
    settings = controller().settings
    response.set_cookie(
        DEVICE_COOKIE,
        _device_signer().dumps(username),
        max_age=int(settings.session_expiry.total_seconds()),
        secure=settings.base_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


@blueprint.post("/logout")
def logout():
    if not ActionForm().validate_on_submit():
        abort(400, "the logout form was not valid")
    end_session()
    return redirect(url_for("portal.login"))


def _profiles_for(user):
    return [profile for profile in controller().settings.profiles if profile.allows(user.groups)]


def _create_form(user) -> CreateConfigForm:
    form = CreateConfigForm()
    profiles = _profiles_for(user)
    form.profile_id.choices = [(profile.id, profile.display_name) for profile in profiles]
    settings = controller().settings
    served: dict[str, list[str]] = {}
    for profile in profiles:
        for location in profile_locations(settings, profile.id):
            served.setdefault(location, []).append(profile.display_name)
    form.location.choices = [(AUTOMATIC, "automatic")] + [
        (location, f"{location} ({', '.join(names)})") for location, names in sorted(served.items())
    ]
    return form


def _portal_protocol(profile) -> str:
    """A portal config is OpenVPN unless the user chose otherwise or the profile has only
    WireGuard: it is kept for months, and an .ovpn names several nodes to move on to when one
    goes, a WireGuard config one. (The apps ask at every connection: the profile's first.)"""
    return OPENVPN if profile is None or profile.offers(OPENVPN) else WIREGUARD


@blueprint.get("/")
@login_required
def home():
    user = signed_in_user()
    return _render_home(user, _create_form(user))


def _render_home(user, form, error: str | None = None, status: int = 200):
    now = utcnow()
    profiles = _profiles_for(user)
    return render_template(
        "home.html",
        user=user,
        profiles=profiles,
        # The protocol choice only where there is one to make.
        offers_wireguard=any(profile.offers(WIREGUARD) for profile in profiles),
        form=form,
        action_form=ActionForm(),
        configs=active_configs(db(), user, now),
        authorizations=_authorizations_of(user, now),
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
    profile = controller().settings.profile(form.profile_id.data)
    protocol = form.protocol.data or _portal_protocol(profile)
    try:
        made = create_config(
            controller(),
            db(),
            user,
            form.profile_id.data,
            form.display_name.data.strip(),
            session_expires_at(),
            location=form.location.data or AUTOMATIC,
            protocol=protocol,
        )
    except ConfigRefused as refusal:
        return _render_home(user, form, str(refusal), 409)
    config, text = made.config, made.text
    # A WireGuard config holds the private key the portal made for it: this answer is the only
    # copy (eduVPN shows it once, too), nothing keeps it.
    suffix = ".conf" if protocol == WIREGUARD else ".ovpn"
    filename = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{config.profile_id}-{config.display_name}") + suffix
    return Response(
        text,
        mimetype=WIREGUARD_PROFILE if protocol == WIREGUARD else OPENVPN_PROFILE,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


@blueprint.post("/configs/<db_id:config_id>/delete")
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


def _authorizations_of(user, now) -> list[dict]:
    """The apps this user approved that still hold tokens, with their active configs."""
    rows = db().scalars(
        select(OAuthAuthorization)
        .where(
            OAuthAuthorization.user_id == user.id,
            OAuthAuthorization.revoked_at.is_(None),
            OAuthAuthorization.expires_at > now,
        )
        .order_by(OAuthAuthorization.created_at)
    )
    settings = controller().settings
    listed = []
    for authorization in rows:
        registration = settings.oauth_client(authorization.client_id)
        configs = db().scalar(
            select(func.count())
            .select_from(VpnConfig)
            .where(
                VpnConfig.authorization_id == authorization.id,
                VpnConfig.revoked_at.is_(None),
                VpnConfig.expires_at > now,
            )
        )
        listed.append(
            {
                "id": authorization.id,
                "app": registration.name if registration else authorization.client_id,
                "created_at": authorization.created_at,
                "expires_at": authorization.expires_at,
                "configs": configs,
            }
        )
    return listed


@blueprint.post("/authorizations/<db_id:authorization_id>/revoke")
@login_required
def revoke_authorization(authorization_id: int):
    """The user ends an app's approval: its tokens stop working and its configs are revoked."""
    if not ActionForm().validate_on_submit():
        abort(400, "the revoke form was not valid")
    authorization = db().get(OAuthAuthorization, authorization_id)
    if authorization is None or authorization.user_id != signed_in_user().id:
        abort(404, "no such app authorization")
    registration = controller().settings.oauth_client(authorization.client_id)
    unreachable = end_authorization(controller(), db(), authorization, utcnow())
    message = f'Revoked "{registration.name if registration else authorization.client_id}".'
    if unreachable:
        message += " Some nodes could not be told now; its configs are refused there at their next connect."
    flash(message)
    return redirect(url_for("portal.home"))
