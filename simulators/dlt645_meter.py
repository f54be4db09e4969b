"""Simulated DL/T 645-2007 meters behind one TCP port (a transparent 4G DTU on RS-485).

Each meter answers read requests (11H) for the data identifiers it has, with an
abnormal reply ("no requested data") for others, and can be made to fail: a
silent meter, a broken checksum, answers prefixed with FE as some meters send.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from drivers.dlt645 import codec


@dataclass
class SimulatedMeter:
    """One meter: its address, its values by DI as (value, format, signed), its faults."""

    address: str
    values: dict[str, tuple[float, str, bool]]
    silent: bool = False
    bad_checksum: bool = False
    fe_prefix: bool = False
    requests: int = 0

    def answer(self, request: codec.Dlt645Frame) -> bytes | None:
        """The reply frame to a request, or None when the meter stays silent."""
        self.requests += 1
        if self.silent:
            return None
        di = request.data[:4][::-1].hex().upper()
        if request.control != codec.READ or di not in self.values:
            frame = codec.build(self.address, 0xC0 | request.control, b"\x02", preamble=False)
        else:
            value, fmt, signed = self.values[di]
            size, decimals = codec.parse_format(fmt)
            data = request.data[:4] + codec.encode_value(value, size, decimals, signed)
            frame = codec.build(self.address, 0x80 | codec.READ, data, preamble=False)
        if self.bad_checksum:
            frame = frame[:-2] + bytes([(frame[-2] + 1) & 0xFF]) + frame[-1:]
        return (b"\xfe\xfe" if self.fe_prefix else b"") + frame


@dataclass
class MeterBus:
    """Meters on one RS-485 line, served on a TCP port."""

    meters: dict[str, SimulatedMeter] = field(default_factory=dict)
    _server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen for the centre's DTU connection."""
        self._server = await asyncio.start_server(self._serve, host, port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while True:
                chunk = await reader.read(256)
                if not chunk:
                    return
                buffer += chunk
                while (size := codec.frame_length(buffer)) is not None and len(buffer) >= size:
                    raw, buffer = buffer[:size], buffer[size:]
                    request = codec.parse(raw)
                    meter = self.meters.get(request.address)
                    reply = meter.answer(request) if meter is not None else None
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
        except (ConnectionError, asyncio.CancelledError, codec.FrameError):
            return
        finally:
            writer.close()
