"""Plausible physics for simulated lamps, cabinets and gauges.

A lamp draws power by its rated power and dim level; a cabinet's phase and
circuit currents are the sums of the lamps it feeds; a gauge follows the rain
scenario. Faults from the :class:`FaultBoard` bend these rules the way the
real faults do (a cut cable leaves a circuit commanded on with no current).
Models return point values by profile point name; the datastore encodes them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from simulators.faults import FaultBoard, FaultKind, RainEvent

NOMINAL_VOLTAGE = 225.0
STANDBY_CURRENT_A = 0.05
BASE_LEAKAGE_MA = 3.0


class SimClock:
    """Simulated seconds since start, running ``scale`` times faster than real time."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._t0 = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        """Simulated seconds since the simulation started."""
        return (time.monotonic() - self._t0) * self.scale + self._offset

    def advance(self, seconds: float) -> None:
        """Jump ahead (tests skip to the interesting part of a scenario)."""
        self._offset += seconds


@dataclass
class LampModel:
    """A lamp with its single-lamp controller."""

    id: str
    rated_w: float
    circuit: int = 1
    phase: str = "A"
    switch_cmd: int = 1
    dim_cmd: int = 100
    burn_hours: float = 0.0
    noise: random.Random = field(default_factory=lambda: random.Random(0))

    def lit(self, supplied: bool, board: FaultBoard, now: float) -> bool:
        """Whether the lamp gives light (and draws power)."""
        if not supplied or board.find(self.id, FaultKind.LAMP_BURNT_OUT, now):
            return False
        return (
            bool(self.switch_cmd) or board.find(self.id, FaultKind.LAMP_STUCK_ON, now) is not None
        )

    def power_w(self, lit: bool) -> float:
        """Active power at the current dim level (drivers never go below 10 %)."""
        if not lit:
            return 0.0
        return self.rated_w * max(self.dim_cmd, 10) / 100.0 * 1.03

    def values(self, voltage: float, board: FaultBoard, now: float) -> dict[str, float]:
        """Point values as the slc-lamp profile names them."""
        supplied = voltage > 50
        lit = self.lit(supplied, board, now)
        jitter = 1.0 + self.noise.uniform(-0.005, 0.005)
        power = self.power_w(lit) * jitter
        pf = 0.75 + 0.2 * max(self.dim_cmd, 10) / 100.0 if lit else 0.0
        current = power / (voltage * pf) if lit and voltage > 0 else 0.0
        burnt = board.find(self.id, FaultKind.LAMP_BURNT_OUT, now) is not None
        fault_bits = (1 if burnt and self.switch_cmd and supplied else 0) | (0 if supplied else 16)
        return {
            "switch_cmd": self.switch_cmd,
            "dim_cmd": self.dim_cmd,
            "lamp_on": 1 if lit else 0,
            "dim_level": self.dim_cmd if lit else 0,
            "voltage": voltage,
            "current": current,
            "power": power,
            "power_factor": pf,
            "burn_hours": self.burn_hours,
            "fault_bits": fault_bits,
        }

    def snapshot(
        self, board: FaultBoard, now: float
    ) -> tuple[dict[str, float], list[dict[str, float]]]:
        """Values of a lamp on its own unit id, fed straight from the mains."""
        return self.values(NOMINAL_VOLTAGE, board, now), []

    def write_point(self, owner: int, point: str, value: float) -> None:
        """Apply a write to this controller (``owner`` is always the unit itself)."""
        self.write(point, value)

    def write(self, point: str, value: float) -> None:
        """Apply a command written to the controller."""
        if point == "switch_cmd":
            self.switch_cmd = 1 if value else 0
        elif point == "dim_cmd":
            self.dim_cmd = int(min(max(value, 0), 100))


@dataclass(frozen=True)
class TimeTableEntry:
    """One step of a cabinet's own time-control table."""

    minute: int
    circuits: int  # bitmask
    state: int
    dim: int


