"""M3: a long message in several packets, confirmed once, a lost packet asked for by NAK.

Each packet starts its body with SYN and 3 bytes: the total in the high 12
bits, its sequence (1-based) in the low 12; only packet 1 carries the serial
and send time [STD 6.5.3, 6.6.2.4]. Packets end with ETB while more follow;
the last, and a packet sent again after a NAK, end with ETX. At an ETX the
centre checks that every packet is there: it answers NAK with the sequence
of the first one missing, or, with all of them, joins the bodies and
confirms with the last sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from drivers.sl651 import frame as fr

#: A message whose packets stop coming is given up after this long.
REASSEMBLY_TIMEOUT_S = 300.0


@dataclass
class _Message:
    function: int
    total: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Assembled:
    """What a packet completed: the joined body, or the packet to ask for again."""

    body: bytes | None = None
    missing: int | None = None


class PacketAssembler:
    """Joins the M3 packets of each station's messages."""

    def __init__(self, timeout: float = REASSEMBLY_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._open: dict[tuple[str, int], _Message] = {}
        #: Messages given up for lost packets, and packets that did not fit a message.
        self.abandoned = 0
        self.stray = 0

    def add(self, frame: fr.Frame) -> Assembled:
        """Take one packet; at an ETX say whether the message is whole."""
        assert frame.packet is not None
        total, seq = frame.packet
        now = time.monotonic()
        self._expire(now)
        key = (frame.station, frame.function)
        message = self._open.get(key)
        if message is None or message.total != total:
            if message is not None:
                self.abandoned += 1
            message = self._open[key] = _Message(frame.function, total, now)
        if not 1 <= seq <= total:
            self.stray += 1
            return Assembled()
        message.parts[seq] = frame.body
        if frame.end is not fr.End.ETX:
            return Assembled()
        for k in range(1, total + 1):
            if k not in message.parts:
                return Assembled(missing=k)
        del self._open[key]
        return Assembled(body=b"".join(message.parts[k] for k in range(1, total + 1)))

    def first_packet(self, station: str, function: int) -> bytes | None:
        """Packet 1 of an open message (its serial and send time go in the answers)."""
        message = self._open.get((station, function))
        return None if message is None else message.parts.get(1)

    def _expire(self, now: float) -> None:
        for key, message in list(self._open.items()):
            if now - message.started > self.timeout:
                del self._open[key]
                self.abandoned += 1
