"""People log in and out: a username and password open a session held in a cookie."""

from __future__ import annotations

import logging
import time
from datetime import datetime

from fastapi import APIRouter, Request, Response

from api.auth import SESSION_COOKIE, AuthThrottle, CurrentPrincipal, permissions, users
from api.errors import Refusal
from api.schemas import LoginIn, SessionOut, utc
from api.users import SESSION_SECONDS
from drivers.errors import PeopleMessage

log = logging.getLogger(__name__)

router = APIRouter(prefix="/session", tags=["session"])
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _secure(request: Request) -> bool:
    """Whether the cookie is marked Secure: always, but for plain HTTP to this machine
    itself under ``auto`` (the demo on a desk), where browsers would refuse it."""
    mode = request.app.state.controller.loaded.config.api.session_cookie_secure
    if mode != "auto":
        return bool(mode == "always")
    return request.url.scheme == "https" or request.url.hostname not in LOOPBACK


@router.post("/login", response_model=SessionOut)
async def login(body: LoginIn, request: Request, response: Response) -> SessionOut:
    """Open a session: 401 for a wrong username or password (which one is not said),
    429 while the account or the address is locked after repeated failures."""
    address = request.client.host if request.client else "?"
    throttle: AuthThrottle = request.app.state.auth_throttle
    now = time.monotonic()
    wait = throttle.refused_for(address, now)
    if wait > 0:
        raise Refusal(
            429,
            "too many failed logins from here",
            PeopleMessage("refusal.address_locked"),
            headers={"Retry-After": str(int(wait) + 1)},
        )
    result = await users(request).login(body.username, body.password)
    if result.session is None:
        throttle.failed(address, now)
        log.warning("failed login for %r from %s", body.username[:64], address)
        if result.locked_for > 0:
            minutes = max(round(result.locked_for / 60), 1)
            raise Refusal(
                429,
                f"too many wrong passwords: the account is locked for {minutes} min",
                PeopleMessage("refusal.account_locked", {"minutes": minutes}),
                headers={"Retry-After": str(int(result.locked_for) + 1)},
            )
        raise Refusal(401, "wrong username or password", PeopleMessage("refusal.wrong_login"))
    session = result.session
    response.set_cookie(
        SESSION_COOKIE,
        result.token,
        max_age=int(SESSION_SECONDS),
        httponly=True,
        secure=_secure(request),
        samesite="strict",
        path="/",
    )
    log.info("%s logged in from %s", body.username, address)
    principal = session.principal
    return SessionOut(
        name=principal.name,
        role=principal.role.value,
        may=permissions(principal.role),
        csrf_token=session.csrf_token,
        expires_at=utc(session.expires_at) or datetime.min,
    )


@router.post("/logout", status_code=204)
async def logout(request: Request, response: Response, _principal: CurrentPrincipal) -> None:
    """End the caller's session (with its CSRF token, like every change)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await users(request).logout(cookie)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
