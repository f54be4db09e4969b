"""Cases: the city-management closed loop, statistics, export and webhook status."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from api.auth import DUTIES, Reader, Supervisor, may, read_guard, require
from api.bounds import Offset, RowId, check_span
from api.deps import CasesDep, ControllerDep
from api.errors import refused
from api.keys import Principal
from api.schemas import (
    CaseActionIn,
    CaseDetailOut,
    CaseFiguresOut,
    CaseIn,
    CasePhotoOut,
    DepartmentsOut,
    WebhookStatusOut,
)
from controller.cases.exchange import CaseExport, CaseRecord, CaseWithHistory, TransitionRecord
from controller.cases.photos import CasePhoto
from controller.cases.requests import NewCase, TransitionRequest
from controller.cases.stages import CaseAction
from controller.cases.statistics import CaseGroupBy, case_report
from controller.control.audit import Actor
from controller.statistics import Period

router = APIRouter(prefix="/cases", tags=["cases"], dependencies=[Depends(read_guard("cases"))])

#: Anyone who works cases: the centre, and the departments' engineers and flood duty staff.
CaseWorker = Annotated[Principal, Depends(require(*DUTIES["cases_work"]))]
CENTRE_ACTIONS = {
    CaseAction.ACCEPT,
    CaseAction.REJECT,
    CaseAction.FILE,
    CaseAction.DISPATCH,
    CaseAction.EXTEND,
    CaseAction.CLOSE,
    CaseAction.PASS_VERIFICATION,
    CaseAction.FAIL_VERIFICATION,
    CaseAction.START_VERIFICATION,
}


def _actor(principal: Principal) -> Actor:
    return Actor(principal.name, principal.key_id, principal.role.value)


@router.get("", response_model=list[CaseRecord])
async def list_cases(
    cases: CasesDep,
    stage: str | None = None,
    category: str | None = None,
    department: str | None = None,
    grid: str | None = None,
    source: str | None = None,
    overdue: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[CaseRecord]:
    """Cases, newest first."""
    rows = await cases.find(
        stage=stage,
        category=category,
        department=department,
        grid=grid,
        source=source,
        overdue=overdue,
        limit=limit,
        offset=offset,
    )
    return [CaseRecord.from_row(r) for r in rows]


@router.post("", status_code=201, response_model=CaseRecord)
async def report_case(body: CaseIn, cases: CasesDep, principal: CaseWorker) -> CaseRecord:
    """Report a case (inspector or hotline); it awaits acceptance by the command centre."""
    new = NewCase(**body.model_dump(), reporter=principal.name)
    row = await cases.open_case(new, _actor(principal))
    return CaseRecord.from_row(row)


@router.get("/statistics", response_model=list[CaseFiguresOut])
async def case_statistics(
    controller: ControllerDep,
    period: Period = "month",
    by: CaseGroupBy = "city",
    start: Annotated[datetime | None, Query(description="due from; default 30 days ago")] = None,
    end: Annotated[datetime | None, Query(description="due before; default now")] = None,
) -> list[CaseFiguresOut]:
    """Closure rate, on-time closure rate, disposal time, rework and extension rates.

    Over the cases due in each period (daily, weekly, monthly report), per group.
    """
    end_dt = end or datetime.now(tz=UTC)
    start_dt = start or end_dt - timedelta(days=30)
    check_span(start_dt, end_dt, ordered=False)
    rows = await controller.cases.due_between(start_dt.timestamp(), end_dt.timestamp())
    tz = controller.loaded.config.site.tz
    return [
        CaseFiguresOut(
            period_start=r.period_start,
            group=r.group,
            due=r.figures.due,
            closed=r.figures.closed,
            closed_on_time=r.figures.closed_on_time,
            closure_rate=r.figures.closure_rate,
            on_time_rate=r.figures.on_time_rate,
            mean_disposal_minutes=(
                None if r.figures.mean_disposal_s is None else r.figures.mean_disposal_s / 60
            ),
            rework_rate=r.figures.rework_rate,
            extension_rate=r.figures.extension_rate,
        )
        for r in case_report(rows, period, by, tz)
    ]


@router.get("/export", response_model=CaseExport)
async def export_cases(
    controller: ControllerDep,
    _principal: Supervisor,
    since: datetime,
    until: datetime | None = None,
) -> CaseExport:
    """Cases reported in a span with their histories, in the documented exchange schema
    (``docs/case-exchange.schema.json``) for the provincial platform."""
    check_span(since, until, ("since", "until"), ordered=False)
    rows = await controller.cases.find(
        since=since.timestamp(),
        until=until.timestamp() if until else None,
        limit=100_000,
    )
    cases = []
    for row in reversed(rows):
        history = await controller.cases.history(row.id)
        cases.append(
            CaseWithHistory(
                **CaseRecord.from_row(row).model_dump(),
                transitions=[TransitionRecord.from_row(t) for t in history],
            )
        )
    return CaseExport(city=controller.loaded.config.site.city, exported_at=time.time(), cases=cases)


@router.get("/webhook", response_model=WebhookStatusOut)
def webhook_status(controller: ControllerDep, _principal: Supervisor) -> WebhookStatusOut:
    """How webhook delivery to the city platform goes."""
    sender = controller.webhook
    if sender is None:
        return WebhookStatusOut(
            configured=False, url=None, delivered=0, failures=0, waiting=0, last_error=""
        )
    return WebhookStatusOut(
        configured=True,
        url=sender.config.url,
        delivered=sender.status.delivered,
        failures=sender.status.failures,
        waiting=sender.status.waiting,
        last_error=sender.status.last_error,
    )


@router.get("/departments", response_model=DepartmentsOut)
async def list_departments(cases: CasesDep) -> DepartmentsOut:
    """The departments a dispatcher may send a case to."""
    return DepartmentsOut(departments=cases.routing.departments())


@router.get("/{case_id}", response_model=CaseDetailOut)
async def get_case(case_id: RowId, cases: CasesDep, reader: Reader) -> CaseDetailOut:
    """A case with every transition (and, for dispatchers and admins, who to call back)."""
    row = await cases.get(case_id)
    history = await cases.history(case_id)
    return CaseDetailOut(
        **CaseRecord.from_row(row).model_dump(),
        transitions=[TransitionRecord.from_row(t) for t in history],
        contact=(row.contact or {}) if may(reader.role, "cases_centre") else None,
        routed_department=cases.routing.department_for(row.category, row.grid, row.department),
        category_name=(
            cases.categories[row.category].name
            if row.category in cases.categories
            else row.category
        ),
    )


_PHOTO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            kind: {"schema": {"type": "string", "format": "binary"}}
            for kind in ("image/jpeg", "image/png", "image/webp")
        },
    }
}


def _photo_out(photo: CasePhoto) -> CasePhotoOut:
    return CasePhotoOut(
        id=photo.id,
        case_id=photo.case_id,
        url=photo.url,
        at=datetime.fromtimestamp(photo.at, tz=UTC),
        by=photo.actor,
        stage=photo.stage,
        content_type=photo.content_type,
        bytes=len(photo.data),
    )


@router.post(
    "/{case_id}/photos", status_code=201, response_model=CasePhotoOut, openapi_extra=_PHOTO_BODY
)
async def attach_photo(
    case_id: RowId, request: Request, cases: CasesDep, principal: CaseWorker
) -> CasePhotoOut:
    """Attach a photo (JPEG, PNG or WebP, the body itself) to an open case: the proof of
    disposal, or what an inspector saw. Its link joins the case's media."""
    photo = await cases.photos.attach(case_id, await request.body(), principal.name)
    return _photo_out(photo)


