"""The body of an uplink report: serial, send time, station, observation times, elements.

Elements are ``identifier, definition byte, data``: the definition's high 5
bits are the data length, the low 3 the decimals; values are BCD, negative
when the first byte is FF, missing when every digit is F. A few identifiers
have fixed lengths whatever their definition byte says, and unknown ones are
skipped by their length, as real stations use the reserved range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

#: Identifiers whose values are unsigned HEX, not BCD.
HEX_ELEMENTS = frozenset({0x45})
#: Bodies of one element at evenly spaced times: the 31H report, the answer to a 38H query.
UNIFORM = frozenset({0x31, 0x38})
#: 12 x 1-byte 5-minute rain (F4) and 12 x 2-byte 5-minute levels (F5..FC).
FIXED_LENGTH = {0xF4: 12, **{k: 24 for k in range(0xF5, 0xFD)}}
#: Scale of one array slot: F4 counts 0.1 mm of rain, F5..FC 0.01 m of relative level.
ARRAY_SCALE = {0xF4: 0.1, **{k: 0.01 for k in range(0xF5, 0xFD)}}
ARRAY_SLOTS = 12
ARRAY_STEP_S = 300.0
#: Manual data and pictures run to the end of the body.
REST_OF_BODY = frozenset({0xF2, 0xF3})
TIME_STEP = 0x04
#: Functions whose body has only serial and send time (link keep-alive).
SHORT_BODY = frozenset({0x2F})
#: Config-table bodies (40H-43H): the station address has no station type after it,
#: and the items are parameters, not observations [STD App. D].
CONFIG_TABLES = frozenset({0x40, 0x41, 0x42, 0x43})


@dataclass(frozen=True)
class Observation:
    """One element's value at one time (None: the station says "no data")."""

    element: int
    at: float
    value: float | None


@dataclass
class Report:
    """What one uplink frame says."""

    serial: int
    sent_at: float
    station: str = ""
    station_type: int = 0
    observations: list[Observation] = field(default_factory=list)
    #: Identifiers seen but not decoded (reserved range, pictures, manual data).
    skipped: list[int] = field(default_factory=list)


def bcd_time(data: bytes, tz: tzinfo) -> float:
    """``YYMMDDHHmm[SS]`` in BCD, local time of the station, as a unix time."""
    digits = data.hex()
    if not digits.isdigit():
        raise ValueError(f"time {digits} is not BCD")
    parts = [int(digits[k : k + 2]) for k in range(0, len(digits), 2)]
    year, month, day, hour, minute = parts[:5]
    second = parts[5] if len(parts) > 5 else 0
    return datetime(2000 + year, month, day, hour, minute, second, tzinfo=tz).timestamp()


def decode_value(element: int, definition: int, data: bytes) -> float | None:
    """An element's value from its definition byte and data bytes."""
    if element in HEX_ELEMENTS:
        return float(int.from_bytes(data, "big"))
    digits = data.hex()
    if set(digits) == {"f"}:
        return None
    negative = data[:1] == b"\xff"
    if negative:
        # FF then the digits, or FF0 then an odd number of digits: both read the same.
        digits = digits[2:] or "0"
    if not digits.isdigit():
        raise ValueError(f"element {element:02X}: {data.hex()} is not BCD")
    value = int(digits) / float(10 ** (definition & 0x07))
    return -value if negative else value


def decode_array(element: int, data: bytes, observed: float) -> list[Observation]:
    """The twelve 5-minute slots of an hourly array (F4 rain, F5..FC levels).

    The slots are the hour that ends at the observation time: slot k is the
    five minutes ending at ``observed - 55 min + 5k min``; an all-FF slot is
    "no data".
    """
    width = len(data) // ARRAY_SLOTS
    scale = ARRAY_SCALE[element]
    out = []
    for k in range(ARRAY_SLOTS):
        raw = int.from_bytes(data[k * width : (k + 1) * width], "big")
        at = observed - (ARRAY_SLOTS - 1 - k) * ARRAY_STEP_S
        missing = raw == (1 << (8 * width)) - 1
        out.append(Observation(element, at, None if missing else raw * scale))
    return out


