"""Schedules: groups and tonight's timeline, what the runner did, device tables, overrides."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, NoReturn

from fastapi import APIRouter, Depends, Query

from api.auth import current_principal, read_guard
from api.bounds import RowId, check_day
from api.deps import ControllerDep
from api.errors import Refusal, refused
from api.keys import Principal
from api.routers.control import admit_switching, switching_refusal
from api.schemas import (
    FiredStepOut,
    OverrideIn,
    OverrideOut,
    PlaceTimelineOut,
    ScheduleGroupOut,
    StepOut,
    TablePushOut,
    TimelineOut,
    utc,
)
from controller.control.audit import Actor
from controller.control.dispatcher import CommandRefused, CommandRequest
from controller.control.writes import Action
from controller.runtime import Controller
from controller.schedules.device_tables import TablePush
from controller.schedules.overrides import Override
from controller.schedules.plan import GroupPlan
from controller.schedules.timeline import PlannedStep, night_of

router = APIRouter(tags=["schedules"], dependencies=[Depends(read_guard("schedules"))])

Caller = Annotated[Principal, Depends(current_principal)]


def _step(step: PlannedStep) -> StepOut:
    return StepOut(at=utc(step.at) or datetime.min, action=step.action, level=step.level)


def _group(controller: Controller, name: str) -> GroupPlan:
    for plan in controller.schedule_plan.groups:
        if plan.group.id == name:
            return plan
    raise refused(404, f"no schedule group {name!r}", "refusal.no_schedule_group", group=name)


@router.get("/schedules", response_model=list[ScheduleGroupOut])
def list_schedules(controller: ControllerDep) -> list[ScheduleGroupOut]:
    """Schedule groups with tonight's program and their next step."""
    schedule = controller.schedule_plan
    now = controller.schedules.clock.now()
    tonight = night_of(now, schedule.tz)
    out = []
    for plan in schedule.groups:
        upcoming = [
            s
            for night in (tonight, tonight.fromordinal(tonight.toordinal() + 1))
            for steps in schedule.night_plan(plan, night)
            for s in steps
            if s.at > now
        ]
        program = schedule.program_of(plan, tonight)
        out.append(
            ScheduleGroupOut(
                id=plan.group.id,
                name=plan.group.name or plan.group.id,
                calendar=plan.calendar.id,
                mode=plan.group.mode,
                places=len(plan.places),
                tonight=tonight.isoformat(),
                program=program.id,
                program_name=program.name or program.id,
                next_step=_step(min(upcoming, key=lambda s: s.at)) if upcoming else None,
            )
        )
    return out


@router.get("/schedules/log", response_model=list[FiredStepOut])
def schedule_log(
    controller: ControllerDep, limit: Annotated[int, Query(ge=1, le=2000)] = 100
) -> list[FiredStepOut]:
    """What the runner did, newest first."""
    return [
        FiredStepOut(
            at=utc(f.at) or datetime.min,
            source=f.source,
            action=f.action,
            level=f.level,
            places=list(f.places),
            commands=list(f.commands),
        )
        for f in list(reversed(controller.schedules.log))[:limit]
    ]


def _push_out(p: TablePush) -> TablePushOut:
    return TablePushOut(
        cabinet=p.cabinet,
        at=utc(p.at) or datetime.min,
        night=p.night,
        entries=p.entries,
        ok=p.ok,
        detail=p.detail,
    )


@router.get("/schedules/device-tables", response_model=list[TablePushOut])
async def device_tables(controller: ControllerDep) -> list[TablePushOut]:
    """The last push of each device-mode cabinet's time table (from the state database,
    so the standby of a pair shows the leader's)."""
    return [_push_out(p) for p in await controller.table_pushes.latest()]


@router.get("/schedules/{group}/timeline", response_model=TimelineOut)
def timeline(
    group: str,
    controller: ControllerDep,
    night: Annotated[date | None, Query(description="the evening's date; default tonight")] = None,
) -> TimelineOut:
    """A group's steps on one night, place by place (each at its own sunset and sunrise)."""
    check_day(night, "night")
    schedule = controller.schedule_plan
    plan = _group(controller, group)
    night = night or night_of(controller.schedules.clock.now(), schedule.tz)
    steps = schedule.night_plan(plan, night)
    return TimelineOut(
        group=group,
        night=night.isoformat(),
        program=schedule.program_of(plan, night).id,
        places=[
            PlaceTimelineOut(
                place=place.key, lat=place.lat, lon=place.lon, steps=[_step(s) for s in s_list]
            )
            for place, s_list in zip(plan.places, steps, strict=True)
        ],
    )


