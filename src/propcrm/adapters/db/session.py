"""Database engines and sessions; migrations to the latest schema.

The embedded default is SQLite in WAL mode in a data directory (``PROPCRM_DATA_DIR``, default
``./data``); production sets ``PROPCRM_DATABASE_URL`` (e.g. ``postgresql+psycopg://…``). Both are read
by ``adapters/settings.py`` (``Settings.database_url()``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def database_url(data_dir: str | Path | None = None) -> str:
    """The configured database (for CLI commands that need only this of the settings)."""
    from ..settings import Settings

    settings = Settings.from_env()
    if data_dir:
        settings = dataclasses.replace(settings, data_dir=Path(data_dir))
    return settings.database_url()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - exercised by every test
            # We emit BEGIN ourselves (below): the driver's implicit, deferred BEGIN lets two writers
            # both read and then fail to upgrade ("database is locked") instead of waiting their turn.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover - exercised by every test
            # Every unit of work takes the write lock up front and queues for it (busy_timeout); a
            # session made with sessions(engine, readonly=True) stays deferred and never blocks a writer.
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def sessions(engine: Engine, *, readonly: bool = False) -> sessionmaker[Session]:
    """Sessions on ``engine``. On SQLite a unit of work begins with ``BEGIN IMMEDIATE`` (it waits its
    turn to write instead of failing to upgrade a read lock); ``readonly=True`` sessions begin
    deferred, so reads never wait for a writer in WAL mode."""
    bind = engine.execution_options(sqlite_begin="DEFERRED") if readonly and engine.dialect.name == "sqlite" else engine
    return sessionmaker(bind, expire_on_commit=False)


def readonly_sessions(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The read-only twin of ``factory`` (same engine): on SQLite its sessions begin deferred, so a
    lookup on a hot path (a platform command's connection and login, a connector's mapping) reads the
    last committed state at once instead of queueing behind the writers for the write lock."""
    bind = factory.kw.get("bind")
    if bind is None or bind.dialect.name != "sqlite":
        return factory
    return sessionmaker(bind.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the latest schema (idempotent)."""
    command.upgrade(alembic_config(url), "head")
