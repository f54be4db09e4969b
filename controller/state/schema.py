"""The state database's schema revision: created, upgraded or refused, by Alembic.

At start (``database.migrate_on_start``, on by default) and by ``streetsense db
upgrade``, an empty database gets the whole schema, a database of a release
before migrations (tables, no ``alembic_version``) is stamped as the baseline
and upgraded, and an older revision is upgraded. A revision this release does
not know (a newer release upgraded the database) is refused with what to do:
there is no downgrade path, since a downgrade would drop what the newer
release stored; restore the backup taken before the upgrade instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

#: The schema as the last release before migrations created it.
BASELINE = "0001"


class SchemaError(Exception):
    """The database's schema is not one this release can use; the message says what to do."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against this release."""

    #: Its revision (None: no ``alembic_version``: empty, or from before migrations).
    current: str | None
    head: str
    has_tables: bool


def alembic_config() -> Config:
    """Alembic's configuration, pointing at the migrations shipped with the package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


def head_revision() -> str:
    """The newest revision this release knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # the package ships its migrations
    return head


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _state(conn: Connection) -> SchemaState:
    current = MigrationContext.configure(conn).get_current_revision()
    return SchemaState(current, head_revision(), inspect(conn).has_table("cases"))


def _upgrade(conn: Connection, state: SchemaState) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    if state.current is None and state.has_tables:
        command.stamp(cfg, BASELINE)  # tables of a release before migrations
    command.upgrade(cfg, "head")


async def ensure_schema(engine: AsyncEngine, upgrade: bool) -> tuple[SchemaState, SchemaState]:
    """Bring the database to this release's schema (``upgrade``: also an existing one);
    returns the state before and after, or raises a SchemaError saying what to do."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # The two nodes of a pair may start together: one migrates, the other waits.
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('streetsense-schema'))"))
        before = await conn.run_sync(_state)
        if before.current is not None and not _known(before.current):
            raise SchemaError(
                f"the state database is at schema revision {before.current}, which this "
                f"release does not know (it goes up to {before.head}): a newer release "
                "upgraded it. Run that release, or restore the backup taken before the "
                "upgrade; there is no downgrade"
            )
        if before.current == before.head:
            return before, before
        existing = before.current is not None or before.has_tables
        if existing and not upgrade:
            at = before.current or "from before migrations"
            raise SchemaError(
                f"the state database is at schema revision {at} and this release needs "
                f"{before.head}: back it up, then run "
                "`streetsense db upgrade` (or set database.migrate_on_start)"
            )
        await conn.run_sync(_upgrade, before)
        after = await conn.run_sync(_state)
    return before, after
