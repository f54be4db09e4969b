"""A night's program as timed steps for given places: pure, so it is tested without I/O.

Astronomical steps follow each place's own sunset and sunrise (NOAA equations,
vectorized over the places); fixed times are local wall-clock times, so a
daylight-saving change is honoured by the time zone database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from controller.schedules.config import AstroTime, Program, ProgramStep
from rules.astro import sun_times

#: Largest dim change per ramp sub-step, percent.
RAMP_STEP_PERCENT = 10


@dataclass(frozen=True)
class PlannedStep:
    """What happens at ``at`` (Unix seconds) at one place: lamps on or off, and their level."""

    at: float
    action: Literal["on", "off", "dim"]
    #: Dim level in effect from then on (None when off).
    level: int | None
    #: A ramp's sub-step on the way to its level (the ramp's last step is not one).
    on_the_way: bool = False

    @property
    def lit(self) -> bool:
        """Whether the lamps are on after this step."""
        return self.action != "off"


def _midday_utc(day: date) -> float:
    # Within 12 hours of every place's local solar noon of ``day``: it names that solar day.
    return datetime.combine(day, time(12), tzinfo=UTC).timestamp()


def _step_times(
    step: ProgramStep, night: date, lats: np.ndarray, lons: np.ndarray, tz: ZoneInfo
) -> np.ndarray:
    if isinstance(step.at, AstroTime):
        if step.at.event == "sunset":
            _, event = sun_times(lats, lons, _midday_utc(night))
        else:
            event, _ = sun_times(lats, lons, _midday_utc(night + timedelta(days=1)))
        return np.asarray(event + step.at.offset_minutes * 60.0, dtype=np.float64)
    clock = time.fromisoformat(step.at)
    day = night if clock.hour >= 12 else night + timedelta(days=1)
    at = datetime.combine(day, clock, tzinfo=tz).timestamp()
    return np.full(len(lats), at, dtype=np.float64)


def _expand(steps: list[tuple[float, ProgramStep]]) -> list[PlannedStep]:
    planned: list[PlannedStep] = []
    level: int | None = None
    for at, step in steps:
        if step.action == "off":
            level = None
            planned.append(PlannedStep(at, "off", None))
            continue
        target = step.level if step.level is not None else 100
        if step.action == "on" or level is None or not step.ramp_minutes:
            level = target
            planned.append(PlannedStep(at, step.action, target))
            continue
        start = level
        parts = max(1, math.ceil(abs(target - start) / RAMP_STEP_PERCENT))
        for i in range(1, parts + 1):
            planned.append(
                PlannedStep(
                    at + step.ramp_minutes * 60.0 * i / parts,
                    "dim",
                    round(start + (target - start) * i / parts),
                    on_the_way=i < parts,
                )
            )
        level = target
    return planned


def plan_night(
    program: Program, night: date, lats: list[float], lons: list[float], tz: ZoneInfo
) -> list[list[PlannedStep]]:
    """For each place, the steps of the night that starts on the evening of ``night``.

    Steps are applied in time order, whatever their order in the program (a
    sunset-relative step may fall before or after a fixed one).
    """
    lat = np.asarray(lats, dtype=np.float64)
    lon = np.asarray(lons, dtype=np.float64)
    times = [_step_times(step, night, lat, lon, tz) for step in program.steps]
    plans = []
    for place in range(len(lat)):
        ordered = sorted(
            ((float(times[k][place]), step) for k, step in enumerate(program.steps)),
            key=lambda pair: pair[0],
        )
        plans.append(_expand(ordered))
    return plans


def night_of(at: float, tz: ZoneInfo) -> date:
    """The night a moment belongs to: before noon it is still the previous evening's night."""
    local = datetime.fromtimestamp(at, tz)
    return local.date() if local.hour >= 12 else local.date() - timedelta(days=1)
