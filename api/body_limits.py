"""Limits on request bodies, checked before any route parses them.

A body larger than the limit is refused with 413 before it is read in full;
a JSON body nested too deep, with a number of absurd length or a lone UTF-16
surrogate escape, is refused with 422 before the parser (whose recursion and
big-number limits would otherwise end in a 500) sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.errors import open311_path

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 100
#: A high surrogate escape not followed by a low one, or a low one on its own.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def json_problem(body: bytes) -> str | None:
    """Why a JSON body must not reach the parser, or None."""
    depth = deepest = 0
    in_string = escaped = False
    number = 0
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
            continue
        if byte == 0x22:
            in_string = True
        elif byte in (0x4E, 0x49):  # N, I: NaN or Infinity, which JSON does not have
            return "NaN and Infinity are not JSON numbers"
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return f"JSON nested deeper than {MAX_DEPTH} levels"
        elif byte in (0x5D, 0x7D):
            depth -= 1
        if byte in b"0123456789+-.eE":
            number += 1
            if number > MAX_NUMBER_CHARS:
                return f"a number longer than {MAX_NUMBER_CHARS} characters"
        else:
            number = 0
    if _LONE_SURROGATE.search(body):
        return "a lone UTF-16 surrogate (\\ud800-\\udfff) is not text"
    return None


class BodyLimits:
    """ASGI middleware: size limits per path (by pattern), JSON sanity before parsing."""

    def __init__(self, app: App, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = {re.compile(pattern): limit for pattern, limit in (larger or {}).items()}

    def limit_for(self, path: str) -> int:
        """The body limit of a path (an import or a photo may be larger)."""
        for pattern, limit in self.larger.items():
            if pattern.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the body, then hand the request on with the body replayed."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(scope, send, 413, f"request body over {limit} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(scope, send, 413, f"request body over {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if "json" in headers.get("content-type", "") and (problem := json_problem(body)):
            await _refuse(scope, send, 400 if open311_path(str(scope["path"])) else 422, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(scope: Scope, send: Send, status: int, reason: str) -> None:
    """The refusal in the error shape of the path (GeoReport's under /open311/)."""
    body: object = {"detail": reason}
    if open311_path(str(scope["path"])):
        body = [{"code": status, "description": reason}]
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
