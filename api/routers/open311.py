"""Open311 GeoReport v2 (JSON): services, service requests, and citizens' reports coming in.

Existing civic tools read cases here; a hotline or app system with an API key
(any role; ``reporter`` keys may do nothing else) creates requests, which
arrive as cases awaiting acceptance. Errors use GeoReport's shape:
``[{"code": 400, "description": "..."}]``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api.auth import read_guard
from api.bounds import row_id
from api.deps import ControllerDep
from controller.cases.db import CaseRow
from controller.cases.open311 import service, service_request
from controller.cases.service import CaseError, NewCase
from controller.control.audit import Actor
from controller.runtime import Controller

router = APIRouter(
    prefix="/open311/v2", tags=["open311"], dependencies=[Depends(read_guard("open311"))]
)


def _error(status: int, description: str) -> JSONResponse:
    return JSONResponse([{"code": status, "description": description}], status_code=status)


def _jurisdiction_ok(controller: Controller, jurisdiction_id: str | None) -> bool:
    return jurisdiction_id in (None, controller.loaded.config.cases.jurisdiction_id)


@router.get("/services.json", response_model=None)
def list_services(
    controller: ControllerDep, jurisdiction_id: str | None = None
) -> list[dict[str, Any]] | JSONResponse:
    """The categories a request can be made for."""
    if not _jurisdiction_ok(controller, jurisdiction_id):
        return _error(404, f"unknown jurisdiction_id {jurisdiction_id}")
    return [service(c) for c in controller.cases.config.categories]


async def _as_request(controller: Controller, row: CaseRow) -> dict[str, Any]:
    history = await controller.cases.history(row.id)
    category = controller.cases.categories.get(row.category)
    return service_request(
        row, category, history[-1] if history else None, controller.loaded.config.site.tz
    )


@router.get("/requests.json", response_model=None)
async def list_requests(
    controller: ControllerDep,
    service_request_id: str | None = None,
    service_code: str | None = None,
    status: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> list[dict[str, Any]] | JSONResponse:
    """Service requests, newest first (GeoReport filters; default the last 90 days)."""
    if service_request_id:
        ids = [i.strip() for i in service_request_id.split(",") if i.strip()]
        out = []
        for raw in ids:
            if row_id(raw) is not None:
                try:
                    row = await controller.cases.get(int(raw))
                except CaseError:
                    continue
                out.append(await _as_request(controller, row))
        return out
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is not None and value.tzinfo is None:
            return _error(400, f"{name} needs a time zone (W3C format)")
    rows = await controller.cases.find(
        category=service_code,
        since=start_date.timestamp() if start_date else None,
        until=end_date.timestamp() if end_date else None,
        limit=limit,
    )
    wanted = {s.strip() for s in status.split(",")} if status else None
    out = []
    for row in rows:
        request = await _as_request(controller, row)
        if wanted is None or request["status"] in wanted:
            out.append(request)
    return out


@router.get("/requests/{request_id}.json", response_model=None)
async def get_request(
    request_id: str, controller: ControllerDep
) -> list[dict[str, Any]] | JSONResponse:
    """One service request (GeoReport answers with a list of one)."""
    wanted = row_id(request_id)
    if wanted is None:
        return _error(404, f"no service request {request_id[:40]}")
    try:
        row = await controller.cases.get(wanted)
    except CaseError as exc:
        return _error(exc.status, exc.reason)
    return [await _as_request(controller, row)]


@router.post("/requests.json", response_model=None)
async def create_request(request: Request, controller: ControllerDep) -> Any:
    """A citizen's report: form-encoded (as GeoReport) or JSON, with ``api_key``."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            payload = await request.json()
        except ValueError:
            return _error(400, "body is not valid JSON")
        if not isinstance(payload, dict):
            return _error(400, "body must be a JSON object")
        fields = {str(k): v for k, v in payload.items()}
    else:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    key = fields.get("api_key") or request.headers.get("x-api-key")
    principal = request.app.state.keys.verify(str(key)) if key else None
    if principal is None:
        return _error(403, "a valid api_key is required to create requests")
    if not _jurisdiction_ok(controller, fields.get("jurisdiction_id")):
        return _error(404, f"unknown jurisdiction_id {fields.get('jurisdiction_id')}")
    code = str(fields.get("service_code") or "")
    if code not in controller.cases.categories:
        return _error(400, f"service_code {code!r} is not a service (see services.json)")
    try:
        lat = float(fields["lat"]) if fields.get("lat") not in (None, "") else None
        lon = float(fields["long"]) if fields.get("long") not in (None, "") else None
    except (TypeError, ValueError):
        return _error(400, "lat and long must be numbers")
    address = str(fields.get("address_string") or "")
    if (lat is None or lon is None) and not address and not fields.get("address_id"):
        return _error(400, "give lat and long, address_string or address_id")
    if (lat is not None and not -90 <= lat <= 90) or (lon is not None and not -180 <= lon <= 180):
        return _error(400, "lat or long out of range")
    description = str(fields.get("description") or "")[:4000]
    who = (
        " ".join(str(fields[k]) for k in ("first_name", "last_name") if fields.get(k))
        or principal.name
    )
    media = [str(fields["media_url"])] if fields.get("media_url") else []
    category = controller.cases.categories[code]
    new = NewCase(
        source="open311",
        category=code,
        severity="medium",
        title=f"{category.name}: {description[:60]}" if description else category.name,
        description=description,
        component_id=str(fields.get("address_id") or ""),
        lat=lat or 0.0,
        lon=lon or 0.0,
        address=address,
        media=media,
        reporter=who,
    )
    actor = Actor(principal.name, principal.key_id, principal.role.value)
    row = await controller.cases.open_case(new, actor)
    return JSONResponse(
        [
            {
                "service_request_id": str(row.id),
                "service_notice": "received; it awaits acceptance by the command centre",
                "account_id": None,
            }
        ],
        status_code=201,
    )
