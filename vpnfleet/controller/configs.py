"""VPN configs: issue one (certificate + .ovpn, or WireGuard peer + wg-quick config), revoke one
(CRL + disconnect everywhere, or the peer removed from its node)."""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from vpnfleet.controller import metrics, wireguard
from vpnfleet.controller.accounts import end_user_sessions
from vpnfleet.controller.crl import disconnect_everywhere, revoke_on_nodes
from vpnfleet.controller.fleet import AUTOMATIC, NoNodeAvailable, choose_remotes, choose_wireguard_node
from vpnfleet.controller.models import OAuthAuthorization, OAuthToken, User, VpnConfig, WireguardPeer, utcnow
from vpnfleet.controller.ovpn import render_client_config
from vpnfleet.controller.settings import OPENVPN, WIREGUARD, Node, Profile
from vpnfleet.controller.state import Controller

# Tries at a free address when parallel configs of other users took the one found.
_ALLOCATION_TRIES = 5


class ConfigRefused(Exception):
    """A config that may not be made; the message is shown to the user."""


class NoNodeNow(ConfigRefused):
    """No node takes new clients of the profile now (all down or in maintenance)."""


class ConnectThrottled(ConfigRefused):
    """Too many configs made under one authorization lately; the app may try again later."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class NewConfig:
    config: VpnConfig
    text: str
    replaced: list[VpnConfig] = field(default_factory=list)
    # Nodes not told of the replaced configs; create_config tells them in the background.
    unreachable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _WireguardTarget:
    """Where a new WireGuard config goes: the chosen node, its interface of the profile and its key."""

    node: Node
    interface: wireguard.WireguardSlice
    server_key: str


def active_configs(db: Session, user: User, now: datetime) -> list[VpnConfig]:
    query = select(VpnConfig).where(
        VpnConfig.user_id == user.id, VpnConfig.revoked_at.is_(None), VpnConfig.expires_at > now
    )
    return list(db.scalars(query.order_by(VpnConfig.created_at, VpnConfig.id)))


def lock_user(db: Session, user: User) -> None:
    """Hold the user's row until the transaction ends, so that one user's config changes run one
    after the other. An UPDATE rather than SELECT ... FOR UPDATE: SQLite has no row locks, but an
    UPDATE takes its write lock (and waits for it); PostgreSQL locks the row. Rows read after
    this are current on both, and so is the user's is_disabled."""
    # The statement that takes the lock also reads what the caller decides on (is_disabled),
    # rather than a second query refreshing the whole row.
    is_disabled = db.execute(
        update(User)
        .where(User.id == user.id)
        .values(id=User.id)
        .returning(User.is_disabled)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    set_committed_value(user, "is_disabled", is_disabled)


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
    location: str = AUTOMATIC,
    protocol: str = OPENVPN,
    public_key: str | None = None,
) -> NewConfig:
    """Issue a config of the profile in ``protocol``; the config row, its text and the configs it replaced.

    The config ends when the user's session (portal login or app authorization) ends. A user
    has at most max_configs_per_user active configs, portal and API together: the portal refuses
    one more; an app's /connect replaces its authorization's config and, at the limit, the user's
    oldest config, API-made ones first (eduVPN's maxActiveConfigurations).

    The node is chosen before anything is issued (controller/fleet.py): an app's config (made at
    every connection) names the best node now, a portal config (kept for months) the location's
    nodes in random order; NoNodeNow when no node takes clients now. OpenVPN: a certificate and
    the remote lines. WireGuard: an address of the node's slice, recorded, and the peer added on
    the node before the config is handed out; ``public_key`` is the app's, or None for the
    portal, which makes the key pair and puts the private key in the config.
    """
    settings = controller.settings
    profile = settings.profile(profile_id)
    if profile is None or not profile.allows(user.groups):
        raise ConfigRefused(f"no such profile: {profile_id}")
    if not profile.offers(protocol):
        raise ConfigRefused(f"profile {profile_id} does not offer {protocol}")
    health = controller.daemons.health.get()
    try:
        if protocol == WIREGUARD:
            node = choose_wireguard_node(
                settings, profile.id, health, lives_for_months=authorization is None, location=location
            )
            interface = node.wireguard_of(profile.id)
            server_key = health[node.name].wireguard_key(interface.interface) if interface else None
            if interface is None or server_key is None:
                raise NoNodeAvailable(f"node {node.name} has no WireGuard interface of {profile.id} up")
            target = _WireguardTarget(node, interface, server_key)
        else:
            remotes = choose_remotes(
                settings,
                profile.id,
                health,
                lives_for_months=authorization is None,
                location=location,
                prefer_tcp=prefer_tcp,
            )
    except ValueError as error:
        raise ConfigRefused(str(error)) from None
    except NoNodeAvailable as error:
        raise NoNodeNow(str(error)) from None
    if protocol == WIREGUARD:
        return _create_wireguard_config(
            controller, db, user, profile, display_name, expires_at, authorization, target, public_key
        )
    try:
        tls_crypt_key = profile.tls_crypt_key_file.read_text()
    except OSError as error:
        raise RuntimeError(f"cannot read the tls-crypt key of profile {profile.id}: {error}") from error
    # The key and the signer's round trip before the user's lock, which on SQLite is the
    # database's write lock too: held across them, it kept every other /connect and every
    # connect check (their log row) waiting. A certificate made for a request refused under
    # the lock is never recorded, so the node API refuses it as unknown.
    certificate = controller.issuer.issue(
        expires_at, _refuse_early(settings, db, user, authorization, expires_at)
    )
    lock_user(db, user)
    try:
        now = _check_session(user, expires_at)
        replaced = _replace(settings, db, user, authorization, now)
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
        metrics.config_issued(profile.id, "api" if authorization else "portal")
    except BaseException:
        db.rollback()
        raise
    text = render_client_config(
        profile, remotes, controller.issuer.ca_certificate_pem(), certificate, tls_crypt_key
    )
    unreachable = end_in_background(controller, db, replaced, "replaced")
    return NewConfig(config, text, replaced, unreachable)


