"""The operator dashboard: the page itself, who is logged in, the map, and live events.

The page is static HTML, CSS and JavaScript served from ``api/static`` (no
build step, no internet). It talks to the same API as everyone else; this
router adds what only a page needs: the map's points with their states, the
caller's permissions, and a server-sent event stream.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from api.auth import CurrentPrincipal, permissions, read_guard
from api.deps import ControllerDep
from api.events import EventHub
from api.schemas import GridCellOut, MapDeviceOut, MapOut, TileLayerOut, WhoAmIOut
from api.users import Session
from controller.catalogue import CATALOGUE_PATH
from controller.registry import Device
from controller.runtime import Controller
from rules.alarm_model import severity_rank

router = APIRouter(tags=["dashboard"])
DeviceState = Literal["on", "off", "offline", "alarm", "normal", "unknown"]
STATIC = Path(__file__).parent.parent / "static"

#: Spacing of lamps drawn near their cabinet when they have no coordinates (degrees).
LAMP_SPACING = 0.00022


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    """The dashboard is the front page."""
    return RedirectResponse("/dashboard/")


@router.get("/dashboard/messages.json", include_in_schema=False)
def messages() -> FileResponse:
    """The message catalogue, beside the console's files (it lives with the controller,
    which writes case titles from it)."""
    return FileResponse(CATALOGUE_PATH, media_type="application/json")


@router.get("/whoami", response_model=WhoAmIOut)
def whoami(request: Request, principal: CurrentPrincipal) -> WhoAmIOut:
    """The key's owner or the logged-in person, their role and what the dashboard may
    offer them (401 for a bad key or an ended session)."""
    session: Session | None = getattr(request.state, "session", None)
    return WhoAmIOut(
        name=principal.name,
        role=principal.role.value,
        may=permissions(principal.role),
        csrf_token=session.csrf_token if session is not None else None,
    )


def _state(controller: Controller, device: Device) -> DeviceState:
    polled_by = device.parent if device.parent is not None else device.index
    health = controller.poller.health[polled_by]
    if not health.online and not health.never_polled:
        return "offline"
    names = [p.name for p in device.points]
    row = controller.latest.value[device.index]

    def reading(name: str) -> float | None:
        if name not in names:
            return None
        value = float(row[names.index(name)])
        return None if math.isnan(value) else value

    if device.device_class == "lamp":
        lit = reading("lamp_on")
        return "unknown" if lit is None else ("on" if lit >= 0.5 else "off")
    if device.device_class == "cabinet":
        circuits = [reading(n) for n in names if n.startswith("circuit") and n.endswith("_on")]
        known = [c for c in circuits if c is not None]
        return "unknown" if not known else ("on" if any(c >= 0.5 for c in known) else "off")
    return "normal"


@functools.cache
def _grid_cell_file(path: Path) -> list[GridCellOut]:
    """Outlines from the configured GeoJSON, read once (the map asks every few seconds)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for feature in doc.get("features", []):
        geometry = feature.get("geometry") or {}
        code = str((feature.get("properties") or {}).get("code", ""))
        if geometry.get("type") == "Polygon":
            cells.append(GridCellOut(code=code, rings=geometry["coordinates"], approximate=False))
        elif geometry.get("type") == "MultiPolygon":
            for polygon in geometry["coordinates"]:
                cells.append(GridCellOut(code=code, rings=polygon, approximate=False))
    return cells


