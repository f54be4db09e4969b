"""FastAPI dependencies as ``Annotated`` types: the running controller, and the narrow
parts of it a router works with (alarms, cases), so a route says what it touches."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from controller.cases.service import CaseService
from controller.runtime import Controller
from rules.alarms import AlarmManager


def get_controller(request: Request) -> Controller:
    """The controller this app serves (set when the app is created)."""
    controller: Controller = request.app.state.controller
    return controller


ControllerDep = Annotated[Controller, Depends(get_controller)]


def get_alarms(controller: ControllerDep) -> AlarmManager:
    """The alarm manager: open alarms and their lifecycle."""
    return controller.rules.manager


def get_cases(controller: ControllerDep) -> CaseService:
    """The case service: cases and their workflow."""
    return controller.cases


AlarmsDep = Annotated[AlarmManager, Depends(get_alarms)]
CasesDep = Annotated[CaseService, Depends(get_cases)]
