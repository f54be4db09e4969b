"""The two encodings of SL651 frames, HEX/BCD (7E7E) and ASCII (SOH), behind one shape.

A listener serves one encoding (the standard forbids mixing them on one
system), so it picks its framing, confirms, body decoding and downlink
bodies here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo

from drivers.sl651 import ascii as asc
from drivers.sl651 import frame as fr
from drivers.sl651.body import Report, encode_time, parse_report


@dataclass(frozen=True)
class Encoding:
    """How frames of one encoding are split, confirmed, decoded and built."""

    name: str
    split: Callable[[bytearray], tuple[list[fr.Frame], list[fr.Problem]]]
    confirm: Callable[[fr.Frame, bool], bytes]
    parse_report: Callable[[int, bytes, tzinfo], Report]
    build: Callable[[str, int, int, int, bytes, fr.End], bytes]
    #: A downlink body's serial and send time.
    head: Callable[[int, float, tzinfo], bytes]
    #: The station address item of a body (4AH carries it).
    station_item: Callable[[str], bytes]


def _hex_head(serial: int, sent_at: float, tz: tzinfo) -> bytes:
    return serial.to_bytes(2, "big") + encode_time(sent_at, tz)


HEX = Encoding(
    "hex",
    fr.split,
    fr.confirm,
    parse_report,
    fr.build,
    _hex_head,
    lambda station: b"\xf1\xf1" + bytes.fromhex(station),
)
ASCII = Encoding(
    "ascii",
    asc.split_ascii,
    asc.confirm_ascii,
    asc.parse_ascii_report,
    asc.build_ascii,
    asc.ascii_head,
    lambda station: f"ST {station}".encode("ascii"),
)
ENCODINGS = {"hex": HEX, "ascii": ASCII}
