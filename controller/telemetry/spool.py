"""A crash-safe, bounded, ordered spool of payloads: one SQLite file per sink.

Every payload is appended here *before* its first send and deleted only when
the server has acknowledged it, so a kill -9 at any moment loses nothing that
reached the spool. SQLite in WAL mode gives the crash safety; appends are
grouped into one transaction (one fsync per batch, not per payload), acks are
cheap (no fsync: a lost ack means one payload is sent again, which InfluxDB
overwrites and MQTT allows, delivery being at least once).

Each record carries its length and CRC-32. A record that does not match (a
torn write, flipped bytes) is set aside in ``rejected/`` with the reason,
counted, logged and never sent; a database file SQLite itself cannot read is
set aside whole and a new one started. Payload files of the spool before
SQLite (``*.spool``) are taken over in order at open.

When the spool is full, ``refuse_new`` refuses the new batch and
``drop_oldest`` deletes the oldest records to make room; either acts on whole
batches, counts points, and logs once per episode.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

log = logging.getLogger(__name__)

SpoolPolicy = Literal["refuse_new", "drop_oldest"]
#: Payload bytes of recent records also kept in memory, so sending them needs no read.
CACHE_BYTES = 64 * 1024 * 1024
T = TypeVar("T")
DATABASE = "spool.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    points INTEGER NOT NULL,
    length INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    payload BLOB NOT NULL
)
"""


class SpoolItem(NamedTuple):
    """One payload to keep and how many points (lines, messages, readings) it carries."""

    payload: bytes
    points: int


@dataclass(frozen=True)
class SpoolRecord:
    """A payload read back from the spool, checked against its length and checksum."""

    seq: int
    created: float
    points: int
    payload: bytes


class _Meta(NamedTuple):
    seq: int
    created: float
    points: int
    length: int


@dataclass
class SpoolStats:
    """What the spool holds, has refused, dropped and set aside."""

    records: int = 0
    bytes: int = 0
    points: int = 0
    spooled_records: int = 0
    spooled_points: int = 0
    refused_records: int = 0
    refused_points: int = 0
    dropped_records: int = 0
    dropped_points: int = 0
    rejected_records: int = 0
    full_episodes: int = 0
    write_errors: int = 0
    last_write_error: str = ""
    #: True from the first refusal or drop until a batch fits again.
    full: bool = False


