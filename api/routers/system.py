"""The service itself: health for load balancers, metrics for Prometheus, offline API docs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import fastapi_offline
from fastapi import APIRouter, Depends, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from api.auth import AuthThrottle, Reader, TicketSigner, require
from api.deps import ControllerDep
from api.keys import Principal, Role
from api.metrics import controller_registry
from api.schemas import LeadershipOut, SystemHealth, utc
from controller.runtime import Controller
from controller.service_health import assess

router = APIRouter(tags=["system"])
#: Every role that reads the city may scrape; a reporter (a civic app) may not.
SCRAPERS = require(Role.VIEWER, Role.ENGINEER, Role.DISPATCHER, Role.FLOOD_DUTY)

#: Swagger UI and ReDoc files shipped in a Python package: /docs works offline.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


@router.get(
    "/health",
    response_model=SystemHealth,
    responses={503: {"model": SystemHealth, "description": "failing: data is not flowing"}},
)
def health(controller: ControllerDep) -> JSONResponse:
    """``ok``, ``degraded`` (with reasons) or ``failing`` (HTTP 503) and the fleet in brief."""
    verdict = assess(controller)
    polled = [controller.poller.health[t.device] for t in controller.registry.targets]
    body = SystemHealth(
        status=verdict.status,
        reasons=verdict.reasons,
        city=controller.loaded.config.site.city,
        devices=controller.registry.count_by_class(),
        poll_targets=len(polled),
        online=sum(1 for h in polled if h.online),
        leadership=leadership_of(controller),
    )
    status = 503 if verdict.status == "failing" else 200
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def leadership_of(controller: Controller) -> LeadershipOut | None:
    """The pair as this node sees it (None for a controller alone)."""
    elector = controller.leadership
    if elector is None:
        return None
    leading = elector.leading
    other = elector.other
    mirror = controller.alarm_mirror
    return LeadershipOut(
        role="leader" if leading else "standby",
        node=elector.lease.node,
        epoch=elector.epoch if leading else None,
        since=utc(elector.since) if leading else None,
        leader=elector.lease.node if leading else (other.holder if other else None),
        leader_url=elector.lease.address if leading else (other.address if other else None),
        database_reachable=elector.reachable,
        alarms_read_at=None if leading or mirror is None else utc(mirror.refreshed_at),
    )


@router.get("/metrics", response_class=Response)
async def metrics(
    request: Request,
    controller: ControllerDep,
    _principal: Annotated[Principal, Depends(SCRAPERS)],
) -> Response:
    """Prometheus text format: polls, links, sinks, rules, alarms, cases, commands, schedules.

    Needs an API key like every read (Prometheus sends it with
    ``authorization: {credentials: KEY}`` in its scrape config).
    """
    throttle: AuthThrottle = request.app.state.auth_throttle
    registry = await controller_registry(controller, throttle.failures_total)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class TicketOut(BaseModel):
    """A signed ticket for ``?ticket=`` where a browser cannot send the key."""

    ticket: str
    expires_at: float


@router.post("/session/ticket", response_model=TicketOut)
def issue_ticket(request: Request, principal: Reader) -> TicketOut:
    """A ticket valid for five minutes, for the live events and reports opened in a tab."""
    signer: TicketSigner = request.app.state.tickets
    ticket, expires = signer.issue(principal, time.time())
    return TicketOut(ticket=ticket, expires_at=expires)


@router.get("/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    """Swagger UI from local files."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="streetsense API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon.png",
    )


@router.get("/redoc", include_in_schema=False)
def redoc() -> HTMLResponse:
    """ReDoc from local files (no web fonts)."""
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="streetsense API",
        redoc_js_url="/docs-assets/redoc.standalone.js",
        redoc_favicon_url="/docs-assets/favicon.png",
        with_google_fonts=False,
    )