def _check_session(user: User, expires_at: datetime) -> datetime:
    """Now, or ConfigRefused when the user may not have a config now (decided under the user's lock)."""
    now = utcnow()
    if user.is_disabled:
        raise ConfigRefused("this account is disabled")
    if expires_at <= now:
        raise ConfigRefused("your session has expired; log in again")
    return now


def _replace(
    settings, db: Session, user: User, authorization: OAuthAuthorization | None, now: datetime, also=()
) -> list[VpnConfig]:
    """Under the user's lock: mark what the new config replaces revoked (not committed)."""
    replaced = _configs_to_replace(settings, db, user, authorization, now)
    replaced += [config for config in also if config not in replaced]
    for config in replaced:
        config.revoked_at = now
    # The replaced rows leave the one-active-config index before the new row enters it.
    db.flush()
    return replaced


def _create_wireguard_config(
    controller: Controller,
    db: Session,
    user: User,
    profile: Profile,
    display_name: str,
    expires_at: datetime,
    authorization: OAuthAuthorization | None,
    target: _WireguardTarget,
    public_key: str | None,
) -> NewConfig:
    private_key = None
    if public_key is None:
        private_key, public_key = wireguard.make_key_pair()
    lock_user(db, user)
    try:
        now = _check_session(user, expires_at)
        # One key is one peer on a node: the user's earlier config with this key ends (eduVPN's
        # apps on macOS and iOS send the same key every time); another user's key is refused.
        holders = list(
            db.scalars(
                select(VpnConfig)
                .join(WireguardPeer, WireguardPeer.config_id == VpnConfig.id)
                .where(WireguardPeer.public_key == public_key, WireguardPeer.released_at.is_(None))
            )
        )
        if any(config.user_id != user.id for config in holders):
            raise ConfigRefused("this public_key belongs to a config of another account")
        replaced = _replace(controller.settings, db, user, authorization, now, also=holders)
        # Released here, so that their addresses and the key are free for the new peer.
        removals = []
        for old in replaced:
            peer = old.wireguard_peer
            if peer is not None and peer.released_at is None:
                wireguard.mark_released(db, peer, "replaced", now)
                # The same key on the same node is the new peer once added: not removed after.
                if (peer.node, peer.public_key) != (target.node.name, public_key):
                    removals.append((peer.node, peer.public_key))
        config = VpnConfig(
            user_id=user.id,
            profile_id=profile.id,
            display_name=display_name,
            common_name=f"wg-{secrets.token_hex(16)}",
            serial_number=None,
            protocol=WIREGUARD,
            authorization_id=authorization.id if authorization else None,
            created_at=now,
            expires_at=expires_at,
        )
        db.add(config)
        db.flush()
        peer = _allocate_peer(db, config, user, target, public_key)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    unreachable = wireguard.remove_on_nodes(controller, removals)
    # The node must admit the client before the client has its config.
    added = controller.daemons.add_peer(target.node, public_key, wireguard.ip_nets(peer))
    if not added.ok and (added.error or "").startswith("HTTP 409"):
        # The database gave this config the address, so what holds it on the node is a peer the
        # controller no longer holds (a removal the node missed, a database restored): the
        # reconcile removes such peers and adds those the controller holds, this one among them.
        report = wireguard.reconcile(controller, db, [target.node.name])
        if target.node.name not in report.nodes_unreachable:
            added = dataclasses.replace(added, error=None)
    if not added.ok:
        revoke_configs(controller, db, [config])
        raise NoNodeNow(f"node {target.node.name} did not take the WireGuard peer ({added.error}); try again")
    metrics.config_issued(profile.id, "api" if authorization else "portal")
    text = wireguard.render_config(
        profile, target.node, target.interface, target.server_key, peer, private_key
    )
    unreachable += end_in_background(controller, db, replaced, "replaced")
    return NewConfig(config, text, replaced, sorted(set(unreachable)))


