"""Links: health of every TCP connection and serial line."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.auth import Supervisor, read_guard
from api.deps import ControllerDep
from api.schemas import LinkOut, utc

router = APIRouter(prefix="/links", tags=["links"], dependencies=[Depends(read_guard("links"))])


@router.get("", response_model=list[LinkOut])
def list_links(controller: ControllerDep, _principal: Supervisor) -> list[LinkOut]:
    """Every link with its counters and how many of its devices answer.

    The addresses of DTUs and gateways are a map for switching the city's lights
    (Modbus has no authentication): dispatcher or admin only.
    """
    out = []
    for cfg in controller.loaded.config.links:
        link = controller.links[cfg.id]
        h = link.health
        targets = [t for t in controller.registry.targets if t.link == cfg.id]
        online = sum(1 for t in targets if controller.poller.health[t.device].online)
        out.append(
            LinkOut(
                id=cfg.id,
                kind=cfg.kind,
                address=link.describe,
                connected=h.connected,
                connects=h.connects,
                connect_failures=h.connect_failures,
                disconnects=h.disconnects,
                requests=h.requests,
                errors=dict(h.errors),
                last_success=utc(h.last_success),
                last_error=h.last_error,
                devices=len(targets),
                devices_online=online,
            )
        )
    return out
