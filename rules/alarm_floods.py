"""Alarm floods (ISA-18.2): more new alarms in an area than an operator can take in."""

from __future__ import annotations

import collections
import logging

from rules.alarm_model import Alarm
from rules.config import AlarmsConfig

log = logging.getLogger(__name__)


class AlarmFloodDetector:
    """Counts new alarms per area in a sliding window and flags the areas in flood."""

    def __init__(self, cfg: AlarmsConfig) -> None:
        self.cfg = cfg
        self._new_by_area: dict[str, collections.deque[float]] = {}
        #: area -> time of the last new alarm that kept it in flood.
        self.floods: dict[str, float] = {}

    def count_new(self, alarm: Alarm, ts: float) -> None:
        """Count a newly raised alarm at ``ts``."""
        area = getattr(alarm, self.cfg.flood_area_by) or "(none)"
        window = self._new_by_area.setdefault(area, collections.deque())
        window.append(ts)
        while window and ts - window[0] > self.cfg.flood_window:
            window.popleft()
        if len(window) > self.cfg.flood_count:
            if area not in self.floods:
                log.warning(
                    "alarm flood in %s %s: %d new alarms in %.0f s",
                    self.cfg.flood_area_by,
                    area,
                    len(window),
                    self.cfg.flood_window,
                )
            self.floods[area] = ts
        elif area in self.floods and ts - self.floods[area] > self.cfg.flood_window:
            del self.floods[area]
