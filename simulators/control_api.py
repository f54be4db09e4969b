"""HTTP control of a running simulated city: inject and clear faults at run time.

This is the test bench's API, not the controller's. It listens on loopback and
every call that changes the simulation needs the bearer token printed at start
(or taken from STREETSENSE_SIM_TOKEN), so a stray script cannot break the demo.
"""

from __future__ import annotations

import os
import secrets
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel

from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import SimulatedCity

TOKEN_ENV = "STREETSENSE_SIM_TOKEN"


class FaultOut(FaultSpec):
    """A fault on the board, with whether it is in force now."""

    active_now: bool


class ClearResult(BaseModel):
    """How many faults a clear removed."""

    device: str
    removed: int


class SimulationState(BaseModel):
    """Simulated time and size of the city."""

    sim_time_s: float
    time_scale: float
    cabinets: int
    lamps: int
    gauges: int


def simulator_token() -> str:
    """The configured token, or a fresh random one."""
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(16)


def create_control_app(city: SimulatedCity, token: str) -> FastAPI:
    """The control API of ``city``, guarded by ``token``."""
    app = FastAPI(title="streetsense simulator control", version="0.1.0")

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if authorization is None:
            raise HTTPException(
                401,
                "missing Authorization: Bearer <simulator token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(authorization.removeprefix("Bearer "), token):
            raise HTTPException(403, "wrong simulator token")

    known = {*city.cabinets, *city.lamps, *city.gauges}

    @app.get("/state", response_model=SimulationState)
    def state() -> SimulationState:
        """Simulated time and what is simulated."""
        return SimulationState(
            sim_time_s=city.clock.now(),
            time_scale=city.clock.scale,
            cabinets=len(city.cabinets),
            lamps=len(city.lamps),
            gauges=len(city.gauges),
        )

    @app.get("/faults", response_model=list[FaultOut])
    def list_faults() -> list[FaultOut]:
        """Every fault on the board (scheduled, active or past)."""
        now = city.clock.now()
        return [FaultOut(**f.model_dump(), active_now=f.active(now)) for f in city.board.all()]

    @app.post(
        "/faults", response_model=FaultOut, status_code=201, dependencies=[Depends(require_token)]
    )
    def inject(fault: FaultSpec) -> FaultOut:
        """Put a fault in force; ``at`` and ``until`` count from now."""
        if fault.device not in known:
            raise HTTPException(404, f"no simulated device {fault.device!r}")
        if fault.kind in (FaultKind.CIRCUIT_CUT, FaultKind.CONTACTOR_FAIL) and (
            fault.device not in city.cabinets
        ):
            raise HTTPException(422, f"{fault.kind.value} applies to cabinets only")
        placed = city.inject(fault)
        return FaultOut(**placed.model_dump(), active_now=placed.active(city.clock.now()))

    @app.delete(
        "/faults/{device}", response_model=ClearResult, dependencies=[Depends(require_token)]
    )
    def clear(device: str, kind: FaultKind | None = None) -> ClearResult:
        """Mend a device: remove its faults (of one kind, or all)."""
        if device not in known:
            raise HTTPException(404, f"no simulated device {device!r}")
        return ClearResult(device=device, removed=city.clear(device, kind))

    return app
