"""The settings of the directory logins (LDAP, OpenID Connect): the ``ldap`` and ``oidc`` mappings
of the controller's settings file, checked when the service starts like every other setting."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vpnfleet.settings_file import SettingsError, SettingsReader

_LDAP_SCHEMES = ("ldap", "ldaps")
_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


@dataclass(frozen=True)
class LdapSettings:
    """How the portal checks a password against the directory and reads the user's groups.

    Either bind as the user (``bind_dn_template``, ``{username}`` replaced, escaped) or find the
    user first (``user_search_base`` + ``user_search_filter``, with the service account
    ``bind_dn`` or anonymously) and bind with the DN found. The periodic check needs the search.
    """

    uri: str
    start_tls: bool
    ca_file: Path | None
    bind_dn_template: str | None
    user_search_base: str | None
    user_search_filter: str
    bind_dn: str | None
    bind_password: str | None
    user_id_attribute: str
    group_attribute: str | None
    group_search_base: str | None
    group_search_filter: str
    group_name_attribute: str
    admin_group: str | None
    timeout_seconds: float

    @property
    def can_search(self) -> bool:
        """Whether users can be looked up without their password (the periodic check)."""
        return self.user_search_base is not None or self.bind_dn is not None


@dataclass(frozen=True)
class OidcSettings:
    """The institution's OpenID Connect provider, as the portal's relying party."""

    issuer: str
    client_id: str
    client_secret: str
    scope: str
    user_id_claim: str
    groups_claim: str | None
    admin_group: str | None
    display_name: str
    ca_file: Path | None
    timeout_seconds: float


def _secret(reader: SettingsReader, key: str, *, required: bool) -> str | None:
    """A secret given inline (``KEY``) or, as the role writes it, in a file (``KEY_file``)."""
    value = reader.get(key, str, None)
    if value is None and reader.has(f"{key}_file"):
        path = Path(reader.get(f"{key}_file", str))
        try:
            value = path.read_text().strip()
        except OSError as error:
            raise reader.fail(f"{key}_file", f"cannot read {path}: {error.strerror}") from None
    if required and not value:
        raise reader.fail(key, f"is required (or {key}_file)")
    return value


def _ca_file(reader: SettingsReader) -> Path | None:
    if not reader.has("ca_file"):
        return None
    path = Path(reader.get("ca_file", str, nonempty=True))
    if not path.is_file():
        raise reader.fail("ca_file", f"{path} is not a file")
    return path


def _attribute(reader: SettingsReader, key: str, default: str | None) -> str | None:
    value = reader.get(key, str, default)
    if value is not None and not _ATTRIBUTE.match(value):
        raise reader.fail(key, f"{value!r} is not an LDAP attribute name")
    return value


def _timeout(reader: SettingsReader) -> float:
    timeout = float(reader.get("timeout_seconds", (int, float), 5))
    if not 0 < timeout <= 60:
        raise reader.fail("timeout_seconds", "must be more than 0 and at most 60")
    return timeout


_LDAP_KEYS = (
    "uri start_tls ca_file bind_dn_template user_search_base user_search_filter bind_dn bind_password "
    "bind_password_file user_id_attribute group_attribute group_search_base group_search_filter "
    "group_name_attribute admin_group timeout_seconds"
).split()


def read_ldap(reader: SettingsReader) -> LdapSettings:
    reader.refuse_unknown(_LDAP_KEYS)
    uri = reader.get("uri", str, nonempty=True)
    scheme = urlsplit(uri).scheme
    if scheme not in _LDAP_SCHEMES or not urlsplit(uri).hostname:
        raise reader.fail("uri", f"{uri!r} must be ldap://HOST[:PORT] or ldaps://HOST[:PORT]")
    start_tls = reader.get("start_tls", bool, False)
    if start_tls and scheme == "ldaps":
        raise reader.fail("start_tls", "ldaps:// is TLS already; StartTLS is for ldap://")
    template = reader.get("bind_dn_template", str, None)
    search_base = reader.get("user_search_base", str, None)
    if (template is None) == (search_base is None):
        raise SettingsError(
            f"{reader.path}: set exactly one of bind_dn_template (bind as the user) "
            "and user_search_base (search, then bind)"
        )
    if template is not None and "{username}" not in template:
        raise reader.fail("bind_dn_template", "must hold {username}")
    user_filter = reader.get("user_search_filter", str, "(uid={username})")
    if "{username}" not in user_filter:
        raise reader.fail("user_search_filter", "must hold {username}")
    group_search_base = reader.get("group_search_base", str, None)
    group_attribute = _attribute(reader, "group_attribute", None)
    if group_attribute and group_search_base:
        raise SettingsError(
            f"{reader.path}: set one of group_attribute (memberOf) and group_search_base, not both"
        )
    group_filter = reader.get("group_search_filter", str, "(member={user_dn})")
    if "{user_dn}" not in group_filter and "{username}" not in group_filter:
        raise reader.fail("group_search_filter", "must hold {user_dn} or {username}")
    bind_dn = reader.get("bind_dn", str, None)
    bind_password = _secret(reader, "bind_password", required=bind_dn is not None)
    return LdapSettings(
        uri=uri,
        start_tls=start_tls,
        ca_file=_ca_file(reader),
        bind_dn_template=template,
        user_search_base=search_base,
        user_search_filter=user_filter,
        bind_dn=bind_dn,
        bind_password=bind_password,
        user_id_attribute=_attribute(reader, "user_id_attribute", "uid") or "uid",
        group_attribute=group_attribute,
        group_search_base=group_search_base,
        group_search_filter=group_filter,
        group_name_attribute=_attribute(reader, "group_name_attribute", "cn") or "cn",
        admin_group=reader.get("admin_group", str, None, nonempty=True),
        timeout_seconds=_timeout(reader),
    )


_OIDC_KEYS = (
    "issuer client_id client_secret client_secret_file scope user_id_claim groups_claim admin_group "
    "display_name ca_file timeout_seconds"
).split()


def read_oidc(reader: SettingsReader) -> OidcSettings:
    reader.refuse_unknown(_OIDC_KEYS)
    issuer = reader.get("issuer", str, nonempty=True).rstrip("/")
    parts = urlsplit(issuer)
    # OpenID Connect Discovery: the issuer is an https URL without query or fragment.
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise reader.fail("issuer", f"{issuer!r} must be an https URL without query or fragment")
    scope = reader.get("scope", str, "openid profile")
    if "openid" not in scope.split():
        raise reader.fail("scope", f"{scope!r} must include openid")
    return OidcSettings(
        issuer=issuer,
        client_id=reader.get("client_id", str, nonempty=True),
        client_secret=_secret(reader, "client_secret", required=True) or "",
        scope=scope,
        user_id_claim=reader.get("user_id_claim", str, "sub", nonempty=True),
        groups_claim=reader.get("groups_claim", str, None, nonempty=True),
        admin_group=reader.get("admin_group", str, None, nonempty=True),
        display_name=reader.get("display_name", str, "single sign-on", nonempty=True),
        ca_file=_ca_file(reader),
        timeout_seconds=_timeout(reader),
    )
