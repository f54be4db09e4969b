"""Links: one TCP connection or one serial line, carrying one conversation at a time.

An RS-485 line (and the serial server or 4G DTU in front of one) is half-duplex:
a second request before the first is answered garbles both. So every request
on a link goes through one lock; many links run concurrently.

The wire is :mod:`drivers.wire` (one neutral conversation per connection);
a line frames Modbus by default (:mod:`drivers.modbus.wire`: pymodbus builds
the frames, the exchange is ours, see there why), and a DL/T 645 meter on the
same RS-485 line brings its own framer to :meth:`ModbusLink.exchange`. The
policy is here: a device that is already
offline gets one try (its neighbours should not pay for its retries),
reconnects back off exponentially with jitter, and a timeout is told apart from
a garbled frame by whether any bytes came back.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pymodbus.transport.serialtransport import create_serial_connection

from drivers.errors import DeviceException, LinkDown, LinkError, LinkGarbled, LinkTimeout
from drivers.health import LinkHealth
from drivers.modbus.wire import MbapFramer, RtuFramer, read_pdu, write_pdu
from drivers.priority_lock import Priority, PriorityLock
from drivers.profile import Table
from drivers.wire import Conversation, ConversationTimeout, Framer


@dataclass(frozen=True)
class LinkTiming:
    """Timing policy of a link."""

    timeout: float = 1.0
    #: Immediate retries after a garbled frame or a dropped connection. A timeout is
    #: not retried at once: a device that did not answer rarely answers 50 ms later,
    #: and on a shared bus its neighbours would wait for it; the next poll retries.
    retries: int = 1
    #: Quiet time between requests on a serial bus (RS-485 turnaround), seconds.
    turnaround: float = 0.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: Consecutive timeouts across all devices after which the connection is reopened.
    reset_after_timeouts: int = 20


class ModbusLink(ABC):
    """A serialized Modbus conversation over one transport."""

    def __init__(self, link_id: str, timing: LinkTiming) -> None:
        self.id = link_id
        self.timing = timing
        self.health = LinkHealth()
        self._lock = PriorityLock()
        self._conversation: Conversation | None = None
        self._next_connect_at = 0.0
        self._failed_connects = 0
        self._last_request_end = 0.0

    @abstractmethod
    async def _open(self) -> Conversation:
        """Open the transport with a conversation on it (inside the event loop)."""

    @property
    def describe(self) -> str:
        """Where the link goes, for tables and logs."""
        return self.id

    async def _ensure_connected(self) -> Conversation:
        if self._conversation is not None and self._conversation.connected:
            return self._conversation
        now = time.monotonic()
        if now < self._next_connect_at:
            raise LinkDown(
                f"{self.id}: not connected, next attempt in {self._next_connect_at - now:.1f}s"
            )
        try:
            self._conversation = await asyncio.wait_for(self._open(), self.timing.timeout * 2)
        except (TimeoutError, OSError):
            self._conversation = None
            self._failed_connects += 1
            self.health.connected = False
            self.health.connect_failures += 1
            delay = min(
                self.timing.backoff_max,
                self.timing.backoff_initial * 2 ** (self._failed_connects - 1),
            )
            # Jitter keeps hundreds of DTUs that dropped together from reconnecting in step.
            self._next_connect_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
            self.health.last_error = f"connect failed to {self.describe}"
            raise LinkDown(f"{self.id}: cannot connect to {self.describe}") from None
        self._failed_connects = 0
        self.health.connected = True
        self.health.connects += 1
        return self._conversation

    def _drop_connection(self) -> None:
        if self._conversation is not None:
            self._conversation.close()
            self._conversation = None
        if self.health.connected:
            self.health.disconnects += 1
        self.health.connected = False

    async def exchange(
        self,
        unit: int,
        pdu: bytes,
        retries: int | None = None,
        priority: Priority = Priority.POLL,
        framer: Framer | None = None,
    ) -> bytes:
        """Send one request under the link lock, with this link's retry policy; the answer.

        ``framer`` frames a request of another protocol on this line (a DL/T 645
        meter beside Modbus units on one RS-485 bus); by default the line's own.
        """
        attempts = 1 + (self.timing.retries if retries is None else retries)
        health = self.health
        # acquire/release rather than ``async with hold()``: the context manager's
        # generator cost as much as the lock itself on the poll path.
        await self._lock.acquire(priority)
        try:
            last_error: LinkError = LinkTimeout("no attempt made")
            for _ in range(attempts):
                try:
                    conversation = await self._ensure_connected()
                except LinkDown as exc:
                    health.errors[exc.kind] += 1
                    raise
                if self.timing.turnaround > 0:
                    wait = self._last_request_end + self.timing.turnaround - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                health.requests += 1
                try:
                    answer = await conversation.exchange(unit, pdu, self.timing.timeout, framer)
                except ConversationTimeout as exc:
                    last_error = self._classify_failure(exc.received)
                    if isinstance(last_error, LinkTimeout):
                        break
                    continue
                except LinkGarbled as exc:
                    last_error = self._garbled(str(exc))
                    continue
                except (ConnectionError, OSError) as exc:
                    self._drop_connection()
                    last_error = LinkDown(f"{self.id}: connection lost: {exc}")
                    health.errors[last_error.kind] += 1
                    continue
                finally:
                    self._last_request_end = time.monotonic()
                health.consecutive_timeouts = 0
                health.last_success = time.time()
                return answer
            raise last_error
        finally:
            self._lock.release()

    async def _modbus(
        self, unit: int, pdu: bytes, retries: int | None, priority: Priority
    ) -> bytes:
        answer = await self.exchange(unit, pdu, retries, priority)
        if answer[0] & 0x80:
            # The device answered: the link itself is healthy.
            error = DeviceException(answer[1] if len(answer) > 1 else 0)
            self.health.errors[error.kind] += 1
            raise error
        return answer

    def _classify_failure(self, received: int) -> LinkError:
        if received:
            return self._garbled(f"no valid frame in {received} bytes")
        error = LinkTimeout(f"{self.id}: no answer within {self.timing.timeout}s")
        self.health.consecutive_timeouts += 1
        if self.health.consecutive_timeouts >= self.timing.reset_after_timeouts:
            self.health.consecutive_timeouts = 0
            self._drop_connection()
        self.health.errors[error.kind] += 1
        self.health.last_error = str(error)
        return error

    def _garbled(self, reason: str) -> LinkError:
        error = LinkGarbled(f"{self.id}: {reason}")
        self.health.consecutive_timeouts = 0
        self.health.errors[error.kind] += 1
        self.health.last_error = str(error)
        return error

    async def read(
        self,
        unit: int,
        table: Table,
        address: int,
        count: int,
        retries: int | None = None,
        priority: Priority = Priority.POLL,
    ) -> list[int]:
        """Read ``count`` registers (or bits, as 0/1) from a unit."""
        words = await self.read_words(unit, table, address, count, retries, priority)
        return [int(w) for w in words]

    async def read_words(
        self,
        unit: int,
        table: Table,
        address: int,
        count: int,
        retries: int | None = None,
        priority: Priority = Priority.POLL,
    ) -> npt.NDArray[np.uint16]:
        """:meth:`read` as an array (no Python int per register: the poller's path)."""
        pdu = read_pdu(table, address, count)
        answer = await self._modbus(unit, pdu, retries, priority)
        if answer[0] != pdu[0] or len(answer) < 2:
            raise LinkGarbled(f"{self.id}: answer to function {answer[0]}, asked {pdu[0]}")
        data = answer[2 : 2 + answer[1]]
        if table.is_bit:
            if len(data) * 8 < count:
                raise LinkGarbled(f"{self.id}: asked {count} bits, got {8 * len(data)}")
            bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
            return bits[:count].astype(np.uint16)
        if len(data) != 2 * count:
            raise LinkGarbled(f"{self.id}: asked {count} registers, got {len(data) // 2}")
        return np.frombuffer(data, dtype=">u2").astype(np.uint16)

    async def write(
        self,
        unit: int,
        table: Table,
        address: int,
        values: list[int],
        retries: int | None = None,
        priority: Priority = Priority.COMMAND,
    ) -> None:
        """Write coils (0/1) or holding registers starting at ``address``."""
        await self._modbus(unit, write_pdu(table, address, values), retries, priority)

    async def close(self) -> None:
        """Close the connection; the link can be used again later."""
        async with self._lock.hold(Priority.COMMAND):
            if self._conversation is not None:
                self._conversation.close()
                self._conversation = None
            self.health.connected = False


async def _open_tcp(host: str, port: int, framer: Framer) -> Conversation:
    loop = asyncio.get_running_loop()
    _, conversation = await loop.create_connection(lambda: Conversation(framer), host, port)
    return conversation


class ModbusTcpLink(ModbusLink):
    """Modbus TCP (MBAP framing) to a device or gateway."""

    def __init__(self, link_id: str, host: str, port: int, timing: LinkTiming) -> None:
        super().__init__(link_id, timing)
        self.host = host
        self.port = port

    @property
    def describe(self) -> str:
        return f"modbus-tcp://{self.host}:{self.port}"

    async def _open(self) -> Conversation:
        return await _open_tcp(self.host, self.port, MbapFramer())


class ModbusRtuOverTcpLink(ModbusTcpLink):
    """Modbus RTU frames (with CRC) over TCP: serial servers and 4G DTUs."""

    @property
    def describe(self) -> str:
        return f"rtu-over-tcp://{self.host}:{self.port}"

    async def _open(self) -> Conversation:
        return await _open_tcp(self.host, self.port, RtuFramer())


class ModbusRtuSerialLink(ModbusLink):
    """Modbus RTU on a serial line (RS-485 with many unit ids)."""

    def __init__(
        self,
        link_id: str,
        port: str,
        timing: LinkTiming,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
    ) -> None:
        super().__init__(link_id, timing)
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.bytesize = bytesize

    @property
    def describe(self) -> str:
        return f"serial://{self.port}?{self.baudrate}-{self.bytesize}{self.parity}{self.stopbits}"

    async def _open(self) -> Conversation:
        loop = asyncio.get_running_loop()
        conversation = Conversation(RtuFramer())
        # pyserial opens the port here (an OSError for a missing or busy device).
        await create_serial_connection(
            loop,
            lambda: conversation,
            self.port,
            baudrate=self.baudrate,
            bytesize=self.bytesize,
            parity=self.parity,
            stopbits=self.stopbits,
        )
        await conversation.made
        return conversation
