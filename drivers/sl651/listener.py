"""The centre's TCP listener: many stations at once, each frame checked and counted.

A station is known by the address in each frame, not by its socket (4G
stations come back from new addresses). A valid report from a known station
with the right password is handed on and confirmed as M2 says (ETX -> EOT,
ETB -> ACK); the link keep-alive 2F gets no answer; an invalid frame gets no
answer either [STD 6.3.1.2 b]. Resent reports (the station resends twice
when no confirm arrives) are confirmed again but handed on once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo

from drivers.sl651 import frame as fr
from drivers.sl651.body import Report, parse_report

log = logging.getLogger(__name__)

#: Report functions the centre confirms (test, uniform, timed, add, hourly, manual,
#: picture, self-reported config and pump/valve/gate state).
CONFIRMED = frozenset({*range(0x30, 0x37), 0x41, 0x4C, 0x4D, 0x4E})
KEEP_ALIVE = 0x2F
#: Resends remembered per station, to hand each report on once.
DEDUP_DEPTH = 64


@dataclass(frozen=True)
class StationKey:
    """Who a station is: its address, and the password the centre gave it."""

    device: int
    station: str
    password: int


@dataclass
class StationStats:
    """What one station has sent."""

    frames: int = 0
    reports: int = 0
    duplicates: int = 0
    keep_alives: int = 0
    wrong_password: int = 0
    bad_body: int = 0
    last_frame: float | None = None
    last_report: float | None = None


@dataclass
class ListenerStats:
    """What the listener has seen, stations known or not."""

    connections: int = 0
    open_connections: int = 0
    frames: int = 0
    bad_crc: int = 0
    bad_frames: int = 0
    unknown_station: int = 0
    wrong_password: int = 0
    confirms: int = 0
    stations: dict[str, StationStats] = field(default_factory=dict)


ReportHandler = Callable[[StationKey, Report], Awaitable[None]]


class Sl651Listener:
    """Listens for SL651 stations on ``host:port`` and hands their reports on."""

    def __init__(
        self,
        listener_id: str,
        host: str,
        port: int,
        stations: list[StationKey],
        tz: tzinfo,
        on_report: ReportHandler,
        idle_timeout: float = 900.0,
    ) -> None:
        self.id = listener_id
        self.host = host
        self.port = port
        self.stations = {s.station: s for s in stations}
        self.tz = tz
        self.on_report = on_report
        self.idle_timeout = idle_timeout
        self.stats = ListenerStats(stations={s.station: StationStats() for s in stations})
        self._seen: dict[str, collections.deque[tuple[int, int, float]]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the listening socket."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        """Close the socket and every station connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.stats.connections += 1
        self.stats.open_connections += 1
        peer = writer.get_extra_info("peername")
        buffer = bytearray()
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(4096), self.idle_timeout)
                except TimeoutError:
                    break
                if not chunk:
                    break
                buffer += chunk
                frames, problems = fr.split(buffer)
                for problem in problems:
                    self._count_problem(problem, peer)
                for frame in frames:
                    answer = await self._handle(frame)
                    if answer:
                        writer.write(answer)
                        await writer.drain()
                        self.stats.confirms += 1
        except (ConnectionError, OSError) as exc:
            log.info("%s: station at %s went away: %s", self.id, peer, exc)
        except asyncio.CancelledError:
            # The listener is stopping. A connection task of asyncio's server must end
            # normally: the server's callback logs a cancelled one as an error.
            pass
        finally:
            self.stats.open_connections -= 1
            self._connections.discard(task)
            writer.close()

    def _count_problem(self, problem: fr.Problem, peer: object) -> None:
        if problem.kind == "bad_crc":
            self.stats.bad_crc += 1
        else:
            self.stats.bad_frames += 1
        log.info(
            "%s: %s from %s: %s (%d bytes skipped)",
            self.id,
            problem.kind,
            peer,
            problem.detail,
            problem.skipped,
            extra={"link": self.id},
        )

    async def _handle(self, frame: fr.Frame) -> bytes | None:
        """Count, check and hand on one frame; the bytes to answer with, if any."""
        self.stats.frames += 1
        if not frame.uplink:
            self.stats.bad_frames += 1
            return None
        key = self.stations.get(frame.station)
        if key is None:
            self.stats.unknown_station += 1
            log.info("%s: frame from unknown station %s", self.id, frame.station)
            return None
        stats = self.stats.stations[frame.station]
        stats.frames += 1
        stats.last_frame = time.time()
        if frame.password != key.password:
            self.stats.wrong_password += 1
            stats.wrong_password += 1
            log.warning(
                "%s: station %s sent a wrong password",
                self.id,
                frame.station,
                extra={"link": self.id, "device": frame.station},
            )
            return None
        if frame.function == KEEP_ALIVE:
            stats.keep_alives += 1
            return None
        try:
            report = parse_report(frame.function, frame.body, self.tz)
        except (ValueError, IndexError) as exc:
            stats.bad_body += 1
            self.stats.bad_frames += 1
            log.info("%s: station %s: body not understood: %s", self.id, frame.station, exc)
            return None
        answer = fr.confirm(frame) if frame.function in CONFIRMED else None
        seen = self._seen.setdefault(frame.station, collections.deque(maxlen=DEDUP_DEPTH))
        fingerprint = (frame.function, report.serial, report.sent_at)
        if fingerprint in seen:
            stats.duplicates += 1
            return answer  # confirmed again: the station did not get the first confirm
        seen.append(fingerprint)
        stats.reports += 1
        stats.last_report = time.time()
        await self.on_report(key, report)
        return answer
