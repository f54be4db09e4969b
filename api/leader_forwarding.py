"""A standby passes a call it cannot answer to the leader and the leader's answer back.

The leader authenticates the caller's own credentials (keys and sessions are in
the database the pair shares), checks their role and audits what they ask, as
if they had called it directly. The answer streams through, so the live event
stream works too. A call that has been forwarded once is never forwarded again:
two nodes that each think the other leads refer it instead of passing it round.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)

#: Set on a forwarded call, naming the node that forwarded it; on the answer, the leader.
FORWARDED_BY = "x-streetsense-forwarded-by"
FORWARDED_FROM = "x-streetsense-forwarded-from"
#: Hop-by-hop headers (RFC 9110 §7.6.1) and those the client library sets itself.
_NOT_PASSED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: Long enough for a command that waits for its confirmation (``wait`` up to 60 s).
READ_TIMEOUT = 75.0
#: The live event stream stays open as long as the caller keeps it.
STREAMS = ("/events",)


class LeaderUnreachable(Exception):
    """The leader did not take the call (down, or not answering): refer the caller."""


def forwarded(scope: Scope) -> bool:
    """Whether this call was already forwarded by the other node."""
    return any(name == FORWARDED_BY.encode() for name, _ in scope.get("headers", ()))


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise LeaderUnreachable("the caller went away")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class LeaderForwarder:
    """Passes one call to the leader at ``url`` and streams the leader's answer back."""

    def __init__(self, node: str, connect_timeout: float = 3.0) -> None:
        self.node = node
        self.connect_timeout = connect_timeout

    async def forward(self, scope: Scope, receive: Receive, send: Send, url: str) -> None:
        """Forward the call; :class:`LeaderUnreachable` if nothing of an answer was sent.

        A caller that goes away ends the call to the leader too: a forwarded event
        stream would otherwise stay open on the leader for good.
        """
        body = await _body(receive)
        relay = asyncio.create_task(self._relay(scope, body, send, url))
        gone = asyncio.create_task(_until_disconnect(receive))
        try:
            await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, gone):
                task.cancel()
            await asyncio.gather(gone, return_exceptions=True)
        if relay.done() and not relay.cancelled():
            relay.result()  # LeaderUnreachable, for the caller to refer instead
        else:
            await asyncio.gather(relay, return_exceptions=True)

    async def _relay(self, scope: Scope, body: bytes, send: Send, url: str) -> None:
        client_host = (scope.get("client") or ("", 0))[0]
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope.get("headers", ())
            if name.decode("latin-1").lower() not in _NOT_PASSED
        ]
        headers += [(FORWARDED_BY, self.node), ("x-forwarded-for", client_host)]
        if not any(name.lower() == "accept-encoding" for name, _ in headers):
            # The answer is passed on as the leader encoded it: only as the caller asked.
            headers.append(("accept-encoding", "identity"))
        path = str(scope.get("path", "/"))
        # The path as the caller sent it, still percent-encoded: decoded, an escaped "?"
        # or "/" in an id would change what the leader is asked.
        raw = scope.get("raw_path") or path.encode()
        query = scope.get("query_string", b"")
        target = (
            url.rstrip("/")
            + raw.decode("latin-1")
            + ("?" + query.decode("latin-1") if query else "")
        )
        read = None if path in STREAMS else READ_TIMEOUT
        timeout = httpx.Timeout(self.connect_timeout, read=read)
        started = False
        try:
            async with (
                # No proxy from the environment: the leader is the pair's own network.
                httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
                client.stream(
                    str(scope["method"]), target, headers=headers, content=body
                ) as answer,
            ):
                passed = [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in answer.headers.multi_items()
                    if k.lower() not in _NOT_PASSED
                ]
                passed.append((FORWARDED_FROM.encode(), url.encode()))
                start: Message = {
                    "type": "http.response.start",
                    "status": answer.status_code,
                    "headers": passed,
                }
                await send(start)
                started = True
                async for chunk in answer.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as exc:
            if not started:
                log.warning("leader at %s did not take a forwarded call: %s", url, exc)
                raise LeaderUnreachable(str(exc)) from exc
            # The answer broke off half-way: all the caller can be told is that it ended.
            log.warning("leader at %s broke off a forwarded answer: %s", url, exc)
            await send({"type": "http.response.body", "body": b""})
