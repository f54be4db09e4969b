"""The embedded store: readings in SQLite, the default when no InfluxDB is configured.

Readings are stored in columns: one row per device per batch (a ``chunk``),
its points, times, values and qualities as packed arrays. A poll of a whole
city is then a few thousand row inserts in one transaction instead of half a
million, which made the store ten times faster than one row per reading and
no longer the slowest part of ingest. Queries for one point read that
device's chunks in the time window and cut them with numpy.

All database work runs on one worker thread (SQLite connections are not for
sharing, and the event loop must not wait on disk). Devices and points are
stored by key, through small name tables, so that a changed config.yaml does
not misfile history. Writing the same reading twice keeps it once in every
answer (a replayed batch adds a chunk; queries keep the last of equal times).
Rows of the earlier one-row-per-reading table are still read.

The newest value of every point is kept in memory and written to the
``latest`` table at most every ``LATEST_FLUSH_S``; chunks written after the
last flush are replayed on open, so it is exact after a crash too.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.registry import Device, Registry
from controller.sqlite_worker import SqliteWorker
from controller.telemetry.query import Bucket, LatestReading, Sample
from drivers.readings import Quality, ReadingBatch, milliseconds

#: Seconds between writes of the in-memory newest values to the ``latest`` table.
LATEST_FLUSH_S = 30.0

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
CREATE TABLE IF NOT EXISTS chunk (
    device INTEGER NOT NULL, first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    points BLOB NOT NULL, ts BLOB NOT NULL, value BLOB NOT NULL, quality BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunk_device ON chunk (device, last_ts);
CREATE INDEX IF NOT EXISTS chunk_last_ts ON chunk (last_ts);
CREATE TABLE IF NOT EXISTS latest (
    device INTEGER NOT NULL, point INTEGER NOT NULL, ts INTEGER NOT NULL,
    value REAL, quality INTEGER NOT NULL,
    PRIMARY KEY (device, point)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

#: Packed column types of a chunk (little-endian, fixed width).
_POINT = np.dtype("<i4")
_TS = np.dtype("<i8")
_VALUE = np.dtype("<f8")
_QUALITY = np.dtype("u1")


class _Samples:
    """One point's readings (ms, value with NaN for none, quality), merged and de-duplicated."""

    def __init__(
        self,
        ts: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint8],
    ) -> None:
        # The last written of equal times wins (as INSERT OR REPLACE did): reverse,
        # take the first of each time, and sort by time.
        ts, value, quality = ts[::-1], value[::-1], quality[::-1]
        _, first = np.unique(ts, return_index=True)
        self.ts, self.value, self.quality = ts[first], value[first], quality[first]


def _read_point(db: sqlite3.Connection, dev: int, pt: int, start: int, end: int) -> _Samples:
    """Every reading of one point in ``[start, end)`` ms, from chunks and the old table."""
    ts_parts: list[npt.NDArray[np.int64]] = []
    value_parts: list[npt.NDArray[np.float64]] = []
    quality_parts: list[npt.NDArray[np.uint8]] = []
    old = db.execute(
        "SELECT ts, value, quality FROM reading WHERE device = ? AND point = ? "
        "AND ts >= ? AND ts < ? ORDER BY ts",
        (dev, pt, start, end),
    ).fetchall()
    if old:
        ts_parts.append(np.asarray([r[0] for r in old], dtype=np.int64))
        value_parts.append(np.asarray([np.nan if r[1] is None else r[1] for r in old]))
        quality_parts.append(np.asarray([r[2] for r in old], dtype=np.uint8))
    for points, ts, value, quality in db.execute(
        "SELECT points, ts, value, quality FROM chunk WHERE device = ? AND last_ts >= ? "
        "AND first_ts < ? ORDER BY rowid",
        (dev, start, end),
    ):
        times = np.frombuffer(ts, _TS)
        keep = (np.frombuffer(points, _POINT) == pt) & (times >= start) & (times < end)
        if keep.any():
            ts_parts.append(times[keep].astype(np.int64))
            value_parts.append(np.frombuffer(value, _VALUE)[keep].astype(np.float64))
            quality_parts.append(np.frombuffer(quality, _QUALITY)[keep])
    if not ts_parts:
        empty = np.empty(0, np.int64)
        return _Samples(empty, np.empty(0), np.empty(0, np.uint8))
    return _Samples(
        np.concatenate(ts_parts), np.concatenate(value_parts), np.concatenate(quality_parts)
    )


def stored_polls(path: Path) -> set[tuple[str, int]]:
    """(device name, ms) of every poll in a store file (for tests and tools; blocking)."""
    out: set[tuple[str, int]] = set()
    with contextlib.closing(sqlite3.connect(path)) as db:
        names = dict(db.execute("SELECT key, name FROM device"))
        for key, ts in db.execute("SELECT DISTINCT device, ts FROM reading"):
            out.add((names[key], int(ts)))
        for key, ts in db.execute("SELECT device, ts FROM chunk"):
            out.update((names[key], int(t)) for t in np.unique(np.frombuffer(ts, _TS)))
    return out


