"""Command planning: which registers to write on which unit, and what must read back.

Pure, like the read planner: given the targets and the action it returns, per
unit, the writes (adjacent registers merged into one request) and the feedback
checks that decide when each target is confirmed. A command is confirmed by
what the device reports, not by the write being acknowledged: a contactor that
does not pull in, or a lamp that does not light, fails its part.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from controller.control.targets import CircuitTarget
from controller.registry import Device, Registry
from drivers.errors import PeopleMessage
from drivers.modbus.codec import decode_value, encode_value
from drivers.modbus.device_plan import block_point_address
from drivers.modbus.planner import ReadPlan, Slot, plan_reads
from drivers.profile import DeviceProfile, PointSpec, Table

#: Modbus limits per write request (function codes 15 and 16).
MAX_COILS_PER_WRITE = 1968
MAX_REGISTERS_PER_WRITE = 123


class Action(StrEnum):
    """What a command does."""

    CIRCUIT_ON = "circuit_on"
    CIRCUIT_OFF = "circuit_off"
    LAMP_ON = "lamp_on"
    LAMP_OFF = "lamp_off"
    LAMP_DIM = "lamp_dim"

    @property
    def switches_off(self) -> bool:
        """Whether the action puts lights out (large ones need a confirm)."""
        return self in (Action.CIRCUIT_OFF, Action.LAMP_OFF)

    @property
    def on_circuits(self) -> bool:
        """Whether the action addresses cabinet circuits (else lamp controllers)."""
        return self in (Action.CIRCUIT_ON, Action.CIRCUIT_OFF)


class NotControllable(ValueError):
    """A target's profile has no control for the action."""

    def __init__(self, device: str, control: Literal["circuit", "switch", "dim"]) -> None:
        super().__init__(f"{device}: profile has no {control} control")
        self.message = PeopleMessage(
            "refusal.not_controllable", {"device": device, "control": control}
        )


@dataclass(frozen=True)
class WriteRequest:
    """One Modbus write: ``values`` into ``table`` from ``address``."""

    table: Table
    address: int
    values: tuple[int, ...]


@dataclass(frozen=True)
class FeedbackCheck:
    """A target is confirmed when ``point`` reads ``expected`` (within ``tolerance``)."""

    target: str
    point: PointSpec
    #: Index of the point's first word in the read-back buffer.
    offset: int
    expected: float
    tolerance: float

    def reading(self, buffer: list[int]) -> float:
        """The point's value in a read-back buffer."""
        return decode_value(self.point, buffer[self.offset : self.offset + self.point.type.words])

    def holds(self, buffer: list[int]) -> bool:
        """Whether the device reports the commanded state."""
        return abs(self.reading(buffer) - self.expected) <= self.tolerance


@dataclass(frozen=True)
class UnitCommand:
    """Everything one command sends to one unit, and how it is checked."""

    link: str
    unit: int
    targets: tuple[str, ...]
    writes: tuple[WriteRequest, ...]
    readback: ReadPlan
    checks: tuple[FeedbackCheck, ...]


@dataclass(frozen=True)
class _Feedback:
    point: PointSpec
    address: int
    expected: float
    tolerance: float


@dataclass(frozen=True)
class _Item:
    target: str
    writes: tuple[tuple[PointSpec, int, float], ...]  # point, address, value
    feedback: _Feedback


def circuit_key(registry: Registry, target: CircuitTarget) -> str:
    """Result key of a circuit target: ``CABINET/circuitN``."""
    return f"{registry.devices[target.cabinet].id}/circuit{target.circuit}"


def _address(registry: Registry, device: Device, point: PointSpec) -> int:
    if device.parent is None or device.slot is None:
        return point.address
    cabinet = registry.devices[device.parent].profile
    assert isinstance(cabinet, DeviceProfile)
    return block_point_address(cabinet, cabinet.blocks[0].name, device.slot, point)


def _circuit_item(registry: Registry, target: CircuitTarget, on: bool) -> _Item:
    cabinet = registry.devices[target.cabinet]
    profile = cabinet.profile
    if not isinstance(profile, DeviceProfile) or profile.controls.circuit is None:
        raise NotControllable(f"cabinet {cabinet.id}", "circuit")
    command, feedback = profile.controls.circuit.points_for(target.circuit)
    cmd, fb = profile.point(command), profile.point(feedback)
    value = 1.0 if on else 0.0
    return _Item(
        circuit_key(registry, target),
        ((cmd, cmd.address, value),),
        _Feedback(fb, fb.address, value, 0.5),
    )


