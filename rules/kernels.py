"""The numba kernels of the rules engine: one fused pass over a reading batch.

Readings arrive grouped by device poll (contiguous runs of one device and one
time). For each reading the kernel checks data quality, runs every
single-point rule bound to that channel, and keeps the values device-level
rules need (by role, in a small scratch array); at the end of each group it
runs the device-level rules (lamp and circuit rules) on that poll's values, a
consistent snapshot of one poll. All rule state lives in arrays indexed
by binding or device. Alarm transitions are written to event arrays.

A pass can stop early when the event arrays are full; it returns where it
stopped, the caller empties the events and calls again from there. The state
is consistent at every group boundary, so a stopped pass loses nothing.

Devices share no state, so a batch can be split into partitions that run on
parallel threads (the kernel releases the GIL) with identical results, as
long as each device's groups stay in one partition and in order. A batch as
the poller sends it holds each device in one run, so it splits into
contiguous ranges at device boundaries (:func:`range_bounds`), checked by
:func:`claim_devices` and :func:`owns_devices`; any other batch is split by
``device % parts`` (:func:`partition_groups` lists each partition's group
starts in one pass, so a thread reads only its own readings).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.float64]
_I = npt.NDArray[np.int64]
_I32 = npt.NDArray[np.int32]
_B = npt.NDArray[np.int8]

# Rule kinds.
K_THRESHOLD = 1
K_RATE = 2
K_STUCK = 3
K_LAMP_FAILURE = 10
K_LAMP_POWER = 11
K_LAMP_CYCLING = 12
K_DAY_BURNING = 13
K_CIRCUIT_BREAK = 20
K_CONTACTOR = 21

# Parameter columns of the rule table.
P_DEADBAND = 0
P_ON_DELAY = 1
P_OFF_DELAY = 2
P_VALID_MIN = 3
P_VALID_MAX = 4
P_MAX_JUMP = 5
P_A = 6  # rate: rise; stuck: samples; lamp: share; cycling: transitions; circuit: min current
P_B = 7  # rate: window; stuck: tolerance; lamp power: tolerance; cycling: window; day: margin s
P_C = 8  # stuck: min value; lamp power: driver loss
N_PARAMS = 9

# Point roles of device-level rules (columns of the role tables; -1 when absent): the
# lamp's, then per circuit its command, its feedback and its current. A site's role
# tables have ``role_count(circuits)`` columns, ``circuits`` sized from its profiles.
R_SWITCH_CMD = 0
R_DIM_CMD = 1
R_LAMP_ON = 2
R_DIM_LEVEL = 3
R_VOLTAGE = 4
R_POWER = 5
N_LAMP_ROLES = 6
#: The most circuits a cabinet profile may have.
MAX_CIRCUITS = 32


# The kernel's arrays, bundled so that their order lives in one place: a misordered
# positional array would be a silent wrong answer, a misnamed field is an error.


class Readings(NamedTuple):
    """A batch's columns (or a range of them), as the kernel reads them."""

    dev: _I32
    pt: npt.NDArray[np.int16]
    ts: _F
    val: _F
    q: npt.NDArray[np.uint8]

    def part(self, start: int, end: int) -> Readings:
        """The readings ``start:end`` (views, not copies)."""
        return Readings(
            self.dev[start:end],
            self.pt[start:end],
            self.ts[start:end],
            self.val[start:end],
            self.q[start:end],
        )


class RuleTables(NamedTuple):
    """The compiled rules and site, read-only to the kernel (see ``rules.compile``)."""

    chan_base: _I
    bind_start: _I
    bind_rule: _I32
    bind_limits: _F
    bind_ring: _I
    rkind: _I32
    rdir: _F
    rp: _F
    role_point: npt.NDArray[np.int16]
    prof_points: npt.NDArray[np.int16]
    dev_profile: _I32
    dev_binds: npt.NDArray[np.uint8]
    dev_lamp_rule: _I32
    rated_w: _F
    dev_cab_rule: _I32
    circuit_lamps: _I32


class BindingState(NamedTuple):
    """Per binding (rule x channel): level, pending level and since, last and held value,
    sensor-fault flag, stuck count and reference."""

    b_level: _B
    b_pend: _B
    b_since: _F
    b_last: _F
    b_held: _F
    b_sf: _B
    b_count: _I
    b_ref: _F


