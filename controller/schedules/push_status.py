"""How the last time-table push to each device-mode cabinet went, in the state database.

The leader writes it after each push (and after its audit entry, which PostgreSQL
fences, so a deposed leader writes neither); every node of a pair reads it.
"""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import select

from controller.schedules.device_tables import TablePush
from controller.state.database import StateDatabase
from controller.state.tables import time_table_push as table
from controller.state.upsert import upsert


class TablePushStore:
    """The last :class:`TablePush` per cabinet, shared by the nodes on one state database."""

    def __init__(self, db: StateDatabase) -> None:
        self.db = db

    async def record(self, push: TablePush) -> None:
        """Keep ``push`` as its cabinet's last."""
        async with self.db.connected().begin() as conn:
            await upsert(conn, table, [asdict(push)])

    async def latest(self) -> list[TablePush]:
        """Every cabinet's last push, by cabinet id."""
        async with self.db.connected().connect() as conn:
            rows = await conn.execute(select(table).order_by(table.c.cabinet))
        return [TablePush(r.cabinet, r.at, r.night, r.entries, bool(r.ok), r.detail) for r in rows]
