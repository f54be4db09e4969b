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


def milliseconds(ts: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Reading times (Unix s) as the Unix milliseconds every sink stores and sends.

    Rounded here once for all of them: rounding to 3 decimals on the way out
    instead (``round(ts, 3)``) differs from this by 1 ms for about one reading in
    2,000, and the same reading would then have two times in two sinks.
    """
    return np.round(ts * 1000.0).astype(np.int64)


#: Bytes of one reading in :func:`encode_batch`: int32, int16, float64, float64, uint8.
_READING_BYTES = 4 + 2 + 8 + 8 + 1
_BATCH_MAGIC = b"SSB1"


def encode_batch(batch: ReadingBatch, layout: bytes) -> bytes:
    """The batch as bytes, stamped with ``layout`` (8 bytes naming the device/point numbering).

    Device and point numbers are indices into one config's registry, so a batch
    decoded under another layout would misfile readings: :func:`decode_batch`
    refuses it instead.
    """
    n = len(batch)
    head = _BATCH_MAGIC + layout + n.to_bytes(8, "little")
    columns = (batch.device, batch.point, batch.ts, batch.value, batch.quality)
    return head + b"".join(np.ascontiguousarray(c).tobytes() for c in columns)


def decode_batch(data: bytes, layout: bytes) -> ReadingBatch:
    """The batch :func:`encode_batch` wrote; ValueError if it is not one, or of another layout."""
    if data[:4] != _BATCH_MAGIC or len(data) < 20:
        raise ValueError("not an encoded reading batch")
    if data[4:12] != layout:
        raise ValueError("the batch was spooled under a different device configuration")
    n = int.from_bytes(data[12:20], "little")
    if len(data) != 20 + n * _READING_BYTES:
        raise ValueError(f"a batch of {n} readings needs {20 + n * _READING_BYTES} bytes")
    ends = np.cumsum([20, 4 * n, 2 * n, 8 * n, 8 * n])
    return ReadingBatch(
        np.frombuffer(data, np.int32, n, int(ends[0])).copy(),
        np.frombuffer(data, np.int16, n, int(ends[1])).copy(),
        np.frombuffer(data, np.float64, n, int(ends[2])).copy(),
        np.frombuffer(data, np.float64, n, int(ends[3])).copy(),
        np.frombuffer(data, np.uint8, n, int(ends[4])).copy(),
    )
