"""Reports of stations that dial in (SL651) as reading batches, and their health."""

from __future__ import annotations

import time

import numpy as np

from controller.poller import BatchHandler, Poller
from controller.registry import Registry
from drivers.readings import Quality, ReadingBatch
from drivers.sl651.body import Report
from drivers.sl651.listener import StationKey
from drivers.sl651.profile import Sl651Profile


class StationReports:
    """Turns each station report into readings for the poller's next batch.

    A report counts as a good poll of its station for health and comm-loss, as
    a pushed reading does for an MQTT device.
    """

    def __init__(
        self, registry: Registry, poller: Poller, store: BatchHandler | None = None
    ) -> None:
        self.registry = registry
        self.poller = poller
        #: Where history a station was asked for goes (the telemetry stores).
        self.store = store

    def batch(self, key: StationKey, report: Report) -> ReadingBatch:
        """The readings of the elements the station's profile knows ("no data" as bad).

        A word element feeds the points of its bits as 0/1 besides its own value.
        """
        profile = self.registry.devices[key.device].profile
        assert isinstance(profile, Sl651Profile)
        feeds = profile.points_of()
        point: list[int] = []
        at: list[float] = []
        value: list[float] = []
        for o in report.observations:
            for index, bit in feeds.get(o.element, ()):
                point.append(index)
                at.append(o.at)
                if o.value is None:
                    value.append(np.nan)
                else:
                    value.append(o.value if bit is None else float((int(o.value) >> bit) & 1))
        values = np.array(value, np.float64)
        return ReadingBatch(
            device=np.full(len(point), key.device, np.int32),
            point=np.array(point, np.int16),
            ts=np.array(at, np.float64),
            value=values,
            quality=np.where(np.isnan(values), Quality.BAD, Quality.GOOD).astype(np.uint8),
        )

    async def on_report(self, key: StationKey, report: Report) -> None:
        """Listener callback: hand the readings on and mark the station as heard."""
        self.poller.health[key.device].record_success(time.time())
        await self.poller.push(self.batch(key, report))

    async def on_history(self, key: StationKey, report: Report) -> None:
        """Listener callback for a period query's answer: the values go to the stores
        only (the map, rules and cases stay with what is happening now)."""
        if self.store is not None:
            await self.store(self.batch(key, report))
