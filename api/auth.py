"""Who may do what: ``Authorization: Bearer <key>`` (or ``X-API-Key``) and role checks.

Private by default: every read needs a key of a reading role (viewer and up;
a reporter key may only submit reports), except the views a config opens in
``api.public``; every call that changes state names the roles it needs. No
key gives 401, a key of another role 403. A browser that cannot set headers
(the live events, a report opened in a new tab) passes a short-lived signed
``ticket`` from ``POST /session/ticket`` instead. People log in with a
username and password (:mod:`api.users`) and are known by their session
cookie; a call that changes state with a cookie must echo the session's
CSRF token in ``X-CSRF-Token``, which another site's page cannot read.
Failed keys are logged (key id and address, never the secret) and an address
that keeps failing gets 429 instead of 401 for a while (a valid key from it
is still admitted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPBearer

from api.errors import Refusal, refused
from api.keys import ApiKeyStore, Principal, Role
from api.users import SESSION_KEY_PREFIX, UserStore
from drivers.errors import PeopleMessage

log = logging.getLogger(__name__)

#: Roles that may read the city (a reporter key only submits reports).
READERS = frozenset({Role.VIEWER, Role.ENGINEER, Role.DISPATCHER, Role.FLOOD_DUTY, Role.ADMIN})
TICKET_SECONDS = 300.0
SESSION_COOKIE = "ss_session"
CSRF_HEADER = "x-csrf-token"
#: Methods that change nothing: a session cookie alone authenticates them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Failed authentications from one address within the window before it is refused.
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0


class AuthThrottle:
    """Failed authentications per client address, and who is refused for now."""

    def __init__(self, allowed: int = FAILURES_ALLOWED) -> None:
        self.allowed = allowed
        self.failures_total = 0
        self._recent: dict[str, deque[float]] = {}

    def refused_for(self, address: str, now: float) -> float:
        """Seconds the address must still wait (0: it may try)."""
        recent = self._recent.get(address)
        if not recent:
            return 0.0
        while recent and now - recent[0] > FAILURE_WINDOW:
            recent.popleft()
        if len(recent) < self.allowed:
            return 0.0
        return FAILURE_WINDOW - (now - recent[0])

    def failed(self, address: str, now: float) -> None:
        """Count one failed authentication."""
        self.failures_total += 1
        self._recent.setdefault(address, deque(maxlen=self.allowed * 2)).append(now)


class TicketSigner:
    """Short-lived signed tickets standing in for a key where headers cannot be set."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def issue(self, principal: Principal, now: float) -> tuple[str, float]:
        """A ticket for ``principal`` and when it expires."""
        expires = now + TICKET_SECONDS
        claim = f"{principal.key_id}|{principal.role.value}|{expires:.0f}|{principal.name}"
        payload = base64.urlsafe_b64encode(claim.encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}", expires

    def verify(self, ticket: str, now: float) -> Principal | None:
        """The principal of a valid, unexpired ticket."""
        payload, _, signature = ticket.partition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            claim = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
            key_id, role, expires, name = claim.split("|", 3)
            if float(expires) < now:
                return None
            return Principal(key_id, name, Role(role))
        except ValueError:
            return None

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()[:32]


def _store(request: Request) -> ApiKeyStore:
    store: ApiKeyStore = request.app.state.keys
    return store


def users(request: Request) -> UserStore:
    """The app's user and session store."""
    store: UserStore = request.app.state.users
    return store


async def _still_valid(request: Request, key_id: str) -> bool:
    """Whether the key or user a ticket was issued to may still call."""
    if key_id.startswith(SESSION_KEY_PREFIX):
        return await users(request).active(key_id.removeprefix(SESSION_KEY_PREFIX))
    return await _store(request).active(key_id)


