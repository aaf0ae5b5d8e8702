"""The headers every answer of the controller carries, so that a browser holds the portal to them
whether gunicorn is reached through nginx (production) or directly (tests)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, g

# No script at all, style and images only from the portal's own files, forms only to the portal,
# no framing: an injected tag can neither run nor send the page anywhere.
_POLICY = {
    "default-src": "'none'",
    "style-src": "'self'",
    "img-src": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def content_security_policy(form_targets: tuple[str, ...] = ()) -> str:
    policy = dict(_POLICY)
    if form_targets:
        policy["form-action"] = " ".join(("'self'", *form_targets))
    return "; ".join(f"{name} {value}" for name, value in policy.items())


def allow_form_redirect_to(uri: str) -> None:
    """The OAuth approval form redirects to the app's (checked) redirect URI, and browsers apply
    form-action to that redirect too: admit that one origin, on that one page."""
    parts = urlsplit(uri)
    target = f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"
    g.vpnfleet_form_targets = (target,)


def _add_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy(g.get("vpnfleet_form_targets", ()))
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_security_headers(app: Flask) -> None:
    app.after_request(_add_headers)