@router.get(
    "/{case_id}/photos/{photo_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
async def get_photo(case_id: RowId, photo_id: RowId, cases: CasesDep) -> Response:
    """A photo of a case, as it was sent."""
    photo = await cases.photos.get(case_id, photo_id)
    return Response(photo.data, media_type=photo.content_type, headers={"Cache-Control": "private"})


@router.post("/{case_id}/{action}", response_model=CaseRecord)
async def act_on_case(
    case_id: RowId,
    action: Literal[
        "accept",
        "reject",
        "file",
        "dispatch",
        "return",
        "start_disposal",
        "report_disposal",
        "start_verification",
        "pass_verification",
        "fail_verification",
        "close",
        "extend",
    ],
    cases: CasesDep,
    principal: CaseWorker,
    body: CaseActionIn | None = None,
) -> CaseRecord:
    """Move a case one step; 409 with the reason if the step does not fit its stage.

    The command centre (dispatcher) accepts, rejects, files, dispatches, extends,
    verifies and closes; the department's staff also start and report disposal
    and return a case that is not theirs.
    """
    step = CaseAction(action)
    if step in CENTRE_ACTIONS and not may(principal.role, "cases_centre"):
        raise refused(
            403,
            f"{action} is for the command centre (dispatcher or admin)",
            "refusal.centre_action",
            action=action,
        )
    body = body or CaseActionIn()
    if body.due_at is not None and body.due_at.tzinfo is None:
        raise refused(422, "due_at needs a time zone", "refusal.time_zone")
    request = TransitionRequest(
        step,
        note=body.note,
        department=body.department,
        assignee=body.assignee,
        due_at=body.due_at.timestamp() if body.due_at else None,
        force=body.force,
    )
    row = await cases.transition(case_id, request, _actor(principal))
    return CaseRecord.from_row(row)
