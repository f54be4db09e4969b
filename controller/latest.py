"""The latest value of every point of every device, kept as 2-D arrays."""

from __future__ import annotations

import numpy as np

from drivers.readings import ReadingBatch


class LatestValues:
    """Last value, time and quality per (device, point); NaN time means never read."""

    def __init__(self, devices: int, points: int) -> None:
        self.value = np.full((devices, max(points, 1)), np.nan)
        self.ts = np.full((devices, max(points, 1)), np.nan)
        self.quality = np.zeros((devices, max(points, 1)), dtype=np.uint8)

    def update(self, batch: ReadingBatch) -> None:
        """Take in a batch (later readings in the batch win)."""
        if not len(batch):
            return
        self.value[batch.device, batch.point] = batch.value
        self.ts[batch.device, batch.point] = batch.ts
        self.quality[batch.device, batch.point] = batch.quality

    async def on_batch(self, batch: ReadingBatch) -> None:
        """Poller subscriber form of :meth:`update`."""
        self.update(batch)
