"""Manual overrides: an engineer's "keep these lights on until 02:00" over the schedule.

An override puts a group into a state from its start to its expiry; while it
holds, scheduled steps leave that group's devices alone, and when it ends
(or is cancelled) they go back to what the schedule wants at that moment.
Overrides are kept in SQLite so a restart neither forgets nor repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from controller.control.audit import Actor
from controller.control.selector import GroupSelector
from controller.sqlite_worker import SqliteWorker

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS override (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        selector TEXT NOT NULL,
        action TEXT NOT NULL,
        level INTEGER,
        starts_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        reason TEXT NOT NULL,
        who TEXT NOT NULL,
        key_id TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at REAL NOT NULL,
        cancelled_at REAL,
        applied INTEGER NOT NULL DEFAULT 0,
        ended INTEGER NOT NULL DEFAULT 0
    )""",
]
_COLUMNS = (
    "id, selector, action, level, starts_at, expires_at, reason, who, key_id, role, "
    "created_at, cancelled_at, applied, ended"
)


@dataclass
class Override:
    """A manual state for a group over a time span."""

    id: int
    selector: GroupSelector
    action: Literal["on", "off", "dim"]
    level: int | None
    starts_at: float
    expires_at: float
    reason: str
    actor: Actor
    created_at: float
    cancelled_at: float | None = None
    #: Its command has been sent.
    applied: bool = False
    #: It is over and the schedule has taken its devices back.
    ended: bool = False

    def active(self, at: float) -> bool:
        """Whether it holds at ``at``."""
        return (
            self.cancelled_at is None and self.starts_at <= at < self.expires_at and not self.ended
        )


def _row(o: Override) -> tuple[Any, ...]:
    return (
        o.selector.model_dump_json(exclude_none=True),
        o.action,
        o.level,
        o.starts_at,
        o.expires_at,
        o.reason,
        o.actor.name,
        o.actor.key_id,
        o.actor.role,
        o.created_at,
        o.cancelled_at,
        int(o.applied),
        int(o.ended),
    )


def _override(row: tuple[Any, ...]) -> Override:
    return Override(
        id=row[0],
        selector=GroupSelector.model_validate_json(row[1]),
        action=row[2],
        level=row[3],
        starts_at=row[4],
        expires_at=row[5],
        reason=row[6],
        actor=Actor(row[7], row[8], row[9]),
        created_at=row[10],
        cancelled_at=row[11],
        applied=bool(row[12]),
        ended=bool(row[13]),
    )


class OverrideStore:
    """Overrides in SQLite."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteWorker(path, _SCHEMA, "overrides-db")

    async def open(self) -> None:
        """Open (or create) the store."""
        await self._db.open()

    async def close(self) -> None:
        """Close the store."""
        await self._db.close()

    async def add(self, override: Override) -> Override:
        """Store a new override; sets its id."""
        override.id = await self._db.insert("override", _COLUMNS.split(", ")[1:], _row(override))
        return override

    async def save(self, override: Override) -> None:
        """Store an override's changed state."""
        values = (override.cancelled_at, int(override.applied), int(override.ended), override.id)
        await self._db.run(
            lambda db: db.execute(
                "UPDATE override SET cancelled_at=?, applied=?, ended=? WHERE id=?", values
            )
        )

    async def unfinished(self) -> list[Override]:
        """Overrides not yet ended."""
        rows = await self._db.run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM override WHERE ended = 0 ORDER BY id"
            ).fetchall()
        )
        return [_override(r) for r in rows]

    async def recent(self, limit: int) -> list[Override]:
        """The newest overrides, ended or not."""
        rows = await self._db.run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM override ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        )
        return [_override(r) for r in rows]
