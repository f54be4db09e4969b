"""Links: one TCP connection or one serial line, carrying one conversation at a time.

An RS-485 line (and the serial server or 4G DTU in front of one) is half-duplex:
a second request before the first is answered garbles both. So every request
on a link goes through one lock; many links run concurrently.

pymodbus does the framing. Its own retries and auto-reconnect are switched off
because the policy here differs: a device that is already offline gets one try
(its neighbours should not pay for its retries), reconnects back off
exponentially with jitter, and a timeout is told apart from a garbled frame by
whether any bytes came back.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from drivers.errors import DeviceException, LinkDown, LinkError, LinkGarbled, LinkTimeout
from drivers.health import LinkHealth
from drivers.priority_lock import Priority, PriorityLock
from drivers.profile import Table

# pymodbus closes a TCP connection after a few unanswered requests in a row. On a
# serial server one dead device would then cut off its live neighbours, so that
# decision is taken here (``reset_after_timeouts``) with the whole link in view.
_PYMODBUS_NEVER_DISCONNECT = 1_000_000


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


Client = Any  # a pymodbus async client; pymodbus ships no precise stubs for the mixin


class ModbusLink(ABC):
    """A serialized Modbus conversation over one transport."""

    def __init__(self, link_id: str, timing: LinkTiming) -> None:
        self.id = link_id
        self.timing = timing
        self.health = LinkHealth()
        self._lock = PriorityLock()
        self._client: Client | None = None
        self._next_connect_at = 0.0
        self._failed_connects = 0
        self._last_request_end = 0.0
        self._rx_bytes = 0

    @abstractmethod
    def _make_client(self) -> Client:
        """Create the pymodbus client (must run inside the event loop)."""

    @property
    def describe(self) -> str:
        """Where the link goes, for tables and logs."""
        return self.id

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._rx_bytes += len(data)
        return data

    async def _ensure_connected(self) -> Client:
        if self._client is not None and self._client.connected:
            return self._client
        now = time.monotonic()
        if now < self._next_connect_at:
            raise LinkDown(
                f"{self.id}: not connected, next attempt in {self._next_connect_at - now:.1f}s"
            )
        if self._client is None:
            self._client = self._make_client()
            self._client.set_max_no_responses(_PYMODBUS_NEVER_DISCONNECT)
        try:
            ok = await asyncio.wait_for(self._client.connect(), self.timing.timeout * 2)
        except (TimeoutError, OSError, ConnectionException):
            ok = False
        if not ok:
            self._client.close()
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
            raise LinkDown(f"{self.id}: cannot connect to {self.describe}")
        self._failed_connects = 0
        self.health.connected = True
        self.health.connects += 1
        return self._client

    def _drop_connection(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.health.connected:
            self.health.disconnects += 1
        self.health.connected = False

    async def _execute(
        self, call: Callable[[Client], Awaitable[Any]], retries: int | None, priority: Priority
    ) -> Any:
        """Run one request under the link lock, with this link's retry policy."""
        attempts = 1 + (self.timing.retries if retries is None else retries)
        async with self._lock.hold(priority):
            last_error: LinkError = LinkTimeout("no attempt made")
            for _ in range(attempts):
                try:
                    client = await self._ensure_connected()
                except LinkDown as exc:
                    self.health.errors[exc.kind] += 1
                    raise
                if self.timing.turnaround > 0:
                    wait = self._last_request_end + self.timing.turnaround - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                self._rx_bytes = 0
                self.health.requests += 1
                try:
                    response = await call(client)
                except ModbusIOException as exc:
                    last_error = self._classify_failure(exc)
                    if isinstance(last_error, LinkTimeout):
                        break
                    continue
                except (ConnectionException, OSError) as exc:
                    self._drop_connection()
                    last_error = LinkDown(f"{self.id}: connection lost: {exc}")
                    self.health.errors[last_error.kind] += 1
                    continue
                finally:
                    self._last_request_end = time.monotonic()
                if response.isError():
                    error = DeviceException(int(response.exception_code))
                    self.health.errors[error.kind] += 1
                    # The device answered: the link itself is healthy.
                    self._note_success()
                    raise error
                self._note_success()
                return response
            raise last_error

    def _classify_failure(self, exc: ModbusIOException) -> LinkError:
        error: LinkError
        if self._rx_bytes:
            error = LinkGarbled(f"{self.id}: no valid frame in {self._rx_bytes} bytes ({exc})")
            self.health.consecutive_timeouts = 0
        else:
            error = LinkTimeout(f"{self.id}: no answer within {self.timing.timeout}s")
            self.health.consecutive_timeouts += 1
            if self.health.consecutive_timeouts >= self.timing.reset_after_timeouts:
                self.health.consecutive_timeouts = 0
                self._drop_connection()
        self.health.errors[error.kind] += 1
        self.health.last_error = str(error)
        return error

    def _note_success(self) -> None:
        self.health.consecutive_timeouts = 0
        self.health.last_success = time.time()

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

        async def call(client: Client) -> Any:
            if table is Table.HOLDING_REGISTER:
                return await client.read_holding_registers(address, count=count, device_id=unit)
            if table is Table.INPUT_REGISTER:
                return await client.read_input_registers(address, count=count, device_id=unit)
            if table is Table.COIL:
                return await client.read_coils(address, count=count, device_id=unit)
            return await client.read_discrete_inputs(address, count=count, device_id=unit)

        response = await self._execute(call, retries, priority)
        if table.is_bit:
            bits = list(response.bits)[:count]
            if len(bits) < count:
                raise LinkGarbled(f"{self.id}: asked {count} bits, got {len(bits)}")
            return [1 if b else 0 for b in bits]
        registers = list(response.registers)
        if len(registers) != count:
            raise LinkGarbled(f"{self.id}: asked {count} registers, got {len(registers)}")
        return registers

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

        async def call(client: Client) -> Any:
            if table is Table.COIL:
                if len(values) == 1:
                    return await client.write_coil(address, bool(values[0]), device_id=unit)
                return await client.write_coils(address, [bool(v) for v in values], device_id=unit)
            if table is Table.HOLDING_REGISTER:
                if len(values) == 1:
                    return await client.write_register(address, values[0], device_id=unit)
                return await client.write_registers(address, values, device_id=unit)
            raise ValueError(f"table {table.value} is read-only")

        await self._execute(call, retries, priority)

    async def close(self) -> None:
        """Close the connection; the link can be used again later."""
        async with self._lock.hold(Priority.COMMAND):
            if self._client is not None:
                self._client.close()
                self._client = None
            self.health.connected = False


