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


def hex_identifier(value: object) -> object:
    """An identifier written as two hex digits ("39") as its number; others as given."""
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            raise ValueError(f"identifier {value!r} is not two hex digits like 39") from None
    return value


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
        return hex_identifier(value)


class Sl651SettingSpec(BaseModel):
    """One runtime parameter of the station (App. D.4 table, written with 42H and
    read with 43H), in the standard's N(digits, decimals) format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    #: The parameter identifier in hex, "20" for the timed-report interval.
    id: Annotated[int, _ELEMENT_SCHEMA]
    digits: int = Field(ge=1, le=16)
    decimals: int = Field(default=0, ge=0, le=7)
    #: Whether it may be negative (a water-level base): sent as FF then the digits.
    signed: bool = False
    unit: str = ""
    description: str = ""

    @field_validator("id", mode="before")
    @classmethod
    def _hex(cls, value: object) -> object:
        return hex_identifier(value)

    @property
    def definition(self) -> int:
        """The data definition byte: bytes in the high 5 bits, decimals in the low 3."""
        return (self.size << 3) | self.decimals

    @property
    def size(self) -> int:
        """Data bytes: the digits in BCD (a negative value puts FF in the first byte)."""
        return (self.digits + 1) // 2

    def check(self, value: float) -> str | None:
        """Why ``value`` cannot be sent in this format, or None."""
        if value < 0 and not self.signed:
            return f"{self.name} cannot be negative"
        digits = self.digits if value >= 0 else min(self.digits, 2 * (self.size - 1))
        largest = (10**digits - 1) / 10**self.decimals
        if abs(value) > largest:
            sign = "-" if value < 0 else ""
            return f"{self.name} is at most {sign}{largest:g} (N({self.digits},{self.decimals}))"
        scaled = value * 10**self.decimals
        if abs(scaled - round(scaled)) > 1e-6:
            return f"{self.name} has at most {self.decimals} decimals"
        return None


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
    #: The runtime parameters engineers may read and write (42H/43H), as far as named.
    settings: list[Sl651SettingSpec] = []

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
        for i, setting in enumerate(self.settings):
            if any(s.name == setting.name or s.id == setting.id for s in self.settings[:i]):
                raise ValueError(
                    f"settings[{i}] {setting.name!r} ({setting.id:02X}) is named twice"
                )
        return self

    def setting(self, name: str) -> Sl651SettingSpec | None:
        """The runtime parameter of that name."""
        return next((s for s in self.settings if s.name == name), None)

    def points_of(self) -> dict[int, list[tuple[int, int | None]]]:
        """Element identifier -> the points it feeds: (point index, bit or None for the value)."""
        out: dict[int, list[tuple[int, int | None]]] = {}
        for i, p in enumerate(self.points):
            out.setdefault(p.element, []).append((i, p.bit))
        return out
