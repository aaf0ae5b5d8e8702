"""VPN configs: issue one (certificate + .ovpn), revoke one (CRL + disconnect everywhere)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vpnfleet.controller.models import OAuthAuthorization, OAuthToken, User, VpnConfig, utcnow
from vpnfleet.controller.ovpn import render_client_config
from vpnfleet.controller.state import Controller


class ConfigRefused(Exception):
    """A config that may not be made; the message is shown to the user."""


def active_configs(db: Session, user: User, now: datetime, *, portal_only: bool = False) -> list[VpnConfig]:
    query = select(VpnConfig).where(
        VpnConfig.user_id == user.id, VpnConfig.revoked_at.is_(None), VpnConfig.expires_at > now
    )
    if portal_only:
        query = query.where(VpnConfig.authorization_id.is_(None))
    return list(db.scalars(query.order_by(VpnConfig.created_at)))


def create_config(
    controller: Controller,
    db: Session,
    user: User,
    profile_id: str,
    display_name: str,
    expires_at: datetime,
    *,
    authorization: OAuthAuthorization | None = None,
    prefer_tcp: bool = False,
) -> tuple[VpnConfig, str]:
    """Issue a certificate and return the config row and its .ovpn text.

    The certificate ends when the user's session (portal login or app authorization) ends.
    """
    settings = controller.settings
    profile = settings.profile(profile_id)
    if profile is None or not profile.allows(user.groups):
        raise ConfigRefused(f"no such profile: {profile_id}")
    if user.is_disabled:
        raise ConfigRefused("this account is disabled")
    now = utcnow()
    if expires_at <= now:
        raise ConfigRefused("your session has expired; log in again")
    if (
        authorization is None
        and len(active_configs(db, user, now, portal_only=True)) >= settings.max_configs_per_user
    ):
        raise ConfigRefused(
            f"you have {settings.max_configs_per_user} active configs already; delete one first"
        )
    try:
        tls_crypt_key = profile.tls_crypt_key_file.read_text()
    except OSError as error:
        raise RuntimeError(f"cannot read the tls-crypt key of profile {profile.id}: {error}") from error
    certificate = controller.issuer.issue(expires_at, now)
    config = VpnConfig(
        user_id=user.id,
        profile_id=profile.id,
        display_name=display_name,
        common_name=certificate.common_name,
        serial_number=certificate.serial_number,
        authorization_id=authorization.id if authorization else None,
        created_at=now,
        expires_at=certificate.expires_at,
    )
    db.add(config)
    db.commit()
    text = render_client_config(
        profile,
        settings.nodes,
        controller.issuer.ca_certificate_pem(),
        certificate,
        tls_crypt_key,
        prefer_tcp,
    )
    return config, text


def revoke_configs(controller: Controller, db: Session, configs: list[VpnConfig]) -> list[str]:
    """Revoke the certificates (CRL), mark the rows and disconnect them on every node.

    Returns the names of nodes that could not be told; the CRL still refuses the next connect
    there, and the node API refuses the config at once.
    """
    now = utcnow()
    to_revoke = [config for config in configs if config.revoked_at is None]
    for config in to_revoke:
        controller.issuer.revoke(config.serial_number)
        config.revoked_at = now
    db.commit()
    return disconnect_everywhere(controller, [config.common_name for config in to_revoke])


def disconnect_everywhere(controller: Controller, common_names: list[str]) -> list[str]:
    answers = controller.daemons.disconnect(common_names)
    return [answer.node.name for answer in answers if not answer.ok]


def end_authorization(
    controller: Controller, db: Session, authorization: OAuthAuthorization, now: datetime
) -> None:
    """Revoke an app authorization: its tokens stop working and its configs are revoked."""
    authorization.revoked_at = authorization.revoked_at or now
    db.execute(
        update(OAuthToken)
        .where(OAuthToken.authorization_id == authorization.id, OAuthToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    revoke_configs(
        controller,
        db,
        list(db.scalars(select(VpnConfig).where(VpnConfig.authorization_id == authorization.id))),
    )


def disable_user(controller: Controller, db: Session, user: User) -> list[str]:
    """Disable a user: every config revoked and disconnected, every app authorization ended."""
    now = utcnow()
    user.is_disabled = True
    for authorization in db.scalars(
        select(OAuthAuthorization).where(
            OAuthAuthorization.user_id == user.id, OAuthAuthorization.revoked_at.is_(None)
        )
    ):
        end_authorization(controller, db, authorization, now)
    return revoke_configs(controller, db, active_configs(db, user, now))
