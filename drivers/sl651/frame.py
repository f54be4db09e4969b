"""HEX/BCD frames: split a TCP byte stream by the length field, check, build confirms.

A frame is ``7E 7E``, addresses, password, function, direction and length,
STX (or SYN), L body bytes, the end character and the CRC: L + 17 bytes in
all. Frames are split by that length, never by scanning for ``7E 7E``
(serial numbers and data contain it); only after a bad frame is the stream
scanned for the next start to resynchronise. Pure functions: the listener
feeds bytes in and gets frames and problems out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from drivers.sl651.crc import crc16

START = b"\x7e\x7e"
HEADER = 13  # start .. length field
STX, SYN = 0x02, 0x16


class End(IntEnum):
    """End characters (Table 10)."""

    ETX = 0x03  # end, nothing follows
    ETB = 0x17  # end, more packets follow
    ENQ = 0x05  # query (downlink)
    EOT = 0x04  # end of transmission: the station may go offline
    ACK = 0x06  # positive confirm, continue
    NAK = 0x15  # negative, resend
    ESC = 0x1B  # end, the station stays online for commands


@dataclass(frozen=True)
class Frame:
    """One checked frame."""

    uplink: bool
    centre: int
    #: The 5-byte station address as 10 hex digits ("0012345678").
    station: str
    password: int
    function: int
    #: The L bytes after STX/SYN and before the end character.
    body: bytes
    end: End
    #: (total packets, this packet) of an M3 multi-packet frame, else None.
    packet: tuple[int, int] | None = None
    raw: bytes = field(default=b"", repr=False)


@dataclass
class Problem:
    """A stretch of the stream that was not a valid frame, and why."""

    kind: str  # "bad_crc", "bad_start", "bad_frame"
    detail: str
    skipped: int


def parse(raw: bytes) -> Frame:
    """Check and decode one complete frame; ValueError says what is wrong."""
    if raw[:2] != START:
        raise ValueError("does not start with 7E7E")
    length = ((raw[11] & 0x0F) << 8) | raw[12]
    if len(raw) != length + 17:
        raise ValueError(f"length field says {length + 17} bytes, frame has {len(raw)}")
    want = crc16(raw[:-2])
    got = int.from_bytes(raw[-2:], "big")
    if want != got:
        raise ValueError(f"CRC {got:04X}, computed {want:04X}")
    uplink = raw[11] >> 4 == 0
    if uplink:
        centre, station = raw[2], raw[3:8].hex().upper()
    else:
        station, centre = raw[2:7].hex().upper(), raw[7]
    try:
        end = End(raw[14 + length])
    except ValueError:
        raise ValueError(f"unknown end character {raw[14 + length]:02X}") from None
    start = raw[13]
    body = raw[14 : 14 + length]
    packet = None
    if start == SYN:
        info = int.from_bytes(body[:3], "big")
        packet = (info >> 12, info & 0xFFF)
        body = body[3:]
    elif start != STX:
        raise ValueError(f"expected STX or SYN, found {start:02X}")
    return Frame(
        uplink,
        centre,
        station,
        int.from_bytes(raw[8:10], "big"),
        raw[10],
        body,
        end,
        packet,
        raw,
    )


def split(buffer: bytearray) -> tuple[list[Frame], list[Problem]]:
    """Take every complete frame out of ``buffer`` (an incomplete tail stays in it)."""
    return split_frames(
        buffer, START, HEADER, lambda b: (((b[11] & 0x0F) << 8) | b[12]) + 17, parse
    )


def split_frames(
    buffer: bytearray,
    start: bytes,
    header: int,
    total_of: Callable[[bytearray], int],
    parse_one: Callable[[bytes], Frame],
) -> tuple[list[Frame], list[Problem]]:
    """Frames of either encoding out of a stream: by the length in the header (read by
    ``total_of`` once ``header`` bytes are in), resynchronising on ``start`` after a bad one."""
    frames: list[Frame] = []
    problems: list[Problem] = []
    while buffer:
        if buffer[: len(start)] != start[: len(buffer[: len(start)])]:
            skipped = _resync(buffer, start)
            problems.append(Problem("bad_start", "bytes before a frame start", skipped))
            continue
        if len(buffer) < header:
            break
        try:
            total = total_of(buffer)
        except ValueError:
            del buffer[: len(start)]
            skipped = _resync(buffer, start) + len(start)
            problems.append(Problem("bad_frame", "length field not readable", skipped))
            continue
        if len(buffer) < total:
            break
        raw = bytes(buffer[:total])
        try:
            frames.append(parse_one(raw))
        except ValueError as exc:
            kind = "bad_crc" if str(exc).startswith("CRC") else "bad_frame"
            del buffer[: len(start)]
            problems.append(Problem(kind, str(exc), _resync(buffer, start) + len(start)))
            continue
        del buffer[:total]
    return frames, problems


def _resync(buffer: bytearray, start: bytes) -> int:
    """Drop bytes up to the next frame start (keeping a trailing part of one)."""
    at = buffer.find(start)
    if at < 0:
        partial = len(start) > 1 and buffer.endswith(start[:1])
        at = len(buffer) - 1 if partial else len(buffer)
    del buffer[:at]
    return at


def build(
    station: str,
    centre: int,
    password: int,
    function: int,
    body: bytes,
    end: End,
    uplink: bool = False,
    packet: tuple[int, int] | None = None,
) -> bytes:
    """A complete frame (downlink unless ``uplink``), CRC included; with ``packet``
    (total, sequence) an M3 packet, SYN and the packet count before the body."""
    address = bytes.fromhex(station)
    if len(address) != 5:
        raise ValueError("a station address is 5 bytes (10 hex digits)")
    head = START + (bytes([centre]) + address if uplink else address + bytes([centre]))
    flag = 0x0000 if uplink else 0x8000
    start = bytes([STX])
    if packet is not None:
        total, seq = packet
        start = bytes([SYN]) + ((total << 12) | seq).to_bytes(3, "big")
        body = start[1:] + body
        start = start[:1]
    frame = (
        head
        + password.to_bytes(2, "big")
        + bytes([function])
        + (flag | len(body)).to_bytes(2, "big")
        + start
        + body
        + bytes([end])
    )
    return frame + crc16(frame).to_bytes(2, "big")


def packet_answer(frame: Frame, first: bytes, end: End, seq: int) -> bytes:
    """The centre's answer to an M3 packet: NAK with the packet to send again, or
    EOT/ESC with the last sequence; serial and send time are packet 1's."""
    assert frame.packet is not None
    return build(
        frame.station,
        frame.centre,
        frame.password,
        frame.function,
        first[:8],
        end,
        packet=(frame.packet[0], seq),
    )


def confirm(frame: Frame, keep_online: bool = False) -> bytes:
    """The centre's confirm of an uplink report: serial and send time echoed; ETB
    is answered with ACK, ETX with EOT (or ESC to keep the station online)."""
    end = End.ACK if frame.end is End.ETB else (End.ESC if keep_online else End.EOT)
    return build(frame.station, frame.centre, frame.password, frame.function, frame.body[:8], end)
