"""The alarm database: every alarm, open and closed, in SQLite on a worker thread."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

from controller.sqlite_worker import SqliteWorker
from rules.alarm_model import Alarm, Condition


class AlarmStore:
    """Alarms in SQLite (open and closed), on a worker thread."""

    _COLUMNS: ClassVar[tuple[str, ...]] = tuple(
        f.name for f in fields(Alarm) if f.name != "transitions"
    )
    #: Column names quoted: some (``limit``) are SQL keywords.
    _SELECT: ClassVar[str] = ", ".join(f'"{c}"' for c in _COLUMNS)

    def __init__(self, path: Path) -> None:
        self.path = path
        cols = ", ".join(
            f'"{c}" INTEGER PRIMARY KEY' if c == "id" else f'"{c}"' for c in self._COLUMNS
        )
        schema = [
            f"CREATE TABLE IF NOT EXISTS alarm ({cols})",
            "CREATE INDEX IF NOT EXISTS alarm_open ON alarm (closed_at)",
            "CREATE INDEX IF NOT EXISTS alarm_raised ON alarm (raised_at)",
        ]
        self._db = SqliteWorker(path, schema, "alarms-db")

    async def open(self) -> list[Alarm]:
        """Open the database; returns the alarms that were open."""
        await self._db.open()
        rows = await self.query(f"SELECT {self._SELECT} FROM alarm WHERE closed_at IS NULL")
        return [self._from_row(row) for row in rows]

    def _from_row(self, row: tuple[Any, ...]) -> Alarm:
        values = dict(zip(self._COLUMNS, row, strict=True))
        values["condition"] = Condition(values["condition"])
        values["out_of_service"] = bool(values["out_of_service"])
        values["chattering"] = bool(values["chattering"])
        values["case"] = bool(values["case"])
        return Alarm(**values)

    async def save(self, alarms: list[Alarm]) -> None:
        """Insert or update these alarms."""
        if not alarms:
            return
        rows = [tuple(getattr(a, c) for c in self._COLUMNS) for a in alarms]
        sql = (
            f"INSERT OR REPLACE INTO alarm ({self._SELECT}) "
            f"VALUES ({', '.join('?' * len(self._COLUMNS))})"
        )
        await self._db.run(lambda db: db.executemany(sql, rows))

    async def next_id(self) -> int:
        """One more than the highest id ever used."""
        [(next_id,)] = await self.query("SELECT coalesce(max(id), 0) + 1 FROM alarm")
        return int(next_id)

    async def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (statistics)."""
        return await self._db.run(lambda db: db.execute(sql, args).fetchall())

    async def history(self, since: float, until: float) -> list[Alarm]:
        """Alarms active at some time in ``[since, until)`` (raised before its end, not cleared
        before its start)."""
        rows = await self.query(
            f"SELECT {self._SELECT} FROM alarm WHERE raised_at < ? "
            "AND (cleared_at IS NULL OR cleared_at >= ?)",
            (until, since),
        )
        return [self._from_row(r) for r in rows]

    async def close(self) -> None:
        """Close the database and its thread."""
        await self._db.close()
