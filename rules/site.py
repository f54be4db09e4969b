"""What the rules need to know of the installed devices.

The controller's registry satisfies these interfaces; rules never import it,
so the engine, the compiler and the alarm lifecycle can be read, tested and
benchmarked without a controller around them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from drivers.profile import AnyProfile


class PointLike(Protocol):
    """A measured or derived point: a name and a unit."""

    @property
    def name(self) -> str: ...

    @property
    def unit(self) -> str: ...


class SiteLocation(Protocol):
    """Where a device stands and which areas of the city it belongs to."""

    @property
    def lat(self) -> float: ...

    @property
    def lon(self) -> float: ...

    @property
    def grid(self) -> str: ...

    @property
    def road(self) -> str: ...

    @property
    def district(self) -> str: ...


class SiteDevice(Protocol):
    """One installed device as the rules see it."""

    @property
    def index(self) -> int: ...

    @property
    def id(self) -> str: ...

    @property
    def device_class(self) -> str: ...

    @property
    def profile(self) -> AnyProfile: ...

    @property
    def location(self) -> SiteLocation: ...

    @property
    def parent(self) -> int | None: ...

    @property
    def circuit(self) -> int | None: ...

    @property
    def rated_w(self) -> float | None: ...

    @property
    def points(self) -> Sequence[PointLike]: ...

    @property
    def point_set(self) -> str: ...


class Site(Protocol):
    """Every installed device, by index (the ``device`` column of readings) and by id."""

    @property
    def devices(self) -> Sequence[SiteDevice]: ...

    @property
    def by_id(self) -> Mapping[str, SiteDevice]: ...

    @property
    def max_points(self) -> int: ...

    def lamps_of(self, cabinet_index: int) -> Sequence[SiteDevice]:
        """The lamps behind a cabinet."""
        ...

    def __len__(self) -> int: ...