def _grid_cells(controller: Controller, points: list[MapDeviceOut]) -> list[GridCellOut]:
    site = controller.loaded.config.site
    if site.grid_cells:
        return _grid_cell_file(controller.loaded.resolve(site.grid_cells))
    # No outlines configured: a box around each cell's devices, marked as such.
    boxes: dict[str, list[float]] = {}
    for p in points:
        if not p.grid:
            continue
        box = boxes.setdefault(p.grid, [p.lon, p.lat, p.lon, p.lat])
        box[:] = [min(box[0], p.lon), min(box[1], p.lat), max(box[2], p.lon), max(box[3], p.lat)]
    pad = 0.0008
    return [
        GridCellOut(
            code=code,
            rings=[
                [
                    [b[0] - pad, b[1] - pad],
                    [b[2] + pad, b[1] - pad],
                    [b[2] + pad, b[3] + pad],
                    [b[0] - pad, b[3] + pad],
                    [b[0] - pad, b[1] - pad],
                ]
            ],
            approximate=True,
        )
        for code, b in sorted(boxes.items())
    ]


def _tile_layer(controller: Controller) -> TileLayerOut | None:
    tiles = controller.loaded.config.site.map.tiles
    if tiles is None:
        return None
    url = tiles.url
    if tiles.key_env is not None:
        # Checked when the config was loaded; read now so that a rotated key needs no restart.
        url = url.replace("{key}", os.environ.get(tiles.key_env, ""))
    return TileLayerOut(
        url=url,
        attribution=tiles.attribution,
        subdomains=tiles.subdomains,
        min_zoom=tiles.min_zoom,
        max_zoom=tiles.max_zoom,
        datum=tiles.datum,
    )


@router.get("/map", response_model=MapOut, dependencies=[Depends(read_guard("map"))])
def city_map(controller: ControllerDep) -> MapOut:
    """Every lamp, cabinet and gauge with its state, and the grid cell outlines."""
    open_alarms: dict[str, list[str]] = {}
    now = controller.rules.manager.clock()
    for alarm in controller.rules.manager.list():
        if alarm.active and alarm.notifies_at(now):
            open_alarms.setdefault(alarm.device, []).append(alarm.severity)
    points: list[MapDeviceOut] = []
    for device in controller.registry.devices:
        if device.device_class == "meter":
            continue  # inside its cabinet: its readings are the cabinet's detail, not a place
        loc = device.location
        lat, lon, placed = loc.lat, loc.lon, False
        if device.parent is not None and device.slot is not None:
            cab = controller.registry.devices[device.parent].location
            if (lat, lon) == (cab.lat, cab.lon):
                # Lamps of a run share the cabinet's place: draw them along the street.
                circuit = (device.circuit or 1) - 1
                lat = cab.lat - LAMP_SPACING * (1 + circuit)
                lon = cab.lon + LAMP_SPACING * (1 + device.slot % 32)
                placed = True
        severities = open_alarms.get(device.id, [])
        levels = getattr(loc, "levels", None)
        points.append(
            MapDeviceOut(
                id=device.id,
                device_class=device.device_class,
                name=loc.name,
                lat=lat,
                lon=lon,
                placed=placed,
                state="alarm" if severities else _state(controller, device),
                severity=max(severities, key=severity_rank) if severities else None,
                alarms=len(severities),
                parent=(
                    controller.registry.devices[device.parent].id
                    if device.parent is not None
                    else None
                ),
                road=loc.road,
                grid=loc.grid,
                levels=dict(levels) if levels else None,
            )
        )
    located = [p for p in points if p.lat or p.lon]
    bounds = [
        min((p.lon for p in located), default=0.0),
        min((p.lat for p in located), default=0.0),
        max((p.lon for p in located), default=1.0),
        max((p.lat for p in located), default=1.0),
    ]
    return MapOut(
        city=controller.loaded.config.site.city,
        city_name=controller.loaded.config.site.display_name,
        tiles=_tile_layer(controller),
        timezone=controller.loaded.config.site.timezone,
        bounds=bounds,
        devices=points,
        grids=_grid_cells(controller, located),
    )


def _hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.events
    return hub


@router.get(
    "/events",
    dependencies=[Depends(read_guard("events"))],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
async def events(request: Request, hub: Annotated[EventHub, Depends(_hub)]) -> StreamingResponse:
    """Server-sent events: ``alarm``, ``case`` and ``command`` as they change."""
    return StreamingResponse(
        hub.stream(request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
