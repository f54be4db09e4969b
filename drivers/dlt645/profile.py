"""Profiles of DL/T 645-2007 meters: which data identifier is which point, as data.

A point is one data identifier (DI) with its format (``XXX.X``: digits and the
implied decimal point), its sign and unit. A block (``0201FF00``: the three
phase voltages) reads several points in one round trip; its value is the
members' values one after another, in the order the block lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.derived import DerivedPointSpec, check_derived
from drivers.dlt645 import codec

_DI_PATTERN = r"^[0-9A-Fa-f]{8}$"


class Dlt645PointSpec(BaseModel):
    """One data identifier of the meter as a point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    #: DI3 DI2 DI1 DI0 as printed in the standard's tables ("02010100": phase A voltage).
    di: str = Field(pattern=_DI_PATTERN)
    #: The standard's format: X per digit, a dot where the decimal point is implied.
    format: str
    #: The top bit of the most significant byte is the sign (currents, power, power factor).
    signed: bool = False
    unit: str = ""
    description: str = ""

    @field_validator("di")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        codec.parse_format(value)
        return value

    @property
    def size(self) -> int:
        """Bytes of the value."""
        return codec.parse_format(self.format)[0]

    @property
    def decimals(self) -> int:
        """Digits after the implied decimal point."""
        return codec.parse_format(self.format)[1]


class Dlt645Block(BaseModel):
    """A block data identifier and the points it carries, in their order in the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    di: str = Field(pattern=_DI_PATTERN)
    points: list[str] = Field(min_length=1)

    @field_validator("di")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class Dlt645Profile(BaseModel):
    """A meter type: the identifiers it is read for and the points they become."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["dlt645"]
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    device_class: Literal["meter"] = "meter"
    description: str = ""
    points: list[Dlt645PointSpec] = Field(min_length=1)
    #: Read these points together (one request per block instead of one per point).
    blocks: list[Dlt645Block] = []
    params: dict[str, float | None] = {}
    derived: list[DerivedPointSpec] = []

    @model_validator(mode="after")
    def _check(self) -> Dlt645Profile:
        names = [p.name for p in self.points]
        for i, point in enumerate(self.points):
            if point.name in names[:i]:
                raise ValueError(f"points[{i}] name {point.name!r} is already a point")
        in_block: set[str] = set()
        for i, block in enumerate(self.blocks):
            for name in block.points:
                if name not in names:
                    raise ValueError(f"blocks[{i}] ({block.di}) names unknown point {name!r}")
                if name in in_block:
                    raise ValueError(f"blocks[{i}] ({block.di}): {name} is in two blocks")
                in_block.add(name)
        check_derived(self.derived, names, self.params)
        return self


@dataclass(frozen=True)
class MeterItem:
    """Where one point's value sits in an answer."""

    point: int
    offset: int
    size: int
    decimals: int
    signed: bool


@dataclass(frozen=True)
class MeterRequest:
    """One read (11H) and the points its answer carries."""

    di: str
    items: tuple[MeterItem, ...]
    #: For a block: the single reads to use instead if the meter refuses the block.
    singles: tuple[MeterRequest, ...] = ()


@dataclass(frozen=True)
class MeterPlan:
    """The reads of one meter poll, in order."""

    requests: tuple[MeterRequest, ...]

    @property
    def request_count(self) -> int:
        """Round trips per poll (blocks counted once)."""
        return len(self.requests)


def _single(index: int, point: Dlt645PointSpec) -> MeterRequest:
    return MeterRequest(point.di, (MeterItem(index, 0, point.size, point.decimals, point.signed),))


def plan_meter(profile: Dlt645Profile) -> MeterPlan:
    """Blocks first, then every point no block carries, one read each."""
    index = {p.name: i for i, p in enumerate(profile.points)}
    requests: list[MeterRequest] = []
    blocked: set[str] = set()
    for block in profile.blocks:
        items, singles, offset = [], [], 0
        for name in block.points:
            point = profile.points[index[name]]
            items.append(MeterItem(index[name], offset, point.size, point.decimals, point.signed))
            singles.append(_single(index[name], point))
            offset += point.size
            blocked.add(name)
        requests.append(MeterRequest(block.di, tuple(items), tuple(singles)))
    requests += [_single(i, p) for i, p in enumerate(profile.points) if p.name not in blocked]
    return MeterPlan(tuple(requests))
