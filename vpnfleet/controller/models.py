"""The controller's database tables (SQLAlchemy 2). The schema itself is made by the migrations.

Times are stored as naive UTC: SQLite keeps no time zone, so both databases see the same values.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    # local (the inventory's users, who log in with a password here), ldap or oidc: a directory
    # user's password, groups and admin flag are the directory's, refreshed at each login.
    source: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    configs: Mapped[list[VpnConfig]] = relationship(back_populates="user")


class PortalSession(Base):
    """One portal login. The cookie holds only a random token whose hash is this row's key, so
    deleting the row ends every copy of that cookie (logout, password change, disable, an admin)."""

    __tablename__ = "portal_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)

    user: Mapped[User] = relationship()


class LoginThrottleEntry(Base):
    """Failed logins of one throttle key (a user at an address, an address, a user), counted
    until the key has been quiet for the failure window."""

    __tablename__ = "login_throttle"

    # SHA-256 of the key's kind and values: any user name fits, and none is stored in clear.
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)


class OAuthAuthorization(Base):
    """A user's approval of one app; its tokens and VPN configs end with it (the session expiry)."""

    __tablename__ = "oauth_authorizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    user: Mapped[User] = relationship()

    def is_valid(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


class OAuthCode(Base):
    """An authorization code. Only its hash is kept; a used code stays to detect replays."""

    __tablename__ = "oauth_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    authorization_id: Mapped[int] = mapped_column(ForeignKey("oauth_authorizations.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(String(1024))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    authorization: Mapped[OAuthAuthorization] = relationship()

    # What Authlib asks of an authorization code.
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.authorization.scope


class OAuthToken(Base):
    """An access token and its refresh token, as hashes."""

    __tablename__ = "oauth_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authorization_id: Mapped[int] = mapped_column(
        ForeignKey("oauth_authorizations.id", ondelete="CASCADE"), index=True
    )
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    access_expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    authorization: Mapped[OAuthAuthorization] = relationship()

    # What Authlib asks of a token.
    def get_scope(self) -> str:
        return self.authorization.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.access_expires_at - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return utcnow() >= self.access_expires_at

    def is_revoked(self) -> bool:
        return self.revoked_at is not None or not self.authorization.is_valid(utcnow())

    def check_client(self, client) -> bool:
        return client.get_client_id() == self.authorization.client_id


class VpnConfig(Base):
    """A VPN config handed out from the portal or through the API: a client certificate in an
    .ovpn file, or a WireGuard peer (its address and public key in ``wireguard_peer``)."""

    __tablename__ = "vpn_configs"
    # An authorization has at most one config that is not revoked: parallel /connect calls of
    # one app cannot leave two, whatever the code above the database does.
    __table_args__ = (
        Index(
            "uq_vpn_configs_one_active_per_authorization",
            "authorization_id",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
        # The CRL lists the revoked configs that have not expired: found without reading the rest.
        Index(
            "ix_vpn_configs_revoked_by_expiry",
            "expires_at",
            sqlite_where=text("revoked_at IS NOT NULL"),
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    profile_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(255))
    # A certificate's common name; a WireGuard config's random name, which the connection log
    # and the revocation paths use alike.
    common_name: Mapped[str] = mapped_column(String(64), unique=True)
    # None for a WireGuard config: it has no certificate, so the CRL never lists it.
    serial_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    protocol: Mapped[str] = mapped_column(String(16), default="openvpn", server_default="openvpn")
    # Set for configs made through the API: /connect and /disconnect act on the authorization's configs.
    authorization_id: Mapped[int | None] = mapped_column(
        ForeignKey("oauth_authorizations.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    user: Mapped[User] = relationship(back_populates="configs")
    wireguard_peer: Mapped[WireguardPeer | None] = relationship(back_populates="config", uselist=False)

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


class WireguardPeer(Base):
    """The address a WireGuard config holds on its node, from its allocation to its release: a
    free address is one no unreleased peer of the interface holds, and the connection log row
    written beside it answers who had the address when."""

    __tablename__ = "wireguard_peers"
    __table_args__ = (
        # Two configs never hold one address, nor one key, whatever the code above does.
        Index(
            "uq_wireguard_peers_ipv4_in_use",
            "node",
            "ipv4",
            unique=True,
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
        Index(
            "uq_wireguard_peers_key_in_use",
            "node",
            "public_key",
            unique=True,
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    config_id: Mapped[int] = mapped_column(ForeignKey("vpn_configs.id", ondelete="CASCADE"), unique=True)
    node: Mapped[str] = mapped_column(String(64), index=True)
    profile_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(64))
    ipv4: Mapped[str] = mapped_column(String(64))
    ipv6: Mapped[str | None] = mapped_column(String(64), nullable=True)
    allocated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)

    config: Mapped[VpnConfig] = relationship(back_populates="wireguard_peer")


class ConnectionLogEntry(Base):
    """One VPN connection as the node hooks report it: opened on connect, closed on disconnect."""

    __tablename__ = "connection_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    username: Mapped[str] = mapped_column(String(255), index=True)
    common_name: Mapped[str] = mapped_column(String(64), index=True)
    profile_id: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(64))
    # The node's process whose slice holds the address (the fleet plan's name, "office-1");
    # None when the settings name no slices or the address is in none of this node's.
    process: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ipv4: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    ipv6: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    real_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    connected_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    disconnected_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    bytes_received: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes_sent: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    close_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # WireGuard rows span a peer's allocation on its node (there is no connect hook to report more).
    protocol: Mapped[str] = mapped_column(String(16), default="openvpn", server_default="openvpn")


class PublishedCrl(Base):
    """The CRL the controller signed last (one row): what it pushes and what the nodes pull.

    Signing happens with this row locked, so CRLs come out one at a time, each listing every
    revocation committed before it."""

    __tablename__ = "published_crl"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    crl_number: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[datetime] = mapped_column(DateTime)
    next_update: Mapped[datetime] = mapped_column(DateTime)
    revoked_count: Mapped[int] = mapped_column(Integer)
    pem: Mapped[str] = mapped_column(Text)
