"""The command audit log: who commanded what, when, and what came of it.

Append-only in SQLite, kept across restarts. A command is written when it is
accepted and updated once when it ends; a refused attempt (needs confirm, rate
limited, wrong role) is written too, so the log answers "who tried to switch
off Dongfeng Road last night", not only who succeeded.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.sqlite_worker import SqliteWorker

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        source TEXT NOT NULL,
        key_id TEXT NOT NULL,
        who TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        dim INTEGER,
        selector TEXT NOT NULL,
        target_count INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        confirmed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        finished_at REAL,
        results TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
]

_COLUMNS = (
    "id, at, source, key_id, who, role, action, dim, selector, target_count, "
    "outcome, reason, confirmed, failed, finished_at, results"
)
#: Columns a row carries (all but the id, which SQLite assigns).
_WRITTEN = _COLUMNS.split(", ")[1:]


def like_literal(text: str) -> str:
    """``text`` escaped for a SQL ``LIKE ... ESCAPE '\\'`` pattern, so it matches itself only."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Actor:
    """Who a command comes from: an API key's owner, or the scheduler."""

    name: str
    key_id: str
    role: str


@dataclass
class AuditEntry:
    """One line of the audit log."""

    id: int
    at: float
    source: str
    actor: Actor
    action: str
    dim: int | None
    selector: str
    target_count: int
    outcome: str
    reason: str = ""
    confirmed: int = 0
    failed: int = 0
    finished_at: float | None = None
    #: Per target: its status and, for a failure, why.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditQuery:
    """Filters for reading the log; every given one must match."""

    since: float | None = None
    until: float | None = None
    who: str | None = None
    outcome: str | None = None
    action: str | None = None
    target: str | None = None
    limit: int = 100


def _row(entry: AuditEntry) -> tuple[Any, ...]:
    return (
        entry.at,
        entry.source,
        entry.actor.key_id,
        entry.actor.name,
        entry.actor.role,
        entry.action,
        entry.dim,
        entry.selector,
        entry.target_count,
        entry.outcome,
        entry.reason,
        entry.confirmed,
        entry.failed,
        entry.finished_at,
        json.dumps(entry.results, ensure_ascii=False),
    )


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=row[1],
        source=row[2],
        actor=Actor(name=row[4], key_id=row[3], role=row[5]),
        action=row[6],
        dim=row[7],
        selector=row[8],
        target_count=row[9],
        outcome=row[10],
        reason=row[11],
        confirmed=row[12],
        failed=row[13],
        finished_at=row[14],
        results=json.loads(row[15]),
    )


class AuditLog:
    """The audit log in SQLite."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteWorker(path, _SCHEMA, "audit-db")

    async def open(self) -> None:
        """Open (or create) the log."""
        await self._db.open()

    async def close(self) -> None:
        """Close the log."""
        await self._db.close()

    async def append(self, entry: AuditEntry) -> int:
        """Write a new entry; returns its id (also the command id)."""
        entry.id = await self._db.insert("audit", _WRITTEN, _row(entry))
        return entry.id

    async def update(self, entry: AuditEntry) -> None:
        """Record how an entry's command ended (the whole entry is written again)."""
        assignments = ", ".join(f"{c} = ?" for c in _WRITTEN)
        values = (*_row(entry), entry.id)
        await self._db.run(
            lambda db: db.execute(f"UPDATE audit SET {assignments} WHERE id = ?", values)
        )

    async def get(self, entry_id: int) -> AuditEntry | None:
        """One entry by id."""

        def get(db: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = db.execute(
                f"SELECT {_COLUMNS} FROM audit WHERE id = ?", (entry_id,)
            ).fetchone()
            return row

        row = await self._db.run(get)
        return None if row is None else _entry(row)

    async def query(self, q: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``q``, newest first."""
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("at >= ?", q.since),
            ("at < ?", q.until),
            ("who = ?", q.who),
            ("outcome = ?", q.outcome),
            ("action = ?", q.action),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if q.target is not None:
            # Targets are keys of the results object, or named in the selector text.
            # The target is matched literally: % and _ in it are not wildcards.
            where.append("(results LIKE ? ESCAPE '\\' OR selector LIKE ? ESCAPE '\\')")
            target = like_literal(q.target)
            args += [f'%"{target}%', f"%{target}%"]
        sql = f"SELECT {_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(q.limit)

        def select(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(sql, args).fetchall()

        return [_entry(row) for row in await self._db.run(select)]
