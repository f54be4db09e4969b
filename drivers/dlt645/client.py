"""Reading a meter over a byte stream (a transparent DTU, or a serial server).

One transaction at a time, as one RS-485 bus allows; a meter that does not
answer costs its own timeout; answers may start with FE bytes.
"""

from __future__ import annotations

import asyncio

from drivers.dlt645 import codec
from drivers.errors import LinkDown, LinkGarbled, LinkTimeout


class Dlt645Client:
    """Reads data identifiers from meters behind one TCP endpoint."""

    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        """Drop the connection."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._reader = None

    async def read(self, address: str, di: str) -> bytes:
        """The value bytes of one data identifier; a LinkError when it cannot be had."""
        async with self._lock:
            reader, writer = await self._connected()
            writer.write(codec.read_request(address, di))
            await writer.drain()
            try:
                raw = await asyncio.wait_for(self._read_frame(reader), self.timeout)
            except TimeoutError:
                raise LinkTimeout(f"meter {address}: no answer within {self.timeout}s") from None
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                await self.close()
                raise LinkDown(f"meter {address}: connection lost: {exc}") from exc
        try:
            frame = codec.parse(raw)
            if frame.address != address:
                raise codec.FrameError(f"answer from meter {frame.address}")
            return codec.reply_value(frame, di)
        except codec.FrameError as exc:
            raise LinkGarbled(f"meter {address}: {exc}") from exc

    async def read_value(self, address: str, di: str, fmt: str, signed: bool = False) -> float:
        """One data identifier as a number, by its format."""
        size, decimals = codec.parse_format(fmt)
        data = await self.read(address, di)
        if len(data) < size:
            raise LinkGarbled(f"meter {address}: DI {di} gave {len(data)} bytes, {size} expected")
        return codec.decode_value(data[:size], decimals, signed)

    async def _connected(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            return self._reader, self._writer
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise LinkDown(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._reader, self._writer = reader, writer
        return reader, writer

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> bytes:
        buffer = b""
        while True:
            wanted = codec.frame_length(buffer)
            if wanted is not None and len(buffer) >= wanted:
                return buffer[:wanted]
            buffer += await reader.readexactly(1 if wanted is None else wanted - len(buffer))
