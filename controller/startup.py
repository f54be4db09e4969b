"""What must hold before the controller starts, each failure one line a person can act on.

A service that cannot start should say what is wrong in words an IT team can
fix (a port taken, a folder it may not write, a database it cannot open), not
with a traceback, and exit non-zero so systemd records the failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

EXIT_STARTUP = 3
#: A node of a pair whose lease another node took (EX_TEMPFAIL: start it again).
EXIT_DEPOSED = 75


class StartupError(Exception):
    """The controller cannot start; the message is the whole explanation."""


def check_data_dir(folder: Path) -> None:
    """Create the data folder if needed and prove that files can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise StartupError(
            f"data folder {folder} cannot be written: {exc.strerror or exc} "
            "(set data_dir in the config or STREETSENSE_DATA_DIR)"
        ) from exc


def listen_socket(host: str, port: int, what: str = "API") -> socket.socket:
    """A bound, listening TCP socket, or a StartupError naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupError(f"cannot listen on {host}:{port} for the {what}: {reason}") from exc
    sock.set_inheritable(False)
    os.set_blocking(sock.fileno(), False)
    return sock


@contextlib.asynccontextmanager
async def opening(what: str) -> AsyncIterator[None]:
    """Turn any failure while opening a store into a StartupError that names it."""
    try:
        yield
    except StartupError:
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"cannot open {what}: {detail}") from exc