class ModbusTcpLink(ModbusLink):
    """Modbus TCP (MBAP framing) to a device or gateway."""

    def __init__(self, link_id: str, host: str, port: int, timing: LinkTiming) -> None:
        super().__init__(link_id, timing)
        self.host = host
        self.port = port

    @property
    def describe(self) -> str:
        return f"modbus-tcp://{self.host}:{self.port}"

    def _make_client(self) -> Client:
        return AsyncModbusTcpClient(
            self.host,
            port=self.port,
            framer=FramerType.SOCKET,
            timeout=self.timing.timeout,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace_packet,
        )


class ModbusRtuOverTcpLink(ModbusTcpLink):
    """Modbus RTU frames (with CRC) over TCP: serial servers and 4G DTUs."""

    @property
    def describe(self) -> str:
        return f"rtu-over-tcp://{self.host}:{self.port}"

    def _make_client(self) -> Client:
        return AsyncModbusTcpClient(
            self.host,
            port=self.port,
            framer=FramerType.RTU,
            timeout=self.timing.timeout,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace_packet,
        )


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

    def _make_client(self) -> Client:
        return AsyncModbusSerialClient(
            self.port,
            framer=FramerType.RTU,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            bytesize=self.bytesize,
            timeout=self.timing.timeout,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace_packet,
        )
