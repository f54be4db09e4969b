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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from controller.control.audit import Actor, AuditEntry, AuditLog
from controller.registry import Registry
from drivers.errors import NotFound, PeopleMessage
from drivers.sl651.body import Observation
from drivers.sl651.downlink import (
    Downlink,
    DownlinkCommand,
    DownlinkState,
    PeriodQuery,
    SettingItem,
)
from drivers.sl651.listener import Sl651Listener
from drivers.sl651.profile import Sl651Profile
from drivers.tasks import cancel_until_done

log = logging.getLogger(__name__)

#: The audit action of each command.
ACTIONS = {
    Downlink.SET_CLOCK: "sl651_set_clock",
    Downlink.QUERY_REALTIME: "sl651_query",
    Downlink.QUERY_PERIOD: "sl651_query_period",
    Downlink.READ_SETTINGS: "sl651_read_settings",
    Downlink.WRITE_SETTINGS: "sl651_write_settings",
}
#: Who a command comes from that the controller sent by itself (a drifting clock set).
CONTROLLER = Actor("streetsense", "", "system")
#: A queued command's audit outcome while it waits, and when it ends.
OUTCOMES = {
    DownlinkState.QUEUED: "pending_delivery",
    DownlinkState.SENT: "sent",
    DownlinkState.ANSWERED: "confirmed",
    DownlinkState.FAILED: "failed",
}


class UnknownStation(NotFound):
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
        keep: int = 200,
    ) -> None:
        self.registry = registry
        self.audit = audit
        self.keep = keep
        self._listener_of: dict[str, tuple[Sl651Listener, str]] = {}
        self._device_of: dict[tuple[str, str], str] = {}
        by_id = {listener.id: listener for listener in listeners}
        for listener_id, stations in registry.sl651_stations.items():
            for device, station, _ in stations:
                device_id = registry.devices[device].id
                self._listener_of[device_id] = (by_id[listener_id], station)
                self._device_of[listener_id, station] = device_id
        for listener in listeners:
            listener.on_own_command = partial(self._adopt, listener)
        self._recent: list[StationCommand] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def station(self, device_id: str) -> tuple[Sl651Listener, str]:
        """The listener and station address of a station; UnknownStation if there is none."""
        found = self._listener_of.get(device_id)
        if found is None:
            raise UnknownStation(
                f"no SL651 station {device_id!r}",
                PeopleMessage("refusal.no_station", {"station": device_id}),
            )
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
        settings: tuple[SettingItem, ...] = (),
    ) -> StationCommand:
        """Accept a command (audited at once); it goes out when the station is next online.

        ValueError (before anything is audited) for a period query or settings
        its listener cannot send.
        """
        listener, station = self.station(device_id)
        listener.check_command(function, period, settings)
        entry = await self._audit_start(device_id, function, actor, source)
        expiry = listener.command_expiry
        downlink = listener.queue(station, function, expiry, period, settings)
        return self._follow(StationCommand(entry.id, device_id, actor, source, downlink), entry)

    def _adopt(self, listener: Sl651Listener, downlink: DownlinkCommand) -> None:
        """Audit and follow a command the listener queued by itself."""
        device_id = self._device_of[listener.id, downlink.station]
        task = asyncio.create_task(self._adopted(device_id, downlink), name="sl651:adopt")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _adopted(self, device_id: str, downlink: DownlinkCommand) -> None:
        source = "clock-drift"
        entry = await self._audit_start(device_id, downlink.function, CONTROLLER, source)
        command = StationCommand(entry.id, device_id, CONTROLLER, source, downlink)
        self._follow(command, entry)
        log.info("station %s: its clock drifted; set-clock queued", device_id)

    async def _audit_start(
        self, device_id: str, function: Downlink, actor: Actor, source: str
    ) -> AuditEntry:
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
        return entry

    def _follow(self, command: StationCommand, entry: AuditEntry) -> StationCommand:
        """Keep the command among the recent ones; audit its end when it comes."""
        self._recent.append(command)
        del self._recent[: -self.keep]
        task = asyncio.create_task(self._audit_end(command, entry), name=f"sl651:{command.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return command

    def setting_names(
        self, device_id: str, items: Sequence[SettingItem] | Sequence[Observation]
    ) -> dict[str, float | None]:
        """Parameter values by their profile's names (the hex identifier if unnamed)."""
        profile = self.registry.by_id[device_id].profile
        settings = profile.settings if isinstance(profile, Sl651Profile) else []
        names = {s.id: s.name for s in settings}
        out: dict[str, float | None] = {}
        for item in items:
            key = item.id if isinstance(item, SettingItem) else item.element
            out[names.get(key, f"{key:02X}")] = item.value
        return out

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
        result: dict[str, object] = {"status": d.state.value}
        if d.reason:
            result["reason"] = d.reason
        if d.function is Downlink.WRITE_SETTINGS:
            result["settings"] = self.setting_names(command.device, d.settings)
        entry.results = {command.device: result}
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
