"""A fast Modbus responder: the physics simulator's register images at almost no cost.

The pymodbus server of :mod:`simulators.fleet` spends about 600 µs of CPU on
each request, so a poll benchmark against it measures the simulator, not the
poller. This responder answers from images pre-encoded as bytes, refreshed from
the same physics models (at most every ``refresh_period``), at a few µs per
request; writes go to the models as on the full simulator. It serves Modbus TCP
and RTU-over-TCP links, and the serial lines that carry DL/T 645 meters (which
answer on the same line as its Modbus units, told apart by the FE preamble
the centre sends before every DL/T 645 request).

With a :class:`WireModel` it also plays the wire: each answer is held back by
the time the request and answer take on an RS-485 line at the configured
character format (11 bits per character at 8E1 or 8N2), the 3.5-character
silences that end RTU frames, the device's turnaround and, for 4G DTUs, a
round trip with jitter and occasional loss. One conversation at a time per
line, as on a real bus.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from dataclasses import dataclass

import numpy as np
from pymodbus.framer.rtu import FramerRTU
from pymodbus.transport.serialtransport import create_serial_connection

from controller.config import WireConfig
from controller.device_config import LinkConfig
from drivers.profile import Table
from simulators.datastore import SimulatedUnit, UnitStore
from simulators.dlt645_meter import SimulatedMeter, take_meter_frame
from simulators.faults import FaultKind

_READ_TABLES = {
    1: Table.COIL,
    2: Table.DISCRETE_INPUT,
    3: Table.HOLDING_REGISTER,
    4: Table.INPUT_REGISTER,
}
_ILLEGAL_FUNCTION = 1
_ILLEGAL_ADDRESS = 2
_MBAP = struct.Struct(">HHHB")


@dataclass(frozen=True)
class WireModel:
    """How long a request and its answer occupy a line, and what a DTU adds."""

    char_s: float
    turnaround_s: float
    rtt_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0

    @classmethod
    def of(cls, wire: WireConfig, link: LinkConfig) -> WireModel:
        """The wire of one link: the line's timing, plus a round trip on a 4G DTU."""
        bits = 1 + wire.bytesize + (0 if wire.parity == "N" else 1) + wire.stopbits
        dtu = link.kind == "rtu_over_tcp"
        return cls(
            char_s=bits / wire.baudrate,
            turnaround_s=wire.turnaround_ms / 1000,
            rtt_s=wire.dtu_rtt_ms / 1000 if dtu else 0.0,
            jitter_s=wire.dtu_jitter_ms / 1000 if dtu else 0.0,
            loss=wire.dtu_loss if dtu else 0.0,
        )

    def bus_time(self, request_bytes: int, answer_bytes: int) -> float:
        """Seconds the RS-485 line is busy: both frames, their silences and the turnaround."""
        return (request_bytes + answer_bytes + 7) * self.char_s + self.turnaround_s

    def rtu_read_time(self, count: int, bits: bool = False) -> float:
        """Bus time of one RTU read of ``count`` registers (or bits)."""
        data = (count + 7) // 8 if bits else 2 * count
        return self.bus_time(8, 5 + data)


class _UnitImage:
    """A unit's images as big-endian bytes, rebuilt from the model when stale."""

    def __init__(self, unit: SimulatedUnit) -> None:
        self.unit = unit
        self.words: dict[Table, bytes] = {}
        self.bits: dict[Table, np.ndarray] = {}
        self.silent = False
        self.settling = False
        self.built_at = -1e9

    def rebuild(self, store: UnitStore) -> None:
        now = store.clock.now()
        self.unit.refresh(store.board, now, force=True)
        self.silent = (
            store.board.find(self.unit.device_id, FaultKind.DEVICE_SILENT, now) is not None
        )
        settling = getattr(self.unit.model, "settling", None)
        self.settling = bool(settling()) if settling is not None else False
        for table, image in self.unit.image.items():
            if table.is_bit:
                self.bits[table] = image.astype(bool)
            else:
                self.words[table] = image.astype(">u2").tobytes()
        self.built_at = time.monotonic()


