"""The telemetry query interface, the same whichever store answers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from controller.registry import Device


@dataclass(frozen=True)
class Sample:
    """One stored reading."""

    ts: float
    value: float | None
    quality: int


@dataclass(frozen=True)
class Bucket:
    """Aggregate of one interval: mean, min, max and how many readings."""

    ts: float
    mean: float
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class LatestReading:
    """The newest stored value of one point of one device."""

    device: str
    point: str
    ts: float
    value: float | None


class TelemetryReader(Protocol):
    """Raw range, downsampled range and latest values, from InfluxDB or the embedded store."""

    name: str

    async def raw(
        self, device: Device, point: str, start: float, end: float, limit: int
    ) -> list[Sample]:
        """Readings of one point in ``[start, end)``, oldest first, at most ``limit``."""
        ...

    async def downsampled(
        self, device: Device, point: str, start: float, end: float, every: float
    ) -> list[Bucket]:
        """Mean, min, max and count per ``every`` seconds in ``[start, end)``."""
        ...

    async def latest(self, devices: list[Device]) -> list[LatestReading]:
        """The newest value of every point of each device."""
        ...
