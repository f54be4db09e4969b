"""Read planner: fewest requests within the device's limits."""

from __future__ import annotations

import pytest

from drivers.modbus.device_plan import SubDevice, plan_device
from drivers.modbus.planner import Slot, plan_reads
from drivers.profile import ProfileLibrary, Table

HR = Table.HOLDING_REGISTER
IR = Table.INPUT_REGISTER


def test_adjacent_points_share_one_request() -> None:
    plan = plan_reads([Slot(HR, a, 1) for a in range(10)], max_registers=125, max_gap=0)
    assert [(r.address, r.count) for r in plan.requests] == [(0, 10)]
    assert plan.slot_index == tuple(range(10))


def test_gap_is_bridged_only_up_to_max_gap() -> None:
    slots = [Slot(HR, 0, 1), Slot(HR, 5, 1), Slot(HR, 20, 2)]
    bridged = plan_reads(slots, max_registers=125, max_gap=4)
    assert [(r.address, r.count) for r in bridged.requests] == [(0, 6), (20, 2)]
    strict = plan_reads(slots, max_registers=125, max_gap=0)
    assert len(strict.requests) == 3


def test_requests_respect_size_limit_and_never_split_a_32_bit_value() -> None:
    slots = [Slot(IR, 2 * i, 2) for i in range(100)]  # 200 registers of f32
    plan = plan_reads(slots, max_registers=125, max_gap=0)
    assert all(r.count <= 125 for r in plan.requests)
    assert sum(r.count for r in plan.requests) == 200
    for slot, index in zip(slots, plan.slot_index, strict=True):
        request = next(
            r for r in plan.requests if r.buffer_start <= index < r.buffer_start + r.count
        )
        assert index + slot.words <= request.buffer_start + request.count


def test_tables_are_never_mixed_and_buffer_positions_follow_requests() -> None:
    slots = [Slot(IR, 3, 1), Slot(Table.COIL, 0, 1), Slot(HR, 3, 1), Slot(Table.COIL, 1, 1)]
    plan = plan_reads(slots, max_registers=125, max_gap=8)
    assert [r.table for r in plan.requests] == [Table.COIL, IR, HR]
    assert plan.slot_index == (2, 0, 3, 1)  # coils 0-1, then IR 3, then HR 3
    assert plan.buffer_size == 4


def test_cabinet_with_64_lamps_needs_few_requests() -> None:
    library = ProfileLibrary.load()
    cabinet = library["sl-cabinet-4c"]
    lamps = [SubDevice("lamps", i) for i in range(64)]
    plan = plan_device(cabinet, library, lamps)
    points = len(cabinet.points) + 64 * len(library["slc-lamp"].points)
    # 668 points: coils 1, inputs 1, cabinet registers 1-2, lamp inputs 6, lamp commands 2.
    assert points == 668
    assert plan.request_count <= 12
    assert len(plan.fields) == points


def test_max_registers_below_two_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_reads([Slot(HR, 0, 1)], max_registers=1, max_gap=0)