def parse_report(function: int, body: bytes, tz: tzinfo) -> Report:
    """Decode an uplink body; ValueError for a body that does not follow the standard."""
    if len(body) < 8:
        raise ValueError(f"body of {len(body)} bytes: no serial and send time")
    report = Report(int.from_bytes(body[:2], "big"), bcd_time(body[2:8], tz))
    if function in SHORT_BODY:
        return report
    i = 8
    observed = report.sent_at
    step: float | None = None
    while i < len(body):
        element = body[i]
        if element == 0xF1:
            report.station = body[i + 2 : i + 7].hex().upper()
            i += 7
            if i < len(body) and body[i] not in (0xF0, 0xF1) and function not in CONFIG_TABLES:
                report.station_type = body[i]
                i += 1
            continue
        if element == 0xF0:
            observed = bcd_time(body[i + 2 : i + 7], tz)
            i += 7
            continue
        if element in REST_OF_BODY:
            report.skipped.append(element)
            break
        if element in FIXED_LENGTH:
            size = FIXED_LENGTH[element]
            if i + 2 + size > len(body):
                raise ValueError(f"array {element:02X} needs {size} bytes, body ends first")
            report.observations += decode_array(element, body[i + 2 : i + 2 + size], observed)
            i += 2 + size
            continue
        if element == 0xFF:  # a 2-byte user identifier
            i += 1
        if i + 1 >= len(body):
            raise ValueError(f"element {element:02X} at byte {i} has no definition byte")
        definition = body[i + 1]
        size = definition >> 3
        start = i + 2
        if start + size > len(body):
            raise ValueError(f"element {element:02X} needs {size} bytes, body ends first")
        if element == TIME_STEP:
            step = time_step_seconds(body[start : start + 3])
            i = start + size
            continue
        if function in UNIFORM and step:
            # A uniform report: one identifier, then its values at first, +step, ...
            k = 0
            while start + size <= len(body):
                value = decode_value(element, definition, body[start : start + size])
                report.observations.append(Observation(element, observed + k * step, value))
                start += size
                k += 1
            break
        if element >= 0x76 and element not in HEX_ELEMENTS and element < 0xF0:
            report.skipped.append(element)  # reserved range: real stations use it
        else:
            value = decode_value(element, definition, body[start : start + size])
            report.observations.append(Observation(element, observed, value))
        i = start + size
    return report


def time_step_seconds(data: bytes) -> float:
    """A time step's ``DDHHmm`` BCD digits as seconds."""
    days, hours, minutes = (int(data[k : k + 1].hex()) for k in range(3))
    return (days * 24 + hours) * 3600.0 + minutes * 60.0


def encode_time_step(seconds: int) -> bytes:
    """The time step item (04H, N(3)... as ``DDHHmm``) of a uniform body or a 38H query."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return bytes([TIME_STEP, 0x18]) + bcd(f"{days:02d}{hours:02d}{rest // 60:02d}")


def bcd(text: str) -> bytes:
    """Decimal digits as packed BCD."""
    return bytes.fromhex(text)


def encode_time(at: float, tz: tzinfo, seconds: bool = True) -> bytes:
    """A unix time as ``YYMMDDHHmm[SS]`` BCD in the station's local time."""
    local = datetime.fromtimestamp(at, tz)
    return bcd(local.strftime("%y%m%d%H%M%S" if seconds else "%y%m%d%H%M"))


def encode_value(element: int, definition: int, value: float) -> bytes:
    """An element's data bytes (negative as FF then the digits, the length kept)."""
    size = definition >> 3
    if element in HEX_ELEMENTS:
        return int(value).to_bytes(size, "big")
    scaled = round(abs(value) * 10 ** (definition & 0x07))
    if value < 0:
        return b"\xff" + bcd(f"{scaled:0{(size - 1) * 2}d}")
    return bcd(f"{scaled:0{size * 2}d}")


def encode_report(
    serial: int,
    sent_at: float,
    station: str,
    station_type: int,
    observed_at: float,
    elements: list[tuple[int, int, float]],
    tz: tzinfo,
) -> bytes:
    """The body of a report (30H-33H): what a station sends; ``elements`` are
    (identifier, definition byte, value)."""
    body = serial.to_bytes(2, "big") + encode_time(sent_at, tz)
    body += b"\xf1\xf1" + bytes.fromhex(station) + bytes([station_type])
    body += b"\xf0\xf0" + encode_time(observed_at, tz, seconds=False)
    for element, definition, value in elements:
        body += bytes([element, definition]) + encode_value(element, definition, value)
    return body
