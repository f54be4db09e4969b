"""The state database: one SQLAlchemy URL for everything the controller keeps.

Alarms and their history, the audit log, the asset register, overrides,
cases with their transitions, photos and webhook outbox: one database, so
that a second controller on the same PostgreSQL sees what the first one did.
SQLite (``state.db`` in the data folder) is the embedded default; PostgreSQL
(psycopg 3) is for production and fail-over. Telemetry is not here: it has
its own stores and a spool on local disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import JSON, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session

from controller.config import LoadedConfig, secret
from controller.state.schema import SchemaState, ensure_schema


class Base(DeclarativeBase):
    """Declarative base (and metadata) of every table of the state database."""

    # Times are Unix seconds (float), as everywhere in streetsense: no time zone surprises
    # between SQLite (which has no timestamp type) and PostgreSQL.
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


@event.listens_for(Session, "before_flush")
def _stamp_epoch(session: Session, _context: Any, _instances: Any) -> None:
    """Every row written with a session of a leading node carries its epoch, where the
    table has one (cases and their transitions): PostgreSQL fences them (0006)."""
    epoch = session.info.get("epoch")
    if epoch is None:
        return
    for row in (*session.new, *session.dirty):
        table = getattr(type(row), "__table__", None)
        if table is not None and "epoch" in table.c:
            row.epoch = epoch


def database_url(url: str, base_dir: str, password: str | None) -> URL:
    """The URL with a relative SQLite path made relative to the data folder, and the password."""
    parsed = make_url(url)
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database
        and not parsed.database.startswith("/")
        and parsed.database != ":memory:"
    ):
        parsed = parsed.set(database=f"{base_dir}/{parsed.database}")
    if password is not None:
        parsed = parsed.set(password=password)
    return parsed


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (None for a server database or an in-memory one)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database))


class StateDatabase:
    """The engine and sessions, on a schema this release can use (``controller.state.schema``).

    ``migrate_on_start``: an existing database of an older schema is upgraded when
    opened; off, opening it is refused until ``streetsense db upgrade`` has run.
    """

    @classmethod
    def of_config(cls, loaded: LoadedConfig) -> StateDatabase:
        """The state database the config names, its password from the environment."""
        cfg = loaded.config.database
        password = secret(cfg.password_env, str(loaded.path), "database.password_env")
        url = database_url(cfg.url, str(loaded.data_dir), password)
        return cls(url, cfg.migrate_on_start)

    def __init__(self, url: URL, migrate_on_start: bool = True) -> None:
        self.url = url
        self.migrate_on_start = migrate_on_start
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None
        #: The epoch of this node's lease while it leads a pair: on every audit entry, alarm
        #: and case written through it, so PostgreSQL refuses them once another node leads.
        self.epoch: int | None = None

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` has connected (and :meth:`close` not yet run)."""
        return self.engine is not None

    @property
    def shown_url(self) -> str:
        """The URL for logs and messages, without its password."""
        return self.url.render_as_string(hide_password=True)

    async def open(self, upgrade: bool | None = None) -> tuple[SchemaState, SchemaState]:
        """Connect, and create or upgrade the schema (``upgrade``: as configured);
        the schema's state before and after."""
        file = sqlite_file(self.url)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_async_engine(self.url, pool_pre_ping=True)
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            states = await ensure_schema(
                self.engine, self.migrate_on_start if upgrade is None else upgrade
            )
        except BaseException:
            await self.close()
            raise
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        return states

    def connected(self) -> AsyncEngine:
        """The engine (RuntimeError before :meth:`open`)."""
        if self.engine is None:
            raise RuntimeError("the state database is not open")
        return self.engine

    def session(self) -> AsyncSession:
        """A new session (use as ``async with``)."""
        if self.sessions is None:
            raise RuntimeError("the state database is not open")
        return self.sessions(info={"epoch": self.epoch})

    async def close(self) -> None:
        """Close every connection."""
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
            self.sessions = None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Readers (the API) and the writers (rules, cases) share the file: wait, don't fail.
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
