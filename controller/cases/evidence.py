"""Evidence for a sensor case: the device's readings at the alarm and the series before it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from controller.latest import LatestValues
from controller.registry import Registry
from controller.telemetry.query import TelemetryReader
from rules.alarm_model import Alarm


class EvidenceCollector:
    """Collects what an inspector would want to see next to a sensor case."""

    def __init__(
        self,
        registry: Registry,
        latest: LatestValues,
        reader: Callable[[], TelemetryReader | None],
        minutes: float,
    ) -> None:
        self.registry = registry
        self.latest = latest
        self.reader = reader
        self.minutes = minutes

    async def collect(self, alarm: Alarm) -> dict[str, Any]:
        """The alarm's values, the device's latest readings and the alarm point's series."""
        evidence: dict[str, Any] = {
            "alarm": {
                "id": alarm.id,
                "rule": alarm.rule,
                "kind": alarm.kind,
                "level": alarm.level_name,
                "value": alarm.value,
                "limit": alarm.limit,
                "raised_at": alarm.raised_at,
            }
        }
        device = self.registry.by_id.get(alarm.device)
        if device is None:
            return evidence
        readings = {}
        for k, point in enumerate(device.points):
            value = float(self.latest.value[device.index, k])
            ts = float(self.latest.ts[device.index, k])
            if not math.isnan(ts):
                readings[point.name] = {
                    "value": None if math.isnan(value) else value,
                    "unit": point.unit,
                    "ts": ts,
                }
        evidence["readings"] = readings
        reader = self.reader()
        # An alarm from before a profile change may name a point the device no longer has.
        known = any(p.name == alarm.point for p in device.points)
        if reader is not None and known and self.minutes > 0:
            samples = await reader.raw(
                device,
                alarm.point,
                alarm.raised_at - self.minutes * 60,
                alarm.raised_at + 1,
                500,
            )
            evidence["series"] = {
                "point": alarm.point,
                "samples": [[s.ts, s.value] for s in samples],
            }
        return evidence
