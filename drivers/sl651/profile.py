"""Profiles of SL651 stations: which element is which point, as data like every profile."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from drivers.derived import DerivedPointSpec, check_derived

#: How a profile file writes an element identifier: two hex digits ("39"), or a number.
_ELEMENT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": "^[0-9A-Fa-f]{2}$"},
            {"type": "integer", "minimum": 0, "maximum": 255},
        ],
        "description": 'element identifier (guide byte), "39" for the water level Z',
    }
)


class Sl651PointSpec(BaseModel):
    """One element of the station's reports as a point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    #: The element identifier (guide byte) in hex, "39" for the water level Z.
    element: Annotated[int, _ELEMENT_SCHEMA]
    #: One bit of a HEX word element (the 45H status and alarm word): the point is 0/1.
    bit: int | None = Field(default=None, ge=0, le=31)
    unit: str = ""
    description: str = ""

    @field_validator("element", mode="before")
    @classmethod
    def _hex(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return int(value, 16)
            except ValueError:
                raise ValueError(f"element {value!r} is not a hex identifier like 39") from None
        return value


class Sl651Profile(BaseModel):
    """A station type: the elements it reports and the points they become."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["sl651"]
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    device_class: Literal["gauge"] = "gauge"
    description: str = ""
    points: list[Sl651PointSpec] = Field(min_length=1)
    #: Per-device parameters derived points read (a gauge's mounting height): a default,
    #: or null when every device must give its own in config (``params``).
    params: dict[str, float | None] = {}
    #: Points computed from this device's points in the same poll.
    derived: list[DerivedPointSpec] = []

    @model_validator(mode="after")
    def _check_derived(self) -> Sl651Profile:
        check_derived(self.derived, [p.name for p in self.points], self.params)
        return self

    @model_validator(mode="after")
    def _unique(self) -> Sl651Profile:
        for i, point in enumerate(self.points):
            if any(p.name == point.name for p in self.points[:i]):
                raise ValueError(f"points[{i}] name {point.name!r} is already a point")
            if any((p.element, p.bit) == (point.element, point.bit) for p in self.points[:i]):
                what = f"element {point.element:02X}"
                what += "" if point.bit is None else f" bit {point.bit}"
                raise ValueError(f"points[{i}] {what} is already a point")
        return self

    def points_of(self) -> dict[int, list[tuple[int, int | None]]]:
        """Element identifier -> the points it feeds: (point index, bit or None for the value)."""
        out: dict[int, list[tuple[int, int | None]]] = {}
        for i, p in enumerate(self.points):
            out.setdefault(p.element, []).append((i, p.bit))
        return out
