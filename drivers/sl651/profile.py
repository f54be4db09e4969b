"""Profiles of SL651 stations: which element is which point, as data like every profile."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Sl651PointSpec(BaseModel):
    """One element of the station's reports as a point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    #: The element identifier (guide byte) in hex, "39" for the water level Z.
    element: int
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

    @model_validator(mode="after")
    def _unique(self) -> Sl651Profile:
        for i, point in enumerate(self.points):
            if any(p.element == point.element for p in self.points[:i]):
                raise ValueError(f"points[{i}] element {point.element:02X} is already a point")
        return self

    def point_of(self) -> dict[int, int]:
        """Element identifier -> point index."""
        return {p.element: i for i, p in enumerate(self.points)}
