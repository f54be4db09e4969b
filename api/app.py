"""The HTTP API: one router per resource, the controller started in the lifespan."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from api.auth import AuthThrottle, TicketSigner
from api.body_limits import BodyLimits
from api.errors import (
    COMMON,
    REFUSAL_KINDS,
    declared,
    domain_refusal,
    fenced_write,
    http_refusal,
    invalid_request,
    state_unreachable,
)
from api.events import EventHub
from api.keys import ApiKeyStore
from api.rate_limit import RateLimiter
from api.routers import (
    alarms,
    assets,
    cases,
    control,
    dashboard,
    devices,
    links,
    open311,
    reports,
    schedules,
    session,
    stations,
    statistics,
    system,
    telemetry,
    users,
)
from api.routers.assets import MAX_IMPORT_BYTES
from api.standby import StandbyReferral
from api.users import UserStore
from controller.cases.db import CaseRow, TransitionRow
from controller.cases.photos import MAX_PHOTO_BYTES
from controller.control.dispatcher import Command
from controller.runtime import Controller
from rules.alarm_model import AlarmNotice, alarm_payload


def create_app(controller: Controller, manage_controller: bool = True) -> FastAPI:
    """The API for ``controller``; with ``manage_controller`` the app starts and stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_controller:
            await controller.start()
        try:
            yield
        finally:
            app.state.events.close()
            if manage_controller:
                await controller.stop()

    app = FastAPI(
        title="streetsense",
        description="Streetlight and flood water-level gauge controller for a city.",
        version="0.1.0",
        lifespan=lifespan,
        # Served by the system router from local files: no CDN at run time.
        docs_url=None,
        redoc_url=None,
        responses=declared(COMMON),
    )
    app.state.controller = controller
    app.state.public_views = frozenset(controller.loaded.config.api.public)
    app.state.auth_throttle = AuthThrottle(controller.loaded.config.api.auth_failures_allowed)
    # Tickets die with the process: a restart only asks browsers for new ones.
    app.state.tickets = TicketSigner(secrets.token_bytes(32))
    # Keys and accounts live in the state database, which the controller opens at start.
    app.state.keys = ApiKeyStore(controller.state_db)
    app.state.users = UserStore(controller.state_db)
    app.state.events = _live_events(controller)
    limits = controller.loaded.config.control.rate_limit
    app.state.rate_limiter = RateLimiter(limits.commands_per_minute, limits.burst)
    # Added before the body limits, so it runs after them: on a standby it answers alone.
    app.add_middleware(StandbyReferral, controller=controller)
    app.add_middleware(
        BodyLimits,
        max_bytes=controller.loaded.config.api.max_body_bytes,
        larger={r"/assets/import": MAX_IMPORT_BYTES, r"/cases/\d+/photos": MAX_PHOTO_BYTES},
    )
    app.add_exception_handler(RequestValidationError, invalid_request)
    # A lost connection, not a wrong query: those stay errors of ours.
    for lost in (OperationalError, InterfaceError):
        app.add_exception_handler(lost, state_unreachable)
    # The fence's RAISE comes as a ProgrammingError; any other database error stays a 500.
    app.add_exception_handler(DBAPIError, fenced_write)
    app.add_exception_handler(HTTPException, http_refusal)
    for kind in REFUSAL_KINDS:
        app.add_exception_handler(kind, domain_refusal)
    app.include_router(devices.router)
    app.include_router(links.router)
    app.include_router(stations.router)
    app.include_router(telemetry.router)
    app.include_router(alarms.router)
    app.include_router(statistics.router)
    app.include_router(control.router)
    app.include_router(assets.router)
    app.include_router(schedules.router)
    app.include_router(cases.router)
    app.include_router(open311.router)
    app.include_router(dashboard.router)
    app.include_router(reports.router)
    app.include_router(system.router)
    app.include_router(session.router)
    app.include_router(users.router)
    app.mount("/docs-assets", StaticFiles(directory=system.DOCS_ASSETS), name="docs-assets")
    app.mount("/dashboard", StaticFiles(directory=dashboard.STATIC, html=True), name="dashboard")

    return app


def _live_events(controller: Controller) -> EventHub:
    """The dashboard's live feed: alarm notices, case transitions, finished commands."""
    hub = EventHub()

    async def on_alarm(notice: AlarmNotice) -> None:
        hub.publish(
            "alarm",
            {
                "transition": notice.transition,
                **alarm_payload(notice.alarm, controller.rules.manager.clock()),
            },
        )

    async def on_case(row: CaseRow, transition: TransitionRow) -> None:
        hub.publish(
            "case",
            {"id": row.id, "stage": row.stage, "action": transition.action, "title": row.title},
        )

    def on_command(command: Command) -> None:
        hub.publish(
            "command", {"id": command.id, "status": command.status.value, **command.counts()}
        )

    controller.rules.manager.subscribe(on_alarm)
    controller.cases.on_transition(on_case)
    controller.commands.on_finished(on_command)
    return hub
