"""Compile rule configuration and the registry into the arrays the kernels read.

Single-point rules become *bindings*: one per (rule, device) on the channel
(device, point) the rule watches, stored in CSR form by channel so the kernel
finds a reading's rules with two array lookups. Device-level rules become
per-device rule slots and a role table that says which point of a device's
profile is its switch command, its power, its circuit 2 current, and so on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from drivers.errors import ConfigError
from drivers.profile import DeviceProfile
from rules import kernels as K
from rules.config import (
    LEVEL_NAMES,
    CircuitBreakRule,
    CommLossRule,
    ContactorRule,
    DayBurningRule,
    LampCyclingRule,
    LampFailureRule,
    LampPowerRule,
    QualityChecks,
    RateRule,
    RuleConfig,
    Selector,
    StuckRule,
    ThresholdRule,
)
from rules.site import Site, SiteDevice

_KIND = {
    "threshold": K.K_THRESHOLD,
    "rate_of_change": K.K_RATE,
    "stuck": K.K_STUCK,
    "lamp_failure": K.K_LAMP_FAILURE,
    "lamp_power": K.K_LAMP_POWER,
    "lamp_cycling": K.K_LAMP_CYCLING,
    "day_burning": K.K_DAY_BURNING,
    "circuit_break": K.K_CIRCUIT_BREAK,
    "contactor": K.K_CONTACTOR,
    "comm_loss": 0,
}
_LAMP_SLOT = {
    "lamp_failure": K.L_FAILURE,
    "lamp_power": K.L_POWER,
    "lamp_cycling": K.L_CYCLING,
    "day_burning": K.L_DAY,
}
_CAB_SLOT = {"circuit_break": 0, "contactor": 1}
_LAMP_ROLE_POINTS = {
    K.R_SWITCH_CMD: "switch_cmd",
    K.R_DIM_CMD: "dim_cmd",
    K.R_LAMP_ON: "lamp_on",
    K.R_DIM_LEVEL: "dim_level",
    K.R_VOLTAGE: "voltage",
    K.R_POWER: "power",
}
_CIRCUIT_CMD = re.compile(r"^circuit(\d+)_cmd$")


def role_points(circuits: int) -> dict[int, str]:
    """The point name of each role, for cabinets of up to ``circuits`` circuits."""
    names = dict(_LAMP_ROLE_POINTS)
    for c in range(circuits):
        cmd, on, current = K.circuit_roles(c, circuits)
        names[cmd] = f"circuit{c + 1}_cmd"
        names[on] = f"circuit{c + 1}_on"
        names[current] = f"circuit{c + 1}_current"
    return names


def site_circuits(registry: Site) -> int:
    """The most circuits any device's profile has (``circuitN_cmd`` points), at least 1."""
    most = 1
    for d in registry.devices:
        for p in d.points:
            match = _CIRCUIT_CMD.match(p.name)
            if match:
                most = max(most, int(match.group(1)))
    return most


def selects(selector: Selector, device: SiteDevice) -> bool:
    """Whether a rule's selector picks ``device``."""
    loc = device.location
    return (
        (selector.device_class is None or selector.device_class == device.device_class)
        and (selector.devices is None or device.id in selector.devices)
        and (selector.profile is None or selector.profile == device.profile.name)
        and (selector.grid is None or selector.grid == loc.grid)
        and (selector.road is None or selector.road == loc.road)
        and (selector.district is None or selector.district == loc.district)
    )


