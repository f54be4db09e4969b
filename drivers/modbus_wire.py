"""The Modbus wire: pure framers (MBAP, RTU) and one lean conversation over any stream.

Why not pymodbus's client: profiled on a city poll, its transaction manager,
per-request ``wait_for`` task, PDU decoding and logging hooks cost about
100 µs of CPU per request, against about 40 µs for the whole exchange here;
with 660 links polled every minute that is the difference between the
controller and the simulator owning a core. pymodbus still builds every
request frame (its PDU classes and framers, so function codes and CRCs are
not hand-written here); frames are cached, since a poll plan repeats the same
requests. Answers have fixed layouts (function, byte count, data) and are
checked and cut here, because decoding them into PDU objects was the largest
single cost.

The conversation is one asyncio protocol over a TCP socket or a serial port
(pymodbus's serial transport): one request outstanding, the answer framed by
its length, a timeout told apart from a garbled answer by whether any bytes
came back.
"""

from __future__ import annotations

import asyncio
import struct
from abc import ABC, abstractmethod
from functools import lru_cache

import numpy as np
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.crc16 import crc16_modbus
from drivers.errors import LinkGarbled
from drivers.profile import Table

_READS: dict[Table, type[ModbusPDU]] = {
    Table.COIL: ReadCoilsRequest,
    Table.DISCRETE_INPUT: ReadDiscreteInputsRequest,
    Table.HOLDING_REGISTER: ReadHoldingRegistersRequest,
    Table.INPUT_REGISTER: ReadInputRegistersRequest,
}
_MBAP = struct.Struct(">HHHB")
_RTU_FRAMER = FramerRTU(DecodePDU(is_server=False))


@lru_cache(maxsize=65536)
def read_pdu(table: Table, address: int, count: int) -> bytes:
    """The PDU (function code and body) of a read, built by pymodbus once per shape."""
    request = _READS[table](address=address, count=count)
    return request.function_code.to_bytes(1, "big") + request.encode()


def write_pdu(table: Table, address: int, values: list[int]) -> bytes:
    """The PDU of a write of coils (0/1) or holding registers."""
    request: ModbusPDU
    if table is Table.COIL:
        if len(values) == 1:
            request = WriteSingleCoilRequest(address=address, bits=[bool(values[0])])
        else:
            request = WriteMultipleCoilsRequest(address=address, bits=[bool(v) for v in values])
    elif table is Table.HOLDING_REGISTER:
        if len(values) == 1:
            request = WriteSingleRegisterRequest(address=address, registers=values)
        else:
            request = WriteMultipleRegistersRequest(address=address, registers=values)
    else:
        raise ValueError(f"table {table.value} is read-only")
    return request.function_code.to_bytes(1, "big") + request.encode()


class ModbusFramer(ABC):
    """Wraps a request PDU for the wire and finds and checks the answer's PDU."""

    @abstractmethod
    def frame(self, unit: int, pdu: bytes, tid: int) -> bytes:
        """The request as sent."""

    @abstractmethod
    def answer_size(self, buffer: bytes | bytearray) -> int:
        """Bytes the answer at the start of ``buffer`` takes, or 0 while that is unknown."""

    @abstractmethod
    def answer_pdu(self, frame: bytes, unit: int, tid: int) -> bytes | None:
        """The answer's PDU; None for a stale answer to an earlier request (skip it).

        Raises :class:`LinkGarbled` for an answer that is broken or from another unit.
        """


class MbapFramer(ModbusFramer):
    """Modbus TCP: a 7-byte MBAP header with transaction id and length, no CRC."""

    def frame(self, unit: int, pdu: bytes, tid: int) -> bytes:
        return _MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu

    def answer_size(self, buffer: bytes | bytearray) -> int:
        if len(buffer) < 6:
            return 0
        return 6 + ((buffer[4] << 8) | buffer[5])

    def answer_pdu(self, frame: bytes, unit: int, tid: int) -> bytes | None:
        got_tid, protocol, length, got_unit = _MBAP.unpack_from(frame)
        if protocol != 0 or length < 2:
            raise LinkGarbled(f"not a Modbus TCP answer (protocol {protocol}, length {length})")
        if got_tid != tid:
            return None
        if got_unit != unit:
            raise LinkGarbled(f"answer from unit {got_unit}, asked unit {unit}")
        return frame[7:]


