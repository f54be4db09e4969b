"""Open311 GeoReport v2: services, their definitions, service requests, and citizens' reports.

Existing civic tools read cases here, in JSON or XML (``.json`` / ``.xml`` on
every path); a hotline or app system with an API key (any role; ``reporter``
keys may do nothing else) creates requests, which arrive as cases awaiting
acceptance. Every call honours ``jurisdiction_id``. Errors use GeoReport's
shape: ``[{"code": 400, "description": "..."}]`` or ``<errors><error>``.

Contact details a request carries (name, email, phone, device and account
ids) are stored with the case and shown only to the command centre; no
GeoReport read returns them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.auth import read_guard
from api.bounds import row_id
from api.deps import ControllerDep
from api.errors import GeoReportError, declared, status_of
from api.open311_format import Format, answer, error
from controller.cases.db import CaseRow
from controller.cases.open311 import STAGES_OF_STATUS, definition, service, service_request
from controller.cases.requests import CaseError, NewCase
from controller.control.audit import Actor
from controller.runtime import Controller

router = APIRouter(
    prefix="/open311/v2",
    tags=["open311"],
    dependencies=[Depends(read_guard("open311"))],
    responses=declared((400, 401, 403, 404, 405, 413, 429), list[GeoReportError], ("text/xml",)),
)

#: Without start_date and end_date, GeoReport answers the last 90 days.
DEFAULT_WINDOW = 90 * 86400.0
#: Contact fields of a request: stored with the case, shown only to the command centre.
CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "device_id", "account_id")
_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "GeoReport JSON, or XML for .xml",
        "content": {"application/json": {}, "text/xml": {}},
    }
}


class Open311RequestIn(BaseModel):
    """A GeoReport v2 service request (form fields, or the same keys in JSON)."""

    api_key: str | None = None
    jurisdiction_id: str | None = None
    service_code: str
    lat: float | None = None
    long: float | None = None
    address_string: str | None = None
    address_id: str | None = Field(default=None, description="a pole number (杆号)")
    description: str | None = None
    media_url: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    device_id: str | None = None
    account_id: str | None = None


_BODY_SCHEMA = Open311RequestIn.model_json_schema()
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _BODY_SCHEMA},
            "application/json": {"schema": _BODY_SCHEMA},
        },
    }
}


def _wrong_jurisdiction(controller: Controller, jurisdiction_id: str | None) -> bool:
    return jurisdiction_id not in (None, "", controller.loaded.config.cases.jurisdiction_id)


def _no_jurisdiction(fmt: Format, jurisdiction_id: str | None) -> Response:
    return error(fmt, 404, f"unknown jurisdiction_id {str(jurisdiction_id)[:40]}")


def _commas(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


@router.get("/services.{fmt}", response_class=Response, responses=_ANSWERS)
def list_services(
    fmt: Format, controller: ControllerDep, jurisdiction_id: str | None = None
) -> Response:
    """The categories a request can be made for."""
    if _wrong_jurisdiction(controller, jurisdiction_id):
        return _no_jurisdiction(fmt, jurisdiction_id)
    return answer(fmt, "services", [service(c) for c in controller.cases.config.categories])


@router.get("/services/{service_code}.{fmt}", response_class=Response, responses=_ANSWERS)
def service_definition(
    service_code: str, fmt: Format, controller: ControllerDep, jurisdiction_id: str | None = None
) -> Response:
    """A service's definition: the attributes a request for it may carry."""
    if _wrong_jurisdiction(controller, jurisdiction_id):
        return _no_jurisdiction(fmt, jurisdiction_id)
    category = controller.cases.categories.get(service_code)
    if category is None:
        return error(fmt, 404, f"no service {service_code[:40]}")
    return answer(fmt, "definition", definition(category))


async def _as_request(controller: Controller, row: CaseRow) -> dict[str, Any]:
    history = await controller.cases.history(row.id)
    category = controller.cases.categories.get(row.category)
    return service_request(
        row, category, history[-1] if history else None, controller.loaded.config.site.tz
    )


