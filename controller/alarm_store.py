"""The alarm table of the state database: every alarm, open and closed.

Alarms are raised in memory and written behind: a save that cannot reach the
database (PostgreSQL restarting) keeps the alarms' latest states in order and
writes them when it is back, so the rules never wait on it and nothing is
lost. What is still unwritten when the controller stops goes to a small file
in the data folder and is written first at the next start.

In a pair each row carries the epoch of the leader that judged it, and
PostgreSQL refuses a row older than the lease's (migration 0006). A leader
cut off from the database while the standby took over has judged the same
faults as the new leader, under ids that may collide: what it kept waiting is
dropped, said in the log and counted, never written over the new leader's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, and_, func, or_, select

from controller.state.database import StateDatabase
from controller.state.fencing import fenced
from controller.state.tables import alarm as alarm_table
from controller.state.upsert import upsert
from drivers.errors import NotLeading
from rules.alarm_model import Alarm, Condition

log = logging.getLogger(__name__)

#: The file in the data folder where unwritten alarms wait across a stop.
UNWRITTEN_ALARMS = "alarms-unwritten.json"
#: How often unwritten alarms are tried again while the database is away.
RETRY_SECONDS = 2.0
#: How long a stop waits for the database to take what is unwritten before spilling it.
STOP_GRACE = 5.0


class AlarmStore:
    """Alarms in the state database, written behind (see the module's docstring)."""

    _COLUMNS: ClassVar[tuple[str, ...]] = tuple(
        f.name for f in fields(Alarm) if f.name != "transitions"
    )

    def __init__(self, db: StateDatabase, spill: Path) -> None:
        """``spill``: where unwritten alarms wait across a stop."""
        self.db = db
        self.spill = spill
        #: Alarms saved but not yet written, by id (the latest state of each).
        self._unwritten: dict[int, Alarm] = {}
        self._retry: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._owns_db = False
        #: Alarms the database refused because another node has led since they were judged.
        self.fenced = 0

    @property
    def unwritten(self) -> int:
        """Alarms saved in memory that the database has not taken yet."""
        return len(self._unwritten)

    async def open(self) -> list[Alarm]:
        """Write what a stop left unwritten; returns the alarms that were open. Opens the
        database if nobody has (a store on its own: the rules bench, tests)."""
        self._owns_db = not self.db.is_open
        if self._owns_db:
            await self.db.open()
        if self.spill.is_file():
            spilled, epoch = await asyncio.to_thread(self._read_spill)
            self._merge(spilled)
            # Under the epoch they were judged in, not this start's.
            if await self._write(epoch):
                log.warning("wrote %d alarms left unwritten at the last stop", len(spilled))
            await asyncio.to_thread(self.spill.unlink)
        return await self.read_open()

    async def read_open(self) -> list[Alarm]:
        """The alarms open in the database (what a standby shows of its leader's)."""
        rows = await self._select(alarm_table.c.closed_at.is_(None))
        return [self._from_row(row) for row in rows]

    def _from_row(self, row: Any) -> Alarm:
        values = dict(zip(self._COLUMNS, row, strict=True))
        values["condition"] = Condition(values["condition"])
        for flag in ("out_of_service", "chattering", "case"):
            values[flag] = bool(values[flag])
        return Alarm(**values)

    def _row(self, alarm: Alarm, epoch: int | None) -> dict[str, Any]:
        return {c: getattr(alarm, c) for c in self._COLUMNS} | {"epoch": epoch}

    def _merge(self, alarms: list[Alarm]) -> None:
        for alarm in alarms:
            # Re-inserted so the dict's order stays the order of the last change.
            self._unwritten.pop(alarm.id, None)
            self._unwritten[alarm.id] = alarm

    async def save(self, alarms: list[Alarm]) -> None:
        """Insert or update these alarms (now if the database answers, else later)."""
        if not alarms:
            return
        self._merge(alarms)
        if self._retry is None:
            try:
                await self._write()
            except Exception as exc:
                log.warning(
                    "%d alarms wait for the state database (%s); retrying every %.0f s",
                    len(self._unwritten),
                    exc,
                    RETRY_SECONDS,
                )
                self._retry = asyncio.create_task(self._retry_loop(), name="alarms:retry")

    async def _write(self, epoch: int | None = None) -> bool:
        """Write what waits, stamped with ``epoch`` (default: this node's, ``db.epoch``);
        False if the fence refused it, which is then dropped. Other errors are raised."""
        if epoch is None:
            epoch = self.db.epoch
        async with self._write_lock:
            if not self._unwritten:
                return True
            # Snapshots: the manager changes alarms in place, also while this write waits.
            written = {alarm_id: self._row(a, epoch) for alarm_id, a in self._unwritten.items()}
            try:
                with fenced():
                    async with self.db.connected().begin() as conn:
                        await upsert(conn, alarm_table, list(written.values()))
            except NotLeading as exc:
                # For good: the new leader judges these faults itself.
                self.fenced += len(written)
                for alarm_id in written:
                    self._unwritten.pop(alarm_id, None)
                log.error("%d alarms judged here were not written: %s", len(written), exc)
                return False
            for alarm_id, row in written.items():
                alarm = self._unwritten.get(alarm_id)
                if alarm is not None and self._row(alarm, epoch) == row:
                    del self._unwritten[alarm_id]
            return True

    async def _retry_loop(self) -> None:
        while self._unwritten:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await self._write()
            except Exception:
                continue
            log.warning("the state database took the alarms that waited for it")
        self._retry = None

    async def next_id(self) -> int:
        """One more than the highest id ever used (written or waiting)."""
        async with self.db.connected().connect() as conn:
            top = await conn.scalar(select(func.coalesce(func.max(alarm_table.c.id), 0)))
        return max([int(top or 0), *self._unwritten]) + 1

    async def _select(self, where: ColumnElement[bool]) -> list[Any]:
        columns = [alarm_table.c[c] for c in self._COLUMNS]
        async with self.db.connected().connect() as conn:
            return list((await conn.execute(select(*columns).where(where))).all())

    async def history(self, since: float, until: float) -> list[Alarm]:
        """Alarms active at some time in ``[since, until)`` (raised before its end, not cleared
        before its start), those still waiting to be written included."""
        t = alarm_table.c
        rows = await self._select(
            and_(t.raised_at < until, or_(t.cleared_at.is_(None), t.cleared_at >= since))
        )
        found = {a.id: a for a in map(self._from_row, rows)}
        for alarm in list(self._unwritten.values()):
            if alarm.raised_at < until and (alarm.cleared_at is None or alarm.cleared_at >= since):
                found[alarm.id] = alarm
        return list(found.values())

    async def close(self) -> None:
        """Write what waits (for a few seconds at most), spill the rest to disk."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._unwritten:
            try:
                await asyncio.wait_for(self._write(), STOP_GRACE)
            except Exception as exc:
                log.warning(
                    "%d alarms kept in %s for the next start (%s)",
                    len(self._unwritten),
                    self.spill,
                    exc or "the state database did not answer",
                )
                alarms = list(self._unwritten.values())
                await asyncio.to_thread(self._write_spill, alarms, self.db.epoch)
                self._unwritten.clear()
        if self._owns_db:
            await self.db.close()

    def _read_spill(self) -> tuple[list[Alarm], int | None]:
        """The spilled alarms and the epoch they were judged in."""
        doc = json.loads(self.spill.read_text(encoding="utf-8"))
        # Before 0006 the file was the list alone, from a controller not in a pair.
        if isinstance(doc, list):
            doc = {"epoch": None, "alarms": doc}
        out = []
        for values in doc["alarms"]:
            values["condition"] = Condition(values["condition"])
            out.append(Alarm(**values))
        return out, doc["epoch"]

    def _write_spill(self, alarms: list[Alarm], epoch: int | None) -> None:
        earlier, _ = self._read_spill() if self.spill.is_file() else ([], None)
        merged = {a.id: a for a in [*earlier, *alarms]}
        doc = {"epoch": epoch, "alarms": [asdict(a) for a in merged.values()]}
        self.spill.parent.mkdir(parents=True, exist_ok=True)
        part = self.spill.with_suffix(".part")
        part.write_text(json.dumps(doc), encoding="utf-8")
        part.replace(self.spill)
