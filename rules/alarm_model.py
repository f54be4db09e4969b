"""The alarm model: an alarm, its condition, the notice of a transition, where alarms are kept.

The condition state of an alarm is one of: normal (closed), active and
unacknowledged, active and acknowledged, returned (condition gone) and
unacknowledged. Orthogonal to it an alarm can be shelved (until a time),
suppressed (by inhibition: its device is offline, or the circuit feeding a
lamp is cut) or out of service. Shelved, suppressed and out-of-service
alarms keep being evaluated and recorded, but do not notify.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from drivers.errors import Conflict, PeopleMessage

SENSOR_FAULT = "sensor_fault"
_SEVERITY_ORDER = ("low", "medium", "high", "urgent")


class Condition(StrEnum):
    """The condition part of an alarm's state."""

    NORMAL = "normal"
    ACTIVE_UNACK = "active_unacknowledged"
    ACTIVE_ACK = "active_acknowledged"
    RETURNED_UNACK = "returned_unacknowledged"


@dataclass
class Alarm:
    """One alarm: what, where, how bad, and its history."""

    id: int
    rule: str
    kind: str
    device: str
    device_class: str
    sub: int
    point: str
    severity: str
    level: int
    level_name: str
    condition: Condition
    value: float | None
    limit: float | None
    raised_at: float
    last_seen: float
    count: int = 1
    acked_at: float | None = None
    acked_by: str | None = None
    cleared_at: float | None = None
    closed_at: float | None = None
    shelved_until: float | None = None
    shelved_by: str | None = None
    suppressed_by: str | None = None
    out_of_service: bool = False
    chattering: bool = False
    grid: str = ""
    road: str = ""
    district: str = ""
    cabinet: str = ""
    circuit: int | None = None
    lat: float = 0.0
    lon: float = 0.0
    case: bool = False
    transitions: list[float] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, int]:
        """What makes an alarm the same alarm: rule, device, sub."""
        return (self.rule, self.device, self.sub)

    @property
    def active(self) -> bool:
        """The condition holds now."""
        return self.condition in (Condition.ACTIVE_UNACK, Condition.ACTIVE_ACK)

    def state_at(self, now: float) -> str:
        """The state an operator sees at ``now`` (the manager's clock, not the wall's):
        the shelving/suppression overlay, else the condition."""
        if self.out_of_service:
            return "out_of_service"
        if self.shelved_until is not None and self.shelved_until > now:
            return "shelved"
        if self.suppressed_by:
            return "suppressed"
        return self.condition.value

    def notifies_at(self, now: float) -> bool:
        """Whether a transition of this alarm is announced at ``now``."""
        return self.state_at(now) not in ("out_of_service", "shelved", "suppressed")


@dataclass(frozen=True)
class AlarmNotice:
    """A transition announced to subscribers (MQTT, cases, storm mode)."""

    alarm: Alarm
    transition: str  # raised, escalated, returned, cleared, acknowledged, shelved, ...


NoticeHandler = Callable[[AlarmNotice], Awaitable[None]]


class AlarmStorage(Protocol):
    """Where the manager keeps alarms (the controller gives it a database)."""

    async def open(self) -> list[Alarm]:
        """Open the storage; returns the alarms that were open."""
        ...

    async def save(self, alarms: list[Alarm]) -> None:
        """Insert or update these alarms."""
        ...

    async def next_id(self) -> int:
        """One more than the highest id ever used."""
        ...

    async def close(self) -> None:
        """Close the storage."""
        ...


class AlarmError(Conflict):
    """An operator action that does not fit the alarm's state."""


class AlarmRefused(NamedTuple):
    """An alarm a bulk action left alone: why, and the same in the catalogue's words."""

    id: int
    reason: str
    message: PeopleMessage


@dataclass
class AlarmBatch:
    """What one bulk action did: the alarms changed, and each refused id with its reason."""

    done: list[Alarm] = field(default_factory=list)
    refused: list[AlarmRefused] = field(default_factory=list)


def alarm_payload(alarm: Alarm, now: float) -> dict[str, Any]:
    """The JSON form of an alarm (MQTT, webhooks), its state as of ``now``."""
    data = asdict(alarm)
    data.pop("transitions")
    data["condition"] = alarm.condition.value
    data["state"] = alarm.state_at(now)
    return data


def severity_rank(severity: str) -> int:
    """0 for low .. 3 for urgent."""
    return _SEVERITY_ORDER.index(severity) if severity in _SEVERITY_ORDER else 1
