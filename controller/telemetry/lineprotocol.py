"""InfluxDB line protocol for reading batches, built in one compiled pass.

Tags are fixed per device and field keys per profile, so their escaped bytes
are built once (:class:`LineSchema`). Serializing a batch is then one numba
loop that copies those bytes and prints the numbers into a preallocated
buffer: no Python object per reading or per line.

One line per device per poll: ``lamp,device=L1,cabinet=C1,... power=154.3,... ms``.
Readings flagged BAD are left out of the fields; the ``quality`` field carries
the worst quality among the device's readings of that poll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from drivers.profile import DataType, PointSpec
from drivers.readings import Quality, ReadingBatch, milliseconds

#: Significant digits for f32 points: enough for any float32 to round-trip.
F32_SIGNIFICANT_DIGITS = 9
#: Characters a number can take at most ("-" + 19 digits + "." + 15 decimals).
_MAX_NUMBER = 40


def escape_measurement(name: str) -> str:
    """Measurement names escape commas and spaces."""
    return _no_newlines(name).replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def escape_key(text: str) -> str:
    """Tag keys, tag values and field keys escape commas, equals signs and spaces."""
    return (
        _no_newlines(text)
        .replace("\\", "\\\\")
        .replace(",", "\\,")
        .replace("=", "\\=")
        .replace(" ", "\\ ")
    )


def escape_string_field(text: str) -> str:
    """A string field value, quoted, with double quotes and backslashes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _no_newlines(text: str) -> str:
    # Line protocol has no escape for a newline: it would end the line.
    return text.replace("\r", " ").replace("\n", " ")


def tag_set(tags: dict[str, str]) -> str:
    """``,k=v,...`` sorted by key (InfluxDB's preferred order), empty values left out."""
    return "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v != "")


def point_decimals(point: PointSpec) -> int:
    """Decimals to print for a point; negative means that many significant digits."""
    if point.type is DataType.F32:
        return -F32_SIGNIFICANT_DIGITS
    if point.type is DataType.BOOL:
        return 0
    decimals = 0
    for number in (point.scale, point.offset):
        text = f"{abs(number):.12f}".rstrip("0")
        decimals = max(decimals, len(text.split(".")[1]) if "." in text else 0)
    return min(decimals, 12)


@dataclass(frozen=True)
class LineSchema:
    """Precomputed bytes: a line prefix per device, a field key per (profile, point)."""

    prefix_buf: npt.NDArray[np.uint8]
    prefix_off: npt.NDArray[np.int64]
    key_buf: npt.NDArray[np.uint8]
    key_off: npt.NDArray[np.int64]
    decimals: npt.NDArray[np.int64]
    #: First key id of each device's profile: key id = key_base[device] + point.
    key_base: npt.NDArray[np.int64]

    @classmethod
    def build(
        cls,
        measurements: list[str],
        tags: list[dict[str, str]],
        profiles: list[list[tuple[str, int]]],
        profile_of_device: list[int],
    ) -> LineSchema:
        """Schema for devices with these measurements and tags.

        ``profiles`` lists, per profile, its fields as (name, decimals);
        ``profile_of_device`` says which profile each device has.
        """
        prefixes = [
            (escape_measurement(m) + tag_set(t) + " ").encode("utf-8")
            for m, t in zip(measurements, tags, strict=True)
        ]
        keys: list[bytes] = []
        decimals: list[int] = []
        bases: list[int] = []
        for fields in profiles:
            bases.append(len(keys))
            for name, places in fields:
                keys.append((escape_key(name) + "=").encode("utf-8"))
                decimals.append(places)
        return cls(
            prefix_buf=np.frombuffer(b"".join(prefixes), dtype=np.uint8).copy(),
            prefix_off=np.cumsum([0] + [len(p) for p in prefixes]).astype(np.int64),
            key_buf=np.frombuffer(b"".join(keys), dtype=np.uint8).copy(),
            key_off=np.cumsum([0] + [len(k) for k in keys]).astype(np.int64),
            decimals=np.asarray(decimals, dtype=np.int64),
            key_base=np.asarray([bases[p] for p in profile_of_device], dtype=np.int64),
        )


@numba.njit(cache=True)
def _write_uint(out: np.ndarray, pos: int, n: int) -> int:
    if n == 0:
        out[pos] = 48
        return pos + 1
    digits = 0
    m = n
    while m > 0:
        digits += 1
        m //= 10
    end = pos + digits
    m = n
    for i in range(digits):
        out[end - 1 - i] = 48 + m % 10
        m //= 10
    return end


