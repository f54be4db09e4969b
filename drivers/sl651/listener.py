"""The centre's TCP listener: many stations at once, each frame checked and counted.

A station is known by the address in each frame, not by its socket (4G
stations come back from new addresses). A valid report from a known station
with the right password is handed on and confirmed as M2 says (ETX -> EOT,
ETB -> ACK); the link keep-alive 2F gets no answer; an invalid frame gets no
answer either [STD 6.3.1.2 b]. Resent reports (the station resends twice
when no confirm arrives) are confirmed again but handed on once.

Commands for a station wait in its queue (:mod:`drivers.sl651.downlink`):
its next report is confirmed with ESC, which keeps it online, and the queue
is sent then, one command and its answer at a time. Every report's send
time is compared with the centre's clock.
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
from drivers.sl651.body import Report
from drivers.sl651.downlink import (
    ANSWER_TIMEOUT_S,
    CLOCK_DRIFT_LIMIT_S,
    ONLINE_WINDOW_S,
    RESENDS,
    SETTINGS_COMMANDS,
    Downlink,
    DownlinkCommand,
    DownlinkState,
    PeriodQuery,
    SettingItem,
    downlink_frame,
)
from drivers.sl651.encoding import HEX, Encoding
from drivers.sl651.packets import PacketAssembler

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
    #: The station's clock minus the centre's, from its last report's send time.
    clock_offset_s: float | None = None
    #: The clock is more than CLOCK_DRIFT_LIMIT_S off.
    clock_drift: bool = False
    commands_sent: int = 0
    commands_answered: int = 0
    commands_failed: int = 0
    #: Until when the station is online for commands (after ESC or a keep-alive).
    online_until: float = 0.0
    #: M3 packets asked for again (NAK) because they were lost or garbled.
    packets_asked_again: int = 0


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
#: Told of a command the listener queued by itself (a set-clock after a drift).
CommandHandler = Callable[[DownlinkCommand], None]


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
        encoding: Encoding = HEX,
        on_history: ReportHandler | None = None,
        auto_set_clock: bool = False,
        command_expiry: float = 86400.0,
    ) -> None:
        self.id = listener_id
        self.encoding = encoding
        self.host = host
        self.port = port
        self.stations = {s.station: s for s in stations}
        self.tz = tz
        self.on_report = on_report
        #: Where the answers to period queries go: stored history, not news.
        self.on_history = on_history
        self.idle_timeout = idle_timeout
        #: A station whose clock drifts past the limit gets a set-clock (4AH) queued.
        self.auto_set_clock = auto_set_clock
        self.command_expiry = command_expiry
        #: Where a command the listener queued by itself is reported (for the audit log).
        self.on_own_command: CommandHandler | None = None
        self.stats = ListenerStats(stations={s.station: StationStats() for s in stations})
        self.packets = PacketAssembler()
        self._seen: dict[str, collections.deque[tuple[int, int, float]]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # Downlink: the live socket and centre address of each station (a 4G station
        # comes back on a new socket), its queue and the command awaiting an answer.
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._centres: dict[str, int] = {}
        self._queues: dict[str, collections.deque[DownlinkCommand]] = {}
        self._outstanding: dict[str, DownlinkCommand] = {}
        self._waits: set[asyncio.Task[None]] = set()
        self._expiries: dict[DownlinkCommand, asyncio.TimerHandle] = {}

    async def start(self) -> None:
        """Open the listening socket."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        """Close the socket and every station connection; open commands fail."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in [*self._connections, *self._waits]:
            task.cancel()
        await asyncio.gather(*self._connections, *self._waits, return_exceptions=True)
        now = time.time()
        for handle in self._expiries.values():
            handle.cancel()
        self._expiries.clear()
        for command in [
            *self._outstanding.values(),
            *(c for q in self._queues.values() for c in q),
        ]:
            command.finish(DownlinkState.FAILED, now, "the controller stopped")
        self._outstanding.clear()
        self._queues.clear()

    def queue(
        self,
        station: str,
        function: Downlink,
        expire_after: float,
        period: PeriodQuery | None = None,
        settings: tuple[SettingItem, ...] = (),
    ) -> DownlinkCommand:
        """Queue a command for a station; it is sent when the station is next online.

        KeyError for a station this listener does not serve; ValueError as
        :meth:`check_command` says.
        """
        if station not in self.stations:
            raise KeyError(station)
        self.check_command(function, period, settings)
        now = time.time()
        command = DownlinkCommand(
            station, function, now, now + expire_after, period=period, settings=settings
        )
        self._queues.setdefault(station, collections.deque()).append(command)
        loop = asyncio.get_running_loop()
        self._expiries[command] = loop.call_later(expire_after, self._expire, command)
        self._pump(station)
        return command

    def check_command(
        self,
        function: Downlink,
        period: PeriodQuery | None,
        settings: tuple[SettingItem, ...] = (),
    ) -> None:
        """ValueError for a command this listener cannot send: a period query (38H)
        without its period, a settings command (42H/43H) without settings, either
        on an ASCII listener (HEX only)."""
        if function is Downlink.QUERY_PERIOD and period is None:
            raise ValueError("a period query needs its period")
        if function in SETTINGS_COMMANDS and not settings:
            raise ValueError("a settings command needs the settings it reads or writes")
        if function in (Downlink.QUERY_PERIOD, *SETTINGS_COMMANDS) and self.encoding is not HEX:
            raise ValueError(
                f"listener {self.id} speaks ASCII: period queries and settings need HEX"
            )

    def connected(self, station: str) -> bool:
        """Whether the station has a connection open now."""
        writer = self._writers.get(station)
        return writer is not None and not writer.is_closing()

    def pending(self, station: str) -> list[DownlinkCommand]:
        """The station's command awaiting an answer, then its queue."""
        out = [self._outstanding[station]] if station in self._outstanding else []
        return out + list(self._queues.get(station, ()))

    def _expire(self, command: DownlinkCommand) -> None:
        self._expiries.pop(command, None)
        queue = self._queues.get(command.station)
        if command.state is DownlinkState.QUEUED and queue is not None and command in queue:
            queue.remove(command)
            self._failed(command, "the station did not come online before the command expired")

    def _failed(self, command: DownlinkCommand, reason: str) -> None:
        self.stats.stations[command.station].commands_failed += 1
        command.finish(DownlinkState.FAILED, time.time(), reason)
        log.warning(
            "%s: station %s: command %02X failed: %s",
            self.id,
            command.station,
            command.function,
            reason,
            extra={"link": self.id, "device": command.station},
        )

    def _pump(self, station: str) -> None:
        """Send the station's next command if it is online and none awaits an answer."""
        queue = self._queues.get(station)
        writer = self._writers.get(station)
        if not queue or station in self._outstanding or writer is None or writer.is_closing():
            return
        if self.stats.stations[station].online_until < time.time():
            return
        command = queue.popleft()
        handle = self._expiries.pop(command, None)
        if handle is not None:
            handle.cancel()
        self._outstanding[station] = command
        self._send(command, writer)
        wait = asyncio.create_task(self._await_answer(command), name=f"sl651:{station}:answer")
        self._waits.add(wait)
        wait.add_done_callback(self._waits.discard)

    def _send(self, command: DownlinkCommand, writer: asyncio.StreamWriter) -> None:
        key = self.stations[command.station]
        now = time.time()
        centre = self._centres.get(command.station, 1)
        writer.write(downlink_frame(command, centre, key.password, now, self.tz, self.encoding))
        command.sends += 1
        command.state = DownlinkState.SENT
        command.sent_at = now
        self.stats.stations[command.station].commands_sent += 1

    async def _await_answer(self, command: DownlinkCommand) -> None:
        while True:
            try:
                await asyncio.wait_for(command.done.wait(), ANSWER_TIMEOUT_S)
                break
            except TimeoutError:
                writer = self._writers.get(command.station)
                if command.sends > RESENDS or writer is None or writer.is_closing():
                    self._failed(command, f"no answer after {command.sends} sends")
                    break
                self._send(command, writer)
        if self._outstanding.get(command.station) is command:
            del self._outstanding[command.station]
        self._pump(command.station)

    def _answered(self, command: DownlinkCommand, report: Report) -> bool:
        """Take a station's answer to ``command``; False if the command is sent again."""
        if (
            command.function is Downlink.SET_CLOCK
            and abs(report.sent_at - time.time()) > CLOCK_DRIFT_LIMIT_S
            and command.sends <= RESENDS
        ):
            # The standard sets a clock that was far off twice.
            writer = self._writers.get(command.station)
            if writer is not None and not writer.is_closing():
                self._send(command, writer)
                return False
        command.answer = report
        refused = _settings_not_taken(command, report)
        if refused:
            # The station answered, but its echo shows other values than the ones sent.
            self._failed(command, refused)
            return True
        self.stats.stations[command.station].commands_answered += 1
        command.finish(DownlinkState.ANSWERED, time.time())
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.stats.connections += 1
        self.stats.open_connections += 1
        peer = writer.get_extra_info("peername")
        buffer = bytearray()
        heard: set[str] = set()
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(4096), self.idle_timeout)
                except TimeoutError:
                    break
                if not chunk:
                    break
                buffer += chunk
                frames, problems = self.encoding.split(buffer)
                for problem in problems:
                    self._count_problem(problem, peer)
                for frame in frames:
                    answer = await self._handle(frame, writer)
                    if answer:
                        writer.write(answer)
                        self.stats.confirms += 1
                    if frame.station in self.stations:
                        heard.add(frame.station)
                        self._pump(frame.station)
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.info("%s: station at %s went away: %s", self.id, peer, exc)
        except asyncio.CancelledError:
            # The listener is stopping. A connection task of asyncio's server must end
            # normally: the server's callback logs a cancelled one as an error.
            pass
        finally:
            self.stats.open_connections -= 1
            self._connections.discard(task)
            for station in heard:
                if self._writers.get(station) is writer:
                    del self._writers[station]
                    self.stats.stations[station].online_until = 0.0
            writer.close()

    def _check_clock(self, station: str, stats: StationStats, report: Report, now: float) -> None:
        stats.clock_offset_s = report.sent_at - now
        drift = abs(stats.clock_offset_s) > CLOCK_DRIFT_LIMIT_S
        if drift and not stats.clock_drift:
            log.warning(
                "%s: station %s: its clock is %+.0f s off the centre's",
                self.id,
                station,
                stats.clock_offset_s,
                extra={"link": self.id, "device": station},
            )
        if drift and not stats.clock_drift and self.auto_set_clock:
            self._queue_set_clock(station)
        stats.clock_drift = drift

    def _queue_set_clock(self, station: str) -> None:
        if any(c.function is Downlink.SET_CLOCK for c in self.pending(station)):
            return
        command = self.queue(station, Downlink.SET_CLOCK, self.command_expiry)
        if self.on_own_command is not None:
            self.on_own_command(command)

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

    async def _handle(self, frame: fr.Frame, writer: asyncio.StreamWriter) -> bytes | None:
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
        now = time.time()
        self._writers[frame.station] = writer
        self._centres[frame.station] = frame.centre
        if frame.function == KEEP_ALIVE:
            stats.keep_alives += 1
            stats.online_until = now + ONLINE_WINDOW_S
            return None
        body = frame.body
        if frame.packet is not None:
            assembled = self.packets.add(frame)
            if assembled.missing is not None:
                stats.packets_asked_again += 1
                first = self.packets.first_packet(frame.station, frame.function) or body
                return fr.packet_answer(frame, first, fr.End.NAK, assembled.missing)
            if assembled.body is None:
                return None  # more packets follow; the message is confirmed once, whole
            body = assembled.body
        try:
            report = self.encoding.parse_report(frame.function, body, self.tz)
        except (ValueError, IndexError) as exc:
            stats.bad_body += 1
            self.stats.bad_frames += 1
            log.info("%s: station %s: body not understood: %s", self.id, frame.station, exc)
            return None
        self._check_clock(frame.station, stats, report, now)
        outstanding = self._outstanding.get(frame.station)
        if outstanding is not None and frame.function == outstanding.function:
            # The answer to the centre's command (M4): not confirmed.
            stats.online_until = now + ONLINE_WINDOW_S
            answered = self._answered(outstanding, report)
            if answered and report.observations and frame.function not in SETTINGS_COMMANDS:
                if frame.function != Downlink.QUERY_PERIOD:
                    await self.on_report(key, report)
                elif self.on_history is not None:
                    # Old values asked for: stored, never judged as if they were now.
                    await self.on_history(key, report)
            return None
        answer = None
        if frame.function in CONFIRMED:
            keep_online = bool(self._queues.get(frame.station))
            if frame.packet is not None:
                end = fr.End.ESC if keep_online else fr.End.EOT
                answer = fr.packet_answer(frame, body, end, frame.packet[0])
            else:
                answer = self.encoding.confirm(frame, keep_online)
            if keep_online and frame.end is not fr.End.ETB:
                stats.online_until = now + ONLINE_WINDOW_S
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


def _settings_not_taken(command: DownlinkCommand, report: Report) -> str:
    """For a 42H write: the sent values the station's echo does not show ("" if all)."""
    if command.function is not Downlink.WRITE_SETTINGS:
        return ""
    echoed = {o.element: o.value for o in report.observations}
    wrong = []
    for item in command.settings:
        got = echoed.get(item.id)
        if item.value is None or got is None or abs(got - item.value) > 1e-9:
            wrong.append(f"{item.id:02X} (sent {item.value:g}, it has {got})")
    return "the station did not take " + ", ".join(wrong) if wrong else ""