@dataclass
class CabinetModel:
    """A control cabinet: contactors, 3-phase meter, leakage monitor, door, lamps.

    The terminal keeps its own time-control table and runs it by its own clock
    (``wall``, local time in ``tz``), as a real one does when the centre is away.
    """

    id: str
    circuits: int
    lamps: list[LampModel]
    circuit_cmd: list[bool] = field(default_factory=list)
    energy_kwh: float = 0.0
    _last_now: float | None = None
    noise: random.Random = field(default_factory=lambda: random.Random(0))
    wall: Callable[[], float] = time.time
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    time_table: list[TimeTableEntry] = field(default_factory=list)
    _table_checked: float | None = None
    #: Seconds a contactor takes to follow its command (drawn between the two).
    contactor_delay: tuple[float, float] = (0.0, 0.0)
    _closed: list[bool] = field(default_factory=list)
    _follows_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.circuit_cmd:
            self.circuit_cmd = [True] * self.circuits
        self._closed = list(self.circuit_cmd)
        self._follows_at = [0.0] * self.circuits

    def command_circuit(self, circuit: int, state: bool) -> None:
        """Command a contactor; it follows after its delay (a real one takes 50-200 ms)."""
        if self.circuit_cmd[circuit - 1] != state:
            self._follows_at[circuit - 1] = self.wall() + self.noise.uniform(*self.contactor_delay)
        self.circuit_cmd[circuit - 1] = state

    def settling(self) -> bool:
        """Whether a contactor had yet to follow its command at the last snapshot.

        Judged by state, not by the clock: a snapshot just before a contactor's
        follow time must be followed by another one, however late it is asked.
        """
        return self._closed != self.circuit_cmd

    def load_time_table(self, words: list[int]) -> None:
        """The centre wrote the table: [minute, circuit mask, state, dim] per entry."""
        entries = []
        for k in range(0, len(words) - 3, 4):
            if words[k] == 0xFFFF:
                continue
            entries.append(TimeTableEntry(words[k], words[k + 1], words[k + 2], words[k + 3]))
        self.time_table = entries
        self._table_checked = self.wall()

    def run_time_table(self) -> None:
        """Carry out the table's steps whose time has come since the last look."""
        if not self.time_table or self._table_checked is None:
            return
        now = self.wall()
        local = datetime.fromtimestamp(now, self.tz)
        due: list[tuple[float, TimeTableEntry]] = []
        for entry in self.time_table:
            at = local.replace(
                hour=entry.minute // 60, minute=entry.minute % 60, second=0, microsecond=0
            )
            # The latest time this entry's minute of day came, at or before now.
            when = at.timestamp() if at.timestamp() <= now else (at - timedelta(days=1)).timestamp()
            if self._table_checked < when <= now:
                due.append((when, entry))
        self._table_checked = now
        for _, entry in sorted(due, key=lambda pair: pair[0]):
            for c in range(1, self.circuits + 1):
                if entry.circuits & (1 << (c - 1)):
                    self.command_circuit(c, bool(entry.state))
                    for lamp in self.lamps:
                        if lamp.circuit == c and entry.state and entry.dim:
                            lamp.switch_cmd, lamp.dim_cmd = 1, entry.dim

    def contactor_closed(self, circuit: int, board: FaultBoard, now: float) -> bool:
        """Actual contactor state (a failed contactor does not follow its command)."""
        if self.wall() >= self._follows_at[circuit - 1]:
            self._closed[circuit - 1] = self.circuit_cmd[circuit - 1]
        commanded = self._closed[circuit - 1]
        if circuit in board.circuits_with(self.id, FaultKind.CONTACTOR_FAIL, now):
            return not commanded
        return commanded

    def snapshot(
        self, board: FaultBoard, now: float
    ) -> tuple[dict[str, float], list[dict[str, float]]]:
        """Point values of the cabinet and of each lamp in slot order."""
        self.run_time_table()
        mains = board.find(self.id, FaultKind.MAINS_LOSS, now) is None
        cut = board.circuits_with(self.id, FaultKind.CIRCUIT_CUT, now)
        phase_v = {
            p: (NOMINAL_VOLTAGE + self.noise.uniform(-3, 3)) if mains else 0.0 for p in "ABC"
        }
        closed = [self.contactor_closed(c, board, now) for c in range(1, self.circuits + 1)]
        phase_i = dict.fromkeys("ABC", 0.0)
        circuit_i = [0.0] * self.circuits
        power_w = 0.0
        lamp_values = []
        for lamp in self.lamps:
            energized = mains and closed[lamp.circuit - 1] and lamp.circuit not in cut
            lv = lamp.values(phase_v[lamp.phase] if energized else 0.0, board, now)
            lamp_values.append(lv)
            phase_i[lamp.phase] += lv["current"]
            circuit_i[lamp.circuit - 1] += lv["current"]
            power_w += lv["power"]
        if self._last_now is not None and now > self._last_now:
            self.energy_kwh += power_w / 1000.0 * (now - self._last_now) / 3600.0
            for lamp, lv in zip(self.lamps, lamp_values, strict=True):
                if lv["lamp_on"]:
                    lamp.burn_hours += (now - self._last_now) / 3600.0
        self._last_now = now
        leakage = BASE_LEAKAGE_MA + self.noise.uniform(-0.3, 0.3)
        rising = board.find(self.id, FaultKind.LEAKAGE_RISING, now)
        if rising is not None:
            leakage += rising.rate * (now - rising.at) / 60.0
        total_i = sum(phase_i.values())
        values: dict[str, float] = {
            "voltage_a": phase_v["A"],
            "voltage_b": phase_v["B"],
            "voltage_c": phase_v["C"],
            "current_a": phase_i["A"] + (STANDBY_CURRENT_A if mains else 0.0),
            "current_b": phase_i["B"],
            "current_c": phase_i["C"],
            "active_power": power_w / 1000.0,
            "power_factor": (power_w / (NOMINAL_VOLTAGE * total_i)) if total_i > 0 else 1.0,
            "frequency": (50.0 + self.noise.uniform(-0.02, 0.02)) if mains else 0.0,
            "energy": self.energy_kwh,
            "leakage_current": min(leakage, 6000.0),
            "temperature": 31.5,
            "door_open": 1.0 if board.find(self.id, FaultKind.DOOR_OPEN, now) else 0.0,
            "mains_present": 1.0 if mains else 0.0,
            "surge_fault": 0.0,
            "lamp_count": len(self.lamps),
        }
        for c in range(1, self.circuits + 1):
            values[f"circuit{c}_cmd"] = 1.0 if self.circuit_cmd[c - 1] else 0.0
            values[f"circuit{c}_on"] = 1.0 if closed[c - 1] else 0.0
            values[f"circuit{c}_current"] = circuit_i[c - 1]
        return values, lamp_values

    def write_point(self, owner: int, point: str, value: float) -> None:
        """Apply a write to the cabinet (owner -1) or to the lamp in slot ``owner``."""
        if owner >= 0:
            self.lamps[owner].write(point, value)
        else:
            self.write(point, value)

    def write(self, point: str, value: float) -> None:
        """Apply a command written to the cabinet terminal."""
        if point.startswith("circuit") and point.endswith("_cmd"):
            circuit = int(point.removeprefix("circuit").removesuffix("_cmd"))
            if 1 <= circuit <= self.circuits:
                self.command_circuit(circuit, bool(value))