class RtuFramer(ModbusFramer):
    """Modbus RTU: unit id, PDU and CRC-16, framed by the function's own length rules."""

    def frame(self, unit: int, pdu: bytes, tid: int) -> bytes:
        return _rtu_frame(unit, pdu)

    def answer_size(self, buffer: bytes | bytearray) -> int:
        if len(buffer) < 3:
            return 0
        function = buffer[1]
        if function & 0x80:
            return 5
        if function <= 4 or function in (23,):
            return 5 + buffer[2]
        return 8  # write answers echo address and value or count

    def answer_pdu(self, frame: bytes, unit: int, tid: int) -> bytes | None:
        # The CRC goes low byte first on the wire.
        check = frame[-2] | (frame[-1] << 8)
        if crc16_modbus(np.frombuffer(frame, dtype=np.uint8), len(frame) - 2) != check:
            raise LinkGarbled(f"CRC error in a {len(frame)}-byte answer")
        if frame[0] != unit:
            raise LinkGarbled(f"answer from unit {frame[0]}, asked unit {unit}")
        return frame[1:-2]


@lru_cache(maxsize=65536)
def _rtu_frame(unit: int, pdu: bytes) -> bytes:
    return _RTU_FRAMER.encode(pdu, unit, 0)


class ConversationTimeout(Exception):
    """No whole answer within the timeout (``received`` bytes came back meanwhile)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"{received} bytes received")
        self.received = received


class ModbusConversation(asyncio.Protocol):
    """One connection (TCP or serial) carrying one request at a time."""

    def __init__(self, framer: ModbusFramer) -> None:
        self.framer = framer
        self.transport: asyncio.Transport | None = None
        self.connected = False
        self.made: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._answer: asyncio.Future[bytes] | None = None
        self._unit = 0
        self._tid = 0
        self._received = 0
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connected = True
        if not self.made.done():
            self.made.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError(f"connection lost: {exc or 'closed'}"))

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        answer = self._answer
        if answer is None or answer.done():
            return  # a late answer to a request that timed out: nobody waits for it
        buffer = self._buffer
        buffer += data
        while True:
            size = self.framer.answer_size(buffer)
            if not size or len(buffer) < size:
                return
            frame = bytes(buffer[:size])
            del buffer[:size]
            try:
                pdu = self.framer.answer_pdu(frame, self._unit, self._tid)
            except LinkGarbled as exc:
                answer.set_exception(exc)
                return
            if pdu is not None:
                answer.set_result(pdu)
                return

    async def exchange(self, unit: int, pdu: bytes, answer_within: float) -> bytes:
        """Send one request and return the answer's PDU.

        Raises :class:`ConversationTimeout`, :class:`LinkGarbled` or ``ConnectionError``.
        """
        if self.transport is None or not self.connected:
            raise ConnectionError("not connected")
        loop = asyncio.get_running_loop()
        # Bytes left from an earlier, timed-out answer must not be read as this one's.
        self._buffer.clear()
        self._received = 0
        self._unit = unit
        self._tid = (self._tid + 1) & 0xFFFF
        answer: asyncio.Future[bytes] = loop.create_future()
        self._answer = answer
        self.transport.write(self.framer.frame(unit, pdu, self._tid))
        # One lazy timer per connection instead of one per request (or asyncio.wait_for,
        # which wraps every request in a task): requests only move the deadline, and the
        # timer re-arms itself when it fires early. At thousands of requests a second
        # the per-request timers were a tenth of the poller's CPU.
        self._deadline = loop.time() + answer_within
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._check_deadline)
        try:
            return await answer
        finally:
            self._answer = None

    def _check_deadline(self) -> None:
        self._timer = None
        answer = self._answer
        if answer is None or answer.done():
            return  # idle: the next request arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            answer.set_exception(ConversationTimeout(self._received))
        else:
            self._timer = loop.call_at(self._deadline, self._check_deadline)

    def close(self) -> None:
        """Close the connection."""
        self.connected = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()