class _LineProtocol(asyncio.Protocol):
    """One client connection to one link; frames in, answers out (late, on an emulated wire)."""

    def __init__(self, line: FastLine) -> None:
        self.line = line
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.line.conversations.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.line.conversations.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            frame = self.line.take_frame(self.buffer)
            if frame is None:
                return
            used, answer, request_bytes = frame
            self.buffer = self.buffer[used:]
            if answer is not None:
                self.line.send(self, answer, request_bytes)

    def write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


class FastLine:
    """One simulated link: its units' images, its framing and its wire."""

    def __init__(
        self,
        link: LinkConfig,
        store: UnitStore,
        refresh_period: float,
        wire: WireModel | None,
        rng: random.Random,
        meters: dict[str, SimulatedMeter] | None = None,
    ) -> None:
        self.link = link
        self.store = store
        self.rtu = link.kind in ("rtu_over_tcp", "rtu_serial")
        #: DL/T 645 meters on this line by address.
        self.meters = meters or {}
        self.refresh_period = refresh_period
        self.wire = wire
        self.rng = rng
        self.images = {unit_id: _UnitImage(unit) for unit_id, unit in store.units.items()}
        self.requests = 0
        self.conversations: set[_LineProtocol] = set()
        self._bus_free_at = 0.0
        self._server: asyncio.Server | None = None
        self._serial: asyncio.BaseTransport | None = None

    async def start(self) -> None:
        """Listen on the link's host and port, or open the far end of its serial line."""
        loop = asyncio.get_running_loop()
        link = self.link
        if link.kind == "rtu_serial":
            assert link.sim_port is not None
            transport, _ = await create_serial_connection(
                loop,
                lambda: _LineProtocol(self),
                link.sim_port,
                baudrate=link.baudrate,
                bytesize=link.bytesize,
                parity=link.parity,
                stopbits=link.stopbits,
            )
            self._serial = transport
            return
        assert isinstance(link.port, int)
        self._server = await loop.create_server(
            lambda: _LineProtocol(self), link.host or "127.0.0.1", link.port
        )

    async def stop(self) -> None:
        """Close the listening socket and every connection."""
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        if self._server is not None:
            self._server.close()
            for conversation in list(self.conversations):
                if conversation.transport is not None:
                    conversation.transport.close()
            await self._server.wait_closed()

    def take_frame(self, buffer: bytes) -> tuple[int, bytes | None, int] | None:
        """The next whole request in ``buffer``: (bytes used, answer or None, request size)."""
        if self.meters and buffer[:1] == b"\xfe":
            return self._meter_frame(buffer)
        if self.rtu:
            if len(buffer) < 8:
                return None
            size = 9 + buffer[6] if buffer[1] in (15, 16) else 8
            if len(buffer) < size:
                return None
            frame = buffer[:size]
            if FramerRTU.compute_CRC(frame[:-2]) != int.from_bytes(frame[-2:], "big"):
                return len(buffer), None, size  # garbage: drop all, as a device's UART does
            pdu = self.answer(frame[0], frame[1:-2])
            if pdu is None:
                return size, None, size
            body = bytes([frame[0]]) + pdu
            return size, body + FramerRTU.compute_CRC(body).to_bytes(2, "big"), size
        if len(buffer) < 7:
            return None
        tid, _, length, unit = _MBAP.unpack_from(buffer)
        size = 6 + length
        if len(buffer) < size:
            return None
        pdu = self.answer(unit, buffer[7:size])
        if pdu is None:
            return size, None, size
        return size, _MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu, size

    def _meter_frame(self, buffer: bytes) -> tuple[int, bytes | None, int] | None:
        now = self.store.clock.now()
        board = self.store.board
        for meter_id, meter in self.meter_ids.items():
            meter.silent = board.find(meter_id, FaultKind.DEVICE_SILENT, now) is not None
            meter.bad_checksum = board.find(meter_id, FaultKind.GARBLED, now) is not None
        taken = take_meter_frame(buffer, self.meters)
        if taken is None:
            return None
        used, answer = taken
        self.requests += 1
        return used, answer, used

    @property
    def meter_ids(self) -> dict[str, SimulatedMeter]:
        """The line's meters by device id (faults are placed by device id)."""
        return {meter.device_id: meter for meter in self.meters.values()}

    def answer(self, unit_id: int, pdu: bytes) -> bytes | None:
        """The answer PDU to a request PDU, or None for a unit that does not answer."""
        self.requests += 1
        image = self.images.get(unit_id)
        if image is None:
            return None
        # A unit whose contactors are still following a command is rebuilt on every
        # read, so the read-back sees the moment they close, not a cached image.
        if image.settling or time.monotonic() - image.built_at > self.refresh_period:
            image.rebuild(self.store)
        if image.silent:
            return None
        function = pdu[0]
        address, count = struct.unpack_from(">HH", pdu, 1)
        table = _READ_TABLES.get(function)
        if table is not None:
            return self._read(image, function, table, address, count)
        return self._write(image, function, pdu, address, count)

    @staticmethod
    def _read(image: _UnitImage, function: int, table: Table, address: int, count: int) -> bytes:
        if table.is_bit:
            bits = image.bits[table]
            if count < 1 or address + count > len(bits):
                return bytes([function | 0x80, _ILLEGAL_ADDRESS])
            packed = np.packbits(bits[address : address + count], bitorder="little").tobytes()
            return bytes([function, len(packed)]) + packed
        words = image.words[table]
        if count < 1 or 2 * (address + count) > len(words):
            return bytes([function | 0x80, _ILLEGAL_ADDRESS])
        return bytes([function, 2 * count]) + words[2 * address : 2 * (address + count)]

    def _write(
        self, image: _UnitImage, function: int, pdu: bytes, address: int, count: int
    ) -> bytes:
        if function == 5:
            table, values = Table.COIL, [1 if count == 0xFF00 else 0]
        elif function == 6:
            table, values = Table.HOLDING_REGISTER, [count]
        elif function == 15:
            table = Table.COIL
            bits = np.unpackbits(np.frombuffer(pdu[6:], dtype=np.uint8), bitorder="little")
            values = [int(b) for b in bits[:count]]
        elif function == 16:
            table = Table.HOLDING_REGISTER
            values = np.frombuffer(pdu[6 : 6 + 2 * count], dtype=">u2").astype(int).tolist()
        else:
            return bytes([function | 0x80, _ILLEGAL_FUNCTION])
        refused = image.unit.write(table, address, values)
        image.built_at = -1e9
        if refused is not None:
            return bytes([function | 0x80, int(refused)])
        return pdu[:5]

    def send(self, conversation: _LineProtocol, answer: bytes, request_bytes: int) -> None:
        """Answer now, or when the emulated line and DTU would have delivered it."""
        wire = self.wire
        if wire is None:
            conversation.write(answer)
            return
        if wire.loss and self.rng.random() < wire.loss:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        # The line carries one conversation at a time: a request queued behind
        # another waits for the bus; the DTU's round trip is outside the bus.
        start = max(now + wire.rtt_s / 2, self._bus_free_at)
        self._bus_free_at = start + wire.bus_time(request_bytes, len(answer))
        delay = self._bus_free_at + wire.rtt_s / 2 + self.rng.uniform(0, wire.jitter_s) - now
        loop.call_later(delay, conversation.write, answer)


class FastResponder:
    """Every TCP and RTU-over-TCP link of a simulated city, served by a :class:`FastLine`."""

    def __init__(
        self,
        links: dict[str, LinkConfig],
        stores: dict[str, UnitStore],
        refresh_period: float = 5.0,
        wire: WireConfig | None = None,
        seed: int = 1,
        meters: dict[str, dict[str, SimulatedMeter]] | None = None,
    ) -> None:
        rng = random.Random(seed)
        self.lines: list[FastLine] = []
        meters = meters or {}
        for link_id, store in stores.items():
            link = links[link_id]
            if link.kind == "rtu_serial" and not meters.get(link_id):
                raise ValueError(
                    f"link {link_id}: the fast responder serves serial lines of meters"
                )
            model = WireModel.of(wire, link) if wire is not None else None
            self.lines.append(
                FastLine(
                    link,
                    store,
                    refresh_period,
                    model,
                    random.Random(rng.random()),
                    meters.get(link_id),
                )
            )

    async def start(self) -> None:
        """Listen on every link's port."""
        for line in self.lines:
            await line.start()

    async def stop(self) -> None:
        """Close every port."""
        for line in self.lines:
            await line.stop()
