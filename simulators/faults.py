"""Faults a simulated city can suffer, by scenario file or injected at run time."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.errors import ConfigError, invalid_file


class FaultKind(StrEnum):
    """What can go wrong in the field."""

    LAMP_BURNT_OUT = "lamp_burnt_out"
    LAMP_STUCK_ON = "lamp_stuck_on"
    CIRCUIT_CUT = "circuit_cut"
    CONTACTOR_FAIL = "contactor_fail"
    LEAKAGE_RISING = "leakage_rising"
    DOOR_OPEN = "door_open"
    MAINS_LOSS = "mains_loss"
    DEVICE_SILENT = "device_silent"
    GARBLED = "garbled"
    SLOW = "slow"
    GAUGE_STUCK = "gauge_stuck"
    GAUGE_SPIKE = "gauge_spike"
    # SL651 stations that dial in (device_silent applies too: the station stops reporting).
    BAD_CRC = "bad_crc"
    TRUNCATED = "truncated"
    WRONG_PASSWORD = "wrong_password"
    DUPLICATE_RESEND = "duplicate_resend"
    CLOCK_DRIFT = "clock_drift"
    RECONNECT_STORM = "reconnect_storm"


#: Faults that act on how a unit answers, not on what it measures.
COMMUNICATION_FAULTS = frozenset({FaultKind.DEVICE_SILENT, FaultKind.GARBLED, FaultKind.SLOW})


class FaultSpec(BaseModel):
    """One fault on one device, active from ``at`` until ``until`` (simulated seconds)."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    device: str
    circuit: int | None = Field(default=None, ge=1, le=32)
    at: float = Field(default=0.0, ge=0)
    until: float | None = None
    #: leakage_rising: mA per simulated minute.
    rate: float = Field(default=5.0, gt=0)
    #: slow: extra seconds before the answer.
    delay: float = Field(default=2.0, ge=0)
    #: gauge_spike: metres added to one sample.
    magnitude: float = 1.5
    #: clock_drift: seconds the station's clock is ahead (negative: behind).
    offset: float = 900.0

    @model_validator(mode="after")
    def _check(self) -> FaultSpec:
        if self.kind in (FaultKind.CIRCUIT_CUT, FaultKind.CONTACTOR_FAIL) and self.circuit is None:
            raise ValueError(f"{self.kind.value} needs circuit")
        if self.until is not None and self.until <= self.at:
            raise ValueError("until must be after at")
        return self

    def active(self, now: float) -> bool:
        """Whether the fault is in force at simulated time ``now``."""
        return self.at <= now and (self.until is None or now < self.until)


class RainEvent(BaseModel):
    """A storm at some gauges: water rises to ``peak_m``, holds, then drains away."""

    model_config = ConfigDict(extra="forbid")

    gauges: list[str] | None = Field(default=None, description="gauge ids; none means all")
    start: float = Field(default=0.0, ge=0)
    rise: float = Field(default=1800.0, gt=0)
    peak_m: float = Field(default=0.4, ge=0)
    hold: float = Field(default=1200.0, ge=0)
    recede: float = Field(default=3600.0, gt=0)

    def level(self, now: float) -> float:
        """Water above the road datum from this event at simulated time ``now``."""
        t = now - self.start
        if t <= 0:
            return 0.0
        if t < self.rise:
            x = t / self.rise
            return self.peak_m * x * x * (3 - 2 * x)  # smooth rise, fastest mid-storm
        t -= self.rise
        if t < self.hold:
            return self.peak_m
        t -= self.hold
        if t < self.recede:
            x = t / self.recede
            return self.peak_m * (1 - x) * (1 - x)  # drains fast, then slowly
        return 0.0


class Scenario(BaseModel):
    """A scenario file: rain events and scheduled faults."""

    model_config = ConfigDict(extra="forbid")

    rain: list[RainEvent] = []
    faults: list[FaultSpec] = []


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    try:
        return Scenario.model_validate(raw or {})
    except ValidationError as exc:
        raise invalid_file(str(path), exc, raw) from exc


class FaultBoard:
    """The faults in force, by device, consulted by the models and the servers."""

    def __init__(self, faults: list[FaultSpec] | None = None) -> None:
        self._by_device: dict[str, list[FaultSpec]] = {}
        for fault in faults or []:
            self.add(fault)

    def add(self, fault: FaultSpec) -> None:
        """Schedule or inject a fault."""
        self._by_device.setdefault(fault.device, []).append(fault)

    def clear(self, device: str, kind: FaultKind | None = None) -> int:
        """Remove a device's faults (of one kind, or all); returns how many."""
        faults = self._by_device.get(device, [])
        keep = [f for f in faults if kind is not None and f.kind is not kind]
        self._by_device[device] = keep
        return len(faults) - len(keep)

    def find(self, device: str, kind: FaultKind, now: float) -> FaultSpec | None:
        """The first fault of ``kind`` in force on ``device`` at ``now``."""
        for fault in self._by_device.get(device, ()):
            if fault.kind is kind and fault.active(now):
                return fault
        return None

    def circuits_with(self, device: str, kind: FaultKind, now: float) -> set[int]:
        """Circuits of a cabinet with a fault of ``kind`` in force."""
        return {
            f.circuit
            for f in self._by_device.get(device, ())
            if f.kind is kind and f.active(now) and f.circuit is not None
        }

    def all(self) -> list[FaultSpec]:
        """Every fault on the board."""
        return [f for faults in self._by_device.values() for f in faults]
