"""Devices: the installed cabinets, lamps and gauges, their latest readings and health."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Query

from api.auth import read_guard
from api.bounds import Offset
from api.deps import ControllerDep
from api.errors import refused
from api.schemas import DeviceDetail, DeviceHealthOut, DeviceSummary, PointValue, utc
from controller.registry import Device
from controller.runtime import Controller
from drivers.device_class import DeviceClass
from drivers.profile import DataType, PointSpec
from drivers.readings import Quality

router = APIRouter(
    prefix="/devices", tags=["devices"], dependencies=[Depends(read_guard("devices"))]
)


def _online(controller: Controller, device: Device) -> bool:
    # Lamps behind a concentrator are reached through their cabinet.
    polled = device.parent if device.parent is not None else device.index
    return controller.poller.health[polled].online


def _summary(controller: Controller, device: Device) -> DeviceSummary:
    loc = device.location
    parent = controller.registry.devices[device.parent].id if device.parent is not None else None
    return DeviceSummary(
        id=device.id,
        device_class=device.device_class,
        profile=device.profile.name,
        name=loc.name,
        link=device.link,
        unit=device.unit,
        parent=parent,
        grid=loc.grid,
        road=loc.road,
        district=loc.district,
        lat=loc.lat,
        lon=loc.lon,
        online=_online(controller, device),
    )


@router.get("", response_model=list[DeviceSummary])
def list_devices(
    controller: ControllerDep,
    device_class: DeviceClass | None = None,
    grid: str | None = None,
    road: str | None = None,
    limit: int = Query(default=1000, ge=1, le=100_000),
    offset: Offset = 0,
) -> list[DeviceSummary]:
    """Devices, filtered by class, grid cell or road."""
    selected = [
        d
        for d in controller.registry.devices
        if (device_class is None or d.device_class == device_class)
        and (grid is None or d.location.grid == grid)
        and (road is None or d.location.road == road)
    ]
    return [_summary(controller, d) for d in selected[offset : offset + limit]]


@router.get("/{device_id}", response_model=DeviceDetail)
def get_device(device_id: str, controller: ControllerDep) -> DeviceDetail:
    """One device with its latest value of every point and its communication health."""
    device = controller.registry.by_id.get(device_id)
    if device is None:
        raise refused(404, f"no device {device_id!r}", "refusal.no_device", device=device_id)
    polled = device.parent if device.parent is not None else device.index
    health = controller.poller.health[polled]
    latest = controller.latest
    readings = []
    for i, point in enumerate(device.points):
        value = float(latest.value[device.index, i])
        ts = float(latest.ts[device.index, i])
        readings.append(
            PointValue(
                point=point.name,
                value=None if math.isnan(value) else value,
                unit=point.unit,
                ts=utc(ts),
                quality=Quality(int(latest.quality[device.index, i])).name.lower(),
                boolean=isinstance(point, PointSpec) and point.type is DataType.BOOL,
            )
        )
    return DeviceDetail(
        **_summary(controller, device).model_dump(),
        circuit=device.circuit,
        phase=device.phase,
        rated_w=device.rated_w,
        health=DeviceHealthOut(
            online=health.online,
            polls=health.polls,
            consecutive_failures=health.consecutive_failures,
            last_success=utc(health.last_success),
            last_failure=utc(health.last_failure),
            last_error=health.last_error,
            errors=dict(health.errors),
        ),
        readings=readings,
    )
