"""One SQLite connection on a thread of its own, so the event loop never waits on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SqliteWorker:
    """Runs functions of a connection on one worker thread (SQLite wants one writer)."""

    def __init__(self, path: Path, schema: list[str], name: str) -> None:
        """``schema``: idempotent DDL, each item one statement or a script of several."""
        self.path = path
        self._schema = schema
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the folder, open the file and apply the schema (idempotent DDL)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        await self.run_raw(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        for script in self._schema:
            db.executescript(script)
        db.commit()
        self._db = db

    async def run_raw(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread."""
        if self._executor is None:
            raise RuntimeError(f"{self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread, inside a transaction."""

        def call() -> T:
            if self._db is None:
                raise RuntimeError(f"{self.path} is not open")
            with self._db:
                return fn(self._db)

        return await self.run_raw(call)

    async def close(self) -> None:
        """Close the connection and the thread."""
        if self._db is not None:
            await self.run_raw(self._db.close)
            self._db = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
