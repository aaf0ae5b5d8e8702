"""The OAuth 2 authorization server for the VPN apps (Authlib): authorization code with PKCE
S256 only, public clients, rotating refresh tokens, as the eduVPN API v3 asks.

An authorization lasts the session expiry: its tokens and the configs the app obtained end with
it. Codes and tokens are stored only as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, InvalidScopeError, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from vpnfleet.controller.configs import end_authorization
from vpnfleet.controller.models import OAuthAuthorization, OAuthCode, OAuthToken, User, utcnow
from vpnfleet.controller.oauth_clients import OAuthClient
from vpnfleet.controller.state import controller, db

API_SCOPE = "config"


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class AppClient(ClientMixin):
    """A registered app as Authlib sees it: public, no secret, code + refresh grants only."""

    def __init__(self, registration: OAuthClient):
        self.registration = registration

    def get_client_id(self):
        return self.registration.client_id

    def get_default_redirect_uri(self):
        return None  # the apps always send one, and it must match a registered pattern

    def get_allowed_scope(self, scope):
        return API_SCOPE if scope == API_SCOPE else None

    def check_redirect_uri(self, redirect_uri):
        return self.registration.accepts_redirect_uri(redirect_uri)

    def check_client_secret(self, client_secret):
        return False

    def check_endpoint_auth_method(self, method, endpoint):
        return method == "none"

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token")


class RequireS256(CodeChallenge):
    """PKCE is required, with S256 only, and the scope must be 'config' (eduVPN API v3)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if data.get("scope") != API_SCOPE:
            raise InvalidScopeError(f"'scope' must be '{API_SCOPE}'", redirect_uri=redirect_uri)
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError(
                "'code_challenge' with 'code_challenge_method=S256' is required", redirect_uri=redirect_uri
            )
        super().validate_code_challenge(grant, redirect_uri)


def _usable_user(user: User) -> User | None:
    return None if user.is_disabled else user


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def save_authorization_code(self, code, request):
        settings = controller().settings
        now = utcnow()
        session = db()
        authorization = OAuthAuthorization(
            user_id=request.user.id,
            client_id=request.client.get_client_id(),
            scope=API_SCOPE,
            created_at=now,
            expires_at=now + settings.session_expiry,
        )
        session.add(authorization)
        session.flush()
        session.add(
            OAuthCode(
                code_hash=token_hash(code),
                authorization_id=authorization.id,
                redirect_uri=request.payload.redirect_uri,
                code_challenge=request.payload.data["code_challenge"],
                code_challenge_method=request.payload.data["code_challenge_method"],
                expires_at=now + settings.authorization_code_lifetime,
            )
        )
        session.commit()

    def query_authorization_code(self, code, client):
        session = db()
        row = session.scalar(select(OAuthCode).where(OAuthCode.code_hash == token_hash(code)))
        now = utcnow()
        if row is None or row.authorization.client_id != client.get_client_id():
            return None
        if row.used_at is not None:
            # A code used twice was probably stolen: end what the first use obtained (RFC 6749 4.1.2).
            end_authorization(controller(), session, row.authorization, now)
            return None
        if now >= row.expires_at or not row.authorization.is_valid(now):
            return None
        return row

    def delete_authorization_code(self, authorization_code):
        authorization_code.used_at = utcnow()
        db().commit()

    def authenticate_user(self, authorization_code):
        return _usable_user(authorization_code.authorization.user)


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        session = db()
        row = session.scalar(
            select(OAuthToken).where(OAuthToken.refresh_token_hash == token_hash(refresh_token))
        )
        now = utcnow()
        if row is None:
            return None
        if row.revoked_at is not None:
            # A refresh token used after its rotation was copied, by the app or by a thief: the
            # authorization ends with every token and config issued under it (RFC 9700 4.14.2).
            end_authorization(controller(), session, row.authorization, now)
            return None
        if not row.authorization.is_valid(now):
            return None
        return row

    def authenticate_user(self, refresh_token):
        return _usable_user(refresh_token.authorization.user)

    def revoke_old_credential(self, refresh_token):
        refresh_token.revoked_at = utcnow()
        db().commit()


class AccessTokenValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        # Every API call reads the token's authorization (revoked? scope?) and its user (disabled?):
        # one query for the three rather than two lazy loads after it.
        return db().scalar(
            select(OAuthToken)
            .options(joinedload(OAuthToken.authorization).joinedload(OAuthAuthorization.user))
            .where(OAuthToken.access_token_hash == token_hash(token_string))
        )


def _save_token(token: dict, request) -> None:
    source = request.authorization_code or request.refresh_token
    now = utcnow()
    session = db()
    session.add(
        OAuthToken(
            authorization_id=source.authorization.id,
            access_token_hash=token_hash(token["access_token"]),
            refresh_token_hash=token_hash(token["refresh_token"]) if token.get("refresh_token") else None,
            access_expires_at=now + controller().settings.access_token_lifetime,
        )
    )
    session.commit()


def init_oauth(app: Flask) -> tuple[AuthorizationServer, ResourceProtector]:
    settings = app.extensions["vpnfleet_controller"].settings
    clients = {client.client_id: AppClient(client) for client in settings.oauth_clients}
    lifetime = int(settings.access_token_lifetime.total_seconds())
    app.config.update(
        OAUTH2_REFRESH_TOKEN_GENERATOR=True,
        OAUTH2_TOKEN_EXPIRES_IN={"authorization_code": lifetime, "refresh_token": lifetime},
        OAUTH2_SCOPES_SUPPORTED=[API_SCOPE],
    )
    server = AuthorizationServer(app, query_client=clients.get, save_token=_save_token)
    server.register_grant(CodeGrant, [RequireS256(required=True)])
    server.register_grant(RefreshGrant)
    protector = ResourceProtector()
    protector.register_token_validator(AccessTokenValidator())
    return server, protector
