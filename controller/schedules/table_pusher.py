"""Pushing tonight's steps into the time tables of device-mode cabinets, audited."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from zoneinfo import ZoneInfo

from controller.control.audit import Actor, AuditEntry, AuditLog
from controller.control.dispatcher import NOT_LEADING
from controller.registry import Registry
from controller.schedules.device_tables import (
    TablePush,
    TableTooSmall,
    collapse_ramps,
    encode_table,
    push_table,
)
from controller.schedules.places import SchedulePlace
from controller.schedules.push_status import TablePushStore
from controller.schedules.timeline import PlannedStep
from drivers.modbus.links import ModbusLink
from drivers.profile import DeviceProfile

#: Who the audit log names for what the schedules do.
SCHEDULER = Actor("scheduler", "", "system")


class DeviceTablePusher:
    """Writes a place's night into its cabinet's table, reads it back, and audits the push."""

    def __init__(
        self,
        registry: Registry,
        links: dict[str, ModbusLink],
        audit: AuditLog,
        status: TablePushStore,
        tz: ZoneInfo,
    ) -> None:
        self.registry = registry
        self.links = links
        self.audit = audit
        #: The pushes' outcomes for every node of a pair (the API's push status).
        self.status = status
        self.tz = tz
        #: Asked before a push: in a pair, whether this node still leads.
        self.may_write: Callable[[], bool] = lambda: True

    async def push(
        self, place: SchedulePlace, steps: list[PlannedStep], night: date, now: float
    ) -> TablePush:
        """Push one cabinet place's steps for ``night``; the result says whether it took."""
        assert place.cabinet is not None
        cabinet = self.registry.devices[place.cabinet]
        profile = cabinet.profile
        result = TablePush(cabinet.id, now, night.isoformat(), 0, False)
        if not isinstance(profile, DeviceProfile) or profile.time_table is None:
            result.detail = f"profile {profile.name} has no time table"
        elif not self.may_write():
            result.detail = NOT_LEADING
        else:
            try:
                table = collapse_ramps(steps)
                words = encode_table(
                    table, [c.circuit for c in place.circuits], self.tz, profile.time_table
                )
                result.entries = len(table)
                result.detail = await push_table(
                    self.links[cabinet.link], cabinet.unit, profile.time_table, words
                )
                result.ok = not result.detail
            except TableTooSmall as exc:
                result.detail = str(exc)
        await self.audit.append(
            AuditEntry(
                0,
                now,
                "schedule",
                SCHEDULER,
                "time_table",
                None,
                f"cabinets=['{cabinet.id}'], night={night.isoformat()}",
                1,
                "confirmed" if result.ok else "failed",
                reason=result.detail,
                confirmed=int(result.ok),
                failed=int(not result.ok),
                finished_at=now,
            )
        )
        await self.status.record(result)
        return result
