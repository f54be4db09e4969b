"""A lamp pole as an asset (灯杆): what it is, where it stands, what feeds it.

A city has far more lamps than single-lamp controllers (Yangjiang: 41,953 lamps,
3,500 controllers), so the asset register is its own table: every pole, with
the controller when it has one and always the cabinet, circuit and phase that
feed it.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.device_config import CabinetConfig
from controller.registry import Registry
from drivers.errors import Invalid, PeopleMessage

PoleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=64)]


class PoleAsset(BaseModel):
    """One pole and its lamp."""

    model_config = ConfigDict(extra="forbid")

    pole_id: PoleId
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    lamp_type: str = Field(default="LED", max_length=40, description="LED, HPS, MH, ...")
    rated_w: float = Field(gt=0, le=5000)
    install_date: date | None = None
    #: Device id of the single-lamp controller on this pole, if it has one.
    controller: str | None = None
    cabinet: str | None = None
    circuit: int | None = Field(default=None, ge=1, le=32)
    phase: Literal["A", "B", "C"] | None = None
    road: str = ""
    grid: str = ""
    district: str = ""
    notes: str = ""

    @field_validator("controller", "cabinet", "phase", "install_date", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        # CSV cells and GeoJSON properties give "" for "none".
        return None if value == "" else value


class AssetInvalid(Invalid, ValueError):
    """An asset that contradicts the installed site."""


def check_against_site(asset: PoleAsset, registry: Registry) -> None:
    """Raise AssetInvalid when the asset names devices that do not fit the site."""
    cabinet = None
    if asset.cabinet is not None:
        cabinet = registry.by_id.get(asset.cabinet)
        if cabinet is None or cabinet.device_class != "cabinet":
            raise AssetInvalid(
                f"cabinet: no cabinet {asset.cabinet!r}",
                PeopleMessage("reject.no_cabinet", {"cabinet": asset.cabinet}),
            )
        if asset.circuit is None:
            raise AssetInvalid(
                "circuit: a pole fed by a cabinet needs its circuit",
                PeopleMessage("reject.no_circuit", {"cabinet": asset.cabinet}),
            )
        loc = cabinet.location
        if isinstance(loc, CabinetConfig) and asset.circuit > loc.circuits:
            raise AssetInvalid(
                f"circuit: {asset.circuit}, but cabinet {asset.cabinet} has {loc.circuits}",
                PeopleMessage(
                    "reject.circuit_beyond",
                    {"circuit": asset.circuit, "cabinet": asset.cabinet, "circuits": loc.circuits},
                ),
            )
    if asset.controller is not None:
        controller = registry.by_id.get(asset.controller)
        if controller is None or controller.device_class != "lamp":
            raise AssetInvalid(
                f"controller: no single-lamp controller {asset.controller!r}",
                PeopleMessage("reject.no_controller", {"controller": asset.controller}),
            )
        if controller.parent is not None and (
            cabinet is None or registry.devices[controller.parent].id != cabinet.id
        ):
            behind = registry.devices[controller.parent].id
            raise AssetInvalid(
                f"cabinet: controller {asset.controller} is behind cabinet "
                f"{behind}, not {asset.cabinet}",
                PeopleMessage(
                    "reject.controller_elsewhere",
                    {
                        "controller": asset.controller,
                        "behind": behind,
                        "cabinet": asset.cabinet or "—",
                    },
                ),
            )
