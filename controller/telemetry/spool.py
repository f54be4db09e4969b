"""A bounded, ordered spool of payloads on disk, for when a server is away.

Each payload is one file named by a sequence number, written to a temporary
name and renamed, so a crash leaves either the whole payload or none of it.
Files are replayed oldest first; a restart finds them and carries on. When the
spool is full, new payloads are refused (and counted, with one clear log line
per outage): what is already on disk is never thrown away.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class SpoolStats:
    """What the spool holds and has refused."""

    files: int = 0
    bytes: int = 0
    spooled_total: int = 0
    refused_total: int = 0
    refused_bytes: int = 0


class DiskSpool:
    """Payload files in ``folder``, oldest first, at most ``max_bytes`` in all."""

    def __init__(self, folder: Path, max_bytes: int, name: str) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.name = name
        self.stats = SpoolStats()
        self._next_seq = 0
        self._full_logged = False
        self._sizes: dict[int, int] = {}

    async def open(self) -> None:
        """Create the folder and take stock of payloads left by an earlier run."""
        self._sizes = await asyncio.to_thread(self._scan)
        self._next_seq = max(self._sizes, default=-1) + 1
        self.stats.files = len(self._sizes)
        self.stats.bytes = sum(self._sizes.values())
        if self._sizes:
            log.warning(
                "%s spool: %d payloads (%d bytes) from an earlier run will be replayed",
                self.name,
                self.stats.files,
                self.stats.bytes,
            )

    def _scan(self) -> dict[int, int]:
        self.folder.mkdir(parents=True, exist_ok=True)
        sizes = {}
        for path in self.folder.iterdir():
            if path.suffix == ".tmp":
                path.unlink()  # a write that a crash interrupted; its payload was never accepted
            elif path.suffix == ".spool" and path.stem.isdigit():
                sizes[int(path.stem)] = path.stat().st_size
        return sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def _path(self, seq: int) -> Path:
        return self.folder / f"{seq:012d}.spool"

    async def append(self, payload: bytes) -> bool:
        """Keep ``payload`` after all earlier ones; False if the spool is full."""
        if self.stats.bytes + len(payload) > self.max_bytes:
            self.stats.refused_total += 1
            self.stats.refused_bytes += len(payload)
            if not self._full_logged:
                log.error(
                    "%s spool FULL at %d bytes (limit %d): new data is NOT being kept until "
                    "the server is back; raise spool max_bytes or fix the outage",
                    self.name,
                    self.stats.bytes,
                    self.max_bytes,
                )
                self._full_logged = True
            return False
        seq = self._next_seq
        self._next_seq += 1
        await asyncio.to_thread(self._write, seq, payload)
        self._sizes[seq] = len(payload)
        self.stats.files += 1
        self.stats.bytes += len(payload)
        self.stats.spooled_total += 1
        return True

    def _write(self, seq: int, payload: bytes) -> None:
        final = self._path(seq)
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.rename(final)

    async def peek(self) -> bytes | None:
        """The oldest payload, or None when the spool is empty."""
        if not self._sizes:
            return None
        seq = min(self._sizes)
        return await asyncio.to_thread(self._path(seq).read_bytes)

    async def pop(self) -> None:
        """Forget the oldest payload (it has been delivered)."""
        seq = min(self._sizes)
        await asyncio.to_thread(self._path(seq).unlink)
        self.stats.bytes -= self._sizes.pop(seq)
        self.stats.files -= 1
        if not self._sizes:
            self._full_logged = False
