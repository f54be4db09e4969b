"""The InfluxDB schema of streetsense (see docs/telemetry.md): measurements, tags, fields."""

from __future__ import annotations

from controller.registry import Device, Registry
from controller.telemetry.lineprotocol import F32_SIGNIFICANT_DIGITS, LineSchema, point_decimals
from drivers.profile import DeviceProfile


def device_tags(registry: Registry, device: Device) -> dict[str, str]:
    """Tags of a device's lines: the city, where the device is and what it hangs off."""
    loc = device.location
    if device.parent is not None:
        cabinet = registry.devices[device.parent].id
    elif device.device_class == "cabinet":
        cabinet = device.id
    elif device.measures is not None:
        cabinet = registry.devices[device.measures].id
    else:
        cabinet = ""
    return {
        "city": registry.city,
        "device": device.id,
        "cabinet": cabinet,
        "circuit": "" if device.circuit is None else str(device.circuit),
        "phase": device.phase or "",
        "grid": loc.grid,
        "road": loc.road,
        "district": loc.district,
    }


def _fields(device: Device) -> list[tuple[str, int]]:
    profile = device.profile
    # Values pushed as JSON, derived values and a meter's values carry no register
    # type: print them with full precision.
    derived = [(d.name, -F32_SIGNIFICANT_DIGITS) for d in (*profile.derived, *device.borrowed)]
    if isinstance(profile, DeviceProfile):
        return [(p.name, point_decimals(p)) for p in profile.points] + derived
    return [(p.name, -F32_SIGNIFICANT_DIGITS) for p in profile.points] + derived


def schema_for_registry(registry: Registry) -> LineSchema:
    """Line-protocol schema for every device of the registry."""
    profile_index: dict[str, int] = {}
    profiles: list[list[tuple[str, int]]] = []
    of_device = []
    for device in registry.devices:
        name = device.point_set
        if name not in profile_index:
            profile_index[name] = len(profiles)
            profiles.append(_fields(device))
        of_device.append(profile_index[name])
    return LineSchema.build(
        [d.device_class for d in registry.devices],
        [device_tags(registry, d) for d in registry.devices],
        profiles,
        of_device,
    )
