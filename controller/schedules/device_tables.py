"""Device time-control tables: tonight's steps written into a cabinet, then read back.

A cabinet terminal with its own table keeps switching on time when the
centre or the mobile network is down. Each entry is
``[minute of day (local), circuit bitmask, state 0/1, dim %]`` in the order the
steps happen; unused entries start with 0xFFFF. Ramps are written as their
end level: sixteen entries do not hold a ramp's sub-steps, and a terminal
that fades does so by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from controller.schedules.timeline import PlannedStep
from drivers.errors import LinkError
from drivers.modbus.links import ModbusLink
from drivers.priority_lock import Priority
from drivers.profile import TIME_TABLE_ENTRY_WORDS, TIME_TABLE_UNUSED, Table, TimeTableSpec


class TableTooSmall(ValueError):
    """The night has more steps than the device's table holds."""


def encode_table(
    steps: list[PlannedStep], circuits: list[int], tz: ZoneInfo, spec: TimeTableSpec
) -> list[int]:
    """The table's registers for a night's steps on the given circuits."""
    mask = 0
    for circuit in circuits:
        mask |= 1 << (circuit - 1)
    words: list[int] = []
    for step in steps:
        local = datetime.fromtimestamp(step.at, tz)
        words += [
            local.hour * 60 + local.minute,
            mask,
            1 if step.lit else 0,
            step.level or 0,
        ]
    if len(steps) > spec.entries:
        raise TableTooSmall(f"{len(steps)} steps, the device table holds {spec.entries}")
    unused = [TIME_TABLE_UNUSED, 0, 0, 0]
    words += unused * (spec.entries - len(steps))
    return words


def collapse_ramps(steps: list[PlannedStep]) -> list[PlannedStep]:
    """The steps without ramps' sub-steps: each ramp is written as its end level."""
    return [step for step in steps if not step.on_the_way]


@dataclass
class TablePush:
    """How the last push of one cabinet's table went."""

    cabinet: str
    at: float
    night: str
    entries: int
    ok: bool
    detail: str = ""


async def push_table(link: ModbusLink, unit: int, spec: TimeTableSpec, words: list[int]) -> str:
    """Write the table and read it back; returns "" when it matches, else what went wrong."""
    count = spec.entries * TIME_TABLE_ENTRY_WORDS
    try:
        for start in range(0, count, 120):
            chunk = words[start : start + 120]
            await link.write(unit, Table.HOLDING_REGISTER, spec.base + start, chunk)
        back: list[int] = []
        for start in range(0, count, 120):
            n = min(120, count - start)
            back += await link.read(
                unit, Table.HOLDING_REGISTER, spec.base + start, n, priority=Priority.COMMAND
            )
    except LinkError as exc:
        return str(exc)
    if back != words:
        bad = next(i for i, (a, b) in enumerate(zip(back, words, strict=True)) if a != b)
        return (
            f"read-back differs at entry {bad // TIME_TABLE_ENTRY_WORDS}: "
            f"register {spec.base + bad} reads {back[bad]}, wrote {words[bad]}"
        )
    return ""
