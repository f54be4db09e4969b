"""A simulated SL651 station: dials in to the centre and sends reports as a real RTU does.

It connects over TCP, sends a timed report (32H) with the level of its gauge
model, waits for the confirm and resends twice with the same serial when none
comes, as the standard asks [STD 6.3.2.3].
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import tzinfo

from drivers.sl651 import frame as fr
from drivers.sl651.body import encode_report

TIMED_REPORT = 0x32
RIVER = 0x48  # station type H
LEVEL, VOLTAGE, RAIN_TODAY = (0x39, 0x23), (0x38, 0x12), (0x20, 0x19)


@dataclass
class Sl651Station:
    """One station: its address, password and centre, and what it has been told."""

    station: str
    password: int
    centre: int
    tz: tzinfo
    serial: int = 0
    confirms: list[fr.Frame] = field(default_factory=list)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    async def connect(self, host: str, port: int) -> None:
        """Dial in to the centre."""
        self._reader, self._writer = await asyncio.open_connection(host, port)

    async def close(self) -> None:
        """Hang up."""
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
            self._writer = None

    def report(self, at: float, level: float, voltage: float = 12.6, rain: float = 0.0) -> bytes:
        """The next timed report's frame (a new serial)."""
        self.serial = self.serial % 65535 + 1
        elements = [(*LEVEL, level), (*RAIN_TODAY, rain), (*VOLTAGE, voltage)]
        body = encode_report(self.serial, at, self.station, RIVER, at, elements, self.tz)
        return fr.build(
            self.station, self.centre, self.password, TIMED_REPORT, body, fr.End.ETX, uplink=True
        )

    async def send(self, frame: bytes, wait: float = 2.0, resends: int = 2) -> fr.Frame | None:
        """Send a frame and wait for the confirm, resending it as the standard says."""
        assert self._writer is not None and self._reader is not None
        for _ in range(1 + resends):
            self._writer.write(frame)
            await self._writer.drain()
            try:
                answer = await asyncio.wait_for(self._read_frame(), wait)
            except TimeoutError:
                continue
            self.confirms.append(answer)
            return answer
        return None

    async def _read_frame(self) -> fr.Frame:
        assert self._reader is not None
        head = await self._reader.readexactly(fr.HEADER)
        length = ((head[11] & 0x0F) << 8) | head[12]
        return fr.parse(head + await self._reader.readexactly(length + 4))
