"""Lamp and pole assets (灯杆管理): list, create, update, bulk import from CSV or GeoJSON."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from api.auth import DUTIES, read_guard, require
from api.bounds import Offset
from api.deps import ControllerDep
from api.errors import MessageOut, Refusal, refused
from api.keys import Principal
from api.schemas import AssetGroupOut, ImportRejectOut, ImportReportOut
from controller.assets.importer import parse_csv, parse_geojson
from controller.assets.model import PoleAsset, check_against_site
from controller.assets.store import AssetFilter, dump_geojson
from drivers.errors import PeopleMessage

router = APIRouter(prefix="/assets", tags=["assets"], dependencies=[Depends(read_guard("assets"))])

AssetEditor = Annotated[Principal, Depends(require(*DUTIES["assets"]))]

#: Largest import accepted in one request (a city's poles as CSV is a few MB).
MAX_IMPORT_BYTES = 50 * 1024 * 1024
#: Rejected rows listed in an import's answer: a sheet of 100,000 bad rows gives the
#: first reasons and the count, not a response larger than the sheet.
MAX_REJECTS_SHOWN = 1000


@router.get("", response_model=list[PoleAsset])
async def list_assets(
    controller: ControllerDep,
    road: str | None = None,
    grid: str | None = None,
    cabinet: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Offset = 0,
) -> list[PoleAsset]:
    """Poles, by pole id; filter by road, grid cell or cabinet."""
    return await controller.assets.find(AssetFilter(road, grid, cabinet, limit, offset))


@router.get("/summary", response_model=list[AssetGroupOut])
async def asset_summary(
    controller: ControllerDep, by: Literal["road", "grid", "cabinet"] = "road"
) -> list[AssetGroupOut]:
    """Poles per road, grid cell or cabinet: count, with a controller, rated kW."""
    return [
        AssetGroupOut(
            group=g.group, poles=g.poles, with_controller=g.with_controller, rated_kw=g.rated_kw
        )
        for g in await controller.assets.summary(by)
    ]


@router.get("/geojson")
async def assets_geojson(
    controller: ControllerDep,
    road: str | None = None,
    grid: str | None = None,
    cabinet: str | None = None,
) -> dict[str, Any]:
    """Poles as a GeoJSON FeatureCollection (the same shape the import takes)."""
    return dump_geojson(
        await controller.assets.find(AssetFilter(road, grid, cabinet, limit=1_000_000))
    )


@router.get("/{pole_id}", response_model=PoleAsset)
async def get_asset(pole_id: str, controller: ControllerDep) -> PoleAsset:
    """One pole."""
    asset = await controller.assets.get(pole_id)
    if asset is None:
        raise refused(404, f"no pole {pole_id!r}", "refusal.no_pole", pole=pole_id)
    return asset


def _checked(asset: PoleAsset, controller: ControllerDep) -> PoleAsset:
    check_against_site(asset, controller.registry)
    return asset


@router.post("", status_code=201, response_model=PoleAsset)
async def create_asset(asset: PoleAsset, controller: ControllerDep, _: AssetEditor) -> PoleAsset:
    """Register a pole; 409 if the pole id is taken."""
    _checked(asset, controller)
    if await controller.assets.exists([asset.pole_id]):
        raise Refusal(
            409,
            f"pole {asset.pole_id} exists; use PUT to change it",
            PeopleMessage("refusal.pole_exists", {"pole": asset.pole_id}),
        )
    await controller.assets.put([asset])
    return asset


@router.put("/{pole_id}", response_model=PoleAsset)
async def update_asset(
    pole_id: str, asset: PoleAsset, controller: ControllerDep, _: AssetEditor
) -> PoleAsset:
    """Replace a pole's record (404 if it is not registered)."""
    if asset.pole_id != pole_id:
        raise refused(
            422,
            f"pole_id in the body ({asset.pole_id}) differs from the URL",
            "refusal.pole_id_differs",
            pole=asset.pole_id,
        )
    _checked(asset, controller)
    if not await controller.assets.exists([pole_id]):
        raise refused(
            404, f"no pole {pole_id!r}; use POST to register it", "refusal.no_pole", pole=pole_id
        )
    await controller.assets.put([asset])
    return asset


@router.post("/import", response_model=ImportReportOut)
async def import_assets(
    request: Request,
    controller: ControllerDep,
    _: AssetEditor,
    dry_run: bool = False,
) -> ImportReportOut:
    """Bulk import: ``text/csv`` (header row of field names) or GeoJSON point features.

    Good rows are stored (created or replaced); each bad row is reported with its
    number and reason. ``dry_run`` checks without storing.
    """
    data = await request.body()
    if len(data) > MAX_IMPORT_BYTES:
        raise refused(
            413,
            f"import larger than {MAX_IMPORT_BYTES // 2**20} MB",
            "refusal.import_too_large",
            mb=MAX_IMPORT_BYTES // 2**20,
        )
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # Parsing a large file off the event loop: polling and rules go on meanwhile. A file
    # that cannot be read at all is Invalid (422); bad rows are rejects in the report.
    if kind in ("text/csv", "application/csv"):
        report = await asyncio.to_thread(parse_csv, data, controller.registry)
    elif kind in ("application/geo+json", "application/json"):
        report = await asyncio.to_thread(parse_geojson, data, controller.registry)
    else:
        raise refused(
            415,
            "send text/csv or application/geo+json (a GeoJSON FeatureCollection)",
            "refusal.import_kind",
        )
    existing = await controller.assets.exists([a.pole_id for a in report.accepted])
    if not dry_run:
        await controller.assets.put(report.accepted)
    return ImportReportOut(
        accepted=len(report.accepted),
        created=len(report.accepted) - len(existing),
        updated=len(existing),
        rejected=[
            ImportRejectOut(
                row=r.row,
                pole_id=r.pole_id,
                reason=r.reason,
                message=MessageOut.of(r.message),
            )
            for r in report.rejected[:MAX_REJECTS_SHOWN]
        ],
        rejected_total=len(report.rejected),
        dry_run=dry_run,
    )
