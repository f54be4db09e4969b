"""Manual overrides: an engineer's "keep these lights on until 02:00" over the schedule.

An override puts a group into a state from its start to its expiry; while it
holds, scheduled steps leave that group's devices alone, and when it ends
(or is cancelled) they go back to what the schedule wants at that moment.
Overrides are kept in the state database so a restart neither forgets nor repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, select

from controller.control.audit import Actor
from controller.control.selector import GroupSelector
from controller.state.database import StateDatabase
from controller.state.tables import override as table

_COLUMNS = [c.name for c in table.c]


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


def _row(o: Override) -> dict[str, Any]:
    return {
        "selector": o.selector.model_dump_json(exclude_none=True),
        "action": o.action,
        "level": o.level,
        "starts_at": o.starts_at,
        "expires_at": o.expires_at,
        "reason": o.reason,
        "who": o.actor.name,
        "key_id": o.actor.key_id,
        "role": o.actor.role,
        "created_at": o.created_at,
        "cancelled_at": o.cancelled_at,
        "applied": o.applied,
        "ended": o.ended,
    }


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
    """Overrides in the state database."""

    def __init__(self, db: StateDatabase) -> None:
        self.db = db

    async def add(self, override: Override) -> Override:
        """Store a new override; sets its id."""
        async with self.db.connected().begin() as conn:
            result = await conn.execute(table.insert().values(_row(override)).returning(table.c.id))
            override.id = int(result.scalar_one())
        return override

    async def save(self, override: Override) -> None:
        """Store an override's changed state."""
        async with self.db.connected().begin() as conn:
            await conn.execute(
                table.update()
                .where(table.c.id == override.id)
                .values(
                    cancelled_at=override.cancelled_at,
                    applied=override.applied,
                    ended=override.ended,
                )
            )

    async def unfinished(self) -> list[Override]:
        """Overrides not yet ended."""
        return await self._select(_SELECT.where(table.c.ended.is_(False)).order_by(table.c.id))

    async def recent(self, limit: int) -> list[Override]:
        """The newest overrides, ended or not."""
        return await self._select(_SELECT.order_by(table.c.id.desc()).limit(limit))

    async def _select(self, statement: Select[Any]) -> list[Override]:
        async with self.db.connected().connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_override(tuple(r)) for r in rows]


_SELECT = select(*(table.c[name] for name in _COLUMNS))