class DiskSpool:
    """Records in ``folder/spool.sqlite``, oldest first, at most ``max_bytes`` of payload."""

    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        name: str,
        policy: SpoolPolicy = "refuse_new",
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.name = name
        self.policy = policy
        self.stats = SpoolStats()
        self._meta: collections.deque[_Meta] = collections.deque()
        self._db: sqlite3.Connection | None = None
        # One thread per spool: SQLite calls are serialized, and never run on the event loop.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"spool-{name}")
        self._in_flight: set[int] = set()
        self._dropped_in_flight: dict[int, int] = {}
        self._cache: dict[int, bytes] = {}
        self._cache_bytes = 0

    @property
    def rejected_folder(self) -> Path:
        """Where records that cannot be sent are set aside, each with its reason."""
        return self.folder / "rejected"

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self) -> None:
        """Open (or create) the database and take stock of what an earlier run left."""
        await self._call(self._open)
        if self._meta:
            log.warning(
                "%s spool: %d records (%d points, %d bytes) from an earlier run will be replayed",
                self.name,
                self.stats.records,
                self.stats.points,
                self.stats.bytes,
            )

    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # Payloads are large blobs: big pages keep their overflow chains short. Takes
        # effect only when the file is created (before WAL is switched on).
        db.execute("PRAGMA page_size=65536")
        db.execute("PRAGMA journal_mode=WAL")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            db.close()
            raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
        db.execute(_SCHEMA)
        return db

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / DATABASE
        try:
            db = self._connect(path)
        except sqlite3.DatabaseError as exc:
            self._set_aside_database(path, str(exc))
            db = self._connect(path)
        self._db = db
        self._take_over_files()
        rows = db.execute("SELECT seq, created, points, length FROM records ORDER BY seq")
        self._meta = collections.deque(_Meta(*row) for row in rows)
        self.stats.records = len(self._meta)
        self.stats.bytes = sum(m.length for m in self._meta)
        self.stats.points = sum(m.points for m in self._meta)

    def _set_aside_database(self, path: Path, reason: str) -> None:
        """A spool SQLite cannot read: keep it for a person, start a new one."""
        folder = self.rejected_folder
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.time():.6f}"
        for suffix in ("", "-wal", "-shm"):
            part = path.with_name(path.name + suffix)
            if part.exists():
                part.rename(folder / f"{stamp}.{part.name}")
        (folder / f"{stamp}.reason.txt").write_text(
            f"spool database unreadable: {reason}\n", encoding="utf-8"
        )
        self.stats.rejected_records += 1
        log.error(
            "%s spool: the database could not be read (%s); set aside in %s, starting a new one",
            self.name,
            reason,
            folder,
        )

    def _take_over_files(self) -> None:
        """Payload files of the spool format before SQLite, oldest first."""
        files = sorted(
            (p for p in self.folder.iterdir() if p.suffix == ".spool" and p.stem.isdigit()),
            key=lambda p: int(p.stem),
        )
        for path in self.folder.glob("*.tmp"):
            path.unlink()  # a write a crash interrupted; its payload was never accepted
        if not files:
            return
        db = self._require()
        db.execute("BEGIN IMMEDIATE")
        for path in files:
            payload = path.read_bytes()
            self._insert(db, [SpoolItem(payload, payload.count(b"\n"))])
        db.execute("COMMIT")
        for path in files:
            path.unlink()
        log.warning("%s spool: took over %d payload files of the old format", self.name, len(files))

    def __len__(self) -> int:
        return len(self._meta)

    @property
    def first_seq(self) -> int | None:
        """Sequence number of the oldest pending record."""
        return self._meta[0].seq if self._meta else None

    @property
    def oldest_created(self) -> float | None:
        """When the oldest pending record was spooled (Unix time), None when empty."""
        return self._meta[0].created if self._meta else None

    async def append(self, items: Sequence[SpoolItem]) -> bool:
        """Keep a batch of payloads after all earlier ones, durably; False if refused.

        The batch is kept or refused whole. ``drop_oldest`` makes room by deleting
        the oldest records.
        """
        items = [i for i in items if i.payload]
        if not items:
            return True
        size = sum(len(i.payload) for i in items)
        points = sum(i.points for i in items)
        drop: list[_Meta] = []
        if self.stats.bytes + size > self.max_bytes:
            drop = self._oldest_to_drop(size) if self.policy == "drop_oldest" else []
            if self.policy == "refuse_new" or not drop:
                self._refuse(len(items), points)
                return False
        new = await self._call(self._append, items, [m.seq for m in drop])
        self._meta.extend(new)
        if self._cache_bytes + size <= CACHE_BYTES:
            self._cache.update((m.seq, i.payload) for m, i in zip(new, items, strict=True))
            self._cache_bytes += size
        self.stats.spooled_records += len(new)
        self.stats.spooled_points += points
        self.stats.records += len(new)
        self.stats.bytes += size
        self.stats.points += points
        if drop:
            self._dropped(drop)
        elif self.stats.full:
            self._episode_over()
        return True

    def _oldest_to_drop(self, size: int) -> list[_Meta]:
        need = self.stats.bytes + size - self.max_bytes
        out: list[_Meta] = []
        for meta in self._meta:
            if need <= 0:
                break
            out.append(meta)
            need -= meta.length
        return out if need <= 0 else []

    def _append(self, items: list[SpoolItem], drop: list[int]) -> list[_Meta]:
        """One transaction, so one fsync of the WAL for the whole batch."""
        db = self._require()
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            if drop:
                db.executemany("DELETE FROM records WHERE seq = ?", [(s,) for s in drop])
            new = self._insert(db, items)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new

    @staticmethod
    def _insert(db: sqlite3.Connection, items: Sequence[SpoolItem]) -> list[_Meta]:
        now = time.time()
        new: list[_Meta] = []
        for item in items:
            cursor = db.execute(
                "INSERT INTO records (created, points, length, crc, payload) VALUES (?,?,?,?,?)",
                (now, item.points, len(item.payload), zlib.crc32(item.payload), item.payload),
            )
            assert cursor.lastrowid is not None
            new.append(_Meta(cursor.lastrowid, now, item.points, len(item.payload)))
        return new

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.name} spool is not open")
        return self._db

    def _refuse(self, records: int, points: int) -> None:
        self.stats.refused_records += records
        self.stats.refused_points += points
        self._episode_starts(
            "new data is NOT being kept until the server is back (policy refuse_new)"
        )

    def could_not_keep(self, items: Sequence[SpoolItem], exc: BaseException) -> None:
        """A batch the spool failed to write (its disk failed): counted as refused."""
        self.stats.refused_records += len(items)
        self.stats.refused_points += sum(i.points for i in items)
        self.stats.write_errors += 1
        self.stats.last_write_error = f"{type(exc).__name__}: {exc}"
        if self.stats.write_errors == 1 or not self.stats.full:
            log.error("%s spool cannot write (%s): this batch is lost", self.name, exc)
        self.stats.full = True

    def _dropped(self, drop: list[_Meta]) -> None:
        # Being sent right now: if the send succeeds after all, they were not lost.
        self._dropped_in_flight.update({m.seq: m.points for m in drop if m.seq in self._in_flight})
        self._remove([m.seq for m in drop])
        self.stats.dropped_records += len(drop)
        self.stats.dropped_points += sum(m.points for m in drop)
        self._episode_starts("the OLDEST data is being deleted to keep the newest (drop_oldest)")

    def _episode_starts(self, what: str) -> None:
        if self.stats.full:
            return
        self.stats.full = True
        self.stats.full_episodes += 1
        log.error(
            "%s spool FULL at %d bytes (limit %d): %s; raise storage.spool.max_bytes or fix "
            "the outage",
            self.name,
            self.stats.bytes,
            self.max_bytes,
            what,
        )

    def _episode_over(self) -> None:
        self.stats.full = False
        log.warning(
            "%s spool accepts data again (%d points refused, %d dropped so far)",
            self.name,
            self.stats.refused_points,
            self.stats.dropped_points,
        )

    def _forget(self, metas: Sequence[_Meta]) -> None:
        for m in metas:
            if self._cache.pop(m.seq, None) is not None:
                self._cache_bytes -= m.length
        self.stats.records -= len(metas)
        self.stats.bytes -= sum(m.length for m in metas)
        self.stats.points -= sum(m.points for m in metas)

    async def oldest(self, max_points: int, max_records: int = 10_000) -> list[SpoolRecord]:
        """The oldest records, in order, up to ``max_points`` (always at least one).

        Records that fail their check are set aside on the way and not returned.
        """
        while self._meta:
            take: list[_Meta] = []
            points = 0
            for meta in self._meta:
                if take and (points + meta.points > max_points or len(take) >= max_records):
                    break
                take.append(meta)
                points += meta.points
            cached = [self._cache.get(m.seq) for m in take]
            if all(c is not None for c in cached):
                return self._sending(
                    [
                        SpoolRecord(m.seq, m.created, m.points, c)
                        for m, c in zip(take, cached, strict=True)
                        if c is not None
                    ]
                )
            records, corrupt, missing = await self._call(self._read, [m.seq for m in take])
            if missing:
                log.error(
                    "%s spool: %d records vanished from the database", self.name, len(missing)
                )
                self._remove(missing)
            for seq, reason, payload in corrupt:
                await self._set_aside([seq], payload, reason)
            if records:
                return self._sending(records)
        return []

    def _sending(self, records: list[SpoolRecord]) -> list[SpoolRecord]:
        """Mark ``records`` as the ones being sent, and hand them out."""
        # The previous send has ended without an ack: what was dropped meanwhile is lost.
        self._dropped_in_flight.clear()
        self._in_flight = {r.seq for r in records}
        return records

    def _read(
        self, seqs: list[int]
    ) -> tuple[list[SpoolRecord], list[tuple[int, str, bytes]], list[int]]:
        db = self._require()
        marks = ",".join("?" * len(seqs))
        rows = db.execute(
            f"SELECT seq, created, points, length, crc, payload FROM records "
            f"WHERE seq IN ({marks}) ORDER BY seq",
            seqs,
        ).fetchall()
        good: list[SpoolRecord] = []
        bad: list[tuple[int, str, bytes]] = []
        for seq, created, points, length, crc, payload in rows:
            data = bytes(payload)
            if len(data) != length:
                bad.append((seq, f"torn record: {len(data)} of {length} bytes", data))
            elif zlib.crc32(data) != crc:
                bad.append((seq, "corrupt record: checksum does not match", data))
            elif bad:
                break  # keep order: what follows a bad record waits for the next read
            else:
                good.append(SpoolRecord(seq, created, points, data))
        found = {row[0] for row in rows}
        return good, bad, [s for s in seqs if s not in found]

    async def ack(self, records: Sequence[SpoolRecord]) -> None:
        """Forget records the server has acknowledged."""
        seqs = [r.seq for r in records]
        await self._call(self._delete, seqs)
        self._remove(seqs)
        for seq in seqs:
            points = self._dropped_in_flight.pop(seq, None)
            if points is not None:
                self.stats.dropped_records -= 1
                self.stats.dropped_points -= points

    def _delete(self, seqs: list[int]) -> None:
        db = self._require()
        # No fsync for acks: a lost delete resends a payload, never loses one.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executemany("DELETE FROM records WHERE seq = ?", [(s,) for s in seqs])

    def _remove(self, seqs: Sequence[int]) -> None:
        gone = set(seqs)
        self._in_flight -= gone
        removed = []
        while self._meta and self._meta[0].seq in gone:
            removed.append(self._meta.popleft())
        if len(removed) < len(gone):
            rest = [m for m in self._meta if m.seq in gone]
            removed += rest
            self._meta = collections.deque(m for m in self._meta if m.seq not in gone)
        self._forget(removed)

    async def set_aside(self, records: Sequence[SpoolRecord], reason: str) -> Path:
        """Move records the server refused for good to ``rejected/`` with the reason."""
        return await self._set_aside(
            [r.seq for r in records], b"".join(r.payload for r in records), reason
        )

    async def _set_aside(self, seqs: list[int], payload: bytes, reason: str) -> Path:
        path = await self._call(self._write_rejected, seqs, payload, reason)
        self._remove(seqs)
        self.stats.rejected_records += len(seqs)
        log.error("%s spool: %s; set aside in %s, not sent", self.name, reason, path)
        return path

    def _write_rejected(self, seqs: list[int], payload: bytes, reason: str) -> Path:
        folder = self.rejected_folder
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.time():.6f}-{seqs[0]}"
        (folder / f"{stamp}.reason.txt").write_text(reason + "\n", encoding="utf-8")
        path = folder / f"{stamp}.payload"
        path.write_bytes(payload)
        self._delete(seqs)
        return path

    async def close(self) -> None:
        """Close the database and the spool's thread."""
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)
