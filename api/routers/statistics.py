"""Fault statistics: lighting rate, faults per day/week/month, MTTR, availability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query

from api.auth import read_guard
from api.deps import ControllerDep
from api.schemas import FaultCountOut, FaultReportOut, LightingRateOut
from rules.statistics import GroupBy, Period, availability, fault_counts, lighting_rates

router = APIRouter(
    prefix="/statistics", tags=["statistics"], dependencies=[Depends(read_guard("statistics"))]
)


@router.get("/lighting", response_model=list[LightingRateOut])
def lighting(
    controller: ControllerDep,
    by: Literal["city", "cabinet", "road", "grid"] = "city",
) -> list[LightingRateOut]:
    """Lighting rate (lamps lit / lamps that should be lit) now, per group."""
    return [
        LightingRateOut(group=r.group, should_be_lit=r.should_be_lit, lit=r.lit, rate=r.rate)
        for r in lighting_rates(
            controller.registry, controller.latest, by, controller.assets.circuit_load
        )
    ]


@router.get("/faults", response_model=FaultReportOut)
async def faults(
    controller: ControllerDep,
    period: Period = "day",
    by: GroupBy = "kind",
    start: Annotated[datetime | None, Query(description="default: 30 days before end")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
) -> FaultReportOut:
    """Faults raised per period and group with mean time to repair, and availability."""
    end_dt = end or datetime.now(tz=UTC)
    start_dt = start or end_dt - timedelta(days=30)
    if start_dt.tzinfo is None or end_dt.tzinfo is None:
        raise HTTPException(422, "start and end need a time zone")
    if start_dt >= end_dt:
        raise HTTPException(422, "start must be before end")
    t0, t1 = start_dt.timestamp(), end_dt.timestamp()
    alarms = await controller.rules.manager.store.history(t0, t1)
    raised = [a for a in alarms if t0 <= a.raised_at < t1]
    tz = ZoneInfo(controller.loaded.config.site.timezone)
    polled = len(controller.registry.targets) + len(controller.registry.mqtt_topics)
    return FaultReportOut(
        period=period,
        by=by,
        start=start_dt,
        end=end_dt,
        availability=availability(alarms, polled, t0, t1),
        rows=[
            FaultCountOut(
                period_start=r.period_start,
                group=r.group,
                raised=r.raised,
                cleared=r.cleared,
                mttr_s=r.mttr_s,
            )
            for r in fault_counts(raised, period, by, tz)
        ],
    )
