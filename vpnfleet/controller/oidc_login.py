"""OpenID Connect login (Authlib's Flask client): the authorization code flow with PKCE (S256)
against the institution's provider, found through its discovery document.

The provider's discovery document must name the issuer the settings name, the ID token must
come from it (Authlib checks iss, aud, nonce and the signature), and an ``iss`` parameter in
the answer (RFC 9207) must be it too. The user id and the groups are claims; a directory user
is made or refreshed as for LDAP (directory_users.py).
"""

from __future__ import annotations

import logging

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, abort, redirect, render_template, request, session, url_for

from vpnfleet.controller import metrics
from vpnfleet.controller.directory_users import sync_directory_user
from vpnfleet.controller.forms import LoginForm
from vpnfleet.controller.login_settings import OidcSettings
from vpnfleet.controller.state import controller, db
from vpnfleet.controller.web_session import safe_next, start_session

log = logging.getLogger(__name__)

blueprint = Blueprint("oidc_login", __name__)
_CLIENT = "institution"
_NEXT = "oidc_next"


class LoginRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def init_oidc(app: Flask, settings: OidcSettings) -> None:
    oauth = OAuth(app)
    oauth.register(
        _CLIENT,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        server_metadata_url=f"{settings.issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": settings.scope,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic",
            "default_timeout": settings.timeout_seconds,
            # The provider's own CA when given (a lab, an internal provider), else the system's.
            "verify": str(settings.ca_file) if settings.ca_file else True,
            # requests lets REQUESTS_CA_BUNDLE override a session's CA file: with a CA file of
            # its own the client reads nothing from the environment.
            "trust_env": settings.ca_file is None,
        },
    )
    app.extensions["vpnfleet_oidc"] = oauth
    app.register_blueprint(blueprint)


def _settings() -> OidcSettings:
    settings = controller().settings.oidc
    if settings is None:
        abort(404, "OpenID Connect login is not configured")
    return settings


def _client():
    from flask import current_app

    return current_app.extensions["vpnfleet_oidc"].create_client(_CLIENT)


def _checked_metadata(settings: OidcSettings) -> dict:
    try:
        metadata = _client().load_server_metadata()
    except (requests.RequestException, ValueError) as error:
        log.warning("OpenID Connect: the discovery document of %s: %s", settings.issuer, error)
        raise LoginRefused(
            503, "The sign-in service cannot be reached now; try again in a few minutes."
        ) from None
    if metadata.get("issuer") != settings.issuer:
        log.warning(
            "OpenID Connect: discovery names issuer %r, not %r", metadata.get("issuer"), settings.issuer
        )
        raise LoginRefused(502, "The sign-in service is not the one configured; ask the administrators.")
    return metadata


def _refused(refusal: LoginRefused):
    metrics.login_failed("oidc", "unavailable" if refusal.status in (502, 503) else "refused")
    return render_template("login.html", form=LoginForm(), error=refusal.message), refusal.status


@blueprint.get("/login/oidc")
def start():
    settings = _settings()
    try:
        _checked_metadata(settings)
        session[_NEXT] = safe_next(request.args.get("next"))
        return _client().authorize_redirect(url_for("oidc_login.callback", _external=True))
    except LoginRefused as refusal:
        return _refused(refusal)
    except requests.RequestException as error:
        log.warning("OpenID Connect: %s", error)
        return _refused(LoginRefused(503, "The sign-in service cannot be reached now; try again later."))


@blueprint.get("/login/oidc/callback")
def callback():
    settings = _settings()
    try:
        user = _sign_in(settings)
    except LoginRefused as refusal:
        return _refused(refusal)
    target = session.pop(_NEXT, None)
    start_session(user)
    return redirect(safe_next(target))


def _sign_in(settings: OidcSettings):
    if request.args.get("error"):
        raise LoginRefused(401, f"The sign-in was not completed ({request.args['error'][:64]}).")
    _checked_metadata(settings)
    if "iss" in request.args and request.args["iss"] != settings.issuer:
        raise LoginRefused(400, "The sign-in answer came from another issuer.")
    client = _client()
    try:
        token = client.authorize_access_token()
        claims = dict(token.get("userinfo") or {})
        if settings.user_id_claim not in claims or (
            settings.groups_claim and settings.groups_claim not in claims
        ):
            # Some providers put these only in the UserInfo answer.
            claims = {**client.userinfo(token=token), **claims}
    except requests.RequestException as error:
        log.warning("OpenID Connect: token or userinfo: %s", error)
        raise LoginRefused(503, "The sign-in service cannot be reached now; try again later.") from None
    except AuthlibBaseError as error:
        log.warning("OpenID Connect: the answer was refused: %s", error)
        raise LoginRefused(400, "The sign-in answer could not be checked; start again.") from None
    user_id = claims.get(settings.user_id_claim)
    if not isinstance(user_id, str) or not user_id or len(user_id) > 255:
        raise LoginRefused(403, f"The sign-in service gave no usable {settings.user_id_claim!r}.")
    groups = claims.get(settings.groups_claim, []) if settings.groups_claim else []
    if isinstance(groups, str):
        groups = [groups]
    groups = tuple(sorted({group for group in groups if isinstance(group, str) and group}))
    admin = bool(settings.admin_group and settings.admin_group in groups)
    synced = sync_directory_user(controller(), db(), "oidc", user_id, groups, admin)
    if synced.user is None:
        if synced.refusal == "conflict":
            raise LoginRefused(
                403, "This name belongs to an account of another kind here; ask the administrators."
            )
        raise LoginRefused(403, "This account is disabled here; ask the administrators.")
    return synced.user
