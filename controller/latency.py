"""How long one kind of work takes: a histogram for metrics, recent samples for quantiles."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: Upper bounds (seconds) of the histogram's buckets: from a millisecond to a minute,
#: since a batch's alarms are known in milliseconds and a reading's age is seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclass
class LatencyRecord:
    """Durations observed: per-bucket counts (Prometheus histogram shape) and the last
    ``keep`` samples, so a quantile is exact over recent work and memory stays bounded."""

    keep: int = 10_000
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total_s: float = 0.0
    recent: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.keep)

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total_s += seconds
        self.recent.append(seconds)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, observations at or below it)`` per bucket, ``+Inf`` last."""
        out, running = [], 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the recent samples; 0 with none."""
        if not self.recent:
            return 0.0
        return float(np.quantile(np.fromiter(self.recent, np.float64), q))

    def clear_recent(self) -> None:
        """Forget the recent samples (a benchmark's window starts afresh)."""
        self.recent.clear()
