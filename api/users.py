"""People's accounts: username and password, a role, and browser sessions.

API keys are for machines; people log in. A password is kept only as a
scrypt hash with its own salt. A login opens a session: a random token in an
HttpOnly cookie (only its SHA-256 is stored) and a CSRF token the page sends
back on every call that changes state. Five wrong passwords in a row lock the
account for 15 minutes, whatever the address they came from. Disabling a
user, changing their role or password ends their sessions.

Kept in the state database beside the API keys, so that a login holds on every
controller that shares it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.keys import Principal, Role
from api.remembered import Remembered
from controller.state.database import StateDatabase
from controller.state.tables import app_user, user_session
from drivers.errors import Invalid, PeopleMessage

#: scrypt cost: about 16 MB and some tens of milliseconds per try on a small server.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 10
MIN_DISTINCT = 4
LOCK_AFTER = 5
LOCK_SECONDS = 900.0
#: A session lasts one duty shift and a bit.
SESSION_SECONDS = 12 * 3600.0
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
#: Principals of sessions carry this before the username (API keys carry their id).
SESSION_KEY_PREFIX = "user:"


class UserError(Invalid, ValueError):
    """A user that cannot be created or changed so (the reason is for people)."""


@dataclass(frozen=True)
class UserInfo:
    """A stored user, without the password."""

    username: str
    name: str
    role: Role
    created_at: float
    disabled: bool
    #: Until when wrong passwords keep the account locked (None: not locked).
    locked_until: float | None


@dataclass(frozen=True)
class Session:
    """An open session: who, what the page must echo on changes, and until when."""

    principal: Principal
    csrf_token: str
    expires_at: float


@dataclass(frozen=True)
class LoginResult:
    """What a login attempt came to: a session and its cookie token, or why not."""

    session: Session | None
    token: str = ""
    #: Seconds the account stays locked (a correct password is refused meanwhile too).
    locked_for: float = 0.0


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` with a fresh salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` gives the stored hash (its own cost and salt)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(
        password.encode(),
        salt=bytes.fromhex(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(digest) // 2,
        maxmem=2**26,
    )
    return hmac.compare_digest(got.hex(), digest)


def check_password(username: str, password: str) -> None:
    """UserError for a password too weak to protect a city's switches."""
    if len(password) < MIN_PASSWORD:
        raise UserError(
            f"a password needs at least {MIN_PASSWORD} characters",
            PeopleMessage("refusal.password_too_short", {"min": MIN_PASSWORD}),
        )
    if username.lower() in password.lower():
        raise UserError(
            "a password may not contain the username",
            PeopleMessage("refusal.password_has_username"),
        )
    if len(set(password)) < MIN_DISTINCT:
        raise UserError(
            f"a password needs at least {MIN_DISTINCT} different characters",
            PeopleMessage("refusal.password_too_plain", {"min": MIN_DISTINCT}),
        )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    """Users and their sessions in the state database, shared by every controller on it.

    Password hashing (tens of milliseconds of scrypt) runs on a worker thread. An open
    session is remembered for a moment like a key (:mod:`api.remembered`).
    """

    def __init__(self, db: StateDatabase) -> None:
        self.db = db
        self._known: Remembered[str, Session] = Remembered()

    async def create(self, username: str, name: str, role: Role, password: str) -> UserInfo:
        """A new user; UserError for a bad username, a weak password or a taken name."""
        if not USERNAME.match(username):
            raise UserError(
                "a username is 2-32 lower-case letters, digits, '.', '_' or '-', "
                "starting with a letter",
                PeopleMessage("refusal.username_invalid"),
            )
        check_password(username, password)
        hashed = await asyncio.to_thread(hash_password, password)
        now = time.time()
        row: dict[str, object] = {"username": username, "name": name or username}
        row |= {"role": role.value, "hash": hashed, "created_at": now}
        try:
            async with self.db.connected().begin() as conn:
                await conn.execute(app_user.insert().values(row))
        except IntegrityError:
            raise UserError(
                f"user {username!r} already exists",
                PeopleMessage("refusal.user_exists", {"username": username}),
            ) from None
        return UserInfo(username, name or username, role, now, False, None)

    async def update(
        self,
        username: str,
        *,
        name: str | None = None,
        role: Role | None = None,
        password: str | None = None,
        disabled: bool | None = None,
    ) -> UserInfo:
        """Change a user; KeyError if there is none. A new role, password or a
        disabling ends the user's sessions; enabling also lifts a lock."""
        if await self.get(username) is None:
            raise KeyError(username)
        if password is not None:
            check_password(username, password)
        changes: dict[str, object] = {}
        if name is not None:
            changes["name"] = name
        if role is not None:
            changes["role"] = role.value
        if password is not None:
            changes["hash"] = await asyncio.to_thread(hash_password, password)
        if disabled is not None:
            changes["disabled_at"] = time.time() if disabled else None
            if not disabled:
                changes |= {"failures": 0, "locked_until": None}
        async with self.db.connected().begin() as conn:
            if changes:
                await conn.execute(
                    app_user.update().where(app_user.c.username == username).values(changes)
                )
            ended = role is not None or password is not None or bool(disabled)
            if ended:
                await conn.execute(user_session.delete().where(user_session.c.username == username))
        if ended:
            # Once committed: a call asking meanwhile would remember the session again.
            self._forget(username)
        found = await self.get(username)
        assert found is not None
        return found

    async def get(self, username: str) -> UserInfo | None:
        """One user."""
        async with self.db.connected().connect() as conn:
            row = (await conn.execute(_USERS.where(app_user.c.username == username))).first()
        return None if row is None else self._info(tuple(row))

    async def list(self) -> list[UserInfo]:
        """Every user, by username."""
        async with self.db.connected().connect() as conn:
            rows = (await conn.execute(_USERS.order_by(app_user.c.username))).all()
        return [self._info(tuple(r)) for r in rows]

    @staticmethod
    def _info(row: tuple[Any, ...]) -> UserInfo:
        locked = row[5] if isinstance(row[5], float) and row[5] > time.time() else None
        return UserInfo(
            str(row[0]), str(row[1]), Role(str(row[2])), float(row[3]), row[4] is not None, locked
        )

    async def login(self, username: str, password: str, now: float | None = None) -> LoginResult:
        """Check a password and open a session. Unknown users, wrong passwords and
        disabled users all fail the same way; a locked account says for how long."""
        now = time.time() if now is None else now
        u = app_user.c
        async with self.db.connected().connect() as conn:
            row = (
                await conn.execute(
                    select(u.name, u.role, u.hash, u.disabled_at, u.failures, u.locked_until).where(
                        u.username == username
                    )
                )
            ).first()
        if row is None:
            # The same work as for a real user: the time taken does not tell who exists.
            await asyncio.to_thread(password_matches, password, _DUMMY_HASH)
            return LoginResult(None)
        name, role, stored, disabled_at, failures, locked_until = row
        if locked_until is not None and locked_until > now:
            return LoginResult(None, locked_for=locked_until - now)
        matches = await asyncio.to_thread(password_matches, password, stored)
        by_name = app_user.update().where(u.username == username)
        if not matches or disabled_at is not None:
            failures += 1
            lock = now + LOCK_SECONDS if failures >= LOCK_AFTER else None
            async with self.db.connected().begin() as conn:
                await conn.execute(
                    by_name.values(failures=0 if lock else failures, locked_until=lock)
                )
            return LoginResult(None, locked_for=LOCK_SECONDS if lock else 0.0)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        expires = now + SESSION_SECONDS
        async with self.db.connected().begin() as conn:
            await conn.execute(by_name.values(failures=0, locked_until=None))
            await conn.execute(user_session.delete().where(user_session.c.expires_at < now))
            await conn.execute(
                user_session.insert().values(
                    token_hash=_token_hash(token),
                    username=username,
                    csrf=csrf,
                    created_at=now,
                    expires_at=expires,
                )
            )
        principal = Principal(SESSION_KEY_PREFIX + username, name, Role(role))
        return LoginResult(Session(principal, csrf, expires), token)

    async def session(self, token: str, now: float | None = None) -> Session | None:
        """The open session of a cookie token (None if unknown, expired or disabled)."""
        now = time.time() if now is None else now
        token_hash = _token_hash(token)

        async def ask() -> Session | None:
            s, u = user_session.c, app_user.c
            statement = (
                select(u.username, u.name, u.role, s.csrf, s.expires_at)
                .join_from(user_session, app_user, s.username == u.username)
                .where(s.token_hash == token_hash, s.expires_at > now, u.disabled_at.is_(None))
            )
            async with self.db.connected().connect() as conn:
                row = (await conn.execute(statement)).first()
            if row is None:
                return None
            principal = Principal(SESSION_KEY_PREFIX + row[0], row[1], Role(row[2]))
            return Session(principal, row[3], row[4])

        found = await self._known.get(token_hash, ask, "a session")
        if found is not None and found.expires_at <= now:
            # Remembered past its end: the database would not answer it either.
            self._known.forget(token_hash)
            return None
        return found

    async def logout(self, token: str) -> None:
        """End the session of a cookie token."""
        token_hash = _token_hash(token)
        async with self.db.connected().begin() as conn:
            await conn.execute(user_session.delete().where(user_session.c.token_hash == token_hash))
        self._known.forget(token_hash)

    async def active(self, username: str) -> bool:
        """Whether the user exists and is not disabled (a ticket of theirs still holds)."""
        user = await self.get(username)
        return user is not None and not user.disabled

    def _forget(self, username: str) -> None:
        """Drop this node's memory of the user's sessions (they have just ended)."""
        key_id = SESSION_KEY_PREFIX + username
        self._known.forget_where(lambda session: session.principal.key_id == key_id)


_USERS = select(
    app_user.c.username,
    app_user.c.name,
    app_user.c.role,
    app_user.c.created_at,
    app_user.c.disabled_at,
    app_user.c.locked_until,
)
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
