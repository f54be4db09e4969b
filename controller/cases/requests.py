"""What a caller asks of the case service, and the errors it may get back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.cases.stages import CaseAction
from controller.control.audit import Actor
from drivers.errors import Conflict, Invalid, NotFound, PeopleMessage, StreetsenseError

#: Who the case records name for what the controller does by itself, and for what
#: telemetry decides (a fault back, a fault gone, a fault worse).
SYSTEM = Actor("streetsense", "", "system")
TELEMETRY = Actor("telemetry", "", "system")


class CaseError(StreetsenseError):
    """A case request that cannot be done."""


def no_case(case_id: int) -> PeopleMessage:
    """The catalogue's words for a case that does not exist."""
    return PeopleMessage("refusal.no_case", {"case": case_id})


class CaseNotFound(CaseError, NotFound):
    """No case of that id."""


class CaseConflict(CaseError, Conflict):
    """The case's stage or its fault does not allow the action now."""


class CaseInvalid(CaseError, Invalid):
    """The request lacks what the action needs (a note, a department, a later due time)."""


@dataclass
class NewCase:
    """What is known of a case when it is reported."""

    source: str
    category: str
    severity: str
    title: str
    description: str = ""
    component_id: str = ""
    device_id: str = ""
    fault_key: str = ""
    grid: str = ""
    road: str = ""
    district: str = ""
    lat: float = 0.0
    lon: float = 0.0
    address: str = ""
    admin_code: str = ""
    street_code: str = ""
    community_code: str = ""
    media: list[str] = field(default_factory=list)
    reporter: str = ""
    #: Personal contact details of the citizen who reported it (see CaseRow.contact).
    contact: dict[str, str] = field(default_factory=dict)
    alarm_ids: list[int] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    department: str = ""


@dataclass(frozen=True)
class TransitionRequest:
    """An action on a case with what it needs."""

    action: CaseAction
    note: str = ""
    department: str | None = None
    assignee: str | None = None
    due_at: float | None = None
    #: close (or verify) a sensor case although its fault is still active; needs a note.
    force: bool = False
