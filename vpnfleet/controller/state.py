"""What one controller app holds: its settings, database sessions, CA and node daemons."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app, g
from sqlalchemy.orm import Session, sessionmaker

from vpnfleet.controller.accounts import LoginThrottle
from vpnfleet.controller.certificates import ClientCertificateIssuer
from vpnfleet.controller.crl import RevocationPusher
from vpnfleet.controller.daemons import NodeDaemons
from vpnfleet.controller.settings import Settings

EXTENSION_KEY = "vpnfleet_controller"


@dataclass
class Controller:
    settings: Settings
    sessions: sessionmaker[Session]
    issuer: ClientCertificateIssuer
    daemons: NodeDaemons
    throttle: LoginThrottle
    # The CRL and disconnects of configs that /connect replaced (crl.RevocationPusher).
    revocations: RevocationPusher = field(init=False)

    def __post_init__(self) -> None:
        self.revocations = RevocationPusher(self)


def controller() -> Controller:
    return current_app.extensions[EXTENSION_KEY]


def db() -> Session:
    """The request's database session, closed when the request ends."""
    if "db" not in g:
        g.db = controller().sessions()
    return g.db


def close_db(_error=None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()
