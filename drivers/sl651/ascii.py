"""ASCII frames (SOH): the same messages as HEX frames, written as text.

``SOH``, the header as 22 characters (addresses and password in hex digits,
function, direction digit and a 3-hex-digit length), ``STX``, the body as L
characters, the end character and the CRC as 4 hex digits: L + 29 bytes,
the CRC-16/MODBUS of the bytes from SOH to the end character [STD 6.2.2].
The body is the serial (4 hex digits) and send time (12 digits), then
identifiers and values separated by spaces: ``ST 0012345678 H TT 2306011000
Z 12.345 VT 12.60``. Identifiers are the ASCII names of Appendix C and become
the same element numbers as HEX guide bytes, so one profile serves both.
"""

from __future__ import annotations

from datetime import tzinfo

from drivers.sl651.body import UNIFORM, Observation, Report, bcd_time, encode_time
from drivers.sl651.crc import crc16
from drivers.sl651.frame import STX, End, Frame, Problem, split_frames

SOH = 0x01
HEADER = 23  # SOH and 22 characters
TRAILER = 6  # STX before the body; end character and 4 CRC digits after it

#: ASCII identifiers [STD App. C] and the guide byte each stands for.
ELEMENTS: dict[str, int] = {
    "DRP": 0xF4,
    **{f"DRZ{k}": 0xF4 + k for k in range(1, 9)},
    "P1": 0x1A,
    "PD": 0x1F,
    "PJ": 0x20,
    "PN01": 0x21,
    "PN05": 0x22,
    "PN10": 0x23,
    "PN30": 0x24,
    "PT": 0x26,
    "Q": 0x27,
    "VJ": 0x37,
    "VT": 0x38,
    "Z": 0x39,
    "ZB": 0x3A,
    "ZU": 0x3B,
    **{f"Z{k}": 0x3B + k for k in range(1, 9)},
    "H": 0x0E,
    "ZT": 0x45,
    "VTA": 0x70,
    "VTB": 0x71,
    "VTC": 0x72,
    "VIA": 0x73,
    "VIB": 0x74,
    "VIC": 0x75,
}
_STEP_UNITS = {"D": 86400.0, "H": 3600.0, "N": 60.0}


def _length(buffer: bytes | bytearray) -> int:
    """Total bytes of the frame whose header starts ``buffer`` (ValueError if not hex)."""
    return int(bytes(buffer[20:23]).decode("ascii"), 16) + HEADER + TRAILER


def parse_ascii(raw: bytes) -> Frame:
    """Check and decode one complete ASCII frame; ValueError says what is wrong."""
    if raw[:1] != bytes([SOH]):
        raise ValueError("does not start with SOH")
    try:
        head = raw[1:HEADER].decode("ascii")
        length = int(head[19:22], 16)
        got = int(raw[-4:].decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("header or CRC is not hex text") from None
    if len(raw) != length + HEADER + TRAILER:
        raise ValueError(f"length field says {length + 29} bytes, frame has {len(raw)}")
    want = crc16(raw[:-4])
    if want != got:
        raise ValueError(f"CRC {got:04X}, computed {want:04X}")
    uplink = head[18] == "0"
    if uplink:
        centre, station = int(head[0:2], 16), head[2:12].upper()
    else:
        station, centre = head[0:10].upper(), int(head[10:12], 16)
    if raw[HEADER] != STX:
        raise ValueError(f"expected STX, found {raw[HEADER]:02X}")
    try:
        end = End(raw[HEADER + 1 + length])
    except ValueError:
        raise ValueError(f"unknown end character {raw[HEADER + 1 + length]:02X}") from None
    return Frame(
        uplink,
        centre,
        station,
        int(head[12:16], 16),
        int(head[16:18], 16),
        raw[HEADER + 1 : HEADER + 1 + length],
        end,
        None,
        raw,
    )


def split_ascii(buffer: bytearray) -> tuple[list[Frame], list[Problem]]:
    """Take every complete ASCII frame out of ``buffer`` (an incomplete tail stays)."""
    return split_frames(buffer, bytes([SOH]), HEADER, _length, parse_ascii)


def build_ascii(
    station: str,
    centre: int,
    password: int,
    function: int,
    body: bytes,
    end: End,
    uplink: bool = False,
) -> bytes:
    """A complete ASCII frame (downlink unless ``uplink``), CRC included."""
    addresses = f"{centre:02X}{station}" if uplink else f"{station}{centre:02X}"
    flag = "0" if uplink else "8"
    head = f"{addresses}{password:04X}{function:02X}{flag}{len(body):03X}"
    frame = bytes([SOH]) + head.encode("ascii") + bytes([STX]) + body + bytes([end])
    return frame + f"{crc16(frame):04X}".encode("ascii")


def confirm_ascii(frame: Frame, keep_online: bool = False) -> bytes:
    """The centre's confirm of an ASCII report: serial and send time echoed."""
    end = End.ACK if frame.end is End.ETB else (End.ESC if keep_online else End.EOT)
    return build_ascii(
        frame.station, frame.centre, frame.password, frame.function, frame.body[:16], end
    )


def ascii_head(serial: int, sent_at: float, tz: tzinfo) -> bytes:
    """Serial and send time as an ASCII body starts."""
    return f"{serial:04X}".encode("ascii") + encode_time(sent_at, tz).hex().encode("ascii")


def parse_ascii_report(function: int, body: bytes, tz: tzinfo) -> Report:
    """Decode an ASCII uplink body; ValueError for one that does not follow the standard."""
    try:
        text = body.decode("ascii")
        serial = int(text[0:4], 16)
        sent_at = bcd_time(bytes.fromhex(text[4:16]), tz)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"serial and send time not readable: {exc}") from None
    report = Report(serial, sent_at)
    tokens = text[16:].split()
    observed = sent_at
    step: float | None = None
    i = 0
    while i < len(tokens):
        name = tokens[i]
        if name == "ST":
            report.station = tokens[i + 1].upper()
            i += 2
            if i < len(tokens) and len(tokens[i]) == 1 and tokens[i].isalpha():
                report.station_type = ord(tokens[i])
                i += 1
            continue
        if name == "TT":
            observed = bcd_time(bytes.fromhex(tokens[i + 1]), tz)
            i += 2
            continue
        if name.startswith("DR") and name[2:3] in _STEP_UNITS and name[3:].isdigit():
            step = int(name[3:]) * _STEP_UNITS[name[2]]
            i += 1
            continue
        element = ELEMENTS.get(name)
        values: list[str] = []
        i += 1
        # A uniform report (31) lists a value per time step after its one identifier.
        while i < len(tokens) and _is_number(tokens[i]):
            values.append(tokens[i])
            i += 1
            if not (function in UNIFORM and step):
                break
        if element is None:
            report.skipped.append(-1)
            continue
        for k, value in enumerate(values):
            at = observed + k * step if step else observed
            report.observations.append(Observation(element, at, _number(value)))
    return report


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return set(token) == {"F"}  # all-F: no data
    return True


def _number(token: str) -> float | None:
    return None if set(token) == {"F"} else float(token)