# Declared as security schemes (so OpenAPI says how to authenticate); the headers are
# read here, not by FastAPI, so that a malformed one gets a reason instead of silence.
BEARER = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer ssk_...`")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
TICKET = APIKeyQuery(
    name="ticket",
    auto_error=False,
    description="GET only: a short-lived ticket from POST /session/ticket (live events, reports)",
)


async def current_principal(
    request: Request,
    _bearer: Annotated[object, Security(BEARER)] = None,
    _key: Annotated[object, Security(API_KEY)] = None,
    _ticket: Annotated[object, Security(TICKET)] = None,
) -> Principal:
    """The caller, from the bearer token, X-API-Key or a ticket; 401 if none or unknown.

    Found once per request: a router's read guard and a route's role check ask both.
    """
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    principal = await _authenticate(
        request, request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    request.state.principal = principal
    return principal


async def _authenticate(
    request: Request, authorization: str | None, x_api_key: str | None
) -> Principal:
    address = request.client.host if request.client else "?"
    throttle: AuthThrottle = request.app.state.auth_throttle
    now = time.monotonic()
    ticket = request.query_params.get("ticket")
    given = [c for c in (authorization, x_api_key, ticket) if c]
    if len(given) > 1 and not (
        authorization and x_api_key and authorization.endswith(" " + x_api_key)
    ):
        # Two different credentials: which one is meant is a guess, and a guess is not
        # authentication.
        _failed(throttle, address, now, "conflicting")
        raise refused(
            401,
            "give one credential: a bearer key, X-API-Key or a ticket",
            "refusal.credentials_conflict",
        )
    token = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise refused(
                401,
                "use Authorization: Bearer <api key>",
                "refusal.bearer_scheme",
                headers={"WWW-Authenticate": "Bearer"},
            )
        token = value
    if not token and ticket and request.method == "GET":
        signer: TicketSigner = request.app.state.tickets
        principal = signer.verify(ticket, time.time())
        if principal is not None and await _still_valid(request, principal.key_id):
            return principal
        _failed(throttle, address, now, "ticket")
        raise refused(401, "ticket expired or invalid: ask for a new one", "refusal.ticket_invalid")
    cookie = request.cookies.get(SESSION_COOKIE)
    if not token and not ticket and cookie:
        return await _by_session(request, cookie)
    if not token:
        raise refused(
            401,
            "this call needs an API key",
            "refusal.credentials_missing",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await _store(request).verify(token)
    if principal is None:
        parts = token.split("_", 2)
        _failed(throttle, address, now, parts[1] if len(parts) == 3 else "malformed")
        raise refused(
            401,
            "unknown or revoked API key",
            "refusal.key_unknown",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


async def _by_session(request: Request, cookie: str) -> Principal:
    """A person's session from its cookie; a state-changing call also needs its CSRF token."""
    session = await users(request).session(cookie)
    if session is None:
        raise Refusal(
            401, "the session has ended: log in again", PeopleMessage("refusal.session_ended")
        )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            raise refused(
                403, "a change with a session needs its X-CSRF-Token header", "refusal.csrf"
            )
    request.state.session = session
    return session.principal


def _failed(throttle: AuthThrottle, address: str, now: float, key_id: str) -> None:
    """Count a failed authentication; 429 once the address has failed too often.

    Only failures are refused: a valid key from the same address (a command centre
    behind one NAT) still gets in while someone there keeps mistyping theirs.
    """
    wait = throttle.refused_for(address, now)
    throttle.failed(address, now)
    if wait > 0:
        raise refused(
            429,
            "too many failed authentications from this address: try again later",
            "refusal.address_locked",
            headers={"Retry-After": str(max(int(wait), 1))},
        )
    # The key id only: the secret part never reaches a log.
    log.warning("failed authentication from %s (key id %s)", address, key_id[:16])


#: Who may do what, besides admin. The routers' checks and the dashboard's permissions
#: both read this table, so the page never offers what the API would refuse.
DUTIES: dict[str, frozenset[Role]] = {
    "control": frozenset({Role.ENGINEER}),
    "alarms": frozenset({Role.ENGINEER, Role.DISPATCHER, Role.FLOOD_DUTY}),
    "cases_centre": frozenset({Role.DISPATCHER}),
    "cases_work": frozenset({Role.DISPATCHER, Role.ENGINEER, Role.FLOOD_DUTY}),
    "assets": frozenset({Role.ENGINEER}),
    # Asking a gauge for its level now is flood duty's; setting its clock is maintenance.
    "station_query": frozenset({Role.ENGINEER, Role.FLOOD_DUTY}),
    "station_clock": frozenset({Role.ENGINEER}),
    "station_settings": frozenset({Role.ENGINEER}),
    # People's accounts: admins only.
    "users": frozenset(),
}


def may(role: Role, duty: str) -> bool:
    """Whether a role may do a duty of :data:`DUTIES` (admin may do all)."""
    return role is Role.ADMIN or role in DUTIES[duty]


def permissions(role: Role) -> dict[str, bool]:
    """What a role may do, as the API enforces it (the page hides the rest)."""
    return {duty: may(role, duty) for duty in DUTIES}


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits only these roles (admin always)."""
    allowed = {*roles, Role.ADMIN}

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in allowed:
            raise refused(
                403,
                f"role {principal.role.value} may not do this "
                f"(needs {', '.join(sorted(r.value for r in allowed))})",
                "refusal.role_may_not",
                role=principal.role.value,
            )
        return principal

    return check


AlarmOperator = Annotated[Principal, Depends(require(*DUTIES["alarms"]))]


def read_guard(view: str) -> Callable[..., Awaitable[None]]:
    """A router dependency: its reads need a reading role unless ``view`` is public.

    Writes are left to each route's own role check.
    """

    async def check(
        request: Request,
        _bearer: Annotated[object, Security(BEARER)] = None,
        _key: Annotated[object, Security(API_KEY)] = None,
        _ticket: Annotated[object, Security(TICKET)] = None,
    ) -> None:
        if request.method not in ("GET", "HEAD"):
            return
        if view in request.app.state.public_views:
            return
        principal = await current_principal(request)
        if principal.role not in READERS:
            raise refused(
                403,
                f"a {principal.role.value} key may not read {view}",
                "refusal.role_may_not_read",
                role=principal.role.value,
            )

    return check


#: Any reading role: the caller, for routes that shape their answer by role.
Reader = Annotated[Principal, Depends(require(*READERS))]
#: Any authenticated caller, whatever the role.
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
Admin = Annotated[Principal, Depends(require())]
#: The command centre and admin: link addresses, the audit log, exports, webhook state.
Supervisor = Annotated[Principal, Depends(require(Role.DISPATCHER))]
