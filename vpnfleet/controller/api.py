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
    revoke_in_background,
)
from vpnfleet.controller.models import OAuthToken, VpnConfig
from vpnfleet.controller.oauth import API_SCOPE
from vpnfleet.controller.settings import OPENVPN, WIREGUARD, Profile, Settings
from vpnfleet.controller.state import controller, db
from vpnfleet.controller.wireguard import BadPublicKey, check_public_key
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


def _transports(settings: Settings, profile: Profile) -> list[str]:
    """eduVPN 3.5.6+'s vpn_proto_transport_list: what the profile's nodes serve, UDP first."""
    protos = {process.proto for node in settings.nodes for process in node.processes_of(profile.id)}
    found = [f"openvpn+{proto}" for proto in ("udp", "tcp") if profile.offers(OPENVPN) and proto in protos]
    return found + (["wireguard+udp"] if profile.offers(WIREGUARD) else [])


@blueprint.get("/api/v3/info")
def info():
    access = _bearer_token()
    if isinstance(access, Response):
        return access
    user = access.authorization.user
    settings = controller().settings
    return jsonify(
        info={
            "profile_list": [
                {
                    "profile_id": profile.id,
                    "display_name": profile.display_name,
                    "default_gateway": profile.default_gateway,
                    "vpn_proto_list": list(profile.protocols),
                    "vpn_proto_transport_list": _transports(settings, profile),
                }
                for profile in settings.profiles
                if profile.allows(user.groups)
            ]
        }
    )


def _accepted() -> set[str]:
    """The protocols the app takes, from its Accept header (API v3, "VPN Protocol Selection"):
    both without one, or when it names neither profile type (taken as not sent)."""
    named = {part.split(";")[0].strip() for part in request.headers.get("Accept", "").split(",")}
    accepted = {protocol for protocol, mimetype in _MIMETYPES.items() if mimetype in named}
    return accepted or {OPENVPN, WIREGUARD}


_MIMETYPES = {OPENVPN: OPENVPN_PROFILE, WIREGUARD: WIREGUARD_PROFILE}


def choose_protocol(
    settings: Settings, profile: Profile, accepted: set[str], public_key: str | None, prefer_tcp: bool
) -> str | None:
    """API v3's choice: the protocols app and profile share (WireGuard only with a public key);
    of two, OpenVPN when the app prefers TCP and the profile's OpenVPN has TCP (our WireGuard has
    no TCP), else the profile's first. None: nothing fits."""
    common = [
        protocol
        for protocol in profile.protocols
        if protocol in accepted and (protocol != WIREGUARD or public_key is not None)
    ]
    if len(common) > 1 and prefer_tcp and "openvpn+tcp" in _transports(settings, profile):
        return OPENVPN
    return common[0] if common else None


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
    settings = controller().settings
    profile = settings.profile(profile_id)
    if profile is None or not profile.allows(user.groups):
        return api_error(404, 'no such "profile_id"')
    prefer_tcp = request.form.get("prefer_tcp", "no")
    if prefer_tcp not in ("yes", "no"):
        return api_error(400, 'invalid "prefer_tcp"')
    public_key = request.form.get("public_key")
    if public_key is not None:
        try:
            check_public_key(public_key)
        except BadPublicKey as problem:
            return api_error(400, f'invalid "public_key": {problem}')
    accepted = _accepted()
    protocol = choose_protocol(settings, profile, accepted, public_key, prefer_tcp == "yes")
    if protocol is None:
        if WIREGUARD in accepted and profile.offers(WIREGUARD) and public_key is None:
            return api_error(400, 'missing "public_key" parameter: WireGuard needs the app\'s public key')
        return api_error(
            406,
            f'profile "{profile_id}" offers {", ".join(profile.protocols)}; '
            f"the app accepts {', '.join(sorted(accepted))}",
        )
    authorization = access.authorization
    app = settings.oauth_client(authorization.client_id)
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
            protocol=protocol,
            public_key=public_key if protocol == WIREGUARD else None,
        )
    except ConnectThrottled as throttled:
        response = api_error(429, str(throttled))
        response.headers["Retry-After"] = str(throttled.retry_after)
        return response
    except NoNodeNow as unavailable:
        # The app may try again: nodes come back, maintenance ends.
        response = api_error(503, str(unavailable))
        response.headers["Retry-After"] = str(int(settings.node_health_ttl_seconds) + 1)
        return response
    except ConfigRefused as refusal:
        return api_error(403, str(refusal))
    config, text = made.config, made.text
    response = Response(text, status=201, mimetype=_MIMETYPES[protocol])
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
    # The app is leaving: its answer need not wait for the CRL's signature and the nodes' pushes.
    revoke_in_background(controller(), session, configs)
    return Response(status=204)
