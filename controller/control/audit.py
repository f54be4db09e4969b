"""The command audit log: who commanded what, when, and what came of it.

Append-only in the state database, kept across restarts. A command is written when it is
accepted and updated once when it ends; a refused attempt (needs confirm, rate
limited, wrong role) is written too, so the log answers "who tried to switch
off Dongfeng Road last night", not only who succeeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select

from controller.state.database import StateDatabase
from controller.state.fencing import fenced
from controller.state.tables import audit

_COLUMNS = [c.name for c in audit.c]


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
    #: The lease epoch of the leader that wrote it (None: a controller not in a pair).
    epoch: int | None = None


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


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at,
        "source": entry.source,
        "key_id": entry.actor.key_id,
        "who": entry.actor.name,
        "role": entry.actor.role,
        "action": entry.action,
        "dim": entry.dim,
        "selector": entry.selector,
        "target_count": entry.target_count,
        "outcome": entry.outcome,
        "reason": entry.reason,
        "confirmed": entry.confirmed,
        "failed": entry.failed,
        "finished_at": entry.finished_at,
        "results": json.dumps(entry.results, ensure_ascii=False),
        "epoch": entry.epoch,
    }


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
        epoch=row[16],
    )


class AuditLog:
    """The audit log in the state database."""

    def __init__(self, db: StateDatabase) -> None:
        self.db = db

    async def append(self, entry: AuditEntry) -> int:
        """Write a new entry; returns its id (also the command id). NotLeading when the
        database refuses it: another node of the pair has taken the lease since."""
        if entry.epoch is None:
            entry.epoch = self.db.epoch
        with fenced():
            async with self.db.connected().begin() as conn:
                statement = audit.insert().values(_row(entry)).returning(audit.c.id)
                entry.id = int((await conn.execute(statement)).scalar_one())
        return entry.id

    async def update(self, entry: AuditEntry) -> None:
        """Record how an entry's command ended (the whole entry is written again)."""
        if entry.epoch is None:
            entry.epoch = self.db.epoch
        with fenced():
            async with self.db.connected().begin() as conn:
                await conn.execute(audit.update().where(audit.c.id == entry.id).values(_row(entry)))

    async def get(self, entry_id: int) -> AuditEntry | None:
        """One entry by id."""
        async with self.db.connected().connect() as conn:
            row = (await conn.execute(_SELECT.where(audit.c.id == entry_id))).first()
        return None if row is None else _entry(tuple(row))

    async def query(self, q: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``q``, newest first."""
        c = audit.c
        statement = _SELECT
        conditions = [
            c.at >= q.since if q.since is not None else None,
            c.at < q.until if q.until is not None else None,
            c.who == q.who if q.who is not None else None,
            c.outcome == q.outcome if q.outcome is not None else None,
            c.action == q.action if q.action is not None else None,
        ]
        for condition in conditions:
            if condition is not None:
                statement = statement.where(condition)
        if q.target is not None:
            # Targets are keys of the results object, or named in the selector text.
            # The target is matched literally: % and _ in it are not wildcards.
            target = like_literal(q.target)
            statement = statement.where(
                or_(
                    c.results.like(f'%"{target}%', escape="\\"),
                    c.selector.like(f"%{target}%", escape="\\"),
                )
            )
        statement = statement.order_by(c.id.desc()).limit(q.limit)
        async with self.db.connected().connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_entry(tuple(row)) for row in rows]


_SELECT = select(*(audit.c[name] for name in _COLUMNS))
