"""LDAP login (ldap3): check a password against the institution's directory and read the
user's id, groups and admin flag; look a user up again for the periodic check.

Every way the directory can fail to answer (down, TLS refused, a timeout, busy) is one error,
DirectoryUnavailable, so that the portal says so instead of answering 500, and the periodic
check changes nobody while it cannot see the directory.
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass

from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from vpnfleet.controller.login_settings import LdapSettings

# Result codes that mean "the directory cannot answer now", not "no" (RFC 4511, 4.1.9).
_UNAVAILABLE_RESULTS = {51, 52, 80}  # busy, unavailable, other


class DirectoryUnavailable(Exception):
    """The directory could not be asked; the message says why (for the log, not the user)."""


@dataclass(frozen=True)
class DirectoryUser:
    user_id: str
    dn: str
    groups: tuple[str, ...]
    is_admin: bool


class LdapDirectory:
    def __init__(self, settings: LdapSettings):
        self.settings = settings
        tls = None
        if settings.uri.startswith("ldaps://") or settings.start_tls:
            # The directory's own CA when given, else the system's; the name is always checked.
            tls = Tls(
                validate=ssl.CERT_REQUIRED,
                version=ssl.PROTOCOL_TLS_CLIENT,
                ca_certs_file=str(settings.ca_file) if settings.ca_file else None,
            )
        self.server = Server(
            settings.uri,
            use_ssl=settings.uri.startswith("ldaps://"),
            tls=tls,
            get_info=NONE,
            connect_timeout=settings.timeout_seconds,
        )

    def _connect(self, dn: str | None, password: str | None) -> Connection | None:
        """A bound connection, or None when the directory refuses these credentials."""
        connection = Connection(
            self.server,
            user=dn,
            password=password,
            # ldap3 packs this into a socket option as whole seconds.
            receive_timeout=max(1, math.ceil(self.settings.timeout_seconds)),
            read_only=True,
            raise_exceptions=False,
        )
        try:
            connection.open()
            if self.settings.start_tls and not connection.start_tls():
                raise DirectoryUnavailable(f"StartTLS refused: {connection.result}")
            if connection.bind():
                return connection
        except LDAPException as error:
            connection.unbind()
            raise DirectoryUnavailable(f"{self.settings.uri}: {error}") from error
        result = connection.result or {}
        connection.unbind()
        if result.get("result") in _UNAVAILABLE_RESULTS:
            raise DirectoryUnavailable(f"{self.settings.uri}: bind: {result.get('description')}")
        if dn is None or dn == self.settings.bind_dn:
            # The service account (or the anonymous search) refused: the setup is wrong, not the user.
            raise DirectoryUnavailable(f"{self.settings.uri}: bind as {dn or 'anonymous'}: {result}")
        # A wrong password, no such entry, or an account the directory locked: all a "no".
        return None

    def _search(self, connection: Connection, base: str, search_filter: str, scope, attributes) -> list:
        try:
            ok = connection.search(
                base, search_filter, search_scope=scope, attributes=attributes, size_limit=1000
            )
        except LDAPException as error:
            raise DirectoryUnavailable(f"{self.settings.uri}: search {base}: {error}") from error
        code = (connection.result or {}).get("result")
        if not ok and code not in (0, 32, 4):  # success, noSuchObject, sizeLimitExceeded
            raise DirectoryUnavailable(f"{self.settings.uri}: search {base}: {connection.result}")
        return [entry for entry in connection.response or [] if entry.get("type") == "searchResEntry"]

    def _user_filter(self, username: str) -> str:
        return self.settings.user_search_filter.replace("{username}", escape_filter_chars(username))

    def _service_connection(self) -> Connection:
        connection = self._connect(self.settings.bind_dn, self.settings.bind_password)
        if connection is None:
            raise DirectoryUnavailable(f"{self.settings.uri}: the service account was refused")
        return connection

    def _find(self, connection: Connection, username: str) -> dict | None:
        """The one entry of this user, or None (no entry, or a filter that is not unique)."""
        attributes = [self.settings.user_id_attribute]
        if self.settings.group_attribute:
            attributes.append(self.settings.group_attribute)
        if self.settings.bind_dn_template:
            dn = self.settings.bind_dn_template.replace("{username}", escape_rdn(username))
            found = self._search(connection, dn, self._user_filter(username), BASE, attributes)
        else:
            base = self.settings.user_search_base or ""
            found = self._search(connection, base, self._user_filter(username), SUBTREE, attributes)
        return found[0] if len(found) == 1 else None

    def _directory_user(self, connection: Connection, entry: dict) -> DirectoryUser | None:
        values = entry["attributes"].get(self.settings.user_id_attribute)
        user_id = values[0] if isinstance(values, list) and values else values
        if not user_id:
            return None  # an entry without the id attribute cannot be a portal user
        groups: set[str] = set()
        if self.settings.group_attribute:
            for group_dn in entry["attributes"].get(self.settings.group_attribute) or []:
                groups.add(parse_dn(group_dn)[0][1])
        elif self.settings.group_search_base:
            group_filter = self.settings.group_search_filter.replace(
                "{user_dn}", escape_filter_chars(entry["dn"])
            ).replace("{username}", escape_filter_chars(str(user_id)))
            name = self.settings.group_name_attribute
            for group in self._search(
                connection, self.settings.group_search_base, group_filter, SUBTREE, [name]
            ):
                value = group["attributes"].get(name)
                groups.update(value if isinstance(value, list) else [value] if value else [])
        admin = self.settings.admin_group
        return DirectoryUser(
            str(user_id), entry["dn"], tuple(sorted(groups)), bool(admin and admin in groups)
        )

    def authenticate(self, username: str, password: str) -> DirectoryUser | None:
        """The user if the directory accepts this password, else None (wrong password and
        unknown user alike). Raises DirectoryUnavailable when it cannot tell."""
        if not username or not password:
            return None  # an empty password would be an anonymous bind, which always succeeds
        if self.settings.bind_dn_template:
            dn = self.settings.bind_dn_template.replace("{username}", escape_rdn(username))
            connection = self._connect(dn, password)
            if connection is None:
                return None
            try:
                entry = self._find(connection, username)
                return self._directory_user(connection, entry) if entry else None
            finally:
                connection.unbind()
        service = self._service_connection()
        try:
            entry = self._find(service, username)
            if entry is None:
                return None
            user_connection = self._connect(entry["dn"], password)
            if user_connection is None:
                return None
            user_connection.unbind()
            return self._directory_user(service, entry)
        finally:
            service.unbind()

    def lookup(self, username: str) -> DirectoryUser | None:
        """The user as the directory has them now, without a password (the periodic check);
        None when the directory no longer has them (removed, or filtered out as disabled)."""
        service = self._service_connection()
        try:
            entry = self._find(service, username)
            return self._directory_user(service, entry) if entry else None
        finally:
            service.unbind()