class EmbeddedStore:
    """SQLite storage and queries of readings, with a retention period."""

    name = "embedded"

    def __init__(
        self,
        path: Path,
        registry: Registry,
        retention_days: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.registry = registry
        self.retention_s = retention_days * 86400.0
        self._db = SqliteWorker(path, [_SCHEMA], "embedded-db")
        shape = (len(registry), max(registry.max_points, 1))
        self._device_key = np.zeros(len(registry), dtype=np.int64)
        self._point_key = np.zeros(shape, dtype=np.int64)
        #: Newest reading of every (device, point): ms (-1: none), value (NaN: none), quality.
        self._latest_ts = np.full(shape, -1, dtype=np.int64)
        self._latest_value = np.full(shape, np.nan)
        self._latest_quality = np.zeros(shape, dtype=np.uint8)
        self._latest_dirty = np.zeros(shape, dtype=bool)
        self._clock = clock
        self._flushed_at = clock()
        self.rows_written = 0

    async def open(self) -> None:
        """Create or open the database, map devices and points to keys, load the newest values."""
        await self._db.open()
        await self._db.run(self._map_keys)
        await self._db.run(self._load_latest)
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

    def _load_latest(self, db: sqlite3.Connection) -> None:
        """The ``latest`` table, then every chunk written after its last flush."""
        device_of = {int(k): i for i, k in enumerate(self._device_key.tolist())}
        slot_of = {
            (int(self._device_key[d.index]), int(self._point_key[d.index, i])): (d.index, i)
            for d in self.registry.devices
            for i in range(len(d.points))
        }
        for dev, pt, ts, value, quality in db.execute("SELECT * FROM latest"):
            slot = slot_of.get((dev, pt))
            if slot is not None:
                self._latest_ts[slot] = ts
                self._latest_value[slot] = np.nan if value is None else value
                self._latest_quality[slot] = quality
        row = db.execute("SELECT value FROM meta WHERE key = 'latest_rowid'").fetchone()
        since = row[0] if row else 0
        point_index = {(int(k), int(pk)): i for (k, pk), (_, i) in slot_of.items()}
        for dev, points, ts, value, quality in db.execute(
            "SELECT device, points, ts, value, quality FROM chunk WHERE rowid > ? ORDER BY rowid",
            (since,),
        ):
            index = device_of.get(dev)
            if index is None:
                continue
            keys = np.frombuffer(points, _POINT)
            slots = [point_index.get((dev, int(k)), -1) for k in keys]
            self._note_latest(
                np.full(len(keys), index),
                np.asarray(slots),
                np.frombuffer(ts, _TS),
                np.frombuffer(value, _VALUE),
                np.frombuffer(quality, _QUALITY),
            )

    def _note_latest(
        self,
        device: npt.NDArray[Any],
        point: npt.NDArray[Any],
        ts: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint8],
    ) -> None:
        keep = point >= 0
        device, point, ts, value, quality = (
            device[keep],
            point[keep],
            ts[keep],
            value[keep],
            quality[keep],
        )
        newer = ts >= self._latest_ts[device, point]
        if not newer.any():
            return
        order = np.argsort(ts[newer], kind="stable")  # the newest is assigned last, and wins
        d, p = device[newer][order], point[newer][order]
        self._latest_ts[d, p] = ts[newer][order]
        self._latest_value[d, p] = value[newer][order]
        self._latest_quality[d, p] = quality[newer][order]
        self._latest_dirty[d, p] = True

    async def write(self, batch: ReadingBatch) -> None:
        """Store a batch: one chunk per device, in one transaction."""
        if not len(batch):
            return
        order = np.argsort(batch.device, kind="stable")
        device = batch.device[order]
        point = batch.point[order].astype(np.int64)
        ts = milliseconds(batch.ts[order])
        quality = batch.quality[order]
        values = np.where(quality >= Quality.BAD, np.nan, batch.value[order])
        point_keys = self._point_key[device, point].astype(_POINT)
        ts_le, values_le, quality_u1 = (
            ts.astype(_TS),
            values.astype(_VALUE),
            quality.astype(_QUALITY),
        )
        starts = np.flatnonzero(np.r_[True, device[1:] != device[:-1]])
        ends = np.r_[starts[1:], len(device)]
        keys = self._device_key[device[starts]].tolist()
        first_ts = np.minimum.reduceat(ts, starts).tolist()
        last_ts = np.maximum.reduceat(ts, starts).tolist()
        rows = [
            (
                keys[k],
                first_ts[k],
                last_ts[k],
                point_keys[a:b].tobytes(),
                ts_le[a:b].tobytes(),
                values_le[a:b].tobytes(),
                quality_u1[a:b].tobytes(),
            )
            for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True))
        ]
        self._note_latest(device, point, ts, values, quality)
        flush = self._clock() - self._flushed_at >= LATEST_FLUSH_S
        latest = self._dirty_latest() if flush else []

        def write_rows(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT INTO chunk VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                if flush:
                    self._write_latest(db, latest)

        await self._db.run(write_rows)
        if flush:
            self._flushed_at = self._clock()
        self.rows_written += len(batch)

    def _dirty_latest(self) -> list[tuple[int, int, int, float | None, int]]:
        """Rows of the newest values changed since the last flush (and mark them clean)."""
        d, p = np.nonzero(self._latest_dirty)
        self._latest_dirty[d, p] = False
        values = self._latest_value[d, p].tolist()
        return list(
            zip(
                self._device_key[d].tolist(),
                self._point_key[d, p].tolist(),
                self._latest_ts[d, p].tolist(),
                [None if v != v else v for v in values],
                self._latest_quality[d, p].tolist(),
                strict=True,
            )
        )

    @staticmethod
    def _write_latest(
        db: sqlite3.Connection, rows: list[tuple[int, int, int, float | None, int]]
    ) -> None:
        db.executemany("INSERT OR REPLACE INTO latest VALUES (?, ?, ?, ?, ?)", rows)
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('latest_rowid', "
            "(SELECT coalesce(max(rowid), 0) FROM chunk))"
        )

    async def prune(self) -> int:
        """Delete readings older than the retention period; returns how many."""
        cutoff = int((time.time() - self.retention_s) * 1000)

        def delete(db: sqlite3.Connection) -> int:
            with db:
                old = db.execute("DELETE FROM reading WHERE ts < ?", (cutoff,)).rowcount
                # Whole chunks (one poll each): a chunk is kept while any reading in it is.
                gone = db.execute(
                    "SELECT coalesce(sum(length(ts)), 0) / 8 FROM chunk WHERE last_ts < ?",
                    (cutoff,),
                ).fetchone()[0]
                db.execute("DELETE FROM chunk WHERE last_ts < ?", (cutoff,))
            return int(old + gone)

        return await self._db.run(delete)

    def _keys(self, device: Device, point: str) -> tuple[int, int]:
        index = next(i for i, p in enumerate(device.points) if p.name == point)
        return int(self._device_key[device.index]), int(self._point_key[device.index, index])

    async def raw(
        self, device: Device, point: str, start: float, end: float, limit: int
    ) -> list[Sample]:
        """Readings of one point in ``[start, end)``, oldest first."""
        dev, pt = self._keys(device, point)
        samples = await self._db.run(
            lambda db: _read_point(db, dev, pt, int(start * 1000), int(end * 1000))
        )
        ts, values = samples.ts[:limit].tolist(), samples.value[:limit].tolist()
        return [
            Sample(t / 1000.0, None if v != v else v, q)
            for t, v, q in zip(ts, values, samples.quality[:limit].tolist(), strict=True)
        ]

    async def downsampled(
        self, device: Device, point: str, start: float, end: float, every: float
    ) -> list[Bucket]:
        """Mean, min, max, count per interval (intervals aligned to the epoch, as InfluxDB does)."""
        dev, pt = self._keys(device, point)
        step = max(int(every * 1000), 1)
        samples = await self._db.run(
            lambda db: _read_point(db, dev, pt, int(start * 1000), int(end * 1000))
        )
        good = ~np.isnan(samples.value)
        buckets = (samples.ts[good] // step) * step
        values = samples.value[good]
        if not len(values):
            return []
        edges = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        counts = np.diff(np.r_[edges, len(values)])
        sums = np.add.reduceat(values, edges)
        lows = np.minimum.reduceat(values, edges)
        highs = np.maximum.reduceat(values, edges)
        return [
            Bucket(b / 1000.0, total / n, lo, hi, n)
            for b, total, lo, hi, n in zip(
                buckets[edges].tolist(),
                sums.tolist(),
                lows.tolist(),
                highs.tolist(),
                counts.tolist(),
                strict=True,
            )
        ]

    async def latest(self, devices: list[Device]) -> list[LatestReading]:
        """Newest value of every point of each device."""
        out = []
        for d in devices:
            for i, p in enumerate(d.points):
                ts = int(self._latest_ts[d.index, i])
                if ts >= 0:
                    value = float(self._latest_value[d.index, i])
                    out.append(
                        LatestReading(d.id, p.name, ts / 1000.0, None if value != value else value)
                    )
        return out

    async def close(self) -> None:
        """Write the newest values, close the database and its worker thread."""
        rows = self._dirty_latest()

        def flush(db: sqlite3.Connection) -> None:
            with db:
                self._write_latest(db, rows)

        with contextlib.suppress(Exception):
            await self._db.run(flush)
        await self._db.close()