def _allocate_peer(
    db: Session, config: VpnConfig, user: User, target: _WireguardTarget, public_key: str
) -> WireguardPeer:
    """A free address for the config's peer; a savepoint per try, as another user's config made
    at the same time may take the address found (the unique index refuses the second)."""
    for attempt in range(_ALLOCATION_TRIES):
        try:
            with db.begin_nested():
                ipv4, ipv6 = wireguard.allocate(db, target.node, target.interface)
                peer = wireguard.record_peer(db, config, user, target.node, public_key, ipv4, ipv6)
                db.flush()
            return peer
        except wireguard.NoAddressFree as full:
            raise NoNodeNow(str(full)) from None
        except IntegrityError:
            if attempt == _ALLOCATION_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _refuse_early(
    settings, db: Session, user: User, authorization: OAuthAuthorization | None, expires_at: datetime
) -> datetime:
    """Before a certificate is made, without the user's lock: the refusals found by a read (a
    disabled user, a session gone, an app over its rate, a portal user at the limit), so that
    a refused request costs no signature. Under the lock they are decided again. Now."""
    now = _check_session(user, expires_at)
    if authorization is None:
        _check_config_limit(settings, len(active_configs(db, user, now)))
    else:
        _check_throttle(settings, db, authorization, now)
    return now


def _check_config_limit(settings, active: int) -> None:
    if active >= settings.max_configs_per_user:
        raise ConfigRefused(
            f"you have {settings.max_configs_per_user} active configs already; delete one first"
        )


def _check_throttle(settings, db: Session, authorization: OAuthAuthorization, now: datetime) -> None:
    window_start = now - settings.api_connect_window
    recent = list(
        db.scalars(
            select(VpnConfig.created_at)
            .where(VpnConfig.authorization_id == authorization.id, VpnConfig.created_at > window_start)
            .order_by(VpnConfig.created_at)
        )
    )
    if len(recent) >= settings.api_connect_limit:
        wait = recent[-settings.api_connect_limit] + settings.api_connect_window - now
        raise ConnectThrottled(
            f"{settings.api_connect_limit} configs made by this app within "
            f"{int(settings.api_connect_window.total_seconds())} s already; try again later",
            retry_after=max(1, math.ceil(wait.total_seconds())),
        )


def _configs_to_replace(
    settings, db: Session, user: User, authorization: OAuthAuthorization | None, now: datetime
) -> list[VpnConfig]:
    """Under the user's lock: what the new config replaces, or ConfigRefused."""
    # Every config of the user that is not revoked, expired ones too (see below), read once.
    unrevoked = list(
        db.scalars(
            select(VpnConfig)
            .where(VpnConfig.user_id == user.id, VpnConfig.revoked_at.is_(None))
            .order_by(VpnConfig.created_at, VpnConfig.id)
            .execution_options(populate_existing=True)
        )
    )
    active = [config for config in unrevoked if config.expires_at > now]
    limit = settings.max_configs_per_user
    if authorization is None:
        _check_config_limit(settings, len(active))
        return []
    _check_throttle(settings, db, authorization, now)
    # A new /connect invalidates what the same authorization obtained before (expired ones too:
    # the one-active-config index counts every row that is not revoked). An authorization is
    # its user's, so its configs are among the user's.
    replaced = [config for config in unrevoked if config.authorization_id == authorization.id]
    others = sorted(
        (config for config in active if config not in replaced),
        key=lambda config: (config.authorization_id is None, config.created_at, config.id),
    )
    while len(others) >= limit:
        replaced.append(others.pop(0))
    return replaced


def revoke_configs(controller: Controller, db: Session, configs: list[VpnConfig]) -> list[str]:
    """Mark the rows revoked, then a new CRL and the disconnects to every node (crl.revoke_on_nodes).

    Returns the names of nodes that could not be told: the node API refuses the config at once,
    and their pull timer brings them the CRL within a minute.
    """
    revoked = _mark_revoked(configs, utcnow())
    db.commit()
    return end_on_nodes(controller, db, revoked, "revoked")


def _mark_revoked(configs: list[VpnConfig], now: datetime) -> list[str]:
    """The common names of the configs that were not revoked yet, now marked."""
    to_revoke = [config for config in configs if config.revoked_at is None]
    for config in to_revoke:
        config.revoked_at = now
    return [config.common_name for config in to_revoke]


