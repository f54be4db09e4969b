"""Rule configuration: which condition, on which points of which devices, with what limits.

Each rule has a kind, parameters, and a selector of its targets. The engine
compiles them into arrays for the numba kernels (``rules/compile.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.device_class import DeviceClass

Severity = Literal["low", "medium", "high", "urgent"]
LEVEL_NAMES = ("blue", "yellow", "orange", "red")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Selector(_Strict):
    """Which devices a rule watches; every given key must match."""

    device_class: DeviceClass | None = None
    devices: list[str] | None = None
    profile: str | None = None
    grid: str | None = None
    road: str | None = None
    district: str | None = None


class _RuleBase(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    select: Selector = Selector()
    severity: Severity = "medium"
    #: Raise a case for the city's dispatch workflow when this alarm is active.
    case: bool = False
    #: Rules whose alarms on the same device this one mutes while active (a lost supply
    #: mutes the under-voltage alarms it causes).
    inhibits: list[str] = []


class QualityChecks(_Strict):
    """Data quality before alarms: readings outside the range are bad, sudden jumps suspect."""

    valid_min: float | None = None
    valid_max: float | None = None
    #: A jump beyond this from the last good reading is a spike, unless the next one confirms it.
    max_jump: float | None = Field(default=None, gt=0)


class ThresholdRule(_RuleBase):
    """A point against one or more limits, with deadband and on/off delays.

    ``direction: high`` raises when the value reaches a limit (water levels,
    leakage, over-voltage); ``low`` when it falls to one (under-voltage, low
    power factor, mains lost). With ``levels_from_device``, each gauge's own
    blue/yellow/orange/red levels from config.yaml are the limits.
    """

    kind: Literal["threshold"]
    point: str
    direction: Literal["high", "low"] = "high"
    limits: list[float] = []
    levels_from_device: bool = False
    deadband: float = Field(default=0.0, ge=0)
    on_delay: float = Field(default=0.0, ge=0)
    off_delay: float = Field(default=0.0, ge=0)
    quality: QualityChecks = QualityChecks()
    #: Severity per level (1-based) where it differs from ``severity``.
    level_severity: list[Severity] = []

    @model_validator(mode="after")
    def _check(self) -> ThresholdRule:
        if not self.levels_from_device and not self.limits:
            raise ValueError("give limits, or levels_from_device: true")
        if len(self.limits) > 4:
            raise ValueError("at most 4 limits (levels)")
        ordered = (
            sorted(self.limits) if self.direction == "high" else sorted(self.limits, reverse=True)
        )
        if self.limits != ordered:
            raise ValueError(
                f"limits must {'rise' if self.direction == 'high' else 'fall'} level by level"
            )
        return self


class RateRule(_RuleBase):
    """A point rising by ``rise`` or more within ``window`` seconds (spikes filtered)."""

    kind: Literal["rate_of_change"]
    point: str
    rise: float = Field(gt=0)
    window: float = Field(gt=0)
    quality: QualityChecks = QualityChecks()


class StuckRule(_RuleBase):
    """No change beyond ``tolerance`` over ``samples`` readings, while above ``min_value``."""

    kind: Literal["stuck"]
    point: str
    samples: int = Field(ge=2, le=100_000)
    tolerance: float = Field(default=0.0, ge=0)
    min_value: float = float("-inf")


class CommLossRule(_RuleBase):
    """No valid reading for ``intervals`` poll intervals."""

    kind: Literal["comm_loss"]
    intervals: float = Field(default=3.0, gt=0)


class LampFailureRule(_RuleBase):
    """Lamp commanded on and supplied, but drawing less than ``share`` of its expected power."""

    kind: Literal["lamp_failure"]
    share: float = Field(default=0.3, gt=0, lt=1)


class LampPowerRule(_RuleBase):
    """Lamp power off its expected value (rated x dim level, plus driver loss) by ``tolerance``."""

    kind: Literal["lamp_power"]
    tolerance: float = Field(default=0.25, gt=0)
    driver_loss: float = Field(default=0.03, ge=0)
    share: float = Field(default=0.3, gt=0, lt=1, description="below this it is a lamp failure")


class LampCyclingRule(_RuleBase):
    """Lamp switching on and off ``transitions`` times within ``window`` seconds."""

    kind: Literal["lamp_cycling"]
    transitions: int = Field(default=4, ge=2, le=16)
    window: float = Field(default=600.0, gt=0)


class DayBurningRule(_RuleBase):
    """Lamp lit in daylight (between sunrise + margin and sunset - margin at its location)."""

    kind: Literal["day_burning"]
    margin_minutes: float = Field(default=30.0, ge=0)


class CircuitBreakRule(_RuleBase):
    """Circuit commanded on and closed, lamps on it, but its current about zero: cut cable or theft.

    One alarm for the circuit; it mutes the alarms of the lamps it feeds.
    """

    kind: Literal["circuit_break"]
    min_current: float = Field(default=0.2, gt=0)


class ContactorRule(_RuleBase):
    """Commanded and actual contactor state of a circuit differ.

    A cabinet whose circuit feedback is its own coil (no auxiliary contact) has
    no actual state to read: there the circuit counts as closed while its
    current is at least ``min_current``.
    """

    kind: Literal["contactor"]
    on_delay: float = Field(default=0.0, ge=0)
    min_current: float = Field(default=0.2, gt=0)


RuleConfig = Annotated[
    ThresholdRule
    | RateRule
    | StuckRule
    | CommLossRule
    | LampFailureRule
    | LampPowerRule
    | LampCyclingRule
    | DayBurningRule
    | CircuitBreakRule
    | ContactorRule,
    Field(discriminator="kind"),
]


class FloodWatchConfig(_Strict):
    """Storm mode: when a gauge reaches ``trigger_level`` or rises fast, poll its area faster."""

    area_by: Literal["grid", "district", "road"] = "district"
    trigger_level: int = Field(default=2, ge=1, le=4, description="1 blue .. 4 red")
    storm_interval: float = Field(default=2.0, gt=0)
    level_rules: list[str] = []
    rate_rules: list[str] = []


class AlarmsConfig(_Strict):
    """Alarm handling: persistence, chattering and flood detection."""

    path: str = "alarms.db"
    chatter_transitions: int = Field(default=3, ge=2)
    chatter_window: float = Field(default=60.0, gt=0)
    flood_count: int = Field(default=10, ge=1)
    flood_window: float = Field(default=600.0, gt=0)
    flood_area_by: Literal["grid", "district", "road"] = "district"
