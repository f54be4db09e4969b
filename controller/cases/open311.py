"""Open311 GeoReport v2: cases as service requests, categories as services (pure mapping).

Only ``closed`` and ``open`` exist there: a closed or evaluated case is
``closed``, and so is a rejected one (with the reason in ``status_notes``, so
the citizen is told); every other stage is ``open``. The due time is the
``expected_datetime``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from controller.cases.config import CaseCategory
from controller.cases.db import CaseRow, TransitionRow
from controller.cases.stages import Stage

_CLOSED = {Stage.CLOSED.value, Stage.EVALUATED.value, Stage.REJECTED.value}
#: The stages behind each GeoReport status, so a status filter runs in the query.
STAGES_OF_STATUS = {
    "closed": frozenset(_CLOSED),
    "open": frozenset(s.value for s in Stage) - _CLOSED,
}


def _iso(ts: float | None, tz: ZoneInfo) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def service(category: CaseCategory) -> dict[str, Any]:
    """A category as an Open311 service."""
    return {
        "service_code": category.id,
        "service_name": category.name,
        "description": f"{category.name} ({category.kind} {category.code}/{category.subcode})",
        # Each service's definition (services/{code}) lists its attributes; none so far.
        "metadata": True,
        "type": "realtime",
        "keywords": category.kind,
        "group": "部件" if category.kind == "component" else "事件",
    }


def status_notes(row: CaseRow, last: TransitionRow | None) -> str:
    """What the citizen is told about where the case is."""
    if row.stage == Stage.REJECTED.value:
        return f"not accepted: {last.note}" if last and last.note else "not accepted"
    text = row.stage.replace("_", " ")
    if row.department and row.stage not in (Stage.AWAITING_ACCEPTANCE.value,):
        text += f" ({row.department})"
    if last is not None and last.note and last.action != "report":
        text += f": {last.note}"
    return text


def service_request(
    row: CaseRow, category: CaseCategory | None, last: TransitionRow | None, tz: ZoneInfo
) -> dict[str, Any]:
    """A case as an Open311 service request."""
    return {
        "service_request_id": str(row.id),
        "status": "closed" if row.stage in _CLOSED else "open",
        "status_notes": status_notes(row, last),
        "service_name": category.name if category else row.category,
        "service_code": row.category,
        "description": row.description or row.title,
        "agency_responsible": row.department,
        "service_notice": "",
        "requested_datetime": _iso(row.reported_at, tz),
        "updated_datetime": _iso(row.updated_at, tz),
        "expected_datetime": _iso(row.due_at, tz),
        "address": row.address,
        "address_id": row.component_id,
        "zipcode": None,
        # 0/0 is how an unknown position is stored: the spec leaves it out instead.
        "lat": row.lat if (row.lat or row.lon) else None,
        "long": row.lon if (row.lat or row.lon) else None,
        "media_url": row.media[0] if row.media else None,
    }


def definition(category: CaseCategory) -> dict[str, Any]:
    """A service definition: the extra attributes a request for it can carry (none yet)."""
    return {"service_code": category.id, "attributes": []}