class RingState(NamedTuple):
    """Per rate-of-change binding: a ring of recent (time, value) and its position and fill."""

    ring_ts: _F
    ring_v: _F
    ring_pos: _I
    ring_n: _I


class DeviceState(NamedTuple):
    """Per device: last valid reading, sun times, lamp and cabinet circuit state."""

    last_good: _F
    sunrise: _F
    sunset: _F
    lamp_state: _B
    cyc_ring: _F
    cyc_n: _I
    last_on: _I
    cab_state: _B
    cab_since: _F


class EventBuffers(NamedTuple):
    """Where a pass writes its events: integer columns and float columns."""

    ev_int: _I
    ev_flt: _F


def role_count(circuits: int) -> int:
    """Columns of the role tables for cabinets of up to ``circuits`` circuits."""
    return N_LAMP_ROLES + 3 * circuits


def circuit_roles(circuit: int, circuits: int) -> tuple[int, int, int]:
    """The command, feedback and current roles of a circuit (0-based)."""
    return (
        N_LAMP_ROLES + circuit,
        N_LAMP_ROLES + circuits + circuit,
        N_LAMP_ROLES + 2 * circuits + circuit,
    )


# Lamp rule slots (columns of dev_lamp_rule / lamp_state).
L_FAILURE = 0
L_POWER = 1
L_CYCLING = 2
L_DAY = 3
CYCLE_RING = 16
RATE_RING = 64

# Event kinds.
EV_RULE = 0
EV_SENSOR = 1

BAD = 2


@numba.njit(cache=True, error_model="numpy")
def _emit(ev_i, ev_int, ev_flt, rule, dev, sub, kind, level, ts, val, lim):
    ev_int[ev_i, 0] = rule
    ev_int[ev_i, 1] = dev
    ev_int[ev_i, 2] = sub
    ev_int[ev_i, 3] = kind
    ev_int[ev_i, 4] = level
    ev_flt[ev_i, 0] = ts
    ev_flt[ev_i, 1] = val
    ev_flt[ev_i, 2] = lim
    return ev_i + 1


@numba.njit(cache=True, inline="always")
def _role_value(rv, role_point, prof, role):
    """This poll's value of a role: NaN when it was bad or missing, or when the profile
    lacks the role (its point is then the scratch's last slot, which is always NaN)."""
    return rv[role_point[prof, role]]