@numba.njit(cache=True)
def _write_number(out: np.ndarray, pos: int, v: float, decimals: int) -> int:
    if decimals < 0:
        if v == 0.0:
            decimals = 0
        else:
            decimals = -decimals - 1 - math.floor(math.log10(abs(v)))
            decimals = min(max(decimals, 0), 15)
    scale = 10**decimals
    mag = abs(v)
    # Keep the scaled integer inside int64; large values lose decimals, not digits.
    while decimals > 0 and mag * scale >= 9.0e18:
        decimals -= 1
        scale //= 10
    scaled = round(mag * scale)
    if v < 0 and scaled != 0:
        out[pos] = 45  # '-'
        pos += 1
    pos = _write_uint(out, pos, scaled // scale)
    frac = scaled % scale
    while decimals > 0 and frac % 10 == 0:
        frac //= 10
        decimals -= 1
    if decimals > 0:
        out[pos] = 46  # '.'
        pos += 1
        for i in range(decimals):
            out[pos + decimals - 1 - i] = 48 + frac % 10
            frac //= 10
        pos += decimals
    return pos


@numba.njit(cache=True)
def _serialize(
    device: np.ndarray,
    point: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    ts_ms: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    prefix_buf: np.ndarray,
    prefix_off: np.ndarray,
    key_buf: np.ndarray,
    key_off: np.ndarray,
    decimals: np.ndarray,
    key_base: np.ndarray,
    bad: int,
    out: np.ndarray,
) -> int:
    pos = 0
    quality_key = np.array([113, 117, 97, 108, 105, 116, 121, 61], dtype=np.uint8)  # quality=
    for g in range(starts.shape[0]):
        d = device[starts[g]]
        a, b = prefix_off[d], prefix_off[d + 1]
        out[pos : pos + b - a] = prefix_buf[a:b]
        pos += b - a
        worst = 0
        for i in range(starts[g], ends[g]):
            q = quality[i]
            if q > worst:
                worst = q
            # Not-a-number and values past int64 (no meter reads 9e18) cannot be printed.
            if q >= bad or not abs(value[i]) < 9.0e18:
                continue
            k = key_base[d] + point[i]
            a, b = key_off[k], key_off[k + 1]
            out[pos : pos + b - a] = key_buf[a:b]
            pos += b - a
            pos = _write_number(out, pos, value[i], decimals[k])
            out[pos] = 44  # ','
            pos += 1
        out[pos : pos + 8] = quality_key
        pos += 8
        pos = _write_uint(out, pos, worst)
        out[pos] = 105  # 'i'
        out[pos + 1] = 32  # ' '
        pos = _write_uint(out, pos + 2, ts_ms[g])
        out[pos] = 10  # '\n'
        pos += 1
    return pos


def line_groups(batch: ReadingBatch) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end of each run of readings with the same device and time (one line each)."""
    n = len(batch)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    change = (batch.device[1:] != batch.device[:-1]) | (batch.ts[1:] != batch.ts[:-1])
    starts = np.concatenate(([0], np.flatnonzero(change) + 1)).astype(np.int64)
    ends = np.concatenate((starts[1:], [n])).astype(np.int64)
    return starts, ends


def serialize_batch(batch: ReadingBatch, schema: LineSchema) -> bytes:
    """Line protocol (millisecond precision) for every device-poll in ``batch``."""
    starts, ends = line_groups(batch)
    if len(starts) == 0:
        return b""
    lengths = np.diff(schema.prefix_off)
    key_lengths = np.diff(schema.key_off)
    bound = int(
        lengths[batch.device[starts]].sum()
        + (key_lengths.max(initial=0) + _MAX_NUMBER + 1) * len(batch)
        + 40 * len(starts)
    )
    out = np.empty(bound, dtype=np.uint8)
    ts_ms = milliseconds(batch.ts[starts])
    used = _serialize(
        batch.device,
        batch.point.astype(np.int64),
        batch.value,
        batch.quality,
        ts_ms,
        starts,
        ends,
        schema.prefix_buf,
        schema.prefix_off,
        schema.key_buf,
        schema.key_off,
        schema.decimals,
        schema.key_base,
        int(Quality.BAD),
        out,
    )
    return out[:used].tobytes()
