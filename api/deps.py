"""FastAPI dependencies: the running controller, as an ``Annotated`` type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from controller.runtime import Controller


def get_controller(request: Request) -> Controller:
    """The controller this app serves (set when the app is created)."""
    controller: Controller = request.app.state.controller
    return controller


ControllerDep = Annotated[Controller, Depends(get_controller)]
