"""The neutral wire under every polled protocol: pure framers, one conversation.

The conversation is one asyncio protocol over a TCP socket or a serial port
(pymodbus's serial transport): one request outstanding, the answer framed by
its length, a timeout told apart from a garbled answer by whether any bytes
came back. What a frame looks like is the framer's business (Modbus in
:mod:`drivers.modbus.wire`, DL/T 645 in :mod:`drivers.dlt645.framer`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from drivers.errors import LinkGarbled


class Framer(ABC):
    """Wraps a request for the wire and finds and checks the answer (pure: no I/O).

    ``unit`` and ``tid`` are Modbus's unit id and transaction id; a protocol
    that addresses its devices otherwise (a DL/T 645 meter number) keeps the
    address in its framer and ignores them.
    """

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


class ConversationTimeout(Exception):
    """No whole answer within the timeout (``received`` bytes came back meanwhile)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"{received} bytes received")
        self.received = received


class Conversation(asyncio.Protocol):
    """One connection (TCP or serial) carrying one request at a time.

    The framer is the line's usual protocol; an exchange may bring its own, so
    that a DL/T 645 meter and Modbus units can share one RS-485 line.
    """

    def __init__(self, framer: Framer) -> None:
        self.framer = framer
        self._framer = framer
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
            size = self._framer.answer_size(buffer)
            if not size or len(buffer) < size:
                return
            frame = bytes(buffer[:size])
            del buffer[:size]
            try:
                pdu = self._framer.answer_pdu(frame, self._unit, self._tid)
            except LinkGarbled as exc:
                answer.set_exception(exc)
                return
            if pdu is not None:
                answer.set_result(pdu)
                return

    async def exchange(
        self, unit: int, pdu: bytes, answer_within: float, framer: Framer | None = None
    ) -> bytes:
        """Send one request and return the answer's PDU (framed by ``framer``, else the
        line's own).

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
        self._framer = framer or self.framer
        answer: asyncio.Future[bytes] = loop.create_future()
        self._answer = answer
        self.transport.write(self._framer.frame(unit, pdu, self._tid))
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
