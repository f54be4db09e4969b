"""Reading one DL/T 645 meter: one request per data identifier or block, decoded."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from drivers.dlt645.codec import FrameError, decode_value
from drivers.dlt645.profile import MeterPlan
from drivers.dlt645.reader import MeterRefused, read_di
from drivers.errors import LinkError, LinkGarbled
from drivers.modbus.links import ModbusLink
from drivers.priority_lock import Priority
from drivers.pull import ENDS_READ, PullRead, PullTarget, register_pull_reader
from drivers.readings import ReadingBatch


class MeterReader:
    """The pull reader of DL/T 645-2007 meters."""

    async def read(
        self,
        link: ModbusLink,
        target: PullTarget,
        retries: int | None,
        priority: Priority,
        clock: Callable[[], float],
    ) -> PullRead:
        """Read the meter's planned identifiers; a block it refuses is read member by member."""
        plan = target.plan
        assert isinstance(plan, MeterPlan)
        values = np.full(len(target.field_device), np.nan)
        answered = sent = 0
        error: LinkError | None = None
        queue = list(plan.requests)
        while queue:
            request = queue.pop(0)
            sent += 1
            try:
                data = await read_di(link, target.address, request.di, retries, priority)
            except MeterRefused as exc:
                error = exc
                # A meter that does not know a block is asked for its members one by one.
                queue[:0] = request.singles
                continue
            except LinkError as exc:
                error = exc
                if exc.kind in ENDS_READ:
                    break
                continue
            try:
                for item in request.items:
                    raw = data[item.offset : item.offset + item.size]
                    if len(raw) < item.size:
                        raise LinkGarbled(f"DI {request.di}: {len(data)} bytes, too short")
                    values[item.point] = decode_value(raw, item.decimals, item.signed)
            except (LinkGarbled, FrameError) as exc:
                error = LinkGarbled(f"meter {target.address}: {exc}")
                break
            answered += 1
        if answered and isinstance(error, MeterRefused):
            error = None  # the meter answered: an identifier it lacks is not a failure
        ts = clock()
        keep = ~np.isnan(values)
        point = np.flatnonzero(keep).astype(np.int16)
        device = target.field_device[keep]
        if target.feed_point is not None:
            # The cabinet's copies of what its own terminal does not measure.
            fed = target.feed_point[point]
            copied = fed >= 0
            point = np.concatenate([point, fed[copied]])
            device = np.concatenate([device, np.full(int(copied.sum()), target.feeds, np.int32)])
            values = np.concatenate([values[keep], values[keep][copied]])
        else:
            values = values[keep]
        n = len(point)
        batch = ReadingBatch(
            device=device,
            point=point,
            ts=np.full(n, ts, dtype=np.float64),
            value=values,
            quality=np.zeros(n, dtype=np.uint8),
        )
        return PullRead(batch, answered, sent, ts, error)


register_pull_reader(MeterPlan, MeterReader())
