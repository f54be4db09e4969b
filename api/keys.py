"""API keys: stored hashed in the state database, each with one role.

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
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, select

from api.remembered import Remembered
from controller.state.database import StateDatabase
from controller.state.tables import api_key

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
    """Keys in the state database, shared by every controller on it; a verified key is
    remembered for a moment (:mod:`api.remembered`)."""

    def __init__(self, db: StateDatabase) -> None:
        self.db = db
        self._known: Remembered[str, _KnownKey] = Remembered()

    async def create(self, name: str, role: Role) -> str:
        """A new key; the returned token is shown once and never stored."""
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        row = {"id": key_id, "name": name, "role": role.value, "hash": _hash(secret)}
        async with self.db.connected().begin() as conn:
            await conn.execute(api_key.insert().values({**row, "created_at": time.time()}))
        return f"ssk_{key_id}_{secret}"

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if there is no such active key."""
        return await self._revoke(api_key.c.id == key_id) == 1

    async def revoke_named(self, name: str) -> int:
        """Revoke every active key with this name."""
        return await self._revoke(api_key.c.name == name)

    async def _revoke(self, which: ColumnElement[bool]) -> int:
        statement = (
            api_key.update()
            .where(which, api_key.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
            .returning(api_key.c.id)
        )
        async with self.db.connected().begin() as conn:
            revoked = list((await conn.execute(statement)).scalars())
        for key_id in revoked:
            self._known.forget(key_id)
        return len(revoked)

    async def list(self) -> list[KeyInfo]:
        """Every key (active and revoked)."""
        c = api_key.c
        statement = select(c.id, c.name, c.role, c.created_at, c.revoked_at).order_by(c.created_at)
        async with self.db.connected().connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [KeyInfo(r[0], r[1], Role(r[2]), r[3], r[4]) for r in rows]

    async def verify(self, token: str) -> Principal | None:
        """The caller a token belongs to, or None."""
        env_key = os.environ.get(ADMIN_KEY_ENV)
        if env_key and hmac.compare_digest(token.encode(), env_key.encode()):
            return Principal("env", "admin (environment)", Role.ADMIN)
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "ssk":
            return None
        known = await self._lookup(parts[1])
        if known is None or not hmac.compare_digest(known.hash, _hash(parts[2])):
            return None
        return known.principal

    async def active(self, key_id: str) -> bool:
        """Whether a key id is still valid (the environment's admin key while it is set)."""
        if key_id == "env":
            return bool(os.environ.get(ADMIN_KEY_ENV))
        return await self._lookup(key_id) is not None

    async def _lookup(self, key_id: str) -> _KnownKey | None:
        """The active key of an id (remembered if checked lately, or the database is away)."""

        async def ask() -> _KnownKey | None:
            c = api_key.c
            statement = select(c.name, c.role, c.hash).where(c.id == key_id, c.revoked_at.is_(None))
            async with self.db.connected().connect() as conn:
                row = (await conn.execute(statement)).first()
            return (
                None if row is None else _KnownKey(Principal(key_id, row[0], Role(row[1])), row[2])
            )

        return await self._known.get(key_id, ask, f"key {key_id}")


@dataclass(frozen=True)
class _KnownKey:
    principal: Principal
    hash: str
