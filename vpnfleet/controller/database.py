"""Engine, sessions and migrations. The schema is always made by Alembic, in tests as well."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Delete, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(database_url: str) -> Engine:
    # The ping on every checkout is for a server that restarts or drops idle connections
    # (PostgreSQL); an SQLite file has no connection to lose, and the ping is a query per request.
    sqlite = database_url.startswith("sqlite")
    engine = create_engine(database_url, pool_pre_ping=not sqlite)
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Foreign keys are off by default in SQLite; WAL lets the portal read while a hook writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def delete_rows(db: Session, statement: Delete) -> int:
    """Run a DELETE; the number of rows it removed."""
    # A DML statement's result is a CursorResult, which Session.execute's annotation does not say.
    return cast(CursorResult, db.execute(statement)).rowcount


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini interpolation would read a '%' in a password as a format marker.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    """Bring the database to the newest schema; a no-op when it is there already."""
    command.upgrade(alembic_config(database_url), "head")
