"""DL/T 645-2007 frames: ``[FE..] 68 A0..A5 68 C L DATA(+33H) CS 16``.

Pure functions: the client feeds bytes in; tests use the real frames of the
protocol notes.
"""

from __future__ import annotations

from dataclasses import dataclass

PREAMBLE = b"\xfe\xfe\xfe\xfe"
START, END = 0x68, 0x16
READ, READ_FOLLOW_UP, READ_ADDRESS = 0x11, 0x12, 0x13
#: Error bits of an abnormal reply (D1H) [DL/T 645-2007 7.3].
ERROR_BITS = (
    "other error",
    "no requested data",
    "wrong password or not authorised",
    "baud rate cannot be changed",
    "too many annual time zones",
    "too many daily periods",
    "too many tariffs",
)


class FrameError(ValueError):
    """Bytes that are not a valid DL/T 645 frame."""


@dataclass(frozen=True)
class Dlt645Frame:
    """One checked frame, data already minus 33H."""

    address: str  # 12 digits, most significant first ("000000000161")
    control: int
    data: bytes

    @property
    def from_meter(self) -> bool:
        """D7: sent by the meter."""
        return bool(self.control & 0x80)

    @property
    def abnormal(self) -> bool:
        """D6: an abnormal reply (its data is the error byte)."""
        return bool(self.control & 0x40)

    @property
    def follow_up(self) -> bool:
        """D5: more data follows, read with 12H."""
        return bool(self.control & 0x20)

    def errors(self) -> list[str]:
        """The error bits of an abnormal reply, in words."""
        if not self.abnormal or not self.data:
            return []
        return [text for bit, text in enumerate(ERROR_BITS) if self.data[0] >> bit & 1]


def checksum(frame: bytes) -> int:
    """Sum mod 256 of the bytes from the first 68 through the last data byte."""
    return sum(frame) & 0xFF


def encode_address(address: str) -> bytes:
    """12 BCD digits, low byte first (000000000161 -> 61 01 00 00 00 00)."""
    if len(address) != 12 or not (address.isdigit() or set(address) <= {"A"}):
        raise ValueError(f"a meter address is 12 digits, not {address!r}")
    return bytes.fromhex(address)[::-1]


def di_bytes(di: str) -> bytes:
    """A data identifier DI3 DI2 DI1 DI0 ("02010100") as sent: DI0 first."""
    return bytes.fromhex(di)[::-1]


def build(address: str, control: int, data: bytes, preamble: bool = True) -> bytes:
    """A frame with data +33H, checksum and end; the master sends the FE preamble."""
    body = bytes([START]) + encode_address(address) + bytes([START, control, len(data)])
    body += bytes((b + 0x33) & 0xFF for b in data)
    frame = body + bytes([checksum(body), END])
    return (PREAMBLE if preamble else b"") + frame


def read_request(address: str, di: str) -> bytes:
    """Read one data identifier (11H)."""
    return build(address, READ, di_bytes(di))


def parse(raw: bytes) -> Dlt645Frame:
    """Check one frame (leading FE skipped); FrameError says what is wrong."""
    start = 0
    while start < len(raw) and raw[start] == 0xFE:
        start += 1
    frame = raw[start:]
    if len(frame) < 12 or frame[0] != START or frame[7] != START:
        raise FrameError("no 68 A0..A5 68 header")
    length = frame[9]
    if len(frame) != length + 12:
        raise FrameError(f"length {length} needs {length + 12} bytes, got {len(frame)}")
    if frame[-1] != END:
        raise FrameError(f"ends with {frame[-1]:02X}, not 16")
    if checksum(frame[:-2]) != frame[-2]:
        raise FrameError(f"checksum {frame[-2]:02X}, computed {checksum(frame[:-2]):02X}")
    data = bytes((b - 0x33) & 0xFF for b in frame[10 : 10 + length])
    return Dlt645Frame(frame[1:7][::-1].hex().upper(), frame[8], data)


def frame_length(buffer: bytes) -> int | None:
    """Bytes of the first frame in ``buffer`` (preamble included), None if incomplete."""
    start = 0
    while start < len(buffer) and buffer[start] == 0xFE:
        start += 1
    if len(buffer) < start + 10:
        return None
    return start + buffer[start + 9] + 12


def decode_value(data: bytes, decimals: int, signed: bool = False) -> float:
    """A BCD value sent low byte first; with ``signed`` the top bit of the most
    significant byte is the sign."""
    ordered = bytearray(data[::-1])
    negative = signed and bool(ordered[0] & 0x80)
    if negative:
        ordered[0] &= 0x7F
    digits = ordered.hex()
    if not digits.isdigit():
        raise FrameError(f"value {data.hex()} is not BCD")
    value = int(digits) / float(10**decimals)
    return -value if negative else value


def encode_value(value: float, size: int, decimals: int, signed: bool = False) -> bytes:
    """The inverse of :func:`decode_value` (for the meter simulator)."""
    # A register that overflows rolls over, as a meter's energy counter does.
    scaled = round(abs(value) * 10**decimals) % 10 ** (size * 2)
    ordered = bytearray(bytes.fromhex(f"{scaled:0{size * 2}d}"))
    if signed and value < 0:
        ordered[0] |= 0x80
    return bytes(ordered[::-1])


def reply_value(frame: Dlt645Frame, di: str) -> bytes:
    """The value bytes of a normal read reply for ``di``; FrameError otherwise."""
    if frame.abnormal:
        raise FrameError(f"abnormal reply: {', '.join(frame.errors()) or 'no reason given'}")
    if frame.control & 0x1F not in (READ, READ_FOLLOW_UP) or not frame.from_meter:
        raise FrameError(f"control {frame.control:02X} is not a read reply")
    if frame.data[:4] != di_bytes(di):
        raise FrameError(f"reply for DI {frame.data[:4][::-1].hex()}, asked {di}")
    return frame.data[4:]


def parse_format(fmt: str) -> tuple[int, int]:
    """Bytes and decimals of a format like ``XXX.XXX`` (6 digits, 3 decimals: 3 bytes)."""
    digits = fmt.replace(".", "")
    if not digits or set(digits) != {"X"} or len(digits) % 2 or fmt.count(".") > 1:
        raise ValueError(f"format {fmt!r} is not like XXX.X or XXXXXX.XX")
    decimals = len(fmt) - fmt.index(".") - 1 if "." in fmt else 0
    return len(digits) // 2, decimals