@numba.njit(cache=True, error_model="numpy")
def _threshold_target(v, limits, direction, state, deadband):
    """Level the value asks for, with hysteresis: falling needs deadband past the limit."""
    x = v * direction
    raw = 0
    for level in range(4):
        lim = limits[level]
        if not math.isnan(lim) and x >= lim * direction:
            raw = level + 1
    if raw >= state:
        return raw
    held = 0
    for level in range(state):
        lim = limits[level]
        if not math.isnan(lim) and x >= lim * direction - deadband:
            held = level + 1
    return held


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _run_part(
    first, starts, readings, tables, bind_state, ring_state, device_state, rv, events, reserve
):
    """Run the groups of one partition from reading ``first``; returns (next reading, events).

    A group is a run of readings with the same device and time (one device poll);
    its end is found here, while reading. The group's rules are written out in this
    loop rather than called: a call per group would pass some sixty arrays, and
    their reference counting costs more than the rules themselves. The bundles are
    unpacked once here, so the loop works on plain local arrays.
    """
    dev, pt, ts, val, q = readings
    (
        chan_base,
        bind_start,
        bind_rule,
        bind_limits,
        bind_ring,
        rkind,
        rdir,
        rp,
        role_point,
        prof_points,
        dev_profile,
        dev_binds,
        dev_lamp_rule,
        rated_w,
        dev_cab_rule,
        circuit_lamps,
    ) = tables
    b_level, b_pend, b_since, b_last, b_held, b_sf, b_count, b_ref = bind_state
    ring_ts, ring_v, ring_pos, ring_n = ring_state
    (
        last_good,
        sunrise,
        sunset,
        lamp_state,
        cyc_ring,
        cyc_n,
        last_on,
        cab_state,
        cab_since,
    ) = device_state
    ev_int, ev_flt = events
    capacity = ev_int.shape[0]
    ev_i = 0
    n = dev.shape[0]
    # With ``starts`` (a partition's group starts) the pass visits only those groups,
    # and ``first`` counts groups; without, it visits every group and counts readings.
    n_starts = starts.shape[0]
    by_start = n_starts > 0
    cursor = first
    while cursor < (n_starts if by_start else n):
        g_start = starts[cursor] if by_start else cursor
        d = dev[g_start]
        t0 = ts[g_start]
        if ev_i + reserve > capacity:
            return cursor, ev_i
        # This poll's values by point, for the device-level rules; a point the poll
        # lacks or read bad stays NaN.
        prof = dev_profile[d]
        rv[: prof_points[prof]] = np.nan
        binds = dev_binds[d]
        any_good = False
        t = t0  # a group is one poll: every reading in it has the same time
        x = g_start
        # The group ends where the device or the time changes; found while reading.
        while x < n and dev[x] == d and ts[x] == t0:
            xi = x
            x += 1
            p = pt[xi]
            v = val[xi]
            bad = q[xi] >= BAD or math.isnan(v)
            if not bad:
                rv[p] = v
                any_good = True
            if binds == 0:
                continue  # most lamps: no single-point rule to look up
            ch = chan_base[d] + p
            for k in range(bind_start[ch], bind_start[ch + 1]):
                r = bind_rule[k]
                kind = rkind[r]
                out_of_range = v < rp[r, P_VALID_MIN] or v > rp[r, P_VALID_MAX]
                if bad or out_of_range:
                    # Bad data neither raises nor clears the rule: it raises a sensor fault.
                    if b_sf[k] == 0:
                        b_sf[k] = 1
                        ev_i = _emit(
                            ev_i,
                            ev_int,
                            ev_flt,
                            r,
                            d,
                            p,
                            EV_SENSOR,
                            1,
                            t,
                            v,
                            np.nan,
                        )
                    continue
                if b_sf[k] == 1:
                    b_sf[k] = 0
                    ev_i = _emit(
                        ev_i,
                        ev_int,
                        ev_flt,
                        r,
                        d,
                        p,
                        EV_SENSOR,
                        0,
                        t,
                        v,
                        np.nan,
                    )
                jump = rp[r, P_MAX_JUMP]
                if not math.isnan(jump) and not math.isnan(b_last[k]):
                    if abs(v - b_last[k]) > jump and (
                        math.isnan(b_held[k]) or abs(v - b_held[k]) > jump
                    ):
                        b_held[k] = v  # a spike, unless the next reading confirms it
                        continue
                    b_held[k] = np.nan
                b_last[k] = v
                if kind == K_THRESHOLD:
                    state = b_level[k]
                    target = _threshold_target(v, bind_limits[k], rdir[r], state, rp[r, P_DEADBAND])
                    if target == state:
                        b_pend[k] = -1
                    else:
                        if b_pend[k] != target:
                            b_pend[k] = target
                            b_since[k] = t
                        delay = rp[r, P_ON_DELAY] if target > state else rp[r, P_OFF_DELAY]
                        if t - b_since[k] >= delay:
                            b_level[k] = target
                            b_pend[k] = -1
                            lim = (
                                bind_limits[k, target - 1]
                                if target > 0
                                else bind_limits[k, state - 1]
                            )
                            ev_i = _emit(
                                ev_i,
                                ev_int,
                                ev_flt,
                                r,
                                d,
                                p,
                                EV_RULE,
                                target,
                                t,
                                v,
                                lim,
                            )
                elif kind == K_RATE:
                    row = bind_ring[k]
                    pos = ring_pos[row]
                    ring_ts[row, pos] = t
                    ring_v[row, pos] = v
                    ring_pos[row] = (pos + 1) % RATE_RING
                    if ring_n[row] < RATE_RING:
                        ring_n[row] += 1
                    window = rp[r, P_B]
                    lowest = v
                    for j in range(ring_n[row]):
                        if t - ring_ts[row, j] <= window and ring_v[row, j] < lowest:
                            lowest = ring_v[row, j]
                    rise = v - lowest
                    active = 1 if rise >= rp[r, P_A] else 0
                    if active == 0 and b_level[k] == 1 and rise > rp[r, P_A] * 0.5:
                        active = 1  # hysteresis: clear only when the rise has halved
                    if active != b_level[k]:
                        b_level[k] = active
                        ev_i = _emit(
                            ev_i,
                            ev_int,
                            ev_flt,
                            r,
                            d,
                            p,
                            EV_RULE,
                            active,
                            t,
                            rise,
                            rp[r, P_A],
                        )
                elif kind == K_STUCK:
                    if v >= rp[r, P_C] and abs(v - b_ref[k]) <= rp[r, P_B]:
                        b_count[k] += 1
                    else:
                        b_count[k] = 1
                        b_ref[k] = v
                    active = 1 if b_count[k] >= rp[r, P_A] else 0
                    if active != b_level[k]:
                        b_level[k] = active
                        ev_i = _emit(
                            ev_i,
                            ev_int,
                            ev_flt,
                            r,
                            d,
                            p,
                            EV_RULE,
                            active,
                            t,
                            v,
                            rp[r, P_A],
                        )
        # NaN: no valid reading yet (the grace period may not have started either).
        if any_good and (math.isnan(last_good[d]) or t0 > last_good[d]):
            last_good[d] = t0
        t = t0
        # Device-level lamp rules, from the values of this poll.
        if (
            dev_lamp_rule[d, L_FAILURE] >= 0
            or dev_lamp_rule[d, L_POWER] >= 0
            or dev_lamp_rule[d, L_CYCLING] >= 0
            or dev_lamp_rule[d, L_DAY] >= 0
        ):
            switch = _role_value(rv, role_point, prof, R_SWITCH_CMD)
            lit = _role_value(rv, role_point, prof, R_LAMP_ON)
            dim = _role_value(rv, role_point, prof, R_DIM_LEVEL)
            dim_cmd = _role_value(rv, role_point, prof, R_DIM_CMD)
            volts = _role_value(rv, role_point, prof, R_VOLTAGE)
            power = _role_value(rv, role_point, prof, R_POWER)
            level = dim_cmd if not math.isnan(dim_cmd) else dim
            nominal = rated_w[d] * max(level, 10.0) * 0.01  # rated power at this dim level
            for slot in range(4):
                r = dev_lamp_rule[d, slot]
                if r < 0:
                    continue
                active = lamp_state[d, slot]
                value = power
                limit = np.nan
                if slot == L_FAILURE:
                    limit = nominal * rp[r, P_A]
                    if not (math.isnan(switch) or math.isnan(volts) or math.isnan(power)):
                        active = 1 if switch >= 0.5 and volts > 50.0 and power < limit else 0
                elif slot == L_POWER:
                    expected = nominal * (1.0 + rp[r, P_C])
                    limit = expected
                    if not (math.isnan(lit) or math.isnan(power)) and expected > 0:
                        # off / expected against the tolerance, without a division per lamp
                        off = power - expected
                        tolerance = rp[r, P_B] * expected
                        failed = power < nominal * rp[r, P_A]
                        if lit < 0.5 or failed:
                            active = 0
                        elif off > tolerance:
                            active = 1
                        elif off < -tolerance:
                            active = 2
                        else:
                            active = 0
                elif slot == L_CYCLING:
                    if not math.isnan(lit):
                        now_on = 1 if lit >= 0.5 else 0
                        if last_on[d] >= 0 and now_on != last_on[d]:
                            cyc_ring[d, cyc_n[d] % CYCLE_RING] = t
                            cyc_n[d] += 1
                        last_on[d] = now_on
                        count = 0
                        for j in range(min(cyc_n[d], CYCLE_RING)):
                            if t - cyc_ring[d, j] <= rp[r, P_B]:
                                count += 1
                        value = count
                        limit = rp[r, P_A]
                        active = 1 if count >= rp[r, P_A] else 0
                else:  # L_DAY; a NaN sunrise means "not judged yet": keep the state
                    if not math.isnan(lit) and not math.isnan(sunrise[d]):
                        margin = rp[r, P_B]
                        day = t >= sunrise[d] + margin and t <= sunset[d] - margin
                        value = lit
                        active = 1 if lit >= 0.5 and day else 0
                if active != lamp_state[d, slot]:
                    lamp_state[d, slot] = active
                    ev_i = _emit(
                        ev_i,
                        ev_int,
                        ev_flt,
                        r,
                        d,
                        0,
                        EV_RULE,
                        active,
                        t,
                        value,
                        limit,
                    )
        # Device-level circuit rules of a cabinet.
        circuits = cab_state.shape[1]
        for slot in range(2):
            r = dev_cab_rule[d, slot]
            if r < 0:
                continue
            for c in range(circuits):
                cmd = _role_value(rv, role_point, prof, N_LAMP_ROLES + c)
                closed = _role_value(rv, role_point, prof, N_LAMP_ROLES + circuits + c)
                amps = _role_value(rv, role_point, prof, N_LAMP_ROLES + 2 * circuits + c)
                if math.isnan(closed) and slot == 1 and not math.isnan(amps):
                    # No contactor feedback (the coil is read back): current tells.
                    closed = 1.0 if amps >= rp[r, P_A] else 0.0
                if math.isnan(cmd) or math.isnan(closed):
                    continue
                active = cab_state[d, c, slot]
                value = np.nan
                limit = np.nan
                if slot == 0:
                    if circuit_lamps[d, c] == 0 or math.isnan(amps):
                        continue
                    value = amps
                    limit = rp[r, P_A]
                    active = 1 if cmd >= 0.5 and closed >= 0.5 and value < limit else 0
                else:
                    differs = (cmd >= 0.5) != (closed >= 0.5)
                    value = closed
                    limit = cmd
                    if not differs:
                        active = 0
                        cab_since[d, c] = np.nan
                    elif active == 0:
                        if math.isnan(cab_since[d, c]):
                            cab_since[d, c] = t
                        if t - cab_since[d, c] >= rp[r, P_ON_DELAY]:
                            active = 1
                if active != cab_state[d, c, slot]:
                    cab_state[d, c, slot] = active
                    ev_i = _emit(
                        ev_i,
                        ev_int,
                        ev_flt,
                        r,
                        d,
                        c + 1,
                        EV_RULE,
                        active,
                        t,
                        value,
                        limit,
                    )
        cursor = cursor + 1 if by_start else x
    return cursor, ev_i


