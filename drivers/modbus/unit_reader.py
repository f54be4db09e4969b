"""Reading one Modbus unit: its planned register reads, decoded into readings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from drivers.errors import LinkError
from drivers.modbus.codec import decode_fields
from drivers.modbus.device_plan import DevicePlan
from drivers.modbus.links import ModbusLink
from drivers.priority_lock import Priority
from drivers.pull import ENDS_READ, PullRead, PullTarget, register_pull_reader
from drivers.readings import Quality, ReadingBatch


class ModbusUnitReader:
    """The pull reader of Modbus units (TCP, RTU over TCP, RTU serial)."""

    async def read(
        self,
        link: ModbusLink,
        target: PullTarget,
        retries: int | None,
        priority: Priority,
        clock: Callable[[], float],
    ) -> PullRead:
        """Send the unit's planned reads, then decode the fields whose request answered."""
        plan = target.plan
        assert isinstance(plan, DevicePlan)
        buffer = np.zeros(plan.plan.buffer_size, dtype=np.uint16)
        answered = np.zeros(len(plan.plan.requests), dtype=bool)
        error: LinkError | None = None
        for k, request in enumerate(plan.plan.requests):
            try:
                words = await link.read_words(
                    target.unit,
                    request.table,
                    request.address,
                    request.count,
                    retries=retries,
                    priority=priority,
                )
            except LinkError as exc:
                error = exc
                if exc.kind in ENDS_READ:
                    break
                continue
            buffer[request.buffer_start : request.buffer_start + request.count] = words
            answered[k] = True
        ts = clock()
        batch = _decode(target.field_device, plan, buffer, answered, ts)
        return PullRead(batch, int(answered.sum()), len(plan.plan.requests), ts, error)


def _decode(
    field_device: npt.NDArray[np.int32],
    plan: DevicePlan,
    buffer: npt.NDArray[np.uint16],
    answered: npt.NDArray[np.bool_],
    ts: float,
) -> ReadingBatch:
    if not answered.any():
        return ReadingBatch.empty()
    values, valid = decode_fields(buffer, plan.fields)
    keep = answered[plan.request_of_field]
    n = int(keep.sum())
    quality = np.where(valid, Quality.GOOD, Quality.BAD).astype(np.uint8)
    return ReadingBatch(
        device=field_device[keep],
        point=plan.point[keep].astype(np.int16),
        ts=np.full(n, ts, dtype=np.float64),
        value=np.where(valid, values, np.nan)[keep],
        quality=quality[keep],
    )


register_pull_reader(DevicePlan, ModbusUnitReader())
