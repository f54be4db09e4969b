"""One controller per data folder: a lock file held for the life of the process.

Two controllers on one data folder would both poll and both command the city,
and a restore under a running controller would be overwritten by it. The lock
is an advisory ``flock`` on ``streetsense.lock``: the kernel drops it when the
process ends, however it ends (kill -9 included), so it is never stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from controller.startup import StartupError

LOCK_NAME = "streetsense.lock"


def _holder(file: IO[str]) -> str:
    file.seek(0)
    pid = file.read().strip()
    return f"pid {pid}" if pid else "an unknown process"


class DataDirLock:
    """The data folder, held by this process until :meth:`release` or its end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the folder, or a StartupError naming the process that has it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+", encoding="ascii")  # noqa: SIM115 - held past this call
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(file)
            file.close()
            raise StartupError(
                f"data folder {self.folder} is in use by another controller ({holder}); "
                "stop it first, or give this one its own data_dir"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        """Let the folder go."""
        if self._file is not None:
            self._file.close()
            self._file = None


def holder_of(folder: Path) -> str | None:
    """Who holds the data folder (``pid N``), or None if no controller runs on it."""
    path = folder / LOCK_NAME
    if not path.exists():
        return None
    with open(path, encoding="ascii") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(file)
        fcntl.flock(file, fcntl.LOCK_UN)
    return None