@dataclass
class CompiledRules:
    """The rule and binding tables, ready for the kernels."""

    rules: list[RuleConfig]
    rkind: npt.NDArray[np.int32]
    rdir: npt.NDArray[np.float64]
    rp: npt.NDArray[np.float64]
    chan_base: npt.NDArray[np.int64]
    bind_start: npt.NDArray[np.int64]
    bind_rule: npt.NDArray[np.int32]
    bind_dev: npt.NDArray[np.int32]
    bind_point: npt.NDArray[np.int32]
    bind_limits: npt.NDArray[np.float64]
    bind_ring: npt.NDArray[np.int64]
    ring_rows: int
    role_pt: npt.NDArray[np.int16]
    #: Point of each role in each profile (one past the last point: none), points of
    #: each profile, and the profile of each device.
    role_point: npt.NDArray[np.int16]
    prof_points: npt.NDArray[np.int16]
    dev_profile: npt.NDArray[np.int32]
    #: 1 where a device has single-point rule bindings.
    dev_binds: npt.NDArray[np.uint8]
    dev_lamp_rule: npt.NDArray[np.int32]
    dev_cab_rule: npt.NDArray[np.int32]
    rated_w: npt.NDArray[np.float64]
    circuit_lamps: npt.NDArray[np.int32]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    comm_rule: npt.NDArray[np.int32]
    comm_limit: npt.NDArray[np.float64]
    day_devices: npt.NDArray[np.int64]
    #: Circuits per cabinet the state is sized for (the most any profile has).
    circuits: int = 4
    binding_of: dict[tuple[int, int], int] = field(default_factory=dict)

    def rule_index(self, rule_id: str) -> int:
        """Index of the rule with this id."""
        for i, rule in enumerate(self.rules):
            if rule.id == rule_id:
                return i
        raise KeyError(rule_id)


def _quality(q: QualityChecks) -> tuple[float, float, float]:
    return (
        -math.inf if q.valid_min is None else q.valid_min,
        math.inf if q.valid_max is None else q.valid_max,
        math.nan if q.max_jump is None else q.max_jump,
    )


def _rule_params(rule: RuleConfig) -> npt.NDArray[np.float64]:
    params = np.full(K.N_PARAMS, math.nan)
    params[K.P_VALID_MIN], params[K.P_VALID_MAX] = -math.inf, math.inf
    if isinstance(rule, ThresholdRule | RateRule):
        params[K.P_VALID_MIN], params[K.P_VALID_MAX], params[K.P_MAX_JUMP] = _quality(rule.quality)
    if isinstance(rule, ThresholdRule):
        params[K.P_DEADBAND] = rule.deadband
        params[K.P_ON_DELAY] = rule.on_delay
        params[K.P_OFF_DELAY] = rule.off_delay
    elif isinstance(rule, RateRule):
        params[K.P_A], params[K.P_B] = rule.rise, rule.window
    elif isinstance(rule, StuckRule):
        params[K.P_A], params[K.P_B], params[K.P_C] = rule.samples, rule.tolerance, rule.min_value
    elif isinstance(rule, LampFailureRule):
        params[K.P_A] = rule.share
    elif isinstance(rule, LampPowerRule):
        params[K.P_A], params[K.P_B], params[K.P_C] = rule.share, rule.tolerance, rule.driver_loss
    elif isinstance(rule, LampCyclingRule):
        params[K.P_A], params[K.P_B] = rule.transitions, rule.window
    elif isinstance(rule, DayBurningRule):
        params[K.P_B] = rule.margin_minutes * 60.0
    elif isinstance(rule, CircuitBreakRule):
        params[K.P_A] = rule.min_current
    elif isinstance(rule, ContactorRule):
        params[K.P_ON_DELAY] = rule.on_delay
        params[K.P_A] = rule.min_current
    return params


def _limits(rule: ThresholdRule, device: SiteDevice) -> list[float] | None:
    if not rule.levels_from_device:
        return [*rule.limits, *[math.nan] * (4 - len(rule.limits))]
    # Only gauges carry levels; other locations have no such attribute.
    levels: Mapping[str, float] | None = getattr(device.location, "levels", None)
    if not levels:
        return None
    return [levels.get(name, math.nan) for name in LEVEL_NAMES]


def _where(registry: Site, device: SiteDevice) -> tuple[float, float]:
    """A device's position for its sun times: its own, else its cabinet's.

    A lamp listed without coordinates would otherwise sit at 0, 0, where the
    sun is up while it is night in China, and burn by day every evening.
    """
    loc = device.location
    if (loc.lat, loc.lon) == (0.0, 0.0) and device.parent is not None:
        loc = registry.devices[device.parent].location
    return loc.lat, loc.lon


