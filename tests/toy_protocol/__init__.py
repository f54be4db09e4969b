"""A toy push protocol, added the way docs/protocols.md says, touching no core file.

Devices open a TCP connection and send one line per report::

    TOY <device id> <point>=<value> [<point>=<value> ...]

The source turns each line into a reading batch for the sink and records the
device's health; a line it cannot read is counted as garbled on the device it
names (or dropped with a log line when it names none it serves).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from drivers.readings import Quality, ReadingBatch
from drivers.sources import (
    BatchSink,
    PushProtocol,
    SourceConfig,
    SourceDevice,
    register_push_protocol,
)

log = logging.getLogger(__name__)


class ToyLineConfig(SourceConfig):
    """Where the toy source listens."""

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


class ToyLineSource:
    """Listens for toy report lines and delivers them as readings."""

    def __init__(self, cfg: SourceConfig, devices: Sequence[SourceDevice]) -> None:
        assert isinstance(cfg, ToyLineConfig)
        self.cfg = cfg
        self._devices = {d.id: d for d in devices}
        self._server: asyncio.Server | None = None
        self._deliver: BatchSink | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def id(self) -> str:
        """The source's id in the config."""
        return self.cfg.id

    async def start(self, deliver: BatchSink) -> None:
        """Open the port devices report to."""
        self._deliver = deliver
        self._server = await asyncio.start_server(self._serve, self.cfg.host, self.cfg.port)

    async def stop(self) -> None:
        """Close the port (every line read has already been delivered)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while line := await reader.readline():
                await self._on_line(line.decode("utf-8", "replace").split())
        except ConnectionError:
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _on_line(self, words: list[str]) -> None:
        if len(words) < 3 or words[0] != "TOY" or words[1] not in self._devices:
            log.warning("toy source %s: a line it cannot read: %s", self.id, " ".join(words))
            return
        device = self._devices[words[1]]
        points: list[int] = []
        values: list[float] = []
        try:
            for pair in words[2:]:
                name, value = pair.split("=", 1)
                points.append(device.points.index(name))
                values.append(float(value))
        except ValueError as exc:
            device.health.record_failure("garbled", f"bad toy line: {exc}", 1)
            return
        now = time.time()
        n = len(points)
        batch = ReadingBatch(
            np.full(n, device.index, np.int32),
            np.asarray(points, np.int16),
            np.full(n, now),
            np.asarray(values, np.float64),
            np.full(n, Quality.GOOD, np.uint8),
        )
        device.health.record_success(now)
        assert self._deliver is not None
        await self._deliver(batch)


register_push_protocol(PushProtocol("toy-line", ToyLineConfig, ToyLineSource))
