"""DL/T 645 requests and answers on a shared line (pure: see :mod:`drivers.wire`).

A meter is addressed by its 12-digit number inside the frame, not by a Modbus
unit id, so a framer is made per meter and keeps the address. Answers may
start with FE bytes; the answer "PDU" handed back is the control byte and the
data (already minus 33H).
"""

from __future__ import annotations

from functools import lru_cache

from drivers.dlt645 import codec
from drivers.errors import LinkGarbled
from drivers.wire import Framer


class Dlt645Framer(Framer):
    """Frames requests to one meter and checks that the answer is its own."""

    def __init__(self, address: str) -> None:
        codec.encode_address(address)  # a ValueError for a malformed address, now
        self.address = address

    def frame(self, unit: int, pdu: bytes, tid: int) -> bytes:
        return codec.build(self.address, pdu[0], pdu[1:])

    def answer_size(self, buffer: bytes | bytearray) -> int:
        return codec.frame_length(bytes(buffer)) or 0

    def answer_pdu(self, frame: bytes, unit: int, tid: int) -> bytes | None:
        try:
            parsed = codec.parse(frame)
        except codec.FrameError as exc:
            raise LinkGarbled(f"meter {self.address}: {exc}") from exc
        if not parsed.from_meter:
            return None  # our own request echoed by a half-duplex converter
        if parsed.address != self.address:
            raise LinkGarbled(f"answer from meter {parsed.address}, asked {self.address}")
        return bytes([parsed.control]) + parsed.data


@lru_cache(maxsize=4096)
def framer_for(address: str) -> Dlt645Framer:
    """One framer per meter address (they hold nothing but the address)."""
    return Dlt645Framer(address)
