"""Fault statistics: lighting rate, faults per day/week/month, MTTR, availability."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query

from api.auth import read_guard
from api.bounds import check_span
from api.deps import ControllerDep
from api.errors import refused
from api.schemas import (
    CabinetEnergyOut,
    EnergyReportOut,
    FaultCountOut,
    FaultReportOut,
    LightingRateOut,
)
from controller.energy import DAY_STARTS, cabinet_energy
from controller.statistics import GroupBy, Period, availability, fault_counts, lighting_rates

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
    check_span(start_dt, end_dt)
    t0, t1 = start_dt.timestamp(), end_dt.timestamp()
    alarms = await controller.rules.store.history(t0, t1)
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


@router.get("/energy", response_model=EnergyReportOut)
async def energy(
    controller: ControllerDep,
    period: Literal["night", "month"] = "night",
    day: Annotated[
        date | None,
        Query(
            alias="date",
            description="night: its evening (default: last night); month: any day of it "
            "(default: this month, its nights so far)",
        ),
    ] = None,
) -> EnergyReportOut:
    """Energy per cabinet (kWh from its counter, noon to noon) against its lamps' rated
    load burning from sunset to sunrise, and the saving in percent."""
    tz = controller.loaded.config.site.tz
    now = datetime.now(tz)
    # The last night that has ended: today's noon has passed, or it was the night before.
    last = now.date() - timedelta(days=1 if now.time() >= DAY_STARTS else 2)
    if period == "night":
        first, nights = day or last, 1
    else:
        first = (day or last).replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        nights = (min(following - timedelta(days=1), last) - first).days + 1
    if first > last or nights < 1:
        raise refused(
            422,
            f"no night of that {period} has ended yet (the last is {last})",
            "refusal.no_night_ended",
            last=last.isoformat(),
        )
    reader = controller.telemetry.reader
    if reader is None:
        raise refused(
            409,
            "no telemetry store to read the energy counters from",
            "refusal.no_telemetry_store",
        )
    rows = await cabinet_energy(controller.registry, reader, tz, first, nights)
    metered = [r for r in rows if r.kwh is not None]
    total = sum(r.kwh or 0.0 for r in metered)
    full = sum(r.full_kwh for r in metered)
    return EnergyReportOut(
        period=period,
        first_night=first,
        nights=nights,
        total_kwh=round(total, 2),
        total_full_kwh=round(full, 2),
        saving_pct=round(100 * (1 - total / full), 1) if full > 0 and metered else None,
        cabinets=[
            CabinetEnergyOut(
                cabinet=r.cabinet,
                name=r.name,
                rated_kw=r.rated_kw,
                full_kwh=r.full_kwh,
                kwh=r.kwh,
                saving_pct=None if r.saving is None else round(100 * r.saving, 1),
                note=r.note,
            )
            for r in rows
        ],
    )