@router.get("/requests.{fmt}", response_class=Response, responses=_ANSWERS)
async def list_requests(
    fmt: Format,
    controller: ControllerDep,
    jurisdiction_id: str | None = None,
    service_request_id: str | None = None,
    service_code: str | None = None,
    status: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> Response:
    """Service requests, newest first; every filter takes a comma list; the last 90 days
    unless start_date or end_date say otherwise."""
    if _wrong_jurisdiction(controller, jurisdiction_id):
        return _no_jurisdiction(fmt, jurisdiction_id)
    if service_request_id:
        out = []
        for raw in _commas(service_request_id) or []:
            wanted = row_id(raw)
            if wanted is None:
                continue
            try:
                row = await controller.cases.get(wanted)
            except CaseError:
                continue
            out.append(await _as_request(controller, row))
        return answer(fmt, "requests", out)
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is not None and value.tzinfo is None:
            return error(fmt, 400, f"{name} needs a time zone (W3C format)")
    statuses = _commas(status)
    if statuses is not None and (unknown := set(statuses) - STAGES_OF_STATUS.keys()):
        return error(fmt, 400, f"status {sorted(unknown)[0][:20]!r}: use open or closed")
    stages = {s for st in statuses for s in STAGES_OF_STATUS[st]} if statuses else None
    until = end_date.timestamp() if end_date else None
    since = start_date.timestamp() if start_date else None
    if since is None and until is None:
        since = time.time() - DEFAULT_WINDOW
    rows = await controller.cases.find(
        categories=_commas(service_code),
        stages=stages,
        since=since,
        until=until,
        limit=limit,
    )
    return answer(fmt, "requests", [await _as_request(controller, row) for row in rows])


@router.get("/requests/{request_id}.{fmt}", response_class=Response, responses=_ANSWERS)
async def get_request(
    request_id: str, fmt: Format, controller: ControllerDep, jurisdiction_id: str | None = None
) -> Response:
    """One service request (GeoReport answers with a list of one)."""
    if _wrong_jurisdiction(controller, jurisdiction_id):
        return _no_jurisdiction(fmt, jurisdiction_id)
    wanted = row_id(request_id)
    if wanted is None:
        return error(fmt, 404, f"no service request {request_id[:40]}")
    try:
        row = await controller.cases.get(wanted)
    except CaseError as exc:
        return error(fmt, status_of(exc), exc.reason)
    return answer(fmt, "requests", [await _as_request(controller, row)])


async def _fields(request: Request) -> Mapping[str, Any] | str:
    """The request's fields (form or JSON); a reason when the body is not one."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            payload = await request.json()
        except ValueError:
            return "body is not valid JSON"
        if not isinstance(payload, dict):
            return "body must be a JSON object"
        return {str(k): v for k, v in payload.items()}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post(
    "/requests.{fmt}",
    response_class=Response,
    status_code=201,
    openapi_extra=_REQUEST_BODY,
    responses={201: _ANSWERS[200]},
)
async def create_request(fmt: Format, request: Request, controller: ControllerDep) -> Response:
    """A citizen's report: form-encoded (as GeoReport) or JSON, with ``api_key`` in the
    body, the query or the X-API-Key header."""
    fields = await _fields(request)
    if isinstance(fields, str):
        return error(fmt, 400, fields)
    key = (
        fields.get("api_key")
        or request.query_params.get("api_key")
        or request.headers.get("x-api-key")
    )
    principal = await request.app.state.keys.verify(str(key)) if key else None
    if principal is None:
        return error(fmt, 403, "a valid api_key is required to create requests")
    jurisdiction = fields.get("jurisdiction_id") or request.query_params.get("jurisdiction_id")
    if _wrong_jurisdiction(controller, jurisdiction):
        return _no_jurisdiction(fmt, jurisdiction)
    code = str(fields.get("service_code") or "")
    if code not in controller.cases.categories:
        return error(fmt, 400, f"service_code {code[:40]!r} is not a service (see services)")
    try:
        lat = float(fields["lat"]) if fields.get("lat") not in (None, "") else None
        lon = float(fields["long"]) if fields.get("long") not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return error(fmt, 400, "lat and long must be numbers")
    if (lat is not None and not -90 <= lat <= 90) or (lon is not None and not -180 <= lon <= 180):
        return error(fmt, 400, "lat or long out of range")
    address = str(fields.get("address_string") or "")[:300]
    address_id = str(fields.get("address_id") or "")[:64]
    if (lat is None or lon is None) and address_id:
        # A pole number read off the pole: its position is in the asset register.
        pole = await controller.assets.get(address_id)
        if pole is not None:
            lat, lon = pole.lat, pole.lon
            address = address or pole.road
    if (lat is None or lon is None) and not address and not address_id:
        return error(fmt, 400, "give lat and long, address_string or address_id")
    description = str(fields.get("description") or "")[:4000]
    contact = {k: str(fields[k])[:100] for k in CONTACT_FIELDS if fields.get(k)}
    who = " ".join(contact[k] for k in ("first_name", "last_name") if k in contact)
    media = [str(fields["media_url"])[:500]] if fields.get("media_url") else []
    category = controller.cases.categories[code]
    new = NewCase(
        source="open311",
        category=code,
        severity="medium",
        title=f"{category.name}: {description[:60]}" if description else category.name,
        description=description,
        component_id=address_id,
        lat=lat or 0.0,
        lon=lon or 0.0,
        address=address,
        media=media,
        # The case shows which system reported it; the citizen's name is contact data.
        reporter=principal.name,
        contact=contact | ({"name": who} if who else {}),
    )
    actor = Actor(principal.name, principal.key_id, principal.role.value)
    row = await controller.cases.open_case(new, actor)
    receipt = {
        "service_request_id": str(row.id),
        "service_notice": "received; it awaits acceptance by the command centre",
        "account_id": contact.get("account_id"),
    }
    return answer(fmt, "requests", [receipt], status=201)
