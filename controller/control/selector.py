"""A group of street furniture, named as engineers name it: cabinets, roads, grids, tags."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError


class GroupSelector(BaseModel):
    """A group of cabinets and lamps; every given key must match.

    An empty selector would mean the whole city, so that has to be said with ``all: true``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    all: bool = False
    cabinets: list[str] | None = None
    lamps: list[str] | None = None
    road: str | None = None
    grid: str | None = None
    district: str | None = None
    tag: str | None = None
    #: Circuit commands only: which circuits of the selected cabinets (default: all).
    circuits: list[int] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _not_empty(self) -> GroupSelector:
        given = [
            self.cabinets,
            self.lamps,
            self.road,
            self.grid,
            self.district,
            self.tag,
        ]
        if not self.all and all(v is None for v in given):
            raise PydanticCustomError(
                "group_empty",
                "name a group (cabinets, lamps, road, grid, district or tag), "
                "or all: true for the whole city",
            )
        return self

    def describe(self) -> str:
        """Short human text for logs and the audit log."""
        parts = [
            f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in self.model_dump(exclude_none=True, exclude_defaults=True).items()
        ]
        return ", ".join(parts) or "all"
