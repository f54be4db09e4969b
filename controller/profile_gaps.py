"""What a site's profiles lack for the rules, controls and statistics that select them.

A rule binds only devices whose profile has the points it reads, so a
third-party profile without ``lamp_on`` or ``circuit6_current`` makes the rule
quietly skip those devices. ``streetsense check`` prints these gaps as
warnings, one line per rule (or duty) and profile.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from controller.config import LoadedConfig
from controller.device_config import CabinetConfig
from controller.registry import Device, Registry
from drivers.profile import DeviceProfile
from rules.compile import selects
from rules.config import RuleConfig

#: Points each device-level rule reads, besides those of the circuits.
_LAMP_RULE_POINTS = {
    "lamp_failure": ("lamp_on", "switch_cmd", "voltage", "power"),
    "lamp_power": ("lamp_on", "power"),
    "lamp_cycling": ("lamp_on",),
    "day_burning": ("lamp_on",),
}
#: Points per circuit ``n`` of the circuit rules.
_CIRCUIT_RULE_POINTS = {
    "circuit_break": ("circuit{n}_cmd", "circuit{n}_on", "circuit{n}_current"),
    "contactor": ("circuit{n}_cmd", "circuit{n}_on"),
}


@dataclass(frozen=True)
class ProfileGap:
    """Devices of one profile that a rule or duty cannot serve, and the points they lack."""

    what: str
    profile: str
    devices: int
    missing: tuple[str, ...]
    consequence: str

    def __str__(self) -> str:
        return (
            f"{self.what}: {self.devices} device(s) of profile {self.profile} lack "
            f"{', '.join(self.missing)}: {self.consequence}"
        )


def _unplaced(registry: Registry, device: Device) -> bool:
    place = device.location
    if device.parent is not None and (place.lat, place.lon) == (0.0, 0.0):
        place = registry.devices[device.parent].location
    return (place.lat, place.lon) == (0.0, 0.0)


def _needed(rule: RuleConfig, device: Device) -> tuple[str, ...]:
    if rule.kind in _LAMP_RULE_POINTS:
        return _LAMP_RULE_POINTS[rule.kind] if device.device_class == "lamp" else ()
    if rule.kind in _CIRCUIT_RULE_POINTS:
        loc = device.location
        circuits = loc.circuits if isinstance(loc, CabinetConfig) else 0
        return tuple(
            name.format(n=n)
            for n in range(1, circuits + 1)
            for name in _CIRCUIT_RULE_POINTS[rule.kind]
        )
    point = getattr(rule, "point", None)
    return (point,) if isinstance(point, str) else ()


def profile_gaps(loaded: LoadedConfig, registry: Registry) -> list[ProfileGap]:
    """Every rule, control and statistic that skips devices for want of a point, and
    every lamp day-burning would judge by the sun at 0°N 0°E for want of a position."""
    found: dict[tuple[str, str, tuple[str, ...], str], int] = defaultdict(int)
    for i, rule in enumerate(loaded.config.rules):
        for device in registry.devices:
            if not selects(rule.select, device):
                continue
            lamp = device.device_class == "lamp"
            if rule.kind == "day_burning" and lamp and _unplaced(registry, device):
                where = (f"rules[{i}] ({rule.id})", device.profile.name, ("lat", "lon"))
                found[(*where, "its sun times are those of 0°N 0°E")] += 1
            names = {p.name for p in device.points}
            missing = tuple(n for n in _needed(rule, device) if n not in names)
            if missing:
                key = (f"rules[{i}] ({rule.id})", device.profile.name, missing, "not watched")
                found[key] += 1
    for device in registry.devices:
        profile = device.profile
        names = {p.name for p in device.points}
        if device.device_class == "cabinet":
            if not isinstance(profile, DeviceProfile) or profile.controls.circuit is None:
                key = ("control", profile.name, ("controls.circuit",), "circuits not switchable")
                found[key] += 1
        elif device.device_class == "lamp":
            if not isinstance(profile, DeviceProfile) or profile.controls.switch is None:
                key = ("control", profile.name, ("controls.switch",), "lamps not switchable")
                found[key] += 1
            lacking = tuple(n for n in ("switch_cmd", "lamp_on") if n not in names)
            if lacking:
                found["lighting rate", profile.name, lacking, "not counted"] += 1
    return [
        ProfileGap(what, profile, count, missing, consequence)
        for (what, profile, missing, consequence), count in found.items()
    ]
