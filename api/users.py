"""People's accounts: username and password, a role, and browser sessions.

API keys are for machines; people log in. A password is kept only as a
scrypt hash with its own salt. A login opens a session: a random token in an
HttpOnly cookie (only its SHA-256 is stored) and a CSRF token the page sends
back on every call that changes state. Five wrong passwords in a row lock the
account for 15 minutes, whatever the address they came from. Disabling a
user, changing their role or password ends their sessions.

Kept in the same SQLite file as the API keys (``api.keys_path``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.keys import Principal, Role
from drivers.errors import Invalid

#: scrypt cost: about 16 MB and some tens of milliseconds per try on a small server.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 10
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
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    if username.lower() in password.lower():
        raise UserError("a password may not contain the username")
    if len(set(password)) < 4:
        raise UserError("a password needs at least 4 different characters")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    """Users and their sessions in the API keys' SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS app_user (username TEXT PRIMARY KEY, "
                "name TEXT NOT NULL, role TEXT NOT NULL, hash TEXT NOT NULL, "
                "created_at REAL NOT NULL, disabled_at REAL, failures INTEGER NOT NULL "
                "DEFAULT 0, locked_until REAL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS user_session (token_hash TEXT PRIMARY KEY, "
                "username TEXT NOT NULL, csrf TEXT NOT NULL, created_at REAL NOT NULL, "
                "expires_at REAL NOT NULL)"
            )

    def create(self, username: str, name: str, role: Role, password: str) -> UserInfo:
        """A new user; UserError for a bad username, a weak password or a taken name."""
        if not USERNAME.match(username):
            raise UserError(
                "a username is 2-32 lower-case letters, digits, '.', '_' or '-', "
                "starting with a letter"
            )
        check_password(username, password)
        hashed = hash_password(password)
        now = time.time()
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT INTO app_user (username, name, role, hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (username, name or username, role.value, hashed, now),
                )
        except sqlite3.IntegrityError:
            raise UserError(f"user {username!r} already exists") from None
        return UserInfo(username, name or username, role, now, False, None)

    def update(
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
        if self.get(username) is None:
            raise KeyError(username)
        if password is not None:
            check_password(username, password)
        changes: list[tuple[str, object]] = []
        if name is not None:
            changes.append(("name", name))
        if role is not None:
            changes.append(("role", role.value))
        if password is not None:
            changes.append(("hash", hash_password(password)))
        if disabled is not None:
            changes.append(("disabled_at", time.time() if disabled else None))
            if not disabled:
                changes += [("failures", 0), ("locked_until", None)]
        with self._lock, self._db:
            for column, value in changes:
                # The column names are this method's own literals, never a caller's.
                self._db.execute(
                    f"UPDATE app_user SET {column} = ? WHERE username = ?",
                    (value, username),
                )
            if role is not None or password is not None or disabled:
                self._db.execute("DELETE FROM user_session WHERE username = ?", (username,))
        found = self.get(username)
        assert found is not None
        return found

    def get(self, username: str) -> UserInfo | None:
        """One user."""
        with self._lock:
            row = self._db.execute(
                "SELECT username, name, role, created_at, disabled_at, locked_until "
                "FROM app_user WHERE username = ?",
                (username,),
            ).fetchone()
        return None if row is None else self._info(row)

    def list(self) -> list[UserInfo]:
        """Every user, by username."""
        with self._lock:
            rows = self._db.execute(
                "SELECT username, name, role, created_at, disabled_at, locked_until "
                "FROM app_user ORDER BY username"
            ).fetchall()
        return [self._info(r) for r in rows]

    @staticmethod
    def _info(row: tuple[Any, ...]) -> UserInfo:
        locked = row[5] if isinstance(row[5], float) and row[5] > time.time() else None
        return UserInfo(
            str(row[0]), str(row[1]), Role(str(row[2])), float(row[3]), row[4] is not None, locked
        )

    def login(self, username: str, password: str, now: float | None = None) -> LoginResult:
        """Check a password and open a session. Unknown users, wrong passwords and
        disabled users all fail the same way; a locked account says for how long."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, hash, disabled_at, failures, locked_until "
                "FROM app_user WHERE username = ?",
                (username,),
            ).fetchone()
        if row is None:
            # The same work as for a real user: the time taken does not tell who exists.
            password_matches(password, _DUMMY_HASH)
            return LoginResult(None)
        name, role, stored, disabled_at, failures, locked_until = row
        if locked_until is not None and locked_until > now:
            return LoginResult(None, locked_for=locked_until - now)
        if not password_matches(password, stored) or disabled_at is not None:
            failures += 1
            lock = now + LOCK_SECONDS if failures >= LOCK_AFTER else None
            with self._lock, self._db:
                self._db.execute(
                    "UPDATE app_user SET failures = ?, locked_until = ? WHERE username = ?",
                    (0 if lock else failures, lock, username),
                )
            return LoginResult(None, locked_for=LOCK_SECONDS if lock else 0.0)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        expires = now + SESSION_SECONDS
        with self._lock, self._db:
            self._db.execute(
                "UPDATE app_user SET failures = 0, locked_until = NULL WHERE username = ?",
                (username,),
            )
            self._db.execute("DELETE FROM user_session WHERE expires_at < ?", (now,))
            self._db.execute(
                "INSERT INTO user_session VALUES (?, ?, ?, ?, ?)",
                (_token_hash(token), username, csrf, now, expires),
            )
        principal = Principal(SESSION_KEY_PREFIX + username, name, Role(role))
        return LoginResult(Session(principal, csrf, expires), token)

    def session(self, token: str, now: float | None = None) -> Session | None:
        """The open session of a cookie token (None if unknown, expired or disabled)."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT u.username, u.name, u.role, s.csrf, s.expires_at FROM user_session s "
                "JOIN app_user u ON u.username = s.username "
                "WHERE s.token_hash = ? AND s.expires_at > ? AND u.disabled_at IS NULL",
                (_token_hash(token), now),
            ).fetchone()
        if row is None:
            return None
        principal = Principal(SESSION_KEY_PREFIX + row[0], row[1], Role(row[2]))
        return Session(principal, row[3], row[4])

    def logout(self, token: str) -> None:
        """End the session of a cookie token."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM user_session WHERE token_hash = ?", (_token_hash(token),))

    def active(self, username: str) -> bool:
        """Whether the user exists and is not disabled (a ticket of theirs still holds)."""
        user = self.get(username)
        return user is not None and not user.disabled

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
