"""The rules engine: rule state in arrays, one kernel pass per reading batch.

``evaluate`` returns the alarm transitions a batch caused as columns
(:class:`RuleEvents`); the alarm manager turns them into alarms. The state can
be seeded from persisted alarms so that a restart neither raises an active
alarm again nor misses its clearing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.readings import ReadingBatch
from rules import kernels as K
from rules.astro import sun_times
from rules.compile import CompiledRules

# numba dispatchers take their types from the call; to mypy they are plain callables.
_run_part: Any = K.run_part
_partition_groups: Any = K.partition_groups
_range_bounds: Any = K.range_bounds
_claim_devices: Any = K.claim_devices
_owns_devices: Any = K.owns_devices
#: ``starts`` meaning: every group of the batch, in order.
_EVERY_GROUP = np.empty(0, np.int64)

#: Events a kernel call may write; a pass stops early and resumes when full.
EVENT_CAPACITY = 1 << 16
#: Room kept free per group: a group can raise at most this many events.
_RESERVE = 4096


@dataclass(frozen=True)
class RuleEvents:
    """Alarm transitions: rule index, device, sub (point, circuit), kind, new level (0 = clear)."""

    rule: npt.NDArray[np.int32]
    device: npt.NDArray[np.int32]
    sub: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int8]
    level: npt.NDArray[np.int8]
    ts: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    limit: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.rule.shape[0])

    @classmethod
    def concat(cls, parts: list[RuleEvents]) -> RuleEvents:
        """One set of events from several, in order."""
        if not parts:
            return _events(0)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def order_by_time(self) -> RuleEvents:
        """The same events sorted by time (stable), as partitions may interleave."""
        order = np.argsort(self.ts, kind="stable")
        return RuleEvents(*(getattr(self, f)[order] for f in _FIELDS))


_FIELDS = ("rule", "device", "sub", "kind", "level", "ts", "value", "limit")


def _events(n: int) -> RuleEvents:
    """No events, with the column types."""
    return RuleEvents(
        np.zeros(n, np.int32),
        np.zeros(n, np.int32),
        np.zeros(n, np.int32),
        np.zeros(n, np.int8),
        np.zeros(n, np.int8),
        np.zeros(n, np.float64),
        np.zeros(n, np.float64),
        np.zeros(n, np.float64),
    )


def _from_buffers(
    ev_int: npt.NDArray[np.int64], ev_flt: npt.NDArray[np.float64], count: int
) -> RuleEvents:
    """Events from the kernel's two buffers (rule, device, sub, kind, level | ts, value, limit)."""
    ints, floats = ev_int[:count], ev_flt[:count]
    return RuleEvents(
        ints[:, 0].astype(np.int32),
        ints[:, 1].astype(np.int32),
        ints[:, 2].astype(np.int32),
        ints[:, 3].astype(np.int8),
        ints[:, 4].astype(np.int8),
        floats[:, 0].copy(),
        floats[:, 1].copy(),
        floats[:, 2].copy(),
    )


