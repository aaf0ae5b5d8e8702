"""The controller's Flask app factory: portal, API v3, node API and admin pages."""

from __future__ import annotations

import re
from datetime import datetime

from flask import Flask, Response, abort, jsonify, make_response, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from vpnfleet.controller import admin, api, authorize, metrics, node_api, oauth, oidc_login, portal, wireguard
from vpnfleet.controller.accounts import LoginThrottle
from vpnfleet.controller.certificates import ClientCertificateIssuer
from vpnfleet.controller.daemons import NodeDaemons
from vpnfleet.controller.database import make_engine, make_session_factory
from vpnfleet.controller.security_headers import init_security_headers
from vpnfleet.controller.settings import Settings
from vpnfleet.controller.state import EXTENSION_KEY, Controller, close_db
from vpnfleet.controller.web_session import current_user

# Paths whose callers are programs: they get JSON errors, never an HTML page.
_JSON_PREFIXES = ("/api/", "/node-api/", "/oauth/token", "/.well-known/")


class DatabaseId(IntegerConverter):
    """A row id in a URL: a larger number cannot name a row (both databases use 32-bit integer
    keys), so it is a 404 rather than an overflow in the database driver."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=2**31 - 1)


class _SessionCookies(SecureCookieSessionInterface):
    """Flask's signed session cookie, with its signer made once: Flask builds it anew for every
    request (every node's connect check and API call too), and the key is fixed at start."""

    def __init__(self) -> None:
        self._serializers: dict[bytes | str, object] = {}

    def get_signing_serializer(self, app: Flask):
        key = app.secret_key or ""
        if key not in self._serializers:
            self._serializers[key] = super().get_signing_serializer(app)
        return self._serializers[key]


def create_app(settings: Settings) -> Flask:
    """Build an app for these settings. Nothing happens at import; the database must be migrated."""
    app = Flask(__name__)
    app.session_interface = _SessionCookies()
    app.url_map.converters["db_id"] = DatabaseId
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        SESSION_COOKIE_NAME="vpnfleet_session",
        PERMANENT_SESSION_LIFETIME=settings.session_expiry,
        # The CSRF token lives as long as the login session rather than one hour.
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    if settings.behind_proxy:
        # Flask's documented way to wrap the app in WSGI middleware.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    engine = make_engine(settings.database_url)
    app.extensions[EXTENSION_KEY] = Controller(
        settings=settings,
        sessions=make_session_factory(engine),
        issuer=ClientCertificateIssuer(settings.signer_socket),
        daemons=NodeDaemons(settings),
        throttle=LoginThrottle(settings),
    )
    app.teardown_appcontext(close_db)
    wireguard.watch_health(app.extensions[EXTENSION_KEY])

    csrf = CSRFProtect(app)
    server, protector = oauth.init_oauth(app)
    app.extensions["vpnfleet_oauth_server"] = server
    app.extensions["vpnfleet_resource_protector"] = protector
    app.register_blueprint(portal.blueprint)
    app.register_blueprint(authorize.blueprint)
    app.register_blueprint(admin.blueprint, url_prefix="/admin")
    app.register_blueprint(api.blueprint)
    app.register_blueprint(node_api.blueprint, url_prefix="/node-api/v1")
    app.register_blueprint(metrics.blueprint)
    if settings.oidc is not None:
        oidc_login.init_oidc(app, settings.oidc)
    # Programs authenticate with tokens, not cookies: CSRF does not apply to them.
    for blueprint in (api.blueprint, node_api.blueprint, metrics.blueprint):
        csrf.exempt(blueprint)
    app.before_request(_refuse_unusable_characters)
    init_security_headers(app)
    _register_error_pages(app)
    app.add_template_filter(_utc, "utc")
    app.context_processor(
        lambda: {
            "current_user": current_user(),
            "oidc_name": settings.oidc.display_name if settings.oidc else None,
        }
    )
    return app


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# RFC 6749 (appendix A) builds every OAuth parameter from printable ASCII; Authlib refuses to
# put anything else into an error description, so it is refused here with a reason instead.
_NOT_OAUTH_TEXT = re.compile(r"[^\x20-\x7e]")


def _refuse_unusable_characters():
    """PostgreSQL cannot store a NUL in text and SQLite cuts it short, so no parameter carries
    one; a query string has no use for any control character, and one there would end up in a
    Location header or an error text; OAuth parameters are printable ASCII."""
    oauth = request.path.startswith("/oauth/")
    for source, values in (("query", request.args), ("form", request.form)):
        for name, value in values.items(multi=True):
            if oauth and _NOT_OAUTH_TEXT.search(name + value):
                problem = "a character other than printable ASCII (RFC 6749)"
            elif (source == "query" and _CONTROL_CHARACTER.search(name + value)) or "\x00" in name + value:
                problem = "a control character"
            else:
                continue
            abort(400, f"{source} parameter {_NOT_OAUTH_TEXT.sub('?', name)!r} holds {problem}")


def _utc(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def _register_error_pages(app: Flask) -> None:
    """Every error answers with its status and a reason: JSON for programs, a page for people."""

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        return error_response(400, f"the form has expired or was not sent by this site ({error.description})")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code is None or error.code < 400:
            return error
        return error_response(error.code, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        app.logger.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error; it has been logged")


def error_response(status: int, reason: str) -> Response:
    if request.path.startswith(_JSON_PREFIXES):
        response = jsonify(error=reason)
    else:
        response = make_response(render_template("error.html", status=status, reason=reason))
    response.status_code = status
    return response
