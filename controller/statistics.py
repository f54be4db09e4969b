"""Fault statistics (故障自动统计): lighting rate, fault counts, MTTR, availability.

Periods (day, week from Monday, month) are counted in the city's time zone,
as the daily inventory, weekly analysis and monthly report are.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from controller.device_config import CabinetConfig
from controller.latest import LatestValues
from controller.registry import Device, Registry
from rules.alarm_model import Alarm

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


class CircuitLoad(NamedTuple):
    """The lamps without a controller on one circuit (from the asset register)."""

    lamps: int
    rated_w: float


#: Supply voltage and power factor for a circuit's expected current (LED drivers).
NOMINAL_VOLTS = 220.0
NOMINAL_POWER_FACTOR = 0.95


def _value(latest: LatestValues, device: Device, point: str) -> float:
    names = [p.name for p in device.points]
    return float(latest.value[device.index, names.index(point)]) if point in names else math.nan


def _circuit_lamps_lit(
    latest: LatestValues, cabinet: Device, circuit: int, load: CircuitLoad
) -> int | None:
    """Of a circuit's lamps without a controller, how many are lit (None: not commanded on).

    The contactor's feedback says whether the circuit is live; its current,
    against the current its lamps draw at rated power, says how many burn.
    Without a current point, a live circuit counts all its lamps as lit.
    """
    cmd = _value(latest, cabinet, f"circuit{circuit}_cmd")
    if math.isnan(cmd) or cmd < 0.5:
        return None
    closed = _value(latest, cabinet, f"circuit{circuit}_on")
    if math.isnan(closed) or closed < 0.5:
        return 0
    amps = _value(latest, cabinet, f"circuit{circuit}_current")
    if math.isnan(amps):
        return load.lamps
    volts = _value(latest, cabinet, "voltage_a")
    volts = volts if volts > 50 else NOMINAL_VOLTS
    expected = load.rated_w / (volts * NOMINAL_POWER_FACTOR)
    if expected <= 0:
        return load.lamps
    return max(0, min(load.lamps, round(load.lamps * amps / expected)))


def lighting_rates(
    registry: Registry,
    latest: LatestValues,
    by: Literal["city", "cabinet", "road", "grid"],
    circuit_load: Callable[[str, int], CircuitLoad] | None = None,
) -> list[LightingRate]:
    """Lighting rate per group, from the latest readings.

    A lamp with a controller should be lit when its controller is commanded on
    and (behind a cabinet) its circuit is commanded on; it is lit when it
    reports light. Lamps without a controller (``circuit_load``, from the asset
    register) should be lit when their circuit is commanded on; how many are
    lit is judged from the circuit's feedback and current. They count in the
    road and grid cell of their cabinet.
    """
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def group_of(device: Device, cabinet: Device | None) -> str:
        if by == "city":
            return "city"
        if by == "cabinet":
            return cabinet.id if cabinet is not None else ""
        return str(getattr(device.location, by))

    if circuit_load is not None:
        for cabinet in registry.devices:
            loc = cabinet.location
            if cabinet.device_class != "cabinet" or not isinstance(loc, CabinetConfig):
                continue
            for circuit in range(1, loc.circuits + 1):
                load = circuit_load(cabinet.id, circuit)
                if load.lamps == 0:
                    continue
                lit = _circuit_lamps_lit(latest, cabinet, circuit, load)
                if lit is None:
                    continue
                entry = counts[group_of(cabinet, cabinet)]
                entry[0] += load.lamps
                entry[1] += lit
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
        parent = registry.devices[device.parent] if device.parent is not None else None
        entry = counts[group_of(device, parent)]
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
