"""One error shape for every refusal, declared in OpenAPI.

Everywhere: ``{"detail": "why"}``, or for a request that does not validate
``{"detail": [{"loc": [...], "msg": "..."}]}``. Under ``/open311/`` GeoReport's
own shape instead: ``[{"code": 404, "description": "why"}]``, whoever raised it
(a route, the read guard, the validator). Input is never echoed back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from api.open311_format import error, format_of
from controller.state.fencing import refusal_of
from drivers.errors import (
    Conflict,
    Invalid,
    NeedsConfirmation,
    NotFound,
    NotLeading,
    PeopleMessage,
    RateLimited,
)

OPEN311_PREFIX = "/open311/"


class ValidationIssue(BaseModel):
    """Where a request is wrong and why: ``msg`` in English, ``type`` and ``ctx`` (the
    bound it broke, the values it expected) for a console to word it in its language."""

    loc: list[str | int]
    msg: str
    type: str = ""
    ctx: dict[str, str | int | float] = {}

    @classmethod
    def of(cls, error: Mapping[str, Any]) -> ValidationIssue:
        """One of pydantic's errors, without the input (it may be huge, or NaN, which
        JSON cannot carry) and with only the context a sentence can show."""
        ctx = {
            str(k): v if not isinstance(v, str) else v[:200]
            for k, v in dict(error.get("ctx") or {}).items()
            if isinstance(v, str | int) or (isinstance(v, float) and math.isfinite(v))
        }
        return cls(
            loc=[str(p) if not isinstance(p, int) else p for p in error.get("loc", ())][:10],
            msg=str(error.get("msg", ""))[:300],
            type=str(error.get("type", ""))[:60],
            ctx=ctx,
        )


class MessageOut(BaseModel):
    """A refusal in the catalogue's words: the console shows it in the reader's language."""

    key: str
    params: dict[str, str | int]

    @classmethod
    def of(cls, message: PeopleMessage) -> MessageOut:
        """The catalogue's words of a refusal, as the API sends them."""
        return cls(key=message.key, params=dict(message.params))


class ErrorOut(BaseModel):
    """Why a request was refused (``message``: the same for people, where worded)."""

    detail: str | list[ValidationIssue]
    message: MessageOut | None = None


class Refusal(HTTPException):
    """An HTTP refusal with its reason in the catalogue's words too."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        message: PeopleMessage,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, detail, headers=headers)
        self.message = message


def refused(
    status: int,
    reason: str,
    key: str,
    headers: dict[str, str] | None = None,
    **params: str | int,
) -> Refusal:
    """A refusal in English (``reason``) and in the catalogue's words (``key``, a
    ``refusal.*`` entry, with ``params`` for its placeholders)."""
    return Refusal(status, reason, PeopleMessage(key, params), headers=headers)


class GeoReportError(BaseModel):
    """An Open311 GeoReport v2 error."""

    code: int
    description: str


_WHY = {
    400: "the request is malformed (a body that cannot be parsed)",
    401: "no key, or an unknown or revoked one",
    403: "the key's role may not do this",
    404: "no such thing",
    405: "the path does not take this method (see Allow)",
    409: "the current state does not allow it",
    413: "the body is too large",
    415: "the body's content type is not accepted here",
    422: "a parameter or the body is not valid",
    428: "needs confirm: true",
    429: "too many requests: see Retry-After",
}


def declared(
    codes: tuple[int, ...], model: Any = ErrorOut, also: tuple[str, ...] = ()
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these refusals in ``model``'s shape (JSON, and ``also``)."""
    extra: dict[str, Any] = {"content": {media: {} for media in also}} if also else {}
    return {code: {"model": model, "description": _WHY[code], **extra} for code in codes}


#: What any route may answer besides success (auth, limits, validation).
COMMON = (400, 401, 403, 404, 405, 409, 413, 415, 422, 428, 429)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def open311_path(path: str) -> bool:
    """Whether refusals on this path take GeoReport's shape."""
    return path.startswith(OPEN311_PREFIX)


def _open311(request: Request) -> bool:
    return open311_path(request.url.path)


#: The HTTP status of each kind of domain error: the only place the two meet.
_STATUS_OF_KIND: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (NeedsConfirmation, 428),
    (RateLimited, 429),
    (NotLeading, 503),
)


#: The domain errors a route may let through to be answered as refusals.
REFUSAL_KINDS = tuple(kind for kind, _ in _STATUS_OF_KIND)


def status_of(exc: Exception) -> int:
    """The HTTP status a domain error stands for (400 for a kind not listed)."""
    for kind, status in _STATUS_OF_KIND:
        if isinstance(exc, kind):
            return status
    return 400


def as_http(exc: Exception) -> HTTPException:
    """A domain error as the HTTP refusal it stands for, its reason as the detail."""
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    reason = getattr(exc, "reason", str(exc))
    message = getattr(exc, "message", None)
    if isinstance(message, PeopleMessage):
        return Refusal(status_of(exc), reason, message, headers=headers)
    return HTTPException(status_of(exc), reason, headers=headers)


async def domain_refusal(request: Request, exc: Exception) -> Response:
    """A domain error of one of the :data:`REFUSAL_KINDS` that a route lets through,
    answered as its kind's 4xx in the shape of the path."""
    return await http_refusal(request, as_http(exc))


async def http_refusal(request: Request, exc: Exception) -> Response:
    """An HTTPException in the shape of the path it happened on."""
    assert isinstance(exc, HTTPException)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    text = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if _open311(request):
        refusal = error(format_of(request.url.path), exc.status_code, text)
        refusal.headers.update(headers or {})
        return refusal
    body = ErrorOut(detail=text[:1000])
    if isinstance(exc, Refusal):
        body.message = MessageOut.of(exc.message)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=exc.status_code, headers=headers
    )


#: How soon a client may try again while the state database is away (PostgreSQL restarting).
STATE_RETRY_SECONDS = 5


async def state_unreachable(request: Request, exc: Exception) -> Response:
    """503 while the state database cannot be reached: the controller is up and the
    call may be repeated; it is not the caller's fault, and not a crash."""
    refusal = refused(
        503,
        "the state database cannot be reached just now: try again in a moment",
        "refusal.state_unreachable",
        headers={"Retry-After": str(STATE_RETRY_SECONDS)},
    )
    return await http_refusal(request, refusal)


async def fenced_write(request: Request, exc: Exception) -> Response:
    """503 when PostgreSQL refused a write of this node's epoch (another node of the pair
    has led since: migration 0006's fence); any other internal error stays one."""
    assert isinstance(exc, DBAPIError)
    fenced = refusal_of(exc)
    if fenced is None:
        raise exc
    return await domain_refusal(request, fenced)


async def invalid_request(request: Request, exc: Exception) -> Response:
    """422 with where and why, never echoing the input."""
    assert isinstance(exc, RequestValidationError)
    issues = [ValidationIssue.of(error) for error in exc.errors()[:20]]
    if _open311(request):
        text = "; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in issues)
        return error(format_of(request.url.path), 400, text)
    return JSONResponse({"detail": [i.model_dump() for i in issues]}, status_code=422)
