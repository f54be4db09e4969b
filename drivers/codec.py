"""Pure conversions between engineering values and Modbus registers.

No I/O here: the poller hands a register buffer and a precomputed field table,
and gets back arrays of values and quality flags. The simulators use
:func:`encode_value` to build their register images with the same rules, so a
profile that round-trips here reads correctly off a device.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.profile import DataType, Order, PointSpec

TYPE_CODES: dict[DataType, int] = {
    DataType.BOOL: 0,
    DataType.U16: 1,
    DataType.I16: 2,
    DataType.U32: 3,
    DataType.I32: 4,
    DataType.F32: 5,
}

_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.U16: (0, 0xFFFF),
    DataType.I16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFFFFFF),
    DataType.I32: (-0x80000000, 0x7FFFFFFF),
}


class EncodeError(ValueError):
    """A value does not fit the point's type."""


def _swap_bytes(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def encode_value(point: PointSpec, value: float | bool) -> list[int]:
    """Registers (or one 0/1 bit) that make a device report ``value`` for ``point``."""
    if point.type is DataType.BOOL:
        return [1 if value else 0]
    raw_float = (float(value) - point.offset) / point.scale
    if point.type is DataType.F32:
        packed = struct.pack(">f", raw_float)
    else:
        raw = round(raw_float)
        low, high = _RANGES[point.type]
        if not low <= raw <= high:
            raise EncodeError(
                f"{point.name}: {value} gives raw {raw}, outside {point.type.value} range"
            )
        fmt = {DataType.U16: ">H", DataType.I16: ">h", DataType.U32: ">I", DataType.I32: ">i"}
        packed = struct.pack(fmt[point.type], raw)
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    if point.word_order is Order.LITTLE:
        words.reverse()
    if point.byte_order is Order.LITTLE:
        words = [_swap_bytes(w) for w in words]
    return words


def decode_value(point: PointSpec, registers: list[int]) -> float:
    """Scalar decode of one point from its own registers (reference for the vector path)."""
    if point.type is DataType.BOOL:
        return 1.0 if registers[0] else 0.0
    words = list(registers[: point.type.words])
    if point.byte_order is Order.LITTLE:
        words = [_swap_bytes(w) for w in words]
    if point.word_order is Order.LITTLE:
        words.reverse()
    packed = b"".join(w.to_bytes(2, "big") for w in words)
    fmt = {
        DataType.U16: ">H",
        DataType.I16: ">h",
        DataType.U32: ">I",
        DataType.I32: ">i",
        DataType.F32: ">f",
    }[point.type]
    raw: float = struct.unpack(fmt, packed)[0]
    return raw * point.scale + point.offset


@dataclass(frozen=True)
class FieldTable:
    """Columns describing a set of points to decode from one register buffer.

    ``index`` is each point's position in the buffer (its first word). Built once
    per poll target; decoding a poll is then a handful of numpy operations.
    """

    index: npt.NDArray[np.int64]
    type_code: npt.NDArray[np.uint8]
    swap_words: npt.NDArray[np.bool_]
    swap_bytes: npt.NDArray[np.bool_]
    scale: npt.NDArray[np.float64]
    offset: npt.NDArray[np.float64]
    #: Raw value meaning "invalid", or -1 for none (compared to the unsigned raw word(s)).
    invalid_raw: npt.NDArray[np.int64]

    @classmethod
    def build(cls, points: list[PointSpec], index: list[int]) -> FieldTable:
        """Field table for ``points`` whose first words sit at ``index`` in the buffer."""
        return cls(
            index=np.asarray(index, dtype=np.int64),
            type_code=np.asarray([TYPE_CODES[p.type] for p in points], dtype=np.uint8),
            swap_words=np.asarray([p.word_order is Order.LITTLE for p in points], dtype=bool),
            swap_bytes=np.asarray([p.byte_order is Order.LITTLE for p in points], dtype=bool),
            scale=np.asarray([p.scale for p in points], dtype=np.float64),
            offset=np.asarray([p.offset for p in points], dtype=np.float64),
            invalid_raw=np.asarray(
                [-1 if p.invalid_raw is None else p.invalid_raw for p in points], dtype=np.int64
            ),
        )

    def __len__(self) -> int:
        return int(self.index.shape[0])


def decode_fields(
    buffer: npt.NDArray[np.uint16], fields: FieldTable
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Decode every field of ``fields`` from ``buffer``.

    Returns the engineering values and a mask of readings that are valid (not the
    device's invalid marker, not a NaN/inf float).
    """
    if len(fields) == 0:
        return np.empty(0, dtype=np.float64), np.empty(0, dtype=bool)
    words = buffer.astype(np.uint32)
    first = words[fields.index]
    # A 16-bit field at the very end has no second word; clamp and ignore it.
    second = words[np.minimum(fields.index + 1, len(words) - 1)]
    swap_b = fields.swap_bytes
    first = np.where(swap_b, ((first & 0xFF) << 8) | (first >> 8), first)
    second = np.where(swap_b, ((second & 0xFF) << 8) | (second >> 8), second)
    high = np.where(fields.swap_words, second, first)
    low = np.where(fields.swap_words, first, second)
    u32 = (high << 16) | low
    code = fields.type_code
    raw_unsigned = np.where(code >= 3, u32, first).astype(np.int64)

    raw = np.empty(len(fields), dtype=np.float64)
    is_u = (code == 0) | (code == 1) | (code == 3)
    raw[is_u] = raw_unsigned[is_u]
    is_i16 = code == 2
    raw[is_i16] = first[is_i16].astype(np.uint16).view(np.int16)
    is_i32 = code == 4
    raw[is_i32] = u32[is_i32].astype(np.uint32).view(np.int32)
    is_f32 = code == 5
    raw[is_f32] = u32[is_f32].astype(np.uint32).view(np.float32)

    values = raw * fields.scale + fields.offset
    valid = np.isfinite(values) & (raw_unsigned != fields.invalid_raw)
    return values, valid
