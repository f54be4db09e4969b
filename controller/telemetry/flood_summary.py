"""What a gauge's water did over a period: peak, time above each band, now.

The day report shows these, not the alarm's last reading: a gauge that
reached red and fell back to orange must read "peak red" in the report.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.telemetry.query import Sample

BANDS = ("blue", "yellow", "orange", "red")


@dataclass(frozen=True)
class FloodSummary:
    """One gauge over one period."""

    peak: float
    peak_at: float
    current: float
    current_at: float
    #: The highest band the peak reached, if any.
    peak_band: str | None
    #: Seconds the level stood at or above each band's level.
    above: dict[str, float] = field(default_factory=dict)


def summarize_flood(
    stored: list[Sample], levels: Mapping[str, float], max_gap: float
) -> FloodSummary | None:
    """Summary of ``samples`` (oldest first) against the gauge's band ``levels``.

    A reading counts until the next one, but for no more than ``max_gap``
    seconds: a gauge that went silent is not assumed to stay flooded.
    """
    samples = [(s.ts, s.value) for s in stored if s.value is not None]
    if not samples:
        return None
    peak_at, peak = max(samples, key=lambda s: s[1])
    above = {band: 0.0 for band in BANDS if band in levels}
    for this, after in itertools.pairwise(samples):
        held = min(after[0] - this[0], max_gap)
        for band in above:
            if this[1] >= levels[band]:
                above[band] += held
    reached = [band for band in above if peak >= levels[band]]
    last_at, last = samples[-1]
    return FloodSummary(peak, peak_at, last, last_at, reached[-1] if reached else None, above)
