"""Alarms: list, acknowledge, shelve, take out of service (by role)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from api.auth import AlarmOperator, read_guard
from api.deps import AlarmsDep, ControllerDep
from api.errors import MessageOut, refused
from api.schemas import (
    AlarmBatchOut,
    AlarmIdsIn,
    AlarmOut,
    AlarmRefusal,
    AlarmShelveManyIn,
    FloodWatchOut,
    OutOfServiceIn,
    ShelveIn,
    utc,
)
from drivers.device_class import DeviceClass
from rules.alarm_model import Alarm, AlarmBatch, severity_rank
from rules.alarms import AlarmManager

router = APIRouter(prefix="/alarms", tags=["alarms"], dependencies=[Depends(read_guard("alarms"))])


def alarm_out(a: Alarm, manager: AlarmManager) -> AlarmOut:
    """The API form of an alarm, its state by ``manager``'s clock."""
    return AlarmOut(
        id=a.id,
        rule=a.rule,
        kind=a.kind,
        device=a.device,
        device_class=a.device_class,
        point=a.point,
        sub=a.sub,
        severity=a.severity,
        level=a.level,
        level_name=a.level_name,
        state=manager.state_of(a),
        condition=a.condition.value,
        value=a.value,
        limit=a.limit,
        raised_at=datetime.fromtimestamp(a.raised_at, tz=UTC),
        last_seen=datetime.fromtimestamp(a.last_seen, tz=UTC),
        count=a.count,
        acknowledged_at=utc(a.acked_at),
        acknowledged_by=a.acked_by,
        cleared_at=utc(a.cleared_at),
        shelved_until=utc(a.shelved_until),
        suppressed_by=a.suppressed_by,
        out_of_service=a.out_of_service,
        chattering=a.chattering,
        grid=a.grid,
        road=a.road,
        district=a.district,
        cabinet=a.cabinet,
        circuit=a.circuit,
        lat=a.lat,
        lon=a.lon,
    )


@router.get("", response_model=list[AlarmOut])
def list_alarms(
    manager: AlarmsDep,
    state: Annotated[str | None, Query(description="e.g. active_unacknowledged, shelved")] = None,
    min_severity: Literal["low", "medium", "high", "urgent"] | None = None,
    device: str | None = None,
    rule: str | None = None,
    device_class: DeviceClass | None = None,
    grid: str | None = None,
    district: str | None = None,
    include_suppressed: bool = True,
) -> list[AlarmOut]:
    """Open alarms, newest first, filtered."""
    out = []
    for a in manager.list():
        if (
            (state is None or manager.state_of(a) == state)
            and (min_severity is None or severity_rank(a.severity) >= severity_rank(min_severity))
            and (device is None or a.device == device)
            and (rule is None or a.rule == rule)
            and (device_class is None or a.device_class == device_class)
            and (grid is None or a.grid == grid)
            and (district is None or a.district == district)
            and (include_suppressed or manager.state_of(a) != "suppressed")
        ):
            out.append(alarm_out(a, manager))
    return out


@router.get("/flood-watch", response_model=FloodWatchOut)
def flood_watch(controller: ControllerDep, manager: AlarmsDep) -> FloodWatchOut:
    """Areas whose gauges are in storm mode, and areas with an alarm flood."""
    return FloodWatchOut(
        storm_areas={
            k: datetime.fromtimestamp(v, tz=UTC) for k, v in controller.rules.stats.storms.items()
        },
        alarm_floods={k: datetime.fromtimestamp(v, tz=UTC) for k, v in manager.floods.items()},
    )


def _batch_out(batch: AlarmBatch, manager: AlarmManager) -> AlarmBatchOut:
    return AlarmBatchOut(
        done=[alarm_out(a, manager) for a in batch.done],
        refused=[
            AlarmRefusal(id=r.id, reason=r.reason, message=MessageOut.of(r.message))
            for r in batch.refused
        ],
    )


@router.post("/acknowledge", response_model=AlarmBatchOut)
async def acknowledge_many(
    body: AlarmIdsIn, manager: AlarmsDep, who: AlarmOperator
) -> AlarmBatchOut:
    """Acknowledge many alarms in one action; those that cannot be are listed with why."""
    return _batch_out(await manager.acknowledge_many(body.ids, who.name), manager)


@router.post("/shelve", response_model=AlarmBatchOut)
async def shelve_many(
    body: AlarmShelveManyIn, manager: AlarmsDep, who: AlarmOperator
) -> AlarmBatchOut:
    """Shelve many alarms for a while in one action."""
    return _batch_out(await manager.shelve_many(body.ids, who.name, body.minutes), manager)


def _open(manager: AlarmManager, alarm_id: int) -> None:
    alarm = manager.by_id.get(alarm_id)
    if alarm is None or alarm.closed_at is not None:
        raise refused(404, f"no open alarm {alarm_id}", "refusal.alarm_not_open", alarm=alarm_id)


@router.get("/{alarm_id}", response_model=AlarmOut)
def get_alarm(alarm_id: int, manager: AlarmsDep) -> AlarmOut:
    """One alarm (open or closed, if this run knows it)."""
    alarm = manager.by_id.get(alarm_id)
    if alarm is None:
        raise refused(404, f"no alarm {alarm_id}", "refusal.no_alarm", alarm=alarm_id)
    return alarm_out(alarm, manager)


@router.post("/{alarm_id}/acknowledge", response_model=AlarmOut)
async def acknowledge(alarm_id: int, manager: AlarmsDep, who: AlarmOperator) -> AlarmOut:
    """Acknowledge an alarm (engineer, dispatcher, flood duty, admin)."""
    _open(manager, alarm_id)
    return alarm_out(
        await manager.acknowledge(alarm_id, who.name),
        manager,
    )


@router.post("/{alarm_id}/shelve", response_model=AlarmOut)
async def shelve(alarm_id: int, body: ShelveIn, manager: AlarmsDep, who: AlarmOperator) -> AlarmOut:
    """Shelve an alarm for a while: still evaluated, not announced."""
    _open(manager, alarm_id)
    return alarm_out(
        await manager.shelve(alarm_id, who.name, body.minutes),
        manager,
    )


@router.post("/{alarm_id}/unshelve", response_model=AlarmOut)
async def unshelve(alarm_id: int, manager: AlarmsDep, who: AlarmOperator) -> AlarmOut:
    """End shelving now."""
    _open(manager, alarm_id)
    return alarm_out(
        await manager.unshelve(alarm_id, who.name),
        manager,
    )


@router.post("/{alarm_id}/out-of-service", response_model=AlarmOut)
async def out_of_service(
    alarm_id: int, body: OutOfServiceIn, manager: AlarmsDep, who: AlarmOperator
) -> AlarmOut:
    """Take an alarm out of service (maintenance) or put it back."""
    _open(manager, alarm_id)
    return alarm_out(
        await manager.set_out_of_service(alarm_id, who.name, body.out_of_service), manager
    )