def end_on_nodes(controller: Controller, db: Session, common_names: list[str], reason: str) -> list[str]:
    """After a revocation was committed: WireGuard peers removed from their nodes (first: no CRL
    to sign), OpenVPN clients refused by a new CRL and disconnected. The nodes not told."""
    if not common_names:
        return []
    unreachable = wireguard.release(controller, db, common_names, reason)
    return sorted(set(unreachable + revoke_on_nodes(controller, db, _openvpn_only(db, common_names))))


def revoke_in_background(controller: Controller, db: Session, configs: list[VpnConfig]) -> list[str]:
    """revoke_configs for a request that must not wait for a signature (an app's /disconnect):
    the rows revoked and committed, so the node API refuses them at once; the rest as
    end_in_background. The nodes not told of the WireGuard peers."""
    to_revoke = [config for config in configs if config.revoked_at is None]
    _mark_revoked(to_revoke, utcnow())
    db.commit()
    return end_in_background(controller, db, to_revoke, "revoked")


def end_in_background(controller: Controller, db: Session, ended: list[VpnConfig], reason: str) -> list[str]:
    """end_on_nodes for configs whose revocation was committed, without keeping the request
    waiting: the WireGuard peers go at once (no CRL to sign); the OpenVPN configs are refused by
    the node API since the commit, and their CRL and disconnects follow in the background, shared
    with other requests' (crl.RevocationPusher). The nodes not told of the peers.

    The rows are at hand, so their protocol is too: an app's every /connect replaces a config,
    and asking the database which of them are which cost that path two queries."""
    peers = [config.common_name for config in ended if config.protocol == WIREGUARD]
    unreachable = wireguard.release(controller, db, peers, reason) if peers else []
    certificates = [config.common_name for config in ended if config.protocol == OPENVPN]
    if certificates:
        controller.revocations.submit(certificates)
    return unreachable


def _openvpn_only(db: Session, common_names: list[str]) -> list[str]:
    return list(
        db.scalars(
            select(VpnConfig.common_name).where(
                VpnConfig.common_name.in_(common_names), VpnConfig.protocol == OPENVPN
            )
        )
    )


@dataclass(frozen=True)
class UserDisconnected:
    openvpn_configs: int  # whose clients were dropped; the configs stay valid
    wireguard_ended: int  # WireGuard configs revoked, their peers removed
    unreachable: list[str]  # nodes not told


def disconnect_user_everywhere(controller: Controller, db: Session, user: User) -> UserDisconnected:
    """The admin's disconnect (the admin page, ``vpnfleet-controller disconnect``): the user's
    OpenVPN clients dropped on every node, their configs kept (the client may connect again);
    their WireGuard configs ended, as eduVPN's disconnect does. A WireGuard node has no session
    to drop, only the peer, and a peer removed while its config lives is back with the next
    reconcile: the disconnect of a WireGuard client is the end of its config."""
    now = utcnow()
    active = active_configs(db, user, now)
    openvpn = [config.common_name for config in active if config.protocol == OPENVPN]
    ended = _mark_revoked([config for config in active if config.protocol == WIREGUARD], now)
    db.commit()
    unreachable = wireguard.release(controller, db, ended, "disconnected")
    if openvpn:
        unreachable += disconnect_everywhere(controller, openvpn)
    return UserDisconnected(len(openvpn), len(ended), sorted(set(unreachable)))


def _end_authorization_rows(db: Session, authorization: OAuthAuthorization, now: datetime) -> list[str]:
    authorization.revoked_at = authorization.revoked_at or now
    db.execute(
        update(OAuthToken)
        .where(OAuthToken.authorization_id == authorization.id, OAuthToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    configs = db.scalars(select(VpnConfig).where(VpnConfig.authorization_id == authorization.id))
    return _mark_revoked(list(configs), now)


def end_authorization(
    controller: Controller, db: Session, authorization: OAuthAuthorization, now: datetime
) -> list[str]:
    """Revoke an app authorization: its tokens stop working and its configs are revoked.

    Returns the nodes that could not be told (see revoke_configs)."""
    revoked = _end_authorization_rows(db, authorization, now)
    db.commit()
    return end_on_nodes(controller, db, revoked, "authorization revoked")


def disable_user(controller: Controller, db: Session, user: User) -> list[str]:
    """Disable a user: every config revoked and disconnected, every app authorization ended;
    one CRL for all of it."""
    now = utcnow()
    user.is_disabled = True
    end_user_sessions(db, user.id)
    revoked: list[str] = []
    for authorization in list(
        db.scalars(
            select(OAuthAuthorization).where(
                OAuthAuthorization.user_id == user.id, OAuthAuthorization.revoked_at.is_(None)
            )
        )
    ):
        revoked += _end_authorization_rows(db, authorization, now)
    revoked += _mark_revoked(active_configs(db, user, now), now)
    db.commit()
    return end_on_nodes(controller, db, revoked, "user disabled")