@numba.njit(cache=True, nogil=True)
def partition_groups(dev, ts, parts):
    """Group starts of each partition (``device % parts``), in batch order.

    Returns the starts sorted by partition and where each partition's run begins
    (``offsets[p] .. offsets[p + 1]``), so each thread visits only its own groups
    instead of scanning the whole batch.
    """
    n = dev.shape[0]
    counts = np.zeros(parts + 1, np.int64)
    groups = 0
    for i in range(n):
        if i == 0 or dev[i] != dev[i - 1] or ts[i] != ts[i - 1]:
            counts[dev[i] % parts + 1] += 1
            groups += 1
    offsets = np.cumsum(counts)
    fill = offsets[:parts].copy()
    starts = np.empty(groups, np.int64)
    for i in range(n):
        if i == 0 or dev[i] != dev[i - 1] or ts[i] != ts[i - 1]:
            p = dev[i] % parts
            starts[fill[p]] = i
            fill[p] += 1
    return starts, offsets


@numba.njit(cache=True, nogil=True)
def range_bounds(dev, parts):
    """Where to cut a batch into ``parts`` ranges of about equal size, at device changes."""
    n = dev.shape[0]
    bounds = np.empty(parts + 1, np.int64)
    bounds[0] = 0
    for k in range(1, parts):
        i = max(k * n // parts, bounds[k - 1])
        while 0 < i < n and dev[i] == dev[i - 1]:
            i += 1
        bounds[k] = i
    bounds[parts] = n
    return bounds


@numba.njit(cache=True, nogil=True)
def claim_devices(dev, owner, mark):
    """Mark every device of a range of readings as owned by ``mark``."""
    prev = -1
    for i in range(dev.shape[0]):
        d = dev[i]
        if d != prev:  # once per run of a device, not per reading
            owner[d] = mark
            prev = d


@numba.njit(cache=True, nogil=True)
def owns_devices(dev, owner, mark):
    """True when no other range claimed a device of this range (run after every claim)."""
    prev = -1
    foreign = False
    for i in range(dev.shape[0]):
        d = dev[i]
        if d != prev:
            foreign |= owner[d] != mark  # no early exit: the loop stays branch-light
            prev = d
    return not foreign


run_part = _run_part


@numba.njit(cache=True, fastmath=True)
def touch_all(dev, pt, ts, val, q):
    """The memory roof: read every column of the batch once and do nothing else.

    fastmath lets the sums be reordered (vectorized), so this is the fastest a
    pass over the columns can be, not one float chain's latency.
    """
    a = 0
    b = 0
    c = 0.0
    e = 0.0
    f = 0
    for i in range(dev.shape[0]):
        a += dev[i]
        b += pt[i]
        c += ts[i]
        e += val[i]
        f += q[i]
    return a + b + c + e + f
