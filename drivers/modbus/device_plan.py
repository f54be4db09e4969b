"""The poll plan of one addressed unit: its own points plus its repeated blocks.

A cabinet's concentrator exposes its single-lamp controllers as a block: lamp
in slot ``i`` has the lamp profile's points at ``base + i * stride``. Planning
the cabinet and its lamps together lets one request carry many lamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.modbus.codec import FieldTable
from drivers.modbus.planner import ReadPlan, Slot, plan_reads
from drivers.profile import DeviceProfile, PointSpec, ProfileLibrary

#: ``owner`` value of fields that belong to the addressed device itself.
SELF = -1


@dataclass(frozen=True)
class SubDevice:
    """A device inside a block: which block and which slot."""

    block: str
    slot: int


@dataclass(frozen=True)
class DevicePlan:
    """Requests for one unit and how each decoded field maps back to a device and point."""

    plan: ReadPlan
    fields: FieldTable
    #: SELF, or the index into the ``sub_devices`` list the plan was built with.
    owner: npt.NDArray[np.int32]
    #: Point index within the owner's profile.
    point: npt.NDArray[np.int32]
    #: Which request of ``plan.requests`` carries each field.
    request_of_field: npt.NDArray[np.int32]

    @property
    def request_count(self) -> int:
        """Number of Modbus requests one poll costs."""
        return len(self.plan.requests)


def block_point_address(
    profile: DeviceProfile, block_name: str, slot: int, point: PointSpec
) -> int:
    """Address of ``point`` of the sub-device in ``slot`` of a block of ``profile``."""
    block = next(b for b in profile.blocks if b.name == block_name)
    if not 0 <= slot < block.count_max:
        raise ValueError(f"slot {slot} outside block {block_name} (0..{block.count_max - 1})")
    return block.base[point.table] + slot * block.stride[point.table] + point.address


def plan_device(
    profile: DeviceProfile,
    library: ProfileLibrary,
    sub_devices: list[SubDevice],
    max_gap: int | None = None,
) -> DevicePlan:
    """Plan the reads of a unit with ``profile`` and the given block members."""
    slots: list[Slot] = []
    points: list[PointSpec] = []
    owners: list[int] = []
    point_ids: list[int] = []
    for i, point in enumerate(profile.points):
        slots.append(Slot(point.table, point.address, point.type.words))
        points.append(point)
        owners.append(SELF)
        point_ids.append(i)
    for k, sub in enumerate(sub_devices):
        block = next(b for b in profile.blocks if b.name == sub.block)
        inner = library[block.profile]
        for i, point in enumerate(inner.points):
            address = block_point_address(profile, sub.block, sub.slot, point)
            slots.append(Slot(point.table, address, point.type.words))
            points.append(point)
            owners.append(k)
            point_ids.append(i)
    plan = plan_reads(
        slots,
        max_registers=profile.max_registers_per_read,
        max_gap=profile.max_gap if max_gap is None else max_gap,
    )
    index = list(plan.slot_index)
    starts = np.asarray([r.buffer_start for r in plan.requests], dtype=np.int64)
    request_of_field = np.searchsorted(starts, np.asarray(index, dtype=np.int64), side="right") - 1
    return DevicePlan(
        plan=plan,
        fields=FieldTable.build(points, index),
        owner=np.asarray(owners, dtype=np.int32),
        point=np.asarray(point_ids, dtype=np.int32),
        request_of_field=request_of_field.astype(np.int32),
    )
