"""The ceiling for polling: a minimal raw asyncio Modbus and DL/T 645 client, no policy.

One connection per link, one outstanding request per connection, the same
coalesced requests as the poller's plans; the answer's words go into a numpy
buffer per target (a meter's answer: checked, and its BCD values decoded). No
retries, health, priorities, scaling or batches: what a competent ~80-line
client costs per request is the floor the poller is held to.
"""

from __future__ import annotations

import asyncio
import struct
from functools import partial

import numpy as np
from pymodbus.framer.rtu import FramerRTU

from controller.device_config import LinkConfig
from controller.registry import PollTarget
from drivers.dlt645 import codec
from drivers.dlt645.profile import MeterPlan

_FUNCTION = {"coil": 1, "discrete_input": 2, "holding_register": 3, "input_register": 4}


class _RawConnection(asyncio.Protocol):
    def __init__(self, rtu: bool) -> None:
        self.rtu = rtu
        self.buffer = b""
        self.expected = 0
        #: Whether the awaited answer is a DL/T 645 frame (else Modbus).
        self.meter = False
        self.answer: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.answer is None:
            return
        if self.meter:  # a DL/T 645 answer: its length is in its header
            self.expected = codec.frame_length(self.buffer) or 0
        elif self.rtu and len(self.buffer) >= 5 and self.buffer[1] & 0x80:
            self.expected = 5
        elif not self.rtu and len(self.buffer) >= 6:
            self.expected = 6 + int.from_bytes(self.buffer[4:6], "big")
        if self.expected and len(self.buffer) >= self.expected:
            frame, self.buffer = self.buffer[: self.expected], self.buffer[self.expected :]
            self.answer.set_result(frame)
            self.answer = None

    async def read(self, unit: int, function: int, address: int, count: int, tid: int) -> bytes:
        self.meter = False
        pdu = struct.pack(">BHH", function, address, count)
        if self.rtu:
            body = bytes([unit]) + pdu
            frame = body + FramerRTU.compute_CRC(body).to_bytes(2, "big")
            data = (count + 7) // 8 if function < 3 else 2 * count
            self.expected = 5 + data
        else:
            frame = struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu
            self.expected = 0
        self.answer = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(frame)
        return await self.answer

    async def exchange_dlt645(self, frame: bytes) -> bytes:
        """Send a prepared DL/T 645 request, wait for its whole answer."""
        self.meter, self.expected = True, 0
        self.answer = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(frame)
        return await self.answer


class RawPoller:
    """Polls targets link by link with :class:`_RawConnection`; counts requests."""

    @classmethod
    def of_links(cls, links: list[LinkConfig]) -> RawPoller:
        """A raw poller for the config's links (the fast responder serves them over TCP)."""
        endpoints = {}
        for link in links:
            assert isinstance(link.port, int)  # the fast responder serves TCP links
            endpoints[link.id] = (link.host or "127.0.0.1", link.port, link.kind == "rtu_over_tcp")
        return cls(endpoints)

    def __init__(self, endpoints: dict[str, tuple[str, int, bool]]) -> None:
        self.endpoints = endpoints
        self.connections: dict[str, _RawConnection] = {}
        self.requests = 0
        #: DL/T 645 requests built once, as a client that polls the same meters would.
        self._frames: dict[tuple[str, str], bytes] = {}

    async def connect(self) -> None:
        """Open one connection per link."""
        loop = asyncio.get_running_loop()
        for link_id, (host, port, rtu) in self.endpoints.items():
            _, protocol = await loop.create_connection(partial(_RawConnection, rtu), host, port)
            self.connections[link_id] = protocol

    async def _poll_link(self, link_id: str, targets: list[PollTarget]) -> None:
        connection = self.connections[link_id]
        rtu = connection.rtu
        for target in targets:
            if isinstance(target.plan, MeterPlan):
                await self._read_meter(connection, target, target.plan)
                continue
            plan = target.plan.plan
            buffer = np.zeros(plan.buffer_size, dtype=np.uint16)
            for request in plan.requests:
                self.requests += 1
                function = _FUNCTION[request.table.value]
                frame = await connection.read(
                    target.unit, function, request.address, request.count, self.requests & 0xFFFF
                )
                if rtu and FramerRTU.compute_CRC(frame[:-2]) != int.from_bytes(frame[-2:], "big"):
                    raise ValueError(f"{link_id}: CRC error")  # a competent client checks it
                data = frame[3:-2] if rtu else frame[9:]
                if function >= 3:
                    words = np.frombuffer(data, dtype=">u2")
                else:
                    packed = np.frombuffer(data, dtype=np.uint8)
                    words = np.unpackbits(packed, bitorder="little")[: request.count]
                buffer[request.buffer_start : request.buffer_start + request.count] = words

    async def _read_meter(
        self, connection: _RawConnection, target: PollTarget, plan: MeterPlan
    ) -> None:
        values = np.full(len(target.field_device), np.nan)
        for request in plan.requests:
            self.requests += 1
            frame = self._frames.get((target.address, request.di))
            if frame is None:
                frame = self._frames[target.address, request.di] = codec.read_request(
                    target.address, request.di
                )
            answer = codec.parse(await connection.exchange_dlt645(frame))
            data = codec.reply_value(answer, request.di)
            for item in request.items:
                raw = data[item.offset : item.offset + item.size]
                values[item.point] = codec.decode_value(raw, item.decimals, item.signed)

    async def poll_all_once(self, by_link: dict[str, list[PollTarget]]) -> None:
        """Every target once, links concurrently."""
        await asyncio.gather(*(self._poll_link(k, v) for k, v in by_link.items()))

    def close(self) -> None:
        """Close every connection."""
        for connection in self.connections.values():
            if connection.transport is not None:
                connection.transport.close()
