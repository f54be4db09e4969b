"""Which street furniture a command or a schedule acts on.

Lighting engineers think in cabinets, roads, grid cells, districts and tags
("landscape", "tunnel"), not in unit ids. A selector names a group that way;
resolving it against the registry gives the cabinet circuits and the lamp
controllers to command.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.control.selector import GroupSelector
from controller.device_config import CabinetConfig
from controller.registry import Device, Registry
from drivers.errors import PeopleMessage


class UnknownTarget(ValueError):
    """A selector names a cabinet or lamp that is not installed."""

    def __init__(self, device_class: str, device_id: str) -> None:
        super().__init__(f"no {device_class} {device_id!r}")
        self.message = PeopleMessage(
            "refusal.no_target", {"device_class": device_class, "device": device_id}
        )


@dataclass(frozen=True)
class CircuitTarget:
    """One output circuit of one cabinet."""

    cabinet: int
    circuit: int


def _place_matches(selector: GroupSelector, device: Device) -> bool:
    loc = device.location
    return (
        (selector.road is None or selector.road == loc.road)
        and (selector.grid is None or selector.grid == loc.grid)
        and (selector.district is None or selector.district == loc.district)
        and (selector.tag is None or selector.tag in loc.tags)
    )


def _by_id(registry: Registry, ids: list[str], device_class: str) -> list[Device]:
    found = []
    for device_id in ids:
        device = registry.by_id.get(device_id)
        if device is None or device.device_class != device_class:
            raise UnknownTarget(device_class, device_id)
        found.append(device)
    return found


def _cabinet_circuits(device: Device) -> int:
    loc = device.location
    return loc.circuits if isinstance(loc, CabinetConfig) else 0


def select_circuits(registry: Registry, selector: GroupSelector) -> list[CircuitTarget]:
    """The cabinet circuits a selector names.

    Cabinets named by id give their circuits; a place or tag gives the circuits
    that feed the lamps there (a side road may be one circuit of a cabinet on
    the main road), and cabinets there without lamp records give all circuits.
    """
    wanted: set[tuple[int, int]] = set()
    only = set(selector.circuits) if selector.circuits else None

    def add_cabinet(cabinet: Device) -> None:
        for c in range(1, _cabinet_circuits(cabinet) + 1):
            wanted.add((cabinet.index, c))

    located = any(
        v is not None for v in (selector.road, selector.grid, selector.district, selector.tag)
    )
    if selector.cabinets is not None:
        for cabinet in _by_id(registry, selector.cabinets, "cabinet"):
            if _place_matches(selector, cabinet):
                add_cabinet(cabinet)
    elif selector.all or located:
        for device in registry.devices:
            if device.device_class == "cabinet" and _place_matches(selector, device):
                if selector.all or not registry.lamps_of(device.index):
                    add_cabinet(device)
            elif (
                device.device_class == "lamp"
                and device.parent is not None
                and device.circuit is not None
                and _place_matches(selector, device)
            ):
                wanted.add((device.parent, device.circuit))
    if selector.lamps is not None:
        for lamp in _by_id(registry, selector.lamps, "lamp"):
            if lamp.parent is not None and lamp.circuit is not None:
                wanted.add((lamp.parent, lamp.circuit))
    return [CircuitTarget(cab, c) for cab, c in sorted(wanted) if only is None or c in only]


def select_lamps(registry: Registry, selector: GroupSelector) -> list[int]:
    """Device indexes of the lamp controllers a selector names."""
    chosen: set[int] = set()
    if selector.lamps is not None:
        chosen.update(d.index for d in _by_id(registry, selector.lamps, "lamp"))
    if selector.cabinets is not None:
        for cabinet in _by_id(registry, selector.cabinets, "cabinet"):
            chosen.update(
                lamp.index
                for lamp in registry.lamps_of(cabinet.index)
                if _place_matches(selector, lamp)
                and (selector.circuits is None or lamp.circuit in selector.circuits)
            )
    elif selector.lamps is None:
        chosen.update(
            d.index
            for d in registry.devices
            if d.device_class == "lamp"
            and _place_matches(selector, d)
            and (selector.circuits is None or d.circuit in selector.circuits)
        )
    return sorted(chosen)


def lamps_on(registry: Registry, circuits: list[CircuitTarget]) -> int:
    """How many lamp controllers the registry knows on these circuits."""
    wanted = {(c.cabinet, c.circuit) for c in circuits}
    by_cabinet = {c.cabinet for c in circuits}
    return sum(
        1 for cab in by_cabinet for lamp in registry.lamps_of(cab) if (cab, lamp.circuit) in wanted
    )
