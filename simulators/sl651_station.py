"""A simulated SL651 station: dials in to the centre and sends reports as a real RTU does.

It connects over TCP, sends a timed report (32H) with the level of its gauge
model, waits for the confirm and resends twice with the same serial when none
comes, as the standard asks [STD 6.3.2.3]. Confirmed with ESC, it stays
online (:meth:`Sl651Station.stay_online`), sends keep-alives and answers the
centre's commands: 37H with its real-time data, 38H with the levels it
stored (every report's, as an RTU's memory keeps them), 43H/42H by reading
and setting its runtime parameters, 4AH by setting its clock to the
command's send time. Its clock may be off the centre's
(``clock_offset``).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field
from datetime import tzinfo

from drivers.sl651 import frame as fr
from drivers.sl651.body import (
    bcd_time,
    decode_value,
    encode_report,
    encode_time,
    encode_time_step,
    encode_value,
    time_step_seconds,
)

TIMED_REPORT = 0x32
KEEP_ALIVE = 0x2F
QUERY_REALTIME = 0x37
QUERY_PERIOD = 0x38
WRITE_SETTINGS = 0x42
READ_SETTINGS = 0x43
SET_CLOCK = 0x4A
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
    #: The station's clock minus true time (a drifting RTU clock).
    clock_offset: float = 0.0
    #: The level it reports when the centre asks for real-time data.
    level: float = 0.0
    confirms: list[fr.Frame] = field(default_factory=list)
    #: Commands the centre sent it (downlink frames), in order.
    commands: list[fr.Frame] = field(default_factory=list)
    #: The levels it stored: (observation time, level), in time order.
    memory: list[tuple[float, float]] = field(default_factory=list)
    #: Its runtime parameters (App. D.4): identifier -> value, as 42H sets them.
    settings: dict[int, float] = field(
        default_factory=lambda: {
            0x20: 1,
            0x21: 5,
            0x22: 8,
            0x23: 300,
            0x24: 5,
            0x27: 2,
            0x28: 0.0,
            0x30: 0.0,
            0x38: 0.3,
        }
    )
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

    def with_password(self, password: int) -> Sl651Station:
        """The same station on the same connection, sending another password."""
        other = Sl651Station(self.station, password, self.centre, self.tz, serial=self.serial)
        other._reader, other._writer = self._reader, self._writer
        return other

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are, no confirm awaited (a frame cut short)."""
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    def clock(self) -> float:
        """What the station's own clock reads now."""
        return time.time() + self.clock_offset

    def report(
        self,
        at: float,
        level: float,
        voltage: float = 12.6,
        rain: float = 0.0,
        function: int = TIMED_REPORT,
    ) -> bytes:
        """The next report's frame (a new serial), sent and observed at ``at``."""
        self.serial = self.serial % 65535 + 1
        self.level = level
        self.remember(at, level)
        elements = [(*LEVEL, level), (*RAIN_TODAY, rain), (*VOLTAGE, voltage)]
        body = encode_report(self.serial, at, self.station, RIVER, at, elements, self.tz)
        return fr.build(
            self.station, self.centre, self.password, function, body, fr.End.ETX, uplink=True
        )

    def remember(self, at: float, level: float) -> None:
        """Store a level as the RTU's memory does (what a period query reads)."""
        bisect.insort(self.memory, (at, level))

    def _stored_level(self, at: float, within: float) -> float | None:
        """The level stored last at or before ``at``, if no older than ``within``."""
        k = bisect.bisect_right(self.memory, (at, float("inf")))
        if k and at - self.memory[k - 1][0] < within:
            return self.memory[k - 1][1]
        return None

    def _period_answer(self, command: fr.Frame) -> bytes:
        """38H: the stored values of the asked element from start to end, every step;
        FF bytes where nothing is stored (the standard's "no data")."""
        body = command.body
        start = bcd_time(body[8:12] + b"\x00", self.tz)
        end = bcd_time(body[12:16] + b"\x00", self.tz)
        step = int(time_step_seconds(body[18:21]))
        element, definition = body[21], body[22]
        answer = self.serial.to_bytes(2, "big") + encode_time(self.clock(), self.tz)
        answer += b"\xf1\xf1" + bytes.fromhex(self.station) + bytes([RIVER])
        answer += b"\xf0\xf0" + encode_time(start, self.tz, seconds=False)
        answer += encode_time_step(step)
        answer += bytes([element, definition])
        at = start
        while at <= end:
            level = self._stored_level(at, step) if element == LEVEL[0] else None
            if level is None:
                answer += b"\xff" * (definition >> 3)
            else:
                answer += encode_value(element, definition, level)
            at += step
        return self._uplink(QUERY_PERIOD, answer)

    def _settings_answer(self, command: fr.Frame) -> bytes:
        """43H: the asked parameters' values; 42H: set them, then the same answer.
        An identifier the station does not have is left out of the answer."""
        items = command.body[15:]  # after serial, send time and the station address
        answer = self.serial.to_bytes(2, "big") + encode_time(self.clock(), self.tz)
        answer += b"\xf1\xf1" + bytes.fromhex(self.station)
        i = 0
        while i + 1 < len(items):
            key, definition = items[i], items[i + 1]
            i += 2
            if command.function == WRITE_SETTINGS:
                size = definition >> 3
                value = decode_value(key, definition, items[i : i + size])
                i += size
                if key in self.settings and value is not None:
                    self.settings[key] = value
            if key in self.settings:
                answer += bytes([key, definition])
                answer += encode_value(key, definition, self.settings[key])
        return self._uplink(command.function, answer)

    def _uplink(self, function: int, body: bytes) -> bytes:
        return fr.build(
            self.station, self.centre, self.password, function, body, fr.End.ETX, uplink=True
        )

    def answer(self, command: fr.Frame) -> bytes | None:
        """The station's answer to a centre command (None for one it does not know)."""
        if command.function == QUERY_REALTIME:
            return self.report(self.clock(), self.level, function=QUERY_REALTIME)
        if command.function == QUERY_PERIOD:
            return self._period_answer(command)
        if command.function in (READ_SETTINGS, WRITE_SETTINGS):
            return self._settings_answer(command)
        if command.function == SET_CLOCK:
            # The command's send time is the new clock [STD 6.6.4.x, 4AH].
            self.clock_offset = bcd_time(command.body[2:8], self.tz) - time.time()
            body = self.serial.to_bytes(2, "big") + encode_time(self.clock(), self.tz)
            return self._uplink(SET_CLOCK, body + b"\xf1\xf1" + bytes.fromhex(self.station))
        return None

    async def stay_online(self, seconds: float, keep_alive: float = 40.0) -> None:
        """After an ESC confirm: answer the centre's commands for ``seconds``, with a
        keep-alive every ``keep_alive`` seconds, as a station kept online does."""
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        next_alive = loop.time() + keep_alive
        while (left := end - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(
                    self._read_frame(), min(left, max(next_alive - loop.time(), 0.01))
                )
            except TimeoutError:
                if loop.time() >= next_alive:
                    body = self.serial.to_bytes(2, "big") + encode_time(self.clock(), self.tz)
                    self._writer.write(self._uplink(KEEP_ALIVE, body))
                    next_alive = loop.time() + keep_alive
                continue
            self.commands.append(frame)
            reply = self.answer(frame)
            if reply is not None:
                self._writer.write(reply)
                await self._writer.drain()

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
