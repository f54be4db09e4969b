"""The embedded store: readings in SQLite, the default when no InfluxDB is configured.

All database work runs on one worker thread (SQLite connections are not for
sharing, and the event loop must not wait on disk). Devices and points are
stored by name, through small key tables, so that a changed config.yaml does
not misfile history. ``(device, point, ts)`` is the primary key: writing the
same reading twice stores it once.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from controller.readings import Quality, ReadingBatch
from controller.registry import Device, Registry
from controller.sqlite_worker import SqliteWorker
from controller.telemetry.query import Bucket, LatestReading, Sample

#: Above this many devices, ``latest`` reads the whole table instead of an IN (...) list.
_MAX_SQL_PARAMETERS = 900

_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS device (key INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS point (key INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS reading (
    device INTEGER NOT NULL, point INTEGER NOT NULL, ts INTEGER NOT NULL,
    value REAL, quality INTEGER NOT NULL,
    PRIMARY KEY (device, point, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reading_ts ON reading (ts);
CREATE TABLE IF NOT EXISTS latest (
    device INTEGER NOT NULL, point INTEGER NOT NULL, ts INTEGER NOT NULL,
    value REAL, quality INTEGER NOT NULL,
    PRIMARY KEY (device, point)
) WITHOUT ROWID;
"""


class EmbeddedStore:
    """SQLite storage and queries of readings, with a retention period."""

    name = "embedded"

    def __init__(self, path: Path, registry: Registry, retention_days: float) -> None:
        self.path = path
        self.registry = registry
        self.retention_s = retention_days * 86400.0
        self._db = SqliteWorker(path, [_SCHEMA], "embedded-db")
        self._device_key = np.zeros(len(registry), dtype=np.int64)
        self._point_key = np.zeros((len(registry), max(registry.max_points, 1)), dtype=np.int64)
        self.rows_written = 0

    async def open(self) -> None:
        """Create or open the database and map every device and point to its key."""
        await self._db.open()
        await self._db.run(self._map_keys)
        await self.prune()

    def _map_keys(self, db: sqlite3.Connection) -> None:
        names = {d.id for d in self.registry.devices}
        points = {p.name for d in self.registry.devices for p in d.points}
        db.executemany("INSERT OR IGNORE INTO device (name) VALUES (?)", [(n,) for n in names])
        db.executemany("INSERT OR IGNORE INTO point (name) VALUES (?)", [(n,) for n in points])
        device_keys = dict(db.execute("SELECT name, key FROM device"))
        point_keys = dict(db.execute("SELECT name, key FROM point"))
        for d in self.registry.devices:
            self._device_key[d.index] = device_keys[d.id]
            for i, p in enumerate(d.points):
                self._point_key[d.index, i] = point_keys[p.name]

    async def write(self, batch: ReadingBatch) -> None:
        """Store a batch (a reading stored twice is kept once)."""
        if not len(batch):
            return
        devices = self._device_key[batch.device]
        points = self._point_key[batch.device, batch.point]
        ts = np.round(batch.ts * 1000.0).astype(np.int64)
        bad = batch.quality >= Quality.BAD
        values = np.where(bad, np.nan, batch.value)
        rows = list(
            zip(
                devices.tolist(),
                points.tolist(),
                ts.tolist(),
                [None if v != v else v for v in values.tolist()],
                batch.quality.tolist(),
                strict=True,
            )
        )

        def write_rows(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO reading VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO latest VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, point) DO UPDATE "
                "SET ts = excluded.ts, value = excluded.value, quality = excluded.quality "
                "WHERE excluded.ts >= latest.ts",
                rows,
            )

        await self._db.run(write_rows)
        self.rows_written += len(rows)

    async def prune(self) -> int:
        """Delete readings older than the retention period; returns how many."""
        cutoff = int((time.time() - self.retention_s) * 1000)
        return await self._db.run(
            lambda db: db.execute("DELETE FROM reading WHERE ts < ?", (cutoff,)).rowcount
        )

    def _keys(self, device: Device, point: str) -> tuple[int, int]:
        index = next(i for i, p in enumerate(device.points) if p.name == point)
        return int(self._device_key[device.index]), int(self._point_key[device.index, index])

    async def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return await self._db.run(lambda db: db.execute(sql, args).fetchall())

    async def raw(
        self, device: Device, point: str, start: float, end: float, limit: int
    ) -> list[Sample]:
        """Readings of one point in ``[start, end)``, oldest first."""
        dev, pt = self._keys(device, point)
        rows = await self._query(
            "SELECT ts, value, quality FROM reading WHERE device = ? AND point = ? "
            "AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
            (dev, pt, int(start * 1000), int(end * 1000), limit),
        )
        return [Sample(ts / 1000.0, value, quality) for ts, value, quality in rows]

    async def downsampled(
        self, device: Device, point: str, start: float, end: float, every: float
    ) -> list[Bucket]:
        """Mean, min, max, count per interval (intervals aligned to the epoch, as InfluxDB does)."""
        dev, pt = self._keys(device, point)
        step = max(int(every * 1000), 1)
        rows = await self._query(
            "SELECT (ts / ?) * ? AS bucket, avg(value), min(value), max(value), count(value) "
            "FROM reading WHERE device = ? AND point = ? AND ts >= ? AND ts < ? "
            "AND value IS NOT NULL GROUP BY bucket ORDER BY bucket",
            (step, step, dev, pt, int(start * 1000), int(end * 1000)),
        )
        return [Bucket(b / 1000.0, mean, lo, hi, n) for b, mean, lo, hi, n in rows]

    async def latest(self, devices: list[Device]) -> list[LatestReading]:
        """Newest value of every point of each device."""
        if not devices:
            return []
        by_key = {int(self._device_key[d.index]): d for d in devices}
        sql = (
            "SELECT latest.device, point.name, latest.ts, latest.value FROM latest "
            "JOIN point ON point.key = latest.point"
        )
        args: tuple[int, ...] = ()
        if len(by_key) <= _MAX_SQL_PARAMETERS:
            sql += f" WHERE latest.device IN ({','.join('?' * len(by_key))})"
            args = tuple(by_key)
        rows = await self._query(sql, args)
        return [
            LatestReading(by_key[dev].id, name, ts / 1000.0, value)
            for dev, name, ts, value in rows
            if dev in by_key
        ]

    async def close(self) -> None:
        """Close the database and its worker thread."""
        await self._db.close()