def _lamp_item(registry: Registry, index: int, action: Action, dim: int | None) -> _Item:
    lamp = registry.devices[index]
    profile = lamp.profile
    if not isinstance(profile, DeviceProfile) or profile.controls.switch is None:
        raise NotControllable(f"lamp {lamp.id}", "switch")
    switch_cmd, switch_fb = profile.controls.switch.points_for()
    sw = profile.point(switch_cmd)
    if action is Action.LAMP_DIM:
        if profile.controls.dim is None:
            raise NotControllable(f"lamp {lamp.id}", "dim")
        dim_cmd, dim_fb = profile.controls.dim.points_for()
        dc, df = profile.point(dim_cmd), profile.point(dim_fb)
        level = float(dim if dim is not None else 100)
        # Dimming a dark lamp means lighting it at that level.
        return _Item(
            lamp.id,
            (
                (sw, _address(registry, lamp, sw), 1.0),
                (dc, _address(registry, lamp, dc), level),
            ),
            _Feedback(df, _address(registry, lamp, df), level, 1.0),
        )
    on = action is Action.LAMP_ON
    fb = profile.point(switch_fb)
    value = 1.0 if on else 0.0
    return _Item(
        lamp.id,
        ((sw, _address(registry, lamp, sw), value),),
        _Feedback(fb, _address(registry, lamp, fb), value, 0.5),
    )


def _merge_writes(words: dict[tuple[Table, int], int]) -> tuple[WriteRequest, ...]:
    """Adjacent addresses of one table become one request, up to the Modbus limits."""
    requests: list[WriteRequest] = []
    run: list[int] = []
    run_table: Table | None = None
    run_start = 0
    for (table, address), value in sorted(words.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        limit = MAX_COILS_PER_WRITE if table.is_bit else MAX_REGISTERS_PER_WRITE
        if run_table is table and address == run_start + len(run) and len(run) < limit:
            run.append(value)
            continue
        if run_table is not None:
            requests.append(WriteRequest(run_table, run_start, tuple(run)))
        run_table, run_start, run = table, address, [value]
    if run_table is not None:
        requests.append(WriteRequest(run_table, run_start, tuple(run)))
    return tuple(requests)


def _unit_command(link: str, unit: int, items: list[_Item], profile: DeviceProfile) -> UnitCommand:
    words: dict[tuple[Table, int], int] = {}
    for item in items:
        for point, address, value in item.writes:
            for k, word in enumerate(encode_value(point, value)):
                words[point.table, address + k] = word
    slots = [
        Slot(i.feedback.point.table, i.feedback.address, i.feedback.point.type.words) for i in items
    ]
    plan = plan_reads(slots, max_registers=profile.max_registers_per_read, max_gap=profile.max_gap)
    checks = tuple(
        FeedbackCheck(
            item.target,
            item.feedback.point,
            plan.slot_index[k],
            item.feedback.expected,
            item.feedback.tolerance,
        )
        for k, item in enumerate(items)
    )
    return UnitCommand(
        link, unit, tuple(i.target for i in items), _merge_writes(words), plan, checks
    )


def plan_commands(
    registry: Registry,
    action: Action,
    circuits: list[CircuitTarget],
    lamps: list[int],
    dim: int | None = None,
) -> list[UnitCommand]:
    """Per addressed unit: the writes and feedback checks that carry out ``action``."""
    grouped: dict[tuple[str, int], tuple[DeviceProfile, list[_Item]]] = {}

    def add(device: Device, item: _Item) -> None:
        addressed = registry.devices[device.parent] if device.parent is not None else device
        profile = addressed.profile
        assert isinstance(profile, DeviceProfile)
        grouped.setdefault((addressed.link, addressed.unit), (profile, []))[1].append(item)

    if action.on_circuits:
        for target in circuits:
            add(
                registry.devices[target.cabinet],
                _circuit_item(registry, target, action is Action.CIRCUIT_ON),
            )
    else:
        for index in lamps:
            add(registry.devices[index], _lamp_item(registry, index, action, dim))
    return [
        _unit_command(link, unit, items, profile)
        for (link, unit), (profile, items) in grouped.items()
    ]
