"""Who may do what: ``Authorization: Bearer <key>`` (or ``X-API-Key``) and role checks.

Reading is open to anyone who can reach the API (it listens on the city's
private network); every call that changes state names the roles it needs:
no key gives 401, a key of another role 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from api.keys import ApiKeyStore, Principal, Role


def _store(request: Request) -> ApiKeyStore:
    store: ApiKeyStore = request.app.state.keys
    return store


def current_principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller, from the bearer token or X-API-Key header; 401 if none or unknown."""
    token = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise HTTPException(
                401, "use Authorization: Bearer <api key>", headers={"WWW-Authenticate": "Bearer"}
            )
        token = value
    if not token:
        raise HTTPException(
            401, "this call needs an API key", headers={"WWW-Authenticate": "Bearer"}
        )
    principal = _store(request).verify(token)
    if principal is None:
        raise HTTPException(
            401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


#: Who may do what, besides admin. The routers' checks and the dashboard's permissions
#: both read this table, so the page never offers what the API would refuse.
DUTIES: dict[str, frozenset[Role]] = {
    "control": frozenset({Role.ENGINEER}),
    "alarms": frozenset({Role.ENGINEER, Role.DISPATCHER, Role.FLOOD_DUTY}),
    "cases_centre": frozenset({Role.DISPATCHER}),
    "cases_work": frozenset({Role.DISPATCHER, Role.ENGINEER, Role.FLOOD_DUTY}),
    "assets": frozenset({Role.ENGINEER}),
}


def may(role: Role, duty: str) -> bool:
    """Whether a role may do a duty of :data:`DUTIES` (admin may do all)."""
    return role is Role.ADMIN or role in DUTIES[duty]


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits only these roles (admin always)."""
    allowed = {*roles, Role.ADMIN}

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(
                403,
                f"role {principal.role.value} may not do this "
                f"(needs {', '.join(sorted(r.value for r in allowed))})",
            )
        return principal

    return check


AlarmOperator = Annotated[Principal, Depends(require(*DUTIES["alarms"]))]
