"""The one-time import of the SQLite files each store kept before the state database.

A controller upgraded from that release finds alarms.db, control.db,
assets.db, schedules.db, cases.db and keys.db in its data folder. At start, each file
not yet imported is copied, table by table and column by column, into the
state database (SQLite or PostgreSQL) in one transaction, and recorded in
``legacy_import`` so it is never copied twice. The files are left where they
are: nothing is deleted, and an operator may archive them once the import is
logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Integer, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import JSON

from controller.config import LoadedConfig
from controller.state import tables
from controller.state.database import Base, StateDatabase, sqlite_file

log = logging.getLogger(__name__)

#: The default file of the case database before it became the state database.
LEGACY_CASES_FILE = "cases.db"
_BATCH = 1000


@dataclass(frozen=True)
class LegacyFile:
    """An old store's SQLite file, and the stores it held."""

    path: Path
    stores: tuple[str, ...]


@dataclass(frozen=True)
class ImportedFile:
    """What one import copied: rows per table."""

    path: Path
    rows: dict[str, int]


def legacy_files(loaded: LoadedConfig) -> list[LegacyFile]:
    """The config's old store files (one entry per file where settings share one)."""
    cfg = loaded.config
    named = [
        ("alarms", cfg.alarms.path),
        ("audit", cfg.control.db_path),
        ("assets", cfg.assets.db_path),
        ("overrides", cfg.schedules.db_path),
        ("cases", LEGACY_CASES_FILE),
        ("keys-and-users", cfg.api.keys_path),
    ]
    by_path: dict[Path, list[str]] = {}
    for store, relative in named:
        by_path.setdefault(loaded.data_path(relative).resolve(), []).append(store)
    return [LegacyFile(path, tuple(stores)) for path, stores in by_path.items()]


def _read(path: Path, names: list[str]) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Columns and rows of each of these tables the file has (on a worker thread)."""
    found: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    uri = f"file:{path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for name in names:
            if name in present:
                cursor = db.execute(f'SELECT * FROM "{name}"')
                columns = [d[0] for d in cursor.description]
                found[name] = (columns, cursor.fetchall())
    return found


def _converter(table: Table, column: str) -> Any:
    kind = table.c[column].type
    if isinstance(kind, JSON):
        return lambda v: json.loads(v) if isinstance(v, str | bytes) else v
    if isinstance(kind, Boolean):
        return lambda v: None if v is None else bool(v)
    return lambda v: v


async def _copy_table(
    conn: AsyncConnection, table: Table, columns: list[str], rows: list[tuple[Any, ...]]
) -> int:
    kept = [i for i, c in enumerate(columns) if c in table.c]
    convert = [(columns[i], i, _converter(table, columns[i])) for i in kept]
    values = [{name: fn(row[i]) for name, i, fn in convert} for row in rows]
    for start in range(0, len(values), _BATCH):
        await conn.execute(table.insert(), values[start : start + _BATCH])
    if values and conn.dialect.name == "postgresql":
        # Ids came with the rows: move the id sequence past them for the next insert.
        [pk] = table.primary_key.columns
        if isinstance(pk.type, Integer) and pk.autoincrement is not False:
            await conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk.name}'), "
                    f'(SELECT max("{pk.name}") FROM "{table.name}"))'
                )
            )
    return len(values)


async def import_legacy(db: StateDatabase, files: list[LegacyFile]) -> list[ImportedFile]:
    """Copy each old file not yet imported into the state database; what was copied."""
    engine = db.connected()
    own = sqlite_file(db.url)
    names = [t.name for t in Base.metadata.sorted_tables if t is not tables.legacy_import]
    imported: list[ImportedFile] = []
    for legacy in files:
        if not legacy.path.is_file() or (own is not None and own.resolve() == legacy.path):
            continue
        source = str(legacy.path)
        async with engine.begin() as conn:
            done = await conn.scalar(
                select(func.count())
                .select_from(tables.legacy_import)
                .where(tables.legacy_import.c.source == source)
            )
            if done:
                continue
            found = await asyncio.to_thread(_read, legacy.path, names)
            counts: dict[str, int] = {}
            for name in names:  # in foreign-key order: cases before their transitions
                if name in found:
                    table = Base.metadata.tables[name]
                    counts[name] = await _copy_table(conn, table, *found[name])
            await conn.execute(
                tables.legacy_import.insert().values(
                    source=source,
                    store=",".join(legacy.stores),
                    rows=sum(counts.values()),
                    at=time.time(),
                )
            )
        log.warning(
            "imported %s from %s into the state database %s; the file is no longer used",
            ", ".join(f"{n} {t}" for t, n in counts.items()) or "no rows",
            source,
            db.shown_url,
        )
        imported.append(ImportedFile(legacy.path, counts))
    return imported


@contextlib.asynccontextmanager
async def opened_state(loaded: LoadedConfig) -> AsyncIterator[StateDatabase]:
    """The config's state database, open and with the old files imported, as at start
    (for the command line, which may run before the first start of this release)."""
    db = StateDatabase.of_config(loaded)
    await db.open()
    try:
        await import_legacy(db, legacy_files(loaded))
        yield db
    finally:
        await db.close()
