"""The standby of a pair answers reads from the shared database and passes the rest on.

The standby answers its health, metrics and API docs, and the reads whose
answer is in the state database the pair shares (:data:`STANDBY_READS`):
cases, the audit log and older commands, the asset register, overrides,
Open311 requests, accounts, the fault statistics, the time tables pushed to
devices, and the open alarms, which it reads from the database every few
seconds (:mod:`controller.leadership.mirror`); and its own sinks, which
deliver what it spooled while it led. When telemetry queries are answered by
InfluxDB, which the pair shares too, it also answers the stored readings,
charts and energy (:data:`SHARED_TELEMETRY_READS`); its embedded store holds
only what it polled while it led, so with that store it does not.

What only the leader knows (the values it polled last, device health, running
commands, schedules' state, the lighting rate now, live events) and everything
that changes state are the leader's: the standby forwards those calls to the
leader and streams its answer back (:mod:`api.leader_forwarding`), so a client
behind one address for both nodes need not know which leads. A login is not
forwarded (the leader would see every login from the standby's address and lock
them out together), nor is a call when forwarding is off, the leader is not
known or does not answer: those get 503, the leader's name and address in the
reason and in ``X-Streetsense-Leader``, and ``Retry-After``, so a client tries
the leader, or again here after a take-over. A person opening the console here
is redirected to the leader's.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from api.leader_forwarding import LeaderForwarder, LeaderUnreachable, forwarded
from controller.runtime import Controller

#: What a standby answers itself.
STANDBY_SERVES = ("/health", "/metrics", "/openapi.json", "/docs", "/redoc")
#: The reads a standby answers from the shared database (GET and HEAD only).
STANDBY_READS = re.compile(
    r"/alarms(/\d+)?"
    r"|/cases(/statistics|/export|/departments|/\d+(/photos/\d+)?)?"
    r"|/audit|/commands/\d+"
    r"|/assets(/summary|/geojson|/[^/]+)?"
    r"|/overrides|/schedules/device-tables"
    r"|/open311/v2/requests(/[^/]+)?\.(json|xml)"
    r"|/users|/whoami"
    r"|/statistics/faults"
    # This node's own deliveries: what it spooled while it led goes out while it stands by.
    r"|/telemetry/sinks"
)
#: The reads a standby answers when InfluxDB, shared by the pair, answers telemetry queries.
SHARED_TELEMETRY_READS = re.compile(r"/telemetry/(series/[^/]+/[^/]+|latest)|/statistics/energy")
#: Logging in is the leader's to throttle by the caller's own address: referred, not forwarded.
NOT_FORWARDED = (("POST", "/session"),)
LEADER_HEADER = "x-streetsense-leader"
RETRY_SECONDS = 2


class StandbyReferral:
    """ASGI middleware: on a standby, all but :data:`STANDBY_SERVES` and the shared reads
    go to the leader: forwarded, or 503 with the leader's address."""

    def __init__(self, app: ASGIApp, controller: Controller) -> None:
        self.app = app
        self.controller = controller
        cfg = controller.loaded.config.leadership
        lease = controller.leadership.lease if controller.leadership else None
        self.forwarder = (
            LeaderForwarder(lease.node) if cfg.forward_to_leader and lease is not None else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.controller.role != "standby":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if any(path == p or path.startswith(p + "/") for p in STANDBY_SERVES) or (
            scope.get("method") in ("GET", "HEAD") and self._answers(path)
        ):
            await self.app(scope, receive, send)
            return
        elector = self.controller.leadership
        other = elector.other if elector is not None else None
        leader, url = (other.holder, other.address) if other else ("", "")
        if url and path == "/" and scope.get("method") == "GET":
            # A person opening the console here is sent to the leader's.
            headers = [(b"location", url.rstrip("/").encode() + b"/"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 307, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        method = str(scope.get("method", ""))
        if (
            url
            and self.forwarder is not None
            and not forwarded(scope)
            and (method, path) not in NOT_FORWARDED
        ):
            try:
                await self.forwarder.forward(scope, receive, send, url)
                return
            except LeaderUnreachable:
                pass
        await self._refer(send, leader, url)

    def _answers(self, path: str) -> bool:
        """Whether this standby answers a read of ``path`` from what the pair shares."""
        if STANDBY_READS.fullmatch(path):
            return True
        reader = self.controller.telemetry.reader
        shared = reader is not None and reader.name == "influxdb"
        return shared and SHARED_TELEMETRY_READS.fullmatch(path) is not None

    async def _refer(self, send: Send, leader: str, url: str) -> None:
        reason = (
            f"this controller is the standby: {leader} leads, at {url}"
            if leader
            else "this controller is the standby and no controller leads just now: try again"
        )
        body = {
            "detail": reason,
            "message": {"key": "refusal.standby", "params": {"leader": leader, "url": url}},
        }
        content = json.dumps(body, ensure_ascii=False).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"retry-after", str(RETRY_SECONDS).encode()),
        ]
        if url:
            headers.append((LEADER_HEADER.encode(), url.encode()))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": content})