@dataclass(frozen=True)
class RuleSite:
    """What the compiler takes from the site's config: its rules, its poll intervals by
    device class (a comm-loss limit counts intervals), how long readings wait to be
    handed on in a batch, and the file errors name."""

    file: str
    rules: Sequence[RuleConfig]
    intervals: Mapping[str, float]
    batch_interval: float = 0.0


def compile_rules(site: RuleSite, registry: Site) -> CompiledRules:
    """Tables for every rule of the config; a rule that selects nothing is an error."""
    file = site.file
    rules = site.rules
    n_dev = len(registry)
    interval = site.intervals
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.id in seen:
            raise ConfigError(file, f"rules[{i}] ({rule.id}).id", "rule id used twice")
        seen.add(rule.id)

    chan_base = np.zeros(n_dev, dtype=np.int64)
    total = 0
    for d in registry.devices:
        chan_base[d.index] = total
        total += len(d.points)
    bindings: list[tuple[int, int, int, int, list[float]]] = []  # channel, rule, dev, point, limits
    circuits = site_circuits(registry)
    if circuits > K.MAX_CIRCUITS:
        raise ConfigError(
            file, "profiles", f"a profile has {circuits} circuits; at most {K.MAX_CIRCUITS}"
        )
    roles = role_points(circuits)
    role_pt = np.full((n_dev, K.role_count(circuits)), -1, dtype=np.int16)
    for d in registry.devices:
        names = {p.name: i for i, p in enumerate(d.points)}
        for role, point in roles.items():
            if point in names:
                role_pt[d.index, role] = names[point]
        if isinstance(d.profile, DeviceProfile) and d.profile.coil_feedback:
            # Its "feedback" is the coil it was told to set: no contactor state to judge.
            for c in range(circuits):
                role_pt[d.index, K.circuit_roles(c, circuits)[1]] = -1
    dev_lamp_rule = np.full((n_dev, 4), -1, dtype=np.int32)
    dev_cab_rule = np.full((n_dev, 2), -1, dtype=np.int32)
    comm_rule = np.full(n_dev, -1, dtype=np.int32)
    comm_limit = np.full(n_dev, math.inf)
    rkind = np.zeros(len(rules), dtype=np.int32)
    rdir = np.ones(len(rules), dtype=np.float64)
    rp = np.zeros((len(rules), K.N_PARAMS), dtype=np.float64)

    for r, rule in enumerate(rules):
        key = f"rules[{r}] ({rule.id})"
        rkind[r] = _KIND[rule.kind]
        rp[r] = _rule_params(rule)
        if isinstance(rule, ThresholdRule) and rule.direction == "low":
            rdir[r] = -1.0
        chosen = [d for d in registry.devices if selects(rule.select, d)]
        matched = 0
        if isinstance(rule, ThresholdRule | RateRule | StuckRule):
            for d in chosen:
                point_names = [p.name for p in d.points]
                if rule.point not in point_names:
                    continue
                limits = _limits(rule, d) if isinstance(rule, ThresholdRule) else [math.nan] * 4
                if limits is None:
                    continue
                p = point_names.index(rule.point)
                bindings.append((int(chan_base[d.index]) + p, r, d.index, p, limits))
                matched += 1
        elif isinstance(rule, CommLossRule):
            for d in chosen:
                if d.parent is None:  # lamps behind a cabinet share their cabinet's link
                    comm_rule[d.index] = r
                    # A station that dials in reports at its own interval, not the poll
                    # rate, and stamps its readings with an observation time to the minute
                    # (SL651 TT): its latest reading may look a minute old as it arrives.
                    report = getattr(d.location, "report_interval", None)
                    every = report or interval[d.device_class]
                    # Readings reach the rules a batch at a time: one polled just after
                    # the last batch left is not silence until the next one is due.
                    late = site.batch_interval + (60.0 if report else 0.0)
                    comm_limit[d.index] = rule.intervals * every + late
                    matched += 1
        elif rule.kind in _LAMP_SLOT:
            for d in chosen:
                if d.device_class == "lamp" and role_pt[d.index, K.R_LAMP_ON] >= 0:
                    slot = _LAMP_SLOT[rule.kind]
                    if dev_lamp_rule[d.index, slot] < 0:
                        dev_lamp_rule[d.index, slot] = r
                    matched += 1
        else:
            for d in chosen:
                if role_pt[d.index, K.circuit_roles(0, circuits)[0]] >= 0:
                    slot = _CAB_SLOT[rule.kind]
                    if dev_cab_rule[d.index, slot] < 0:
                        dev_cab_rule[d.index, slot] = r
                    matched += 1
        if matched == 0:
            point = f" with point {rule.point!r}" if hasattr(rule, "point") else ""
            raise ConfigError(file, f"{key}.select", f"selects no device{point}")

    bindings.sort(key=lambda b: b[0])
    counts = np.bincount(np.asarray([b[0] for b in bindings], dtype=np.int64), minlength=total)
    bind_start = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    bind_rule = np.asarray([b[1] for b in bindings], dtype=np.int32)
    rate = rkind[bind_rule] == K.K_RATE if len(bindings) else np.zeros(0, dtype=bool)
    bind_ring = np.full(len(bindings), -1, dtype=np.int64)
    bind_ring[rate] = np.arange(int(rate.sum()))

    profile_ids: dict[str, int] = {}
    dev_profile = np.zeros(n_dev, dtype=np.int32)
    for d in registry.devices:
        dev_profile[d.index] = profile_ids.setdefault(d.point_set, len(profile_ids))
    n_prof = max(len(profile_ids), 1)
    # A role the profile lacks points at the slot past every point: always NaN.
    nan_slot = max(registry.max_points, 1)
    role_point = np.full((n_prof, K.role_count(circuits)), nan_slot, np.int16)
    prof_points = np.zeros(n_prof, np.int16)
    for d in registry.devices:
        own = role_pt[d.index]
        role_point[dev_profile[d.index]] = np.where(own >= 0, own, nan_slot)
        prof_points[dev_profile[d.index]] = len(d.points)
    dev_binds = np.zeros(n_dev, dtype=np.uint8)
    dev_binds[np.asarray([b[2] for b in bindings], dtype=np.int64)] = 1

    rated = np.zeros(n_dev)
    circuit_lamps = np.zeros((n_dev, circuits), dtype=np.int32)
    lat = np.zeros(n_dev)
    lon = np.zeros(n_dev)
    for d in registry.devices:
        lat[d.index], lon[d.index] = _where(registry, d)
        if d.rated_w is not None:
            rated[d.index] = d.rated_w
        if d.parent is not None and d.circuit is not None and d.circuit <= circuits:
            circuit_lamps[d.parent, d.circuit - 1] += 1
    compiled = CompiledRules(
        rules=list(rules),
        rkind=rkind,
        rdir=rdir,
        rp=rp,
        chan_base=chan_base,
        bind_start=bind_start,
        bind_rule=bind_rule,
        bind_dev=np.asarray([b[2] for b in bindings], dtype=np.int32),
        bind_point=np.asarray([b[3] for b in bindings], dtype=np.int32),
        bind_limits=np.asarray([b[4] for b in bindings], dtype=np.float64).reshape(-1, 4),
        bind_ring=bind_ring,
        ring_rows=int(rate.sum()),
        role_pt=role_pt,
        role_point=role_point,
        prof_points=prof_points,
        dev_profile=dev_profile,
        dev_binds=dev_binds,
        dev_lamp_rule=dev_lamp_rule,
        dev_cab_rule=dev_cab_rule,
        rated_w=rated,
        circuit_lamps=circuit_lamps,
        lat=lat,
        lon=lon,
        comm_rule=comm_rule,
        comm_limit=comm_limit,
        day_devices=np.flatnonzero(dev_lamp_rule[:, K.L_DAY] >= 0).astype(np.int64),
        circuits=circuits,
    )
    compiled.binding_of = {
        (int(r), int(d)): k
        for k, (r, d) in enumerate(zip(compiled.bind_rule, compiled.bind_dev, strict=True))
    }
    return compiled
