"""Derived points computed for every batch, before any consumer sees it.

A profile's derived points (drivers/derived.py) are evaluated on each poll
of each of its devices: the readings of one device at one time are one poll,
whatever the source (a Modbus poll, an SL651 report, an MQTT message). All
polls of a profile in a batch are evaluated at once, column by column. A
derived reading is bad when any reading it uses is bad, and absent when the
poll lacks one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from controller.registry import Registry
from drivers.derived import Expression, order_derived
from drivers.readings import Quality, ReadingBatch


@dataclass(frozen=True)
class _ProfilePlan:
    """What one profile's derived points read and where their readings go."""

    #: Point index of each name the expressions may read (points, then derived points).
    point_of: dict[str, int]
    #: Per device index: the value of each parameter (defaults filled in).
    params: dict[str, npt.NDArray[np.float64]]
    #: In evaluation order: (point index of the result, expression).
    steps: list[tuple[int, Expression]]


class DerivedPoints:
    """Adds the derived readings of every poll in a batch."""

    def __init__(self, registry: Registry) -> None:
        n = len(registry)
        self._profile_of = np.full(n, -1, np.int32)
        self._plans: list[_ProfilePlan] = []
        by_name: dict[str, int] = {}
        for device in registry.devices:
            profile = device.profile
            if not profile.derived:
                continue
            if profile.name not in by_name:
                names = [p.name for p in device.points]
                point_of = {name: i for i, name in enumerate(names)}
                plain = {p.name for p in profile.points}
                ordered = order_derived(profile.derived, plain, set(profile.params))
                steps = [(point_of[d.name], d.expression) for d in ordered]
                params = {name: np.full(n, np.nan) for name in profile.params}
                by_name[profile.name] = len(self._plans)
                self._plans.append(_ProfilePlan(point_of, params, steps))
            plan = self._plans[by_name[profile.name]]
            for name, default in profile.params.items():
                value = device.location.params.get(name, default)
                plan.params[name][device.index] = np.nan if value is None else value
            self._profile_of[device.index] = by_name[profile.name]
        self._width = registry.max_points

    @property
    def active(self) -> bool:
        """Whether any device has derived points."""
        return bool(self._plans)

    def apply(self, batch: ReadingBatch) -> ReadingBatch:
        """The batch with the derived readings of its polls appended."""
        if not self._plans or not len(batch):
            return batch
        plan_of_reading = self._profile_of[batch.device]
        mine = plan_of_reading >= 0
        if not mine.any():
            return batch
        where = np.flatnonzero(mine)
        dev, ts = batch.device[mine], batch.ts[mine]
        # One row per poll (device, time), one column per point.
        keys = np.stack([dev.astype(np.float64), ts], axis=1)
        polls, row = np.unique(keys, axis=0, return_inverse=True)
        row = row.ravel()
        values = np.full((len(polls), self._width), np.nan)
        present = np.zeros((len(polls), self._width), np.bool_)
        bad = np.zeros((len(polls), self._width), np.bool_)
        pt = batch.point[mine]
        values[row, pt] = batch.value[mine]
        present[row, pt] = True
        bad[row, pt] = batch.quality[mine] >= Quality.BAD
        poll_device = polls[:, 0].astype(np.int32)
        poll_plan = self._profile_of[poll_device]
        last = np.zeros(len(polls), np.int64)
        np.maximum.at(last, row, where)
        out: list[ReadingBatch] = [batch]
        after: list[npt.NDArray[np.float64]] = [np.arange(len(batch), dtype=np.float64)]
        for k, plan in enumerate(self._plans):
            rows = np.flatnonzero(poll_plan == k)
            if not len(rows):
                continue
            derived, of_poll = self._evaluate(
                plan, rows, poll_device, polls[:, 1], values, present, bad
            )
            out.append(derived)
            after.append((last[of_poll] + 0.5).astype(np.float64))
        merged = ReadingBatch.concat(out)
        order = np.argsort(np.concatenate(after), kind="stable")
        return ReadingBatch(
            merged.device[order],
            merged.point[order],
            merged.ts[order],
            merged.value[order],
            merged.quality[order],
        )

    @staticmethod
    def _evaluate(
        plan: _ProfilePlan,
        rows: npt.NDArray[np.int64],
        poll_device: npt.NDArray[np.int32],
        poll_ts: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64],
        present: npt.NDArray[np.bool_],
        bad: npt.NDArray[np.bool_],
    ) -> tuple[ReadingBatch, npt.NDArray[np.int64]]:
        """The derived readings of these polls, and the poll (row) of each."""
        devices = poll_device[rows]
        columns: dict[str, npt.NDArray[np.float64]] = {
            name: param[devices] for name, param in plan.params.items()
        }
        have = {name: np.ones(len(rows), np.bool_) for name in plan.params}
        spoilt = {name: np.isnan(param) for name, param in columns.items()}
        parts: list[ReadingBatch] = []
        of_poll: list[npt.NDArray[np.int64]] = []
        for point, expression in plan.steps:
            for name in expression.names - columns.keys():
                col = plan.point_of[name]
                columns[name] = values[rows, col]
                have[name] = present[rows, col]
                spoilt[name] = bad[rows, col]
            ok = np.ones(len(rows), np.bool_)
            broken = np.zeros(len(rows), np.bool_)
            for name in expression.names:
                ok &= have[name]
                broken |= spoilt[name]
            with np.errstate(all="ignore"):
                result = np.broadcast_to(expression.evaluate(columns), (len(rows),)).astype(
                    np.float64
                )
            broken |= ~np.isfinite(result)
            result = np.where(broken, np.nan, result)
            name = next(n for n, i in plan.point_of.items() if i == point)
            columns[name], have[name], spoilt[name] = result, ok, broken
            keep = np.flatnonzero(ok)
            of_poll.append(rows[keep])
            parts.append(
                ReadingBatch(
                    devices[keep],
                    np.full(len(keep), point, np.int16),
                    poll_ts[rows][keep],
                    result[keep],
                    np.where(broken[keep], Quality.BAD, Quality.GOOD).astype(np.uint8),
                )
            )
        return ReadingBatch.concat(parts), np.concatenate(of_poll)
