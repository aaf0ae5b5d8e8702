"""eduVPN API v3 for the apps: discovery, the token endpoint, info, connect and disconnect.

Follows the public eduVPN API v3 document: form-encoded POSTs, JSON answers, errors as
{"error": "..."} with the documented status codes and messages.
"""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from vpnfleet.controller.configs import (
    ConfigRefused,
    ConnectThrottled,
    NoNodeNow,
    create_config,
    revoke_configs,
)
from vpnfleet.controller.models import OAuthToken, VpnConfig
from vpnfleet.controller.oauth import API_SCOPE
from vpnfleet.controller.state import controller, db
from vpnfleet.shared.profiles import ProfileError, check_profile_id

blueprint = Blueprint("api", __name__)

API_VERSION_KEY = "http://eduvpn.org/api#3"
OPENVPN_PROFILE = "application/x-openvpn-profile"
WIREGUARD_PROFILE = "application/x-wireguard-profile"


def api_error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


@blueprint.get("/.well-known/vpn-user-portal")
def discovery():
    base_url = controller().settings.base_url
    return jsonify(
        api={
            API_VERSION_KEY: {
                "api_endpoint": f"{base_url}/api/v3",
                "authorization_endpoint": f"{base_url}/oauth/authorize",
                "token_endpoint": f"{base_url}/oauth/token",
            }
        },
        v="vpnfleet-0.1.0",
    )


@blueprint.post("/oauth/token")
def token():
    return current_app.extensions["vpnfleet_oauth_server"].create_token_response()


def _bearer_token() -> OAuthToken | Response:
    """The request's valid access token, or the OAuth error response (RFC 6750) to send."""
    protector = current_app.extensions["vpnfleet_resource_protector"]
    try:
        access = protector.acquire_token([API_SCOPE])
    except OAuth2Error as error:
        response = jsonify(dict(error.get_body()))
        response.status_code = error.status_code
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response
    if access.authorization.user.is_disabled:
        return api_error(403, "this account is disabled")
    return access


@blueprint.get("/api/v3/info")
def info():
    access = _bearer_token()
    if isinstance(access, Response):
        return access
    user = access.authorization.user
    return jsonify(
        info={
            "profile_list": [
                {
                    "profile_id": profile.id,
                    "display_name": profile.display_name,
                    "default_gateway": profile.default_gateway,
                    "vpn_proto_list": ["openvpn"],
                }
                for profile in controller().settings.profiles
                if profile.allows(user.groups)
            ]
        }
    )


def _client_accepts_openvpn() -> bool:
    # Without an Accept header the app supports both protocols (API v3, "VPN Protocol Selection").
    accept = request.headers.get("Accept", "")
    return OPENVPN_PROFILE in accept or WIREGUARD_PROFILE not in accept


@blueprint.post("/api/v3/connect")
def connect():
    access = _bearer_token()
    if isinstance(access, Response):
        return access
    user = access.authorization.user
    profile_id = request.form.get("profile_id")
    if profile_id is None:
        return api_error(400, 'missing "profile_id" parameter')
    try:
        check_profile_id(profile_id)
    except ProfileError:
        return api_error(400, 'invalid value for "profile_id"')
    profile = controller().settings.profile(profile_id)
    if profile is None or not profile.allows(user.groups):
        return api_error(404, 'no such "profile_id"')
    prefer_tcp = request.form.get("prefer_tcp", "no")
    if prefer_tcp not in ("yes", "no"):
        return api_error(400, 'invalid "prefer_tcp"')
    if not _client_accepts_openvpn():
        # Our profiles serve OpenVPN only (WireGuard comes later).
        return api_error(406, f'profile "{profile_id}" does not support WireGuard')
    authorization = access.authorization
    app = controller().settings.oauth_client(authorization.client_id)
    try:
        made = create_config(
            controller(),
            db(),
            user,
            profile_id,
            app.name if app else authorization.client_id,
            authorization.expires_at,
            authorization=authorization,
            prefer_tcp=prefer_tcp == "yes",
        )
    except ConnectThrottled as throttled:
        response = api_error(429, str(throttled))
        response.headers["Retry-After"] = str(throttled.retry_after)
        return response
    except NoNodeNow as unavailable:
        # The app may try again: nodes come back, maintenance ends.
        response = api_error(503, str(unavailable))
        response.headers["Retry-After"] = str(int(controller().settings.node_health_ttl_seconds) + 1)
        return response
    except ConfigRefused as refusal:
        return api_error(403, str(refusal))
    config, text = made.config, made.text
    response = Response(text, status=201, mimetype=OPENVPN_PROFILE)
    response.headers["Expires"] = format_datetime(config.expires_at.replace(tzinfo=UTC), usegmt=True)
    return response


@blueprint.post("/api/v3/disconnect")
def disconnect():
    access = _bearer_token()
    if isinstance(access, Response):
        return access
    session = db()
    configs = list(
        session.scalars(
            select(VpnConfig).where(
                VpnConfig.authorization_id == access.authorization.id, VpnConfig.revoked_at.is_(None)
            )
        )
    )
    revoke_configs(controller(), session, configs)
    return Response(status=204)
