"""API schemas: what the HTTP API returns, separate from config and storage models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class DeviceHealthOut(BaseModel):
    """Communication health of a device."""

    online: bool
    polls: int
    consecutive_failures: int
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str
    errors: dict[str, int]


class DeviceSummary(BaseModel):
    """A device in a list."""

    id: str
    device_class: str
    profile: str
    name: str
    link: str
    unit: int
    parent: str | None
    grid: str
    road: str
    district: str
    lat: float
    lon: float
    online: bool


class PointValue(BaseModel):
    """The latest reading of one point."""

    point: str
    value: float | None
    unit: str
    ts: datetime | None
    quality: str


class DeviceDetail(DeviceSummary):
    """A device with its latest readings and health."""

    circuit: int | None
    phase: str | None
    rated_w: float | None
    health: DeviceHealthOut
    readings: list[PointValue]


class LinkOut(BaseModel):
    """Health of one link."""

    id: str
    kind: str
    address: str
    connected: bool
    connects: int
    connect_failures: int
    disconnects: int
    requests: int
    errors: dict[str, int]
    last_success: datetime | None
    last_error: str
    devices: int
    devices_online: int


class SystemHealth(BaseModel):
    """Liveness and a one-line picture of the fleet."""

    status: str
    city: str
    devices: dict[str, int]
    poll_targets: int
    online: int
