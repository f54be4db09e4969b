"""Remote control (遥控 / 遥调): switch and dim, commands as resources, the audit log.

Only engineers (and admins) command lights. A refused attempt - wrong role,
over the rate limit, a large switch-off without ``confirm`` - is answered with
a 4xx and written to the audit log like a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from api.auth import Supervisor, current_principal, may, read_guard
from api.bounds import RowId
from api.deps import ControllerDep
from api.errors import MessageOut, Refusal, refused
from api.keys import Principal
from api.rate_limit import RateLimiter
from api.schemas import (
    AuditEntryOut,
    CircuitCommandIn,
    CommandOut,
    LampCommandIn,
    TargetResultOut,
    utc,
)
from controller.control.audit import Actor, AuditEntry, AuditQuery
from controller.control.dispatcher import Command, CommandRequest
from controller.control.writes import Action
from controller.runtime import Controller
from drivers.errors import PeopleMessage

router = APIRouter(tags=["control"], dependencies=[Depends(read_guard("control"))])


Caller = Annotated[Principal, Depends(current_principal)]


def command_out(command: Command) -> CommandOut:
    """The API form of a command."""
    return CommandOut(
        id=command.id,
        action=command.action.value,
        level=command.dim,
        targets=command.selector.describe(),
        source=command.source,
        by=command.actor.name,
        role=command.actor.role,
        status=command.status.value,
        created_at=utc(command.created_at) or datetime.min,
        finished_at=utc(command.finished_at),
        counts=command.counts(),
        results=[
            TargetResultOut(
                target=r.target,
                status=r.status.value,
                reason=r.reason,
                done_at=utc(r.done_at),
                message=MessageOut.of(r.message) if r.message else None,
            )
            for r in command.results.values()
        ],
    )


def audit_out(entry: AuditEntry) -> AuditEntryOut:
    """The API form of an audit entry."""
    return AuditEntryOut(
        id=entry.id,
        at=utc(entry.at) or datetime.min,
        source=entry.source,
        by=entry.actor.name,
        key_id=entry.actor.key_id,
        role=entry.actor.role,
        action=entry.action,
        level=entry.dim,
        targets=entry.selector,
        target_count=entry.target_count,
        outcome=entry.outcome,
        reason=entry.reason,
        confirmed=entry.confirmed,
        failed=entry.failed,
        finished_at=utc(entry.finished_at),
        results=entry.results,
    )


def switching_refusal(principal: Principal) -> Refusal | None:
    """Why the caller may not switch lights (403), or None if they may."""
    if may(principal.role, "control"):
        return None
    return refused(
        403,
        f"role {principal.role.value} may not switch lights (needs engineer or admin)",
        "refusal.role_may_not",
        role=principal.role.value,
    )


async def admit_switching(
    controller: Controller, principal: Principal, request: CommandRequest, source: str
) -> Actor:
    """The caller as an actor, if they may switch lights; else the refusal is audited: 403."""
    actor = Actor(principal.name, principal.key_id, principal.role.value)
    refusal = switching_refusal(principal)
    if refusal is not None:
        await controller.commands.refuse(request, actor, source, str(refusal.detail))
        raise refusal
    return actor


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def _submit(
    controller: Controller,
    limiter: RateLimiter,
    principal: Principal,
    command: CommandRequest,
    response: Response,
) -> CommandOut:
    dispatcher = controller.commands
    actor = await admit_switching(controller, principal, command, "api")
    retry_after = limiter.take(principal.key_id)
    if retry_after is not None:
        reason = f"rate limit: too many commands from this key; retry in {retry_after:.0f}s"
        await dispatcher.refuse(command, actor, "api", reason)
        seconds = math.ceil(retry_after)
        words = PeopleMessage("refusal.command_rate", {"seconds": seconds})
        raise Refusal(429, reason, words, headers={"Retry-After": str(seconds)})
    accepted = await dispatcher.submit(command, actor, "api")
    response.headers["Location"] = f"/commands/{accepted.id}"
    return command_out(accepted)


@router.post("/control/circuits", status_code=202, response_model=CommandOut)
async def switch_circuits(
    body: CircuitCommandIn,
    controller: ControllerDep,
    principal: Caller,
    limiter: Annotated[RateLimiter, Depends(_limiter)],
    response: Response,
) -> CommandOut:
    """Switch cabinet circuits on or off; follow the command at ``/commands/{id}``."""
    action = Action.CIRCUIT_ON if body.action == "on" else Action.CIRCUIT_OFF
    request = CommandRequest(action, body.targets, confirm=body.confirm)
    return await _submit(controller, limiter, principal, request, response)


@router.post("/control/lamps", status_code=202, response_model=CommandOut)
async def switch_lamps(
    body: LampCommandIn,
    controller: ControllerDep,
    principal: Caller,
    limiter: Annotated[RateLimiter, Depends(_limiter)],
    response: Response,
) -> CommandOut:
    """Switch or dim single lamps; follow the command at ``/commands/{id}``."""
    action = {"on": Action.LAMP_ON, "off": Action.LAMP_OFF, "dim": Action.LAMP_DIM}[body.action]
    request = CommandRequest(action, body.targets, dim=body.level, confirm=body.confirm)
    return await _submit(controller, limiter, principal, request, response)


@router.get("/commands", response_model=list[CommandOut])
def list_commands(
    controller: ControllerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[CommandOut]:
    """Recent commands, newest first (the audit log keeps all)."""
    return [command_out(c) for c in controller.commands.recent(limit)]


@router.get("/commands/{command_id}", response_model=CommandOut | AuditEntryOut)
async def get_command(
    command_id: RowId,
    controller: ControllerDep,
    wait: Annotated[
        float, Query(ge=0, le=60, description="wait up to this many seconds for the end")
    ] = 0,
) -> CommandOut | AuditEntryOut:
    """One command with its result per target; an older one comes from the audit log."""
    command = controller.commands.get(command_id)
    if command is None:
        entry = await controller.audit.get(command_id)
        if entry is None:
            raise refused(404, f"no command {command_id}", "refusal.no_command", command=command_id)
        return audit_out(entry)
    if wait > 0 and not command.done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(command.done.wait(), wait)
    return command_out(command)


@router.get("/audit", response_model=list[AuditEntryOut])
async def read_audit(
    controller: ControllerDep,
    _principal: Supervisor,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str | None = None,
    outcome: str | None = None,
    action: str | None = None,
    target: Annotated[str | None, Query(description="a device id, e.g. JC-DF-001")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    """The command audit log, newest first: who, role, what, targets, when, outcome."""
    query = AuditQuery(
        since=since.timestamp() if since else None,
        until=until.timestamp() if until else None,
        who=by,
        outcome=outcome,
        action=action,
        target=target,
        limit=limit,
    )
    return [audit_out(e) for e in await controller.audit.query(query)]
