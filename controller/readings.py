"""Readings in columns: the unit that moves from poller to stores and rules.

A batch is five parallel arrays, never one Python object per reading, so that
sinks serialize and rules evaluate them with vectorized code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt


class Quality(IntEnum):
    """Quality of one reading."""

    GOOD = 0
    SUSPECT = 1
    #: The device said the value is invalid (its invalid marker, NaN).
    BAD = 2


@dataclass(frozen=True)
class ReadingBatch:
    """Readings as parallel arrays: device index, point index, time (unix s), value, quality."""

    device: npt.NDArray[np.int32]
    point: npt.NDArray[np.int16]
    ts: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.device.shape[0])

    @classmethod
    def empty(cls) -> ReadingBatch:
        """A batch with no readings."""
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int16),
            np.empty(0, np.float64),
            np.empty(0, np.float64),
            np.empty(0, np.uint8),
        )

    @classmethod
    def concat(cls, parts: list[ReadingBatch]) -> ReadingBatch:
        """One batch holding every reading of ``parts`` in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.device for p in parts]),
            np.concatenate([p.point for p in parts]),
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.quality for p in parts]),
        )