@router.post("/schedules/{group}/push", response_model=list[TablePushOut])
async def push_tables(
    group: str, controller: ControllerDep, principal: Caller
) -> list[TablePushOut]:
    """Push tonight's steps into the group's device tables now (engineer).

    A refused push is in the audit log like a refused command.
    """
    what = f"group={group[:64]}"
    await _require_control(controller, principal, "time_table", what)
    try:
        plan = _group(controller, group)
    except Refusal as exc:
        await _refused(controller, principal, "time_table", what, exc)
    if plan.group.mode != "device":
        reason = f"group {group} runs centrally; it has no device tables"
        refusal = refused(409, reason, "refusal.group_central", group=group)
        await _refused(controller, principal, "time_table", what, refusal)
    runner = controller.schedules
    return [_push_out(p) for p in await runner.push_tables(runner.clock.now(), group)]


async def _require_control(
    controller: Controller, principal: Principal, action: str, what: str
) -> None:
    refusal = switching_refusal(principal)
    if refusal is not None:
        await _refused(controller, principal, action, what, refusal)


async def _refused(
    controller: Controller, principal: Principal, action: str, what: str, refusal: Refusal
) -> NoReturn:
    """Audit a refused schedule operation, then refuse it."""
    actor = Actor(principal.name, principal.key_id, principal.role.value)
    await controller.commands.record_refusal("api", actor, action, what, str(refusal.detail))
    raise refusal


def _override_out(o: Override, now: float) -> OverrideOut:
    if o.cancelled_at is not None:
        state = "cancelled"
    elif o.ended or now >= o.expires_at:
        state = "ended"
    elif now >= o.starts_at:
        state = "active"
    else:
        state = "scheduled"
    return OverrideOut(
        id=o.id,
        targets=o.selector.describe(),
        selector=o.selector,
        action=o.action,
        level=o.level,
        starts_at=utc(o.starts_at) or datetime.min,
        expires_at=utc(o.expires_at) or datetime.min,
        reason=o.reason,
        by=o.actor.name,
        created_at=utc(o.created_at) or datetime.min,
        cancelled_at=utc(o.cancelled_at),
        state=state,
    )


@router.get("/overrides", response_model=list[OverrideOut])
async def list_overrides(
    controller: ControllerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[OverrideOut]:
    """Manual overrides, newest first."""
    now = controller.schedules.clock.now()
    return [_override_out(o, now) for o in await controller.overrides.recent(limit)]


@router.post("/overrides", status_code=201, response_model=OverrideOut)
async def create_override(
    body: OverrideIn, controller: ControllerDep, principal: Caller
) -> OverrideOut:
    """Hold a group on, off or dimmed from ``starts_at`` (default now) to ``expires_at``.

    The same rules as a command apply: engineer or admin, and ``confirm`` for a
    switch-off of many lamps. Returns when an override that starts now has been applied.
    """
    runner = controller.schedules
    now = runner.clock.now()
    action = {"on": Action.CIRCUIT_ON, "off": Action.CIRCUIT_OFF, "dim": Action.LAMP_DIM}
    probe = CommandRequest(action[body.action], body.targets, dim=body.level, confirm=body.confirm)
    actor = await admit_switching(controller, principal, probe, "override")
    try:
        controller.commands.check(probe)
    except CommandRefused as exc:
        await controller.commands.refuse(probe, actor, "override", exc.reason)
        raise
    starts = body.starts_at.timestamp() if body.starts_at else now
    expires = body.expires_at.timestamp()
    if expires <= now:
        raise refused(422, "expires_at is in the past", "refusal.expires_in_past")
    override = Override(
        0, body.targets, body.action, body.level, starts, expires, body.reason, actor, now
    )
    stored = await runner.add_override(override)
    return _override_out(stored, runner.clock.now())


@router.delete("/overrides/{override_id}", response_model=OverrideOut)
async def cancel_override(
    override_id: RowId, controller: ControllerDep, principal: Caller
) -> OverrideOut:
    """End an override now; its lights go back to the schedule (refusals are audited)."""
    what = f"override={override_id}"
    await _require_control(controller, principal, "cancel_override", what)
    cancelled = await controller.schedules.cancel_override(override_id)
    if cancelled is None:
        reason = f"no running or scheduled override {override_id}"
        refusal = refused(404, reason, "refusal.no_override", override=override_id)
        await _refused(controller, principal, "cancel_override", what, refusal)
    return _override_out(cancelled, controller.schedules.clock.now())
