"""Case storage: SQLAlchemy models and the async engine (SQLite by default, or PostgreSQL).

Three tables: cases, their transitions (who, when, what, note), and the
webhook outbox (each transition waits there until the city platform took it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    event,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from controller.cases.schema import SchemaState, ensure_schema
from controller.config import LoadedConfig, secret


class Base(DeclarativeBase):
    """Declarative base of the case tables."""

    # Times are Unix seconds (float), as everywhere in streetsense: no time zone surprises
    # between SQLite (which has no timestamp type) and PostgreSQL.
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class CaseRow(Base):
    """One case."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    stage: Mapped[str] = mapped_column(String(32), index=True)
    category: Mapped[str] = mapped_column(String(40), index=True)
    category_kind: Mapped[str] = mapped_column(String(12))
    class_code: Mapped[str] = mapped_column(String(20), default="")
    subclass_code: Mapped[str] = mapped_column(String(20), default="")
    severity: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    component_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    device_id: Mapped[str] = mapped_column(String(64), default="")
    #: rule|device|sub for sensor cases: one open case per fault.
    fault_key: Mapped[str] = mapped_column(String(200), default="", index=True)
    admin_code: Mapped[str] = mapped_column(String(20), default="")
    street_code: Mapped[str] = mapped_column(String(20), default="")
    community_code: Mapped[str] = mapped_column(String(20), default="")
    grid: Mapped[str] = mapped_column(String(32), default="", index=True)
    road: Mapped[str] = mapped_column(String(100), default="")
    district: Mapped[str] = mapped_column(String(100), default="")
    lat: Mapped[float] = mapped_column(Float, default=0.0)
    lon: Mapped[float] = mapped_column(Float, default=0.0)
    address: Mapped[str] = mapped_column(String(300), default="")
    media: Mapped[list[Any]] = mapped_column(default=list)
    alarm_ids: Mapped[list[Any]] = mapped_column(default=list)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    department: Mapped[str] = mapped_column(String(100), default="", index=True)
    assignee: Mapped[str] = mapped_column(String(100), default="")
    reporter: Mapped[str] = mapped_column(String(100), default="")
    #: A citizen's contact details (name, email, phone, device and account ids): personal
    #: data, shown only to the command centre, never in records, exports or Open311 reads.
    contact: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict, nullable=True)
    reported_at: Mapped[float] = mapped_column(index=True)
    accepted_at: Mapped[float | None] = mapped_column(default=None)
    filed_at: Mapped[float | None] = mapped_column(default=None)
    dispatched_at: Mapped[float | None] = mapped_column(default=None)
    due_at: Mapped[float | None] = mapped_column(default=None, index=True)
    disposed_at: Mapped[float | None] = mapped_column(default=None)
    verified_at: Mapped[float | None] = mapped_column(default=None)
    closed_at: Mapped[float | None] = mapped_column(default=None)
    updated_at: Mapped[float] = mapped_column()
    overdue: Mapped[bool] = mapped_column(default=False)
    evaluation: Mapped[str] = mapped_column(String(20), default="")
    rework_count: Mapped[int] = mapped_column(default=0)
    extension_count: Mapped[int] = mapped_column(default=0)
    return_count: Mapped[int] = mapped_column(default=0)


class TransitionRow(Base):
    """One step of a case: who did what, when, with what note."""

    __tablename__ = "case_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[float] = mapped_column()
    action: Mapped[str] = mapped_column(String(32))
    from_stage: Mapped[str] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class PhotoRow(Base):
    """A photo attached to a case (the disposal's proof, an inspector's picture), kept in
    the case database itself so that it moves, backs up and fails over with the case."""

    __tablename__ = "case_photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[float] = mapped_column()
    actor: Mapped[str] = mapped_column(String(100))
    stage: Mapped[str] = mapped_column(String(32))
    content_type: Mapped[str] = mapped_column(String(40))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class OutboxRow(Base):
    """A transition waiting to be delivered by webhook."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column()
    attempts: Mapped[int] = mapped_column(default=0)
    next_at: Mapped[float] = mapped_column(index=True)
    delivered_at: Mapped[float | None] = mapped_column(default=None, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


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


class CaseDatabase:
    """The engine and sessions, on a schema this release can use (``controller.cases.schema``).

    ``migrate_on_start``: an existing database of an older schema is upgraded when
    opened; off, opening it is refused until ``streetsense db upgrade`` has run.
    """

    @classmethod
    def of_config(cls, loaded: LoadedConfig) -> CaseDatabase:
        """The case database the config names, its password from the environment."""
        cfg = loaded.config.cases
        password = secret(cfg.password_env, str(loaded.path), "cases.password_env")
        url = database_url(cfg.db_url, str(loaded.data_dir), password)
        return cls(url, cfg.migrate_on_start)

    def __init__(self, url: URL, migrate_on_start: bool = True) -> None:
        self.url = url
        self.migrate_on_start = migrate_on_start
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None

    async def open(self, upgrade: bool | None = None) -> tuple[SchemaState, SchemaState]:
        """Connect, and create or upgrade the schema (``upgrade``: as configured);
        the schema's state before and after."""
        if self.url.get_backend_name() == "sqlite" and self.url.database:
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_async_engine(self.url)
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

    def session(self) -> AsyncSession:
        """A new session (use as ``async with``)."""
        if self.sessions is None:
            raise RuntimeError("case database is not open")
        return self.sessions()

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
    cursor.close()
