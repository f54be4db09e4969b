"""Fault statistics (故障自动统计): lighting rate, fault counts, MTTR, availability.

Periods (day, week from Monday, month) are counted in the city's time zone,
as the daily inventory, weekly analysis and monthly report are.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from controller.latest import LatestValues
from controller.registry import Registry
from rules.alarms import Alarm

Period = Literal["day", "week", "month"]
GroupBy = Literal["kind", "rule", "cabinet", "road", "grid", "district", "device_class"]


@dataclass(frozen=True)
class LightingRate:
    """Lamps lit against lamps that should be lit, for one group."""

    group: str
    should_be_lit: int
    lit: int

    @property
    def rate(self) -> float | None:
        """lit / should be lit, or None when no lamp should be lit."""
        return self.lit / self.should_be_lit if self.should_be_lit else None


@dataclass(frozen=True)
class FaultCount:
    """Faults raised in one period for one group, with mean time to repair."""

    period_start: datetime
    group: str
    raised: int
    cleared: int
    mttr_s: float | None


def period_start(moment: datetime, period: Period) -> datetime:
    """Start of the day, week (Monday) or month that contains ``moment``."""
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def lighting_rates(
    registry: Registry, latest: LatestValues, by: Literal["city", "cabinet", "road", "grid"]
) -> list[LightingRate]:
    """Lighting rate per group, from the latest readings.

    A lamp should be lit when its controller is commanded on and (behind a
    cabinet) its circuit is commanded on; it is lit when it reports light.
    """
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for device in registry.devices:
        if device.device_class != "lamp":
            continue
        names = [p.name for p in device.points]
        if "switch_cmd" not in names or "lamp_on" not in names:
            continue
        switch = latest.value[device.index, names.index("switch_cmd")]
        lit = latest.value[device.index, names.index("lamp_on")]
        if math.isnan(switch) or switch < 0.5:
            continue
        if device.parent is not None and device.circuit is not None:
            cabinet = registry.devices[device.parent]
            cab_names = [p.name for p in cabinet.points]
            point = f"circuit{device.circuit}_cmd"
            if point in cab_names:
                cmd = latest.value[cabinet.index, cab_names.index(point)]
                if math.isnan(cmd) or cmd < 0.5:
                    continue
        if by == "city":
            group = "city"
        elif by == "cabinet":
            group = registry.devices[device.parent].id if device.parent is not None else ""
        else:
            group = getattr(device.location, by)
        entry = counts[group]
        entry[0] += 1
        entry[1] += int(not math.isnan(lit) and lit >= 0.5)
    return [LightingRate(g, c[0], c[1]) for g, c in sorted(counts.items())]


def fault_counts(
    alarms: list[Alarm], period: Period, by: GroupBy, tz: ZoneInfo
) -> list[FaultCount]:
    """Faults raised per period and group, with the mean time from raise to clear."""
    buckets: dict[tuple[datetime, str], list[Alarm]] = defaultdict(list)
    for alarm in alarms:
        start = period_start(datetime.fromtimestamp(alarm.raised_at, tz=tz), period)
        group = str(getattr(alarm, by) or "")
        buckets[start, group].append(alarm)
    out = []
    for (start, group), members in sorted(buckets.items()):
        repairs = [a.cleared_at - a.raised_at for a in members if a.cleared_at is not None]
        out.append(
            FaultCount(
                start,
                group,
                len(members),
                len(repairs),
                float(np.mean(repairs)) if repairs else None,
            )
        )
    return out


def availability(alarms: list[Alarm], devices: int, since: float, until: float) -> float:
    """Share of device-time with communication, from comm-loss alarms in ``[since, until)``."""
    if devices == 0 or until <= since:
        return 1.0
    lost = 0.0
    for alarm in alarms:
        if alarm.kind != "comm_loss":
            continue
        end = alarm.cleared_at if alarm.cleared_at is not None else until
        lost += max(0.0, min(end, until) - max(alarm.raised_at, since))
    return max(0.0, 1.0 - lost / (devices * (until - since)))
