"""Telemetry: stored readings over a time range, latest values per device or area."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.auth import read_guard
from api.bounds import check_finite, check_span, check_time
from api.deps import ControllerDep
from api.errors import refused
from api.schemas import BucketOut, LatestOut, SampleOut, SeriesOut, SinkOut, WaterOut, utc
from controller.runtime import Controller
from controller.telemetry.query import TelemetryReader
from controller.telemetry.water_now import TREND_WINDOW_S, water_now
from drivers.device_class import DeviceClass
from drivers.readings import Quality

router = APIRouter(
    prefix="/telemetry", tags=["telemetry"], dependencies=[Depends(read_guard("telemetry"))]
)


def utc_ts(ts: float) -> datetime:
    """A stored reading's time (never missing) as UTC."""
    moment = utc(ts)
    assert moment is not None
    return moment


MAX_BUCKETS = 10_000


def _reader(controller: Controller) -> TelemetryReader:
    reader = controller.telemetry.reader
    if reader is None:
        raise refused(
            503,
            "no telemetry store is configured (storage.embedded is off)",
            "refusal.no_telemetry_store",
        )
    return reader


@router.get("/series/{device_id}/{point}", response_model=SeriesOut)
async def series(
    device_id: str,
    point: str,
    controller: ControllerDep,
    start: Annotated[datetime | None, Query(description="ISO 8601; default end - 1 h")] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601; default now")] = None,
    every: Annotated[
        # At most a year: a bucket wider than that is no downsampling a person asks for, and
        # a huge one overflows the store's bucket arithmetic.
        float | None,
        Query(gt=0, le=366 * 86400, description="seconds per bucket: mean/min/max/count"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> SeriesOut:
    """A point's readings in ``[start, end)``: raw, or downsampled when ``every`` is given."""
    device = controller.registry.by_id.get(device_id)
    if device is None:
        raise refused(404, f"no device {device_id!r}", "refusal.no_device", device=device_id)
    points = {p.name: p for p in device.points}
    if point not in points:
        raise refused(
            404,
            f"device {device_id} has no point {point!r} (it has: {', '.join(points)})",
            "refusal.no_point",
            device=device_id,
            point=point,
        )
    check_finite(every, "every")
    check_time(start, "start")
    check_time(end, "end")
    end_dt = end or datetime.now(tz=UTC)
    start_dt = start or end_dt - timedelta(hours=1)
    check_span(start_dt, end_dt)
    t0, t1 = start_dt.timestamp(), end_dt.timestamp()
    if every is not None and (t1 - t0) / every > MAX_BUCKETS:
        raise refused(
            422,
            f"more than {MAX_BUCKETS} buckets: use a larger every",
            "refusal.too_many_buckets",
            most=MAX_BUCKETS,
        )
    reader = _reader(controller)
    out = SeriesOut(
        device=device.id,
        point=point,
        unit=points[point].unit,
        start=start_dt,
        end=end_dt,
        every_s=every,
        source=reader.name,
    )
    if every is None:
        samples = await reader.raw(device, point, t0, t1, limit)
        out.samples = [
            SampleOut(ts=utc_ts(s.ts), value=s.value, quality=Quality(s.quality).name.lower())
            for s in samples
        ]
    else:
        buckets = await reader.downsampled(device, point, t0, t1, every)
        out.buckets = [
            BucketOut(ts=utc_ts(b.ts), mean=b.mean, min=b.min, max=b.max, count=b.count)
            for b in buckets
        ]
    return out


@router.get("/latest", response_model=list[LatestOut])
async def latest(
    controller: ControllerDep,
    device: Annotated[list[str] | None, Query(description="device ids (repeatable)")] = None,
    device_class: DeviceClass | None = None,
    grid: str | None = None,
    road: str | None = None,
    district: str | None = None,
) -> list[LatestOut]:
    """Newest stored values per device, for given devices or an area (grid, road, district)."""
    registry = controller.registry
    if device:
        unknown = [d for d in device if d not in registry.by_id]
        if unknown:
            raise refused(
                404,
                f"no device {', '.join(map(repr, unknown))}",
                "refusal.no_device",
                device=", ".join(unknown),
            )
        chosen = [registry.by_id[d] for d in device]
    else:
        chosen = [
            d
            for d in registry.devices
            if (device_class is None or d.device_class == device_class)
            and (grid is None or d.location.grid == grid)
            and (road is None or d.location.road == road)
            and (district is None or d.location.district == district)
        ]
    rows = await _reader(controller).latest(chosen)
    by_device: dict[str, LatestOut] = {}
    for d in chosen:
        by_device[d.id] = LatestOut(
            device=d.id,
            device_class=d.device_class,
            grid=d.location.grid,
            road=d.location.road,
            ts=None,
            values={},
        )
    for row in rows:
        entry = by_device[row.device]
        entry.values[row.point] = row.value
        ts = utc_ts(row.ts)
        if entry.ts is None or ts > entry.ts:
            entry.ts = ts
    return list(by_device.values())


@router.get("/sinks", response_model=list[SinkOut])
def sinks(controller: ControllerDep) -> list[SinkOut]:
    """Whether each destination takes data, what waits in its spool, and what was lost."""
    return [
        SinkOut(
            name=s.name,
            up=s.up,
            task_alive=s.task_alive,
            last_success=None if s.stats.last_delivery is None else utc_ts(s.stats.last_delivery),
            oldest_pending_age_s=s.oldest_pending_age,
            pending_records=s.pending_records,
            pending_points=s.pending_points,
            pending_bytes=s.pending_bytes,
            refused_points=s.refused_points,
            refused_records=s.refused_records,
            dropped_points=s.dropped_points,
            rejected_records=s.rejected_records,
            spool_full=s.spool_full,
            delivered_records=s.stats.delivered,
            delivered_points=s.stats.delivered_points,
            failures=s.stats.failures,
            restarts=s.stats.restarts,
            last_error=s.stats.last_error,
        )
        for s in controller.telemetry.sinks()
    ]


@router.get("/water", response_model=list[WaterOut])
async def water(controller: ControllerDep) -> list[WaterOut]:
    """Every gauge for the flood panel: level, band, rate of rise, age, storm mode.

    Most urgent first: the highest band, then the fastest rise.
    """
    reader = _reader(controller)
    now = time.time()
    storms = controller.rules.stats.storms
    area_by = controller.loaded.config.flood_watch
    out = []
    for device in controller.registry.devices:
        if device.device_class != "gauge":
            continue
        loc = device.location
        levels = dict(getattr(loc, "levels", None) or {})
        stored = await reader.raw(device, "water_level", now - TREND_WINDOW_S, now + 1, 10_000)
        current = water_now(stored, levels)
        area = getattr(loc, area_by.area_by) if area_by is not None else loc.district
        out.append(
            WaterOut(
                id=device.id,
                name=loc.name,
                district=loc.district,
                road=loc.road,
                level=None if current is None else round(current.level, 3),
                at=None if current is None else utc(current.at),
                band=None if current is None else current.band,
                rise_cm_per_min=(
                    None
                    if current is None or current.rise_cm_per_min is None
                    else round(current.rise_cm_per_min, 2)
                ),
                trend="unknown" if current is None else current.trend,
                age_s=None if current is None else round(now - current.at, 1),
                storm=area in storms,
                levels=levels,
            )
        )
    bands = {None: 0, "blue": 1, "yellow": 2, "orange": 3, "red": 4}
    out.sort(key=lambda w: (-bands[w.band], -(w.rise_cm_per_min or 0.0), w.id))
    return out
