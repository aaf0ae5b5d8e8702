"""The OAuth clients the controller knows: the eduVPN and Let's Connect! apps by default.

The registrations are those the public eduVPN server software has built in (client ids and
redirect URIs), so that the existing apps work against this controller unchanged. Every client
is public (no secret) and must use PKCE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Desktop apps listen on a loopback port of their choice; the registration writes it as {PORT}.
_LOOPBACK = ("http://127.0.0.1:{PORT}/callback", "http://[::1]:{PORT}/callback")
_PORT_PATTERN = r"(?:[1-9][0-9]{0,4})"


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]

    def accepts_redirect_uri(self, redirect_uri: str) -> bool:
        return any(_redirect_pattern(template).fullmatch(redirect_uri) for template in self.redirect_uris)


def _redirect_pattern(template: str) -> re.Pattern[str]:
    return re.compile(_PORT_PATTERN.join(re.escape(part) for part in template.split("{PORT}")))


def _app_family(prefix: str, brand: str) -> tuple[OAuthClient, ...]:
    return (
        OAuthClient(f"{prefix}.windows", f"{brand} for Windows", _LOOPBACK),
        # The Android apps first used the family name as scheme, without ".android"; both stay valid.
        OAuthClient(
            f"{prefix}.android",
            f"{brand} for Android",
            (f"{prefix}:/api/callback", f"{prefix}.android:/api/callback"),
        ),
        OAuthClient(f"{prefix}.ios", f"{brand} for iOS", (f"{prefix}.ios:/api/callback",)),
        OAuthClient(f"{prefix}.macos", f"{brand} for macOS", (f"{prefix}.macos:/api/callback", *_LOOPBACK)),
        OAuthClient(f"{prefix}.linux", f"{brand} for Linux", _LOOPBACK),
    )


DEFAULT_OAUTH_CLIENTS: tuple[OAuthClient, ...] = (
    *_app_family("org.eduvpn.app", "eduVPN"),
    *_app_family("org.letsconnect-vpn.app", "Let's Connect!"),
)
