"""A schedule's places: each cabinet (its circuits and lamps) or stand-alone lamp of a group.

Astronomical steps fall at each place's own sunset, so a group is planned
place by place; a command then bundles all places whose step falls together.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.control.selector import GroupSelector
from controller.control.targets import CircuitTarget, select_circuits, select_lamps
from controller.registry import Registry
from drivers.profile import DeviceProfile


@dataclass(frozen=True)
class SchedulePlace:
    """Where one timeline applies."""

    key: str
    lat: float
    lon: float
    circuits: tuple[CircuitTarget, ...]
    #: Lamp controllers with a dimmer (dimmed, and lit at "on").
    lamps: tuple[int, ...]
    #: Lamps on their own supply, not behind a cabinet circuit (switched by their relay).
    standalone: tuple[int, ...]
    #: Device index of the cabinet, when the place is one.
    cabinet: int | None


def resolve_places(registry: Registry, selector: GroupSelector) -> list[SchedulePlace]:
    """The places of a group, cabinets first (in registry order)."""
    circuits: dict[int, list[CircuitTarget]] = {}
    for target in select_circuits(registry, selector):
        circuits.setdefault(target.cabinet, []).append(target)
    lamps: dict[int, list[int]] = {}
    standalone: list[int] = []
    for index in select_lamps(registry, selector):
        lamp = registry.devices[index]
        profile = lamp.profile
        if not isinstance(profile, DeviceProfile) or profile.controls.switch is None:
            continue
        if lamp.parent is None:
            standalone.append(index)
        elif profile.controls.dim is not None:
            lamps.setdefault(lamp.parent, []).append(index)
    places = []
    for cabinet in sorted(set(circuits) | set(lamps)):
        device = registry.devices[cabinet]
        places.append(
            SchedulePlace(
                device.id,
                device.location.lat,
                device.location.lon,
                tuple(circuits.get(cabinet, [])),
                tuple(lamps.get(cabinet, [])),
                (),
                cabinet,
            )
        )
    for index in standalone:
        lamp = registry.devices[index]
        dimmable = isinstance(lamp.profile, DeviceProfile) and lamp.profile.controls.dim is not None
        places.append(
            SchedulePlace(
                lamp.id,
                lamp.location.lat,
                lamp.location.lon,
                (),
                (index,) if dimmable else (),
                (index,),
                None,
            )
        )
    return places
