"""A plain-Python reference implementation of the rules, written independently of the kernels.

Per-reading Python with dictionaries for state: slow and obvious. The
benchmark runs it on the same batch as the kernels and checks that both raise
the same events; tests can use it as a second opinion.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from typing import Any

from drivers.readings import ReadingBatch
from rules import kernels as K
from rules.compile import CompiledRules

Event = tuple[int, int, int, int, int, float]  # rule, device, sub, kind, level, ts


class ReferenceEngine:
    """The same rules as the kernels, one reading at a time in Python."""

    def __init__(self, c: CompiledRules, sunrise: Any = None, sunset: Any = None) -> None:
        self.c = c
        self.bindings: dict[tuple[int, int], list[int]] = defaultdict(list)
        for k in range(len(c.bind_rule)):
            self.bindings[int(c.bind_dev[k]), int(c.bind_point[k])].append(k)
        self.state: dict[int, dict[str, Any]] = defaultdict(
            lambda: {
                "level": 0,
                "pend": -1,
                "since": 0.0,
                "last": None,
                "held": None,
                "sf": False,
                "count": 0,
                "ref": None,
                "ring": deque(maxlen=K.RATE_RING),
            }
        )
        self.lamp: dict[tuple[int, int], int] = defaultdict(int)
        self.cycles: dict[int, deque[float]] = defaultdict(lambda: deque(maxlen=K.CYCLE_RING))
        self.last_on: dict[int, int] = {}
        self.cab: dict[tuple[int, int, int], int] = defaultdict(int)
        self.cab_since: dict[tuple[int, int], float | None] = {}
        self.sunrise = sunrise
        self.sunset = sunset

    def _level(
        self, v: float, limits: list[float], direction: float, state: int, deadband: float
    ) -> int:
        reached = [
            i + 1
            for i, lim in enumerate(limits)
            if not math.isnan(lim) and v * direction >= lim * direction
        ]
        raw = max(reached, default=0)
        if raw >= state:
            return raw
        held = [
            i + 1
            for i, lim in enumerate(limits[:state])
            if not math.isnan(lim) and v * direction >= lim * direction - deadband
        ]
        return max(held, default=0)

    def run(self, batch: ReadingBatch) -> list[Event]:
        """Events for a batch, in the order the kernel emits them."""
        out: list[Event] = []
        dev, pts, ts = batch.device.tolist(), batch.point.tolist(), batch.ts.tolist()
        vals, qs = batch.value.tolist(), batch.quality.tolist()
        i = 0
        n = len(dev)
        while i < n:
            j = i
            while j < n and dev[j] == dev[i] and ts[j] == ts[i]:
                j += 1
            values: dict[int, float] = {}  # this poll's values, by point
            for x in range(i, j):
                self._reading(dev[x], pts[x], ts[x], vals[x], qs[x], out)
                if qs[x] < 2 and not math.isnan(vals[x]):
                    values[pts[x]] = vals[x]
            self._device_rules(dev[i], ts[i], values, out)
            i = j
        return out

    def _reading(self, d: int, p: int, t: float, v: float, q: int, out: list[Event]) -> None:
        c = self.c
        bad = q >= 2 or math.isnan(v)
        for k in self.bindings.get((d, p), ()):
            r = int(c.bind_rule[k])
            rp = c.rp[r]
            s = self.state[k]
            if bad or v < rp[K.P_VALID_MIN] or v > rp[K.P_VALID_MAX]:
                if not s["sf"]:
                    s["sf"] = True
                    out.append((r, d, p, K.EV_SENSOR, 1, t))
                continue
            if s["sf"]:
                s["sf"] = False
                out.append((r, d, p, K.EV_SENSOR, 0, t))
            jump = rp[K.P_MAX_JUMP]
            if not math.isnan(jump) and s["last"] is not None:
                if abs(v - s["last"]) > jump and (s["held"] is None or abs(v - s["held"]) > jump):
                    s["held"] = v
                    continue
                s["held"] = None
            s["last"] = v
            kind = int(c.rkind[r])
            if kind == K.K_THRESHOLD:
                limits = [float(x) for x in c.bind_limits[k]]
                target = self._level(v, limits, float(c.rdir[r]), s["level"], rp[K.P_DEADBAND])
                if target == s["level"]:
                    s["pend"] = -1
                    continue
                if s["pend"] != target:
                    s["pend"], s["since"] = target, t
                delay = rp[K.P_ON_DELAY] if target > s["level"] else rp[K.P_OFF_DELAY]
                if t - s["since"] >= delay:
                    s["level"], s["pend"] = target, -1
                    out.append((r, d, p, K.EV_RULE, target, t))
            elif kind == K.K_RATE:
                s["ring"].append((t, v))
                lowest = min([v] + [x for (tt, x) in s["ring"] if t - tt <= rp[K.P_B]])
                rise = v - lowest
                active = 1 if rise >= rp[K.P_A] or (s["level"] and rise > rp[K.P_A] * 0.5) else 0
                if active != s["level"]:
                    s["level"] = active
                    out.append((r, d, p, K.EV_RULE, active, t))
            elif kind == K.K_STUCK:
                if v >= rp[K.P_C] and s["ref"] is not None and abs(v - s["ref"]) <= rp[K.P_B]:
                    s["count"] += 1
                else:
                    s["count"], s["ref"] = 1, v
                active = 1 if s["count"] >= rp[K.P_A] else 0
                if active != s["level"]:
                    s["level"] = active
                    out.append((r, d, p, K.EV_RULE, active, t))

    def _device_rules(self, d: int, t: float, values: dict[int, float], out: list[Event]) -> None:
        c = self.c

        def value(role: int) -> float:
            p = int(c.role_pt[d, role])
            return values.get(p, math.nan) if p >= 0 else math.nan

        switch, lit = value(K.R_SWITCH_CMD), value(K.R_LAMP_ON)
        dim_cmd, dim = value(K.R_DIM_CMD), value(K.R_DIM_LEVEL)
        volts, power = value(K.R_VOLTAGE), value(K.R_POWER)
        level = dim if math.isnan(dim_cmd) else dim_cmd
        rated = float(c.rated_w[d])
        nominal = rated * max(level, 10.0) * 0.01
        for slot in range(4):
            r = int(c.dev_lamp_rule[d, slot])
            if r < 0:
                continue
            rp = c.rp[r]
            active = self.lamp[d, slot]
            if slot == K.L_FAILURE:
                if not any(math.isnan(x) for x in (switch, volts, power)):
                    limit = nominal * rp[K.P_A]
                    active = int(switch >= 0.5 and volts > 50.0 and power < limit)
            elif slot == K.L_POWER:
                expected = nominal * (1.0 + rp[K.P_C])
                if not (math.isnan(lit) or math.isnan(power)) and expected > 0:
                    off, tolerance = power - expected, rp[K.P_B] * expected
                    failed = power < nominal * rp[K.P_A]
                    active = (
                        0
                        if lit < 0.5 or failed
                        else (1 if off > tolerance else 2 if off < -tolerance else 0)
                    )
            elif slot == K.L_CYCLING:
                if not math.isnan(lit):
                    now_on = int(lit >= 0.5)
                    if d in self.last_on and now_on != self.last_on[d]:
                        self.cycles[d].append(t)
                    self.last_on[d] = now_on
                    count = sum(1 for x in self.cycles[d] if t - x <= rp[K.P_B])
                    active = int(count >= rp[K.P_A])
            elif not math.isnan(lit):
                margin = rp[K.P_B]
                day = self.sunrise[d] + margin <= t <= self.sunset[d] - margin
                active = int(lit >= 0.5 and day)
            if active != self.lamp[d, slot]:
                self.lamp[d, slot] = active
                out.append((r, d, 0, K.EV_RULE, active, t))
        for slot in range(2):
            r = int(c.dev_cab_rule[d, slot])
            if r < 0:
                continue
            for circuit in range(c.circuits):
                cmd_role, on_role, current_role = K.circuit_roles(circuit, c.circuits)
                cmd = value(cmd_role)
                closed = value(on_role)
                amps_now = value(current_role)
                if math.isnan(closed) and slot == 1 and not math.isnan(amps_now):
                    closed = 1.0 if amps_now >= c.rp[r][K.P_A] else 0.0
                if math.isnan(cmd) or math.isnan(closed):
                    continue
                active = self.cab[d, circuit, slot]
                if slot == 0:
                    amps = value(current_role)
                    if c.circuit_lamps[d, circuit] == 0 or math.isnan(amps):
                        continue
                    active = int(cmd >= 0.5 and closed >= 0.5 and amps < c.rp[r][K.P_A])
                elif (cmd >= 0.5) == (closed >= 0.5):
                    active, self.cab_since[d, circuit] = 0, None
                elif active == 0:
                    since = self.cab_since.get((d, circuit))
                    if since is None:
                        since = self.cab_since[d, circuit] = t
                    if t - since >= c.rp[r][K.P_ON_DELAY]:
                        active = 1
                if active != self.cab[d, circuit, slot]:
                    self.cab[d, circuit, slot] = active
                    out.append((r, d, circuit + 1, K.EV_RULE, active, t))
