"""API keys: stored hashed, each with one role.

A key looks like ``ssk_<id>_<secret>``; only the SHA-256 of the secret is
stored (the secret is 32 random bytes, so a fast hash is enough). One more key
can be given by environment variable (STREETSENSE_ADMIN_KEY) for bootstrap:
it acts as an admin and is never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

ADMIN_KEY_ENV = "STREETSENSE_ADMIN_KEY"


class Role(StrEnum):
    """What a key may do."""

    VIEWER = "viewer"
    ENGINEER = "engineer"
    DISPATCHER = "dispatcher"
    FLOOD_DUTY = "flood_duty"
    #: A civic app or hotline system: may only submit reports (Open311).
    REPORTER = "reporter"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    key_id: str
    name: str
    role: Role


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, without its secret."""

    key_id: str
    name: str
    role: Role
    created_at: float
    revoked_at: float | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ApiKeyStore:
    """Keys in a small SQLite file; lookups are quick enough to run in the request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS api_key (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "role TEXT NOT NULL, hash TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL)"
        )
        self._db.commit()

    def create(self, name: str, role: Role) -> str:
        """A new key; the returned token is shown once and never stored."""
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO api_key VALUES (?, ?, ?, ?, ?, NULL)",
                (key_id, name, role.value, _hash(secret), time.time()),
            )
        return f"ssk_{key_id}_{secret}"

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if there is no such active key."""
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE api_key SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
        return cur.rowcount == 1

    def revoke_named(self, name: str) -> int:
        """Revoke every active key with this name."""
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE api_key SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
        return cur.rowcount

    def list(self) -> list[KeyInfo]:
        """Every key (active and revoked)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, role, created_at, revoked_at FROM api_key ORDER BY created_at"
            ).fetchall()
        return [KeyInfo(r[0], r[1], Role(r[2]), r[3], r[4]) for r in rows]

    def verify(self, token: str) -> Principal | None:
        """The caller a token belongs to, or None."""
        env_key = os.environ.get(ADMIN_KEY_ENV)
        if env_key and hmac.compare_digest(token.encode(), env_key.encode()):
            return Principal("env", "admin (environment)", Role.ADMIN)
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "ssk":
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, hash FROM api_key WHERE id = ? AND revoked_at IS NULL",
                (parts[1],),
            ).fetchone()
        if row is None or not hmac.compare_digest(row[2], _hash(parts[2])):
            return None
        return Principal(parts[1], row[0], Role(row[1]))

    def active(self, key_id: str) -> bool:
        """Whether a key id is still valid (the environment's admin key while it is set)."""
        if key_id == "env":
            return bool(os.environ.get(ADMIN_KEY_ENV))
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM api_key WHERE id = ? AND revoked_at IS NULL", (key_id,)
            ).fetchone()
        return row is not None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
