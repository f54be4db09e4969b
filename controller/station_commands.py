"""Commands people send to SL651 stations: queued at their listener, audited like switching.

A station that dials in is reachable only for a while after one of its
reports, so a command is accepted at once ("pending delivery") and ends when
the station answers or the queue gives up on it. The audit log has the
command from the moment it is accepted and its outcome when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from controller.control.audit import Actor, AuditEntry, AuditLog
from controller.registry import Registry
from drivers.sl651.downlink import Downlink, DownlinkCommand, DownlinkState, PeriodQuery
from drivers.sl651.listener import Sl651Listener
from drivers.tasks import cancel_until_done

log = logging.getLogger(__name__)

#: The audit action of each command.
ACTIONS = {
    Downlink.SET_CLOCK: "sl651_set_clock",
    Downlink.QUERY_REALTIME: "sl651_query",
    Downlink.QUERY_PERIOD: "sl651_query_period",
}
#: A queued command's audit outcome while it waits, and when it ends.
OUTCOMES = {
    DownlinkState.QUEUED: "pending_delivery",
    DownlinkState.SENT: "sent",
    DownlinkState.ANSWERED: "confirmed",
    DownlinkState.FAILED: "failed",
}


class UnknownStation(KeyError):
    """No SL651 station has that id."""


@dataclass(frozen=True)
class StationCommand:
    """A command to a station, with its audit id and who sent it."""

    id: int
    device: str
    actor: Actor
    source: str
    downlink: DownlinkCommand

    @property
    def action(self) -> str:
        """The audit action ("sl651_set_clock", "sl651_query")."""
        return ACTIONS[self.downlink.function]


class StationCommands:
    """Queues commands for stations and writes each to the audit log when it ends."""

    def __init__(
        self,
        registry: Registry,
        listeners: list[Sl651Listener],
        audit: AuditLog,
        expiry: dict[str, float],
        keep: int = 200,
    ) -> None:
        self.registry = registry
        self.audit = audit
        #: Per listener: how long a command waits for its station.
        self.expiry = expiry
        self.keep = keep
        self._listener_of: dict[str, tuple[Sl651Listener, str]] = {}
        by_id = {listener.id: listener for listener in listeners}
        for listener_id, stations in registry.sl651_stations.items():
            for device, station, _ in stations:
                self._listener_of[registry.devices[device].id] = (by_id[listener_id], station)
        self._recent: list[StationCommand] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def station(self, device_id: str) -> tuple[Sl651Listener, str]:
        """The listener and station address of a station; UnknownStation if there is none."""
        found = self._listener_of.get(device_id)
        if found is None:
            raise UnknownStation(device_id)
        return found

    def stations(self) -> list[str]:
        """Every SL651 station's device id."""
        return list(self._listener_of)

    async def submit(
        self,
        device_id: str,
        function: Downlink,
        actor: Actor,
        source: str,
        period: PeriodQuery | None = None,
    ) -> StationCommand:
        """Accept a command (audited at once); it goes out when the station is next online.

        ValueError (before anything is audited) for a period query its listener
        cannot send.
        """
        listener, station = self.station(device_id)
        listener.check_command(function, period)
        entry = AuditEntry(
            id=0,
            at=time.time(),
            source=source,
            actor=actor,
            action=ACTIONS[function],
            dim=None,
            selector=device_id,
            target_count=1,
            outcome=OUTCOMES[DownlinkState.QUEUED],
        )
        entry.id = await self.audit.append(entry)
        command = StationCommand(
            entry.id,
            device_id,
            actor,
            source,
            listener.queue(station, function, self.expiry[listener.id], period),
        )
        self._recent.append(command)
        del self._recent[: -self.keep]
        task = asyncio.create_task(self._audit_end(command, entry), name=f"sl651:{entry.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return command

    def recent(self, device_id: str | None = None) -> list[StationCommand]:
        """Recent commands, newest first (of one station, or all)."""
        return [c for c in reversed(self._recent) if device_id is None or c.device == device_id]

    def get(self, command_id: int) -> StationCommand | None:
        """A recent command by its audit id."""
        return next((c for c in self._recent if c.id == command_id), None)

    async def _audit_end(self, command: StationCommand, entry: AuditEntry) -> None:
        await command.downlink.done.wait()
        d = command.downlink
        entry.outcome = OUTCOMES[d.state]
        entry.finished_at = d.finished_at
        entry.confirmed = int(d.state is DownlinkState.ANSWERED)
        entry.failed = int(d.state is DownlinkState.FAILED)
        entry.reason = d.reason
        entry.results = {
            command.device: {"status": d.state.value, **({"reason": d.reason} if d.reason else {})}
        }
        try:
            await self.audit.update(entry)
        except Exception:
            log.exception("audit update of station command %d failed", command.id)

    async def stop(self) -> None:
        """Wait for the audit of commands the listeners have ended (call after them)."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=5)
            await cancel_until_done(list(late))