class RuleEngine:
    """Rule state for every binding and device, and the passes that update it."""

    def __init__(
        self,
        compiled: CompiledRules,
        n_devices: int,
        max_points: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.c = compiled
        self.clock = clock
        b = len(compiled.bind_rule)
        self.b_level = np.zeros(b, np.int8)
        self.b_pend = np.full(b, -1, np.int8)
        self.b_since = np.zeros(b)
        self.b_last = np.full(b, np.nan)
        self.b_held = np.full(b, np.nan)
        self.b_sf = np.zeros(b, np.int8)
        self.b_count = np.zeros(b, np.int64)
        self.b_ref = np.full(b, np.nan)
        rows = max(compiled.ring_rows, 1)
        self.ring_ts = np.zeros((rows, K.RATE_RING))
        self.ring_v = np.zeros((rows, K.RATE_RING))
        self.ring_pos = np.zeros(rows, np.int64)
        self.ring_n = np.zeros(rows, np.int64)
        # Time of the last valid reading; before that, of the first poll (one comm-loss
        # period of grace from then). NaN until the device is first polled.
        self.last_good = np.full(n_devices, math.nan)
        self.lamp_state = np.zeros((n_devices, 4), np.int8)
        self.cyc_ring = np.zeros((n_devices, K.CYCLE_RING))
        self.cyc_n = np.zeros(n_devices, np.int64)
        self.last_on = np.full(n_devices, -1, np.int64)
        self.cab_state = np.zeros((n_devices, compiled.circuits, 2), np.int8)
        self.cab_since = np.full((n_devices, compiled.circuits), np.nan)
        # The kernel's scratch holds a poll's values by point, and one slot that stays NaN.
        self._scratch = max(max_points, int(compiled.role_point.max(initial=0))) + 1
        self.comm_state = np.zeros(n_devices, np.int8)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        # Which range of a parallel pass owns each device; marks grow by pass.
        self._owner = np.full(n_devices, -1, np.int64)
        self._passes = 0
        #: How the last parallel pass split the batch: "ranges" or "groups".
        self.last_split = ""
        self.sunrise = np.zeros(n_devices)
        self.sunset = np.zeros(n_devices)
        self._sun_for = -math.inf
        # A lamp lit at start may simply be waiting for its schedule: day-burning is
        # judged only for lamps not held, and a held lamp's sunrise is NaN to the kernel.
        self.day_held = np.zeros(n_devices, np.bool_)
        # The kernel's views of the same arrays (updated in place, never replaced).
        c = compiled
        self._tables = K.RuleTables(
            c.chan_base,
            c.bind_start,
            c.bind_rule,
            c.bind_limits,
            c.bind_ring,
            c.rkind,
            c.rdir,
            c.rp,
            c.role_point,
            c.prof_points,
            c.dev_profile,
            c.dev_binds,
            c.dev_lamp_rule,
            c.rated_w,
            c.dev_cab_rule,
            c.circuit_lamps,
        )
        self._bindings = K.BindingState(
            self.b_level,
            self.b_pend,
            self.b_since,
            self.b_last,
            self.b_held,
            self.b_sf,
            self.b_count,
            self.b_ref,
        )
        self._rings = K.RingState(self.ring_ts, self.ring_v, self.ring_pos, self.ring_n)
        self._devices = K.DeviceState(
            self.last_good,
            self.sunrise,
            self.sunset,
            self.lamp_state,
            self.cyc_ring,
            self.cyc_n,
            self.last_on,
            self.cab_state,
            self.cab_since,
        )

    def _update_sun(self, when: float) -> None:
        # Sun times change by a minute a day: refreshing them every ten minutes is plenty.
        days = self.c.day_devices
        if len(days) and abs(when - self._sun_for) > 600:
            rise, sset = sun_times(self.c.lat[days], self.c.lon[days], when)
            self.sunrise[days], self.sunset[days] = rise, sset
            self.sunrise[days[self.day_held[days]]] = math.nan
            self._sun_for = when

    def hold_day_burning(self, devices: list[int]) -> None:
        """Do not judge day-burning of these lamps (their state is not yet the schedule's)."""
        self.day_held[devices] = True
        self._sun_for = -math.inf

    def judge_day_burning(self, devices: list[int]) -> None:
        """Judge day-burning of these lamps again (their schedule has been applied)."""
        self.day_held[devices] = False
        self._sun_for = -math.inf

    def _run(self, starts: npt.NDArray[np.int64], readings: K.Readings) -> list[RuleEvents]:
        """The groups at ``starts`` (every group if empty), emptying the event arrays
        whenever they fill."""
        out = []
        first = 0
        end = len(starts) if len(starts) else len(readings.dev)
        rv = np.full(self._scratch, np.nan)  # this thread's own
        events = K.EventBuffers(
            np.zeros((EVENT_CAPACITY, 5), np.int64), np.zeros((EVENT_CAPACITY, 3), np.float64)
        )
        while first < end:
            first, count = _run_part(
                first,
                starts,
                readings,
                self._tables,
                self._bindings,
                self._rings,
                self._devices,
                rv,
                events,
                _RESERVE,
            )
            out.append(_from_buffers(events.ev_int, events.ev_flt, count))
        return out

    def evaluate(self, batch: ReadingBatch, parts: int = 1) -> RuleEvents:
        """Run every rule over a batch; ``parts`` > 1 runs partitions on parallel threads."""
        if len(batch):
            self._update_sun(float(batch.ts[0]))
        columns = K.Readings(batch.device, batch.point, batch.ts, batch.value, batch.quality)
        if parts <= 1 or len(batch) == 0:
            return RuleEvents.concat(self._run(_EVERY_GROUP, columns))
        if self._pool is None or self._pool_size != parts:
            self._pool = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="rules")
            self._pool_size = parts
        pool = self._pool
        ranges = self._device_ranges(columns, parts, pool)
        if ranges is not None:
            self.last_split = "ranges"
            results = list(pool.map(lambda part: self._run(_EVERY_GROUP, part), ranges))
        else:
            # A device in several runs (readings of many polls interleaved): split by device.
            self.last_split = "groups"
            starts, offsets = _partition_groups(batch.device, batch.ts, parts)
            own = [starts[offsets[p] : offsets[p + 1]] for p in range(parts)]
            results = list(pool.map(lambda s: self._run(s, columns), [s for s in own if len(s)]))
        return RuleEvents.concat([e for part in results for e in part]).order_by_time()

    def _device_ranges(
        self, columns: K.Readings, parts: int, pool: ThreadPoolExecutor
    ) -> list[K.Readings] | None:
        """The batch cut into contiguous ranges that share no device, or None if it cannot be.

        Every range marks its devices, then checks that each still carries its mark:
        a device in two ranges carries only one of their marks, so one check fails.
        """
        bounds = _range_bounds(columns.dev, parts)
        ranges = [
            columns.part(int(bounds[p]), int(bounds[p + 1]))
            for p in range(parts)
            if bounds[p] < bounds[p + 1]
        ]
        self._passes += 1
        marks = [self._passes * parts + p for p in range(len(ranges))]
        list(pool.map(lambda r, m: _claim_devices(r.dev, self._owner, m), ranges, marks))
        owned = pool.map(lambda r, m: _owns_devices(r.dev, self._owner, m), ranges, marks)
        return ranges if all(owned) else None

    def start_grace(self, devices: npt.NDArray[np.int64], at: float) -> None:
        """The devices were first polled (answered or not) at ``at``: their comm-loss
        grace period counts from then, unless a reading already came."""
        fresh = devices[np.isnan(self.last_good[devices])]
        self.last_good[fresh] = at

    def sweep_comm_loss(self, now: float | None = None) -> RuleEvents:
        """Raise or clear comm-loss for devices with no valid reading for too long."""
        now = self.clock() if now is None else now
        watched = self.c.comm_rule >= 0
        lost = watched & (now - self.last_good > self.c.comm_limit)
        changed = np.flatnonzero(lost.astype(np.int8) != self.comm_state)
        if not len(changed):
            return _events(0)
        self.comm_state[changed] = lost[changed]
        n = len(changed)
        return RuleEvents(
            rule=self.c.comm_rule[changed].astype(np.int32),
            device=changed.astype(np.int32),
            sub=np.zeros(n, np.int32),
            kind=np.zeros(n, np.int8),
            level=lost[changed].astype(np.int8),
            ts=np.full(n, now),
            value=now - self.last_good[changed],
            limit=self.c.comm_limit[changed],
        )

    def seed_sensor(self, device: int, point: int) -> None:
        """Restore an active sensor fault on every binding of a device's point."""
        mask = (self.c.bind_dev == device) & (self.c.bind_point == point)
        self.b_sf[mask] = 1

    def seed(self, rule: int, device: int, sub: int, kind: int, level: int) -> None:
        """Restore the state of an alarm that was active before a restart."""
        rkind = int(self.c.rkind[rule]) if rule >= 0 else -1
        if kind == K.EV_SENSOR:
            k = self.c.binding_of.get((rule, device))
            if k is not None:
                self.b_sf[k] = 1
        elif rkind in (K.K_THRESHOLD, K.K_RATE, K.K_STUCK):
            k = self.c.binding_of.get((rule, device))
            if k is not None:
                self.b_level[k] = level
        elif rkind in (K.K_LAMP_FAILURE, K.K_LAMP_POWER, K.K_LAMP_CYCLING, K.K_DAY_BURNING):
            slot = {
                K.K_LAMP_FAILURE: K.L_FAILURE,
                K.K_LAMP_POWER: K.L_POWER,
                K.K_LAMP_CYCLING: K.L_CYCLING,
                K.K_DAY_BURNING: K.L_DAY,
            }[rkind]
            self.lamp_state[device, slot] = level
        elif rkind in (K.K_CIRCUIT_BREAK, K.K_CONTACTOR) and 1 <= sub <= self.c.circuits:
            self.cab_state[device, sub - 1, 0 if rkind == K.K_CIRCUIT_BREAK else 1] = 1
        elif rkind == 0:
            self.comm_state[device] = 1