@dataclass
class GaugeModel:
    """A water-level gauge at a waterlogging point, following the rain events."""

    id: str
    rain: list[RainEvent]
    mount_height_m: float = 5.0
    sample_interval: int = 10
    _stuck_value: float | None = None
    _spikes_used: set[int] = field(default_factory=set)
    noise: random.Random = field(default_factory=lambda: random.Random(0))

    def true_level(self, now: float) -> float:
        """The water depth the scenario gives (overlapping storms add up)."""
        return sum(event.level(now) for event in self.rain)

    def snapshot(
        self, board: FaultBoard, now: float
    ) -> tuple[dict[str, float], list[dict[str, float]]]:
        """Point values of the gauge (it has no sub-devices)."""
        return self.values(board, now), []

    def write_point(self, owner: int, point: str, value: float) -> None:
        """Apply a setting written to the gauge."""
        self.write(point, value)

    def values(self, board: FaultBoard, now: float) -> dict[str, float]:
        """Point values as the gauge profiles name them."""
        level = self.true_level(now)
        if level > 0:
            level += self.noise.uniform(-0.003, 0.003)
        stuck = board.find(self.id, FaultKind.GAUGE_STUCK, now)
        if stuck is not None:
            if self._stuck_value is None:
                self._stuck_value = level
            level = self._stuck_value
        else:
            self._stuck_value = None
        spike = board.find(self.id, FaultKind.GAUGE_SPIKE, now)
        if spike is not None and id(spike) not in self._spikes_used:
            # A spike is one bad sample: the next read is back to normal.
            self._spikes_used.add(id(spike))
            level += spike.magnitude
        return {
            "water_level": level,
            "distance": self.mount_height_m - level,
            "sensor_status": 0,
            "supply_voltage": 12.6,
            "battery_voltage": 3.62,
            "temperature": 27.0,
            "sample_interval": self.sample_interval,
        }

    def write(self, point: str, value: float) -> None:
        """Apply a setting written to the gauge."""
        if point == "sample_interval":
            self.sample_interval = int(value)
