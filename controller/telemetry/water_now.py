"""A gauge's water now, as the flood panel shows it: level, band, trend, age.

From the gauge's stored readings of the last minutes: the newest level, the
band it stands in (blue, yellow, orange, red, or none), and its rate of rise
over the window, in cm per minute, as rising, falling or steady.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.telemetry.flood_summary import BANDS
from controller.telemetry.query import Sample

#: The window the rate is taken over, and the change per minute below which it is steady.
TREND_WINDOW_S = 600.0
STEADY_CM_PER_MIN = 0.1


@dataclass(frozen=True)
class WaterNow:
    """The newest level of a gauge and how it moves."""

    level: float
    at: float
    band: str | None
    rise_cm_per_min: float | None
    trend: str  # "rising", "falling", "steady" or "unknown"


def band_of(level: float, levels: Mapping[str, float]) -> str | None:
    """The highest band whose level the water has reached, if any."""
    reached = [b for b in BANDS if b in levels and level >= levels[b]]
    return reached[-1] if reached else None


def water_now(stored: list[Sample], levels: Mapping[str, float]) -> WaterNow | None:
    """From readings oldest first (the last TREND_WINDOW_S); None without a good one."""
    good = [(s.ts, s.value) for s in stored if s.value is not None and s.quality == 0]
    if not good:
        return None
    at, level = good[-1]
    earlier = [(ts, v) for ts, v in good if at - ts <= TREND_WINDOW_S]
    first_at, first = earlier[0]
    minutes = (at - first_at) / 60.0
    if minutes < 0.5:
        return WaterNow(level, at, band_of(level, levels), None, "unknown")
    rate = (level - first) * 100.0 / minutes
    trend = "steady" if abs(rate) < STEADY_CM_PER_MIN else ("rising" if rate > 0 else "falling")
    return WaterNow(level, at, band_of(level, levels), rate, trend)
