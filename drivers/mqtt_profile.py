"""Profiles of devices that push JSON over MQTT: which payload key is which point.

Like Modbus profiles, these are data: a new vendor's NB-IoT gauge is a YAML
file naming the JSON paths of its values, with scale, offset and unit.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.derived import DerivedPointSpec, check_derived


class MqttPointSpec(BaseModel):
    """One value in the payload: ``path`` is dotted (``sensor.level``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    path: str = Field(min_length=1)
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> MqttPointSpec:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class MqttDeviceProfile(BaseModel):
    """A device type that publishes JSON readings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["mqtt"]
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    device_class: Literal["cabinet", "lamp", "gauge"]
    description: str = ""
    vendor: str = ""
    #: Path of the reading time in the payload; seconds, or milliseconds if above 1e11.
    #: Without it the time of arrival is used.
    timestamp_path: str | None = None
    points: list[MqttPointSpec] = Field(min_length=1)
    #: Per-device parameters derived points read (a gauge's mounting height): a default,
    #: or null when every device must give its own in config (``params``).
    params: dict[str, float | None] = {}
    #: Points computed from this device's points in the same poll.
    derived: list[DerivedPointSpec] = []

    @model_validator(mode="after")
    def _check_derived(self) -> MqttDeviceProfile:
        check_derived(self.derived, [p.name for p in self.points], self.params)
        return self

    @model_validator(mode="after")
    def _unique(self) -> MqttDeviceProfile:
        names = [p.name for p in self.points]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"points[{i}] name {name!r} repeats an earlier point")
        return self

    def extract(self, payload: Any) -> tuple[float | None, list[float]]:
        """Reading time (or None) and one value per point (NaN where absent or not a number)."""
        values = []
        for point in self.points:
            raw = _lookup(payload, point.path)
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                values.append(math.nan)
            else:
                values.append(raw * point.scale + point.offset)
        ts: float | None = None
        if self.timestamp_path:
            raw_ts = _lookup(payload, self.timestamp_path)
            if isinstance(raw_ts, int | float) and not isinstance(raw_ts, bool) and raw_ts > 0:
                ts = raw_ts / 1000.0 if raw_ts > 1e11 else float(raw_ts)
        return ts, values


def _lookup(payload: Any, path: str) -> Any:
    node = payload
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
