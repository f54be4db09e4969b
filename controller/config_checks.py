"""Checks across a whole config: references between sections and to profiles.

Pydantic checks each section alone; these check what needs the whole file (a
cabinet's link exists, a unit id is used once per link, a profile is of the
device's class). Every problem is collected, so a person fixes them in one go.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from controller.device_config import (
    CabinetConfig,
    GaugeLevels,
    LinkConfig,
    ListenerConfig,
    Located,
)
from drivers.errors import ConfigError, validation_problems
from drivers.profile import AnyProfile, ProfileLibrary
from drivers.sources import PushProtocol, SourceConfig, push_protocol, push_protocol_names

if TYPE_CHECKING:
    from controller.config import StreetsenseConfig


class _Problems:
    """The problems found in one file, all reported at once."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.found: list[ConfigError] = []

    def add(self, key: str, reason: str) -> None:
        self.found.append(ConfigError(self.file, key, reason))

    def raise_any(self) -> None:
        if self.found:
            first, *more = self.found
            raise ConfigError(first.file, first.key, first.reason, more)


def check_references(
    config: StreetsenseConfig, profiles: ProfileLibrary, file: str
) -> list[tuple[PushProtocol, SourceConfig]]:
    problems = _Problems(file)
    links: dict[str, LinkConfig] = {}
    endpoints: dict[str, str] = {}
    for i, link in enumerate(config.links):
        key = f"links[{i}] ({link.id})"
        if link.id in links:
            problems.add(f"{key}.id", "link id used twice")
        links[link.id] = link
        where = str(link.port) if link.kind == "rtu_serial" else f"{link.host}:{link.port}"
        if where in endpoints:
            # Two links to one DTU or one serial line would fight over it.
            problems.add(f"{key}.port", f"{where} is already link {endpoints[where]}")
        else:
            endpoints[where] = link.id
    ids: dict[str, str] = {}
    units: dict[tuple[str, int], str] = {}

    def claim_id(device_id: str, key: str) -> None:
        if device_id in ids:
            problems.add(key, f"device id {device_id!r} already used at {ids[device_id]}")
        else:
            ids[device_id] = key

    def check_device(
        key: str, device_id: str, link: str, unit: int, profile: str, device_class: str
    ) -> bool:
        """Whether the device's profile is known and of its class (checks that need it follow)."""
        claim_id(device_id, f"{key}.id")
        if link not in links:
            problems.add(f"{key}.link", f"unknown link {link!r}")
        elif (link, unit) in units:
            problems.add(
                f"{key}.unit", f"unit {unit} on link {link} is already {units[link, unit]}"
            )
        else:
            units[link, unit] = device_id
        if profile not in profiles:
            problems.add(
                f"{key}.profile",
                f"unknown profile {profile!r} (known: {', '.join(profiles.names())})",
            )
            return False
        if profiles[profile].device_class != device_class:
            problems.add(
                f"{key}.profile",
                f"profile {profile} is a {profiles[profile].device_class} profile, "
                f"not a {device_class} profile",
            )
            return False
        return True

    for i, cab in enumerate(config.cabinets):
        key = f"cabinets[{i}] ({cab.id})"
        if check_device(key, cab.id, cab.link, cab.unit, cab.profile, "cabinet"):
            _check_cabinet_profile(cab, key, profiles, problems)
        for j, lamp in enumerate(cab.lamps):
            claim_id(lamp.id, f"{key}.lamps[{j}].id")
            if lamp.circuit > cab.circuits:
                problems.add(
                    f"{key}.lamps[{j}] ({lamp.id}).circuit",
                    f"circuit {lamp.circuit}, but the cabinet has {cab.circuits}",
                )
        for j, run in enumerate(cab.lamp_runs):
            if run.circuit > cab.circuits:
                problems.add(
                    f"{key}.lamp_runs[{j}].circuit",
                    f"circuit {run.circuit}, but the cabinet has {cab.circuits}",
                )
        for lamp in cab.all_lamps()[len(cab.lamps) :]:
            claim_id(lamp.id, f"{key}.lamp_runs")
    for i, lamp in enumerate(config.lamps):
        check_device(f"lamps[{i}] ({lamp.id})", lamp.id, lamp.link, lamp.unit, lamp.profile, "lamp")
    for i, mdev in enumerate(config.mqtt_devices):
        key = f"mqtt_devices[{i}] ({mdev.id})"
        claim_id(mdev.id, f"{key}.id")
        if mdev.profile not in profiles.mqtt:
            problems.add(
                f"{key}.profile",
                f"unknown MQTT profile {mdev.profile!r} "
                f"(known: {', '.join(sorted(profiles.mqtt))})",
            )
        if config.mqtt is None:
            problems.add(f"{key}", "MQTT devices need an mqtt: broker section")
    _check_schedules(config, problems)
    _check_stations(config, profiles, problems, claim_id)
    for i, polled in enumerate(config.gauges):
        key = f"gauges[{i}] ({polled.id})"
        check_device(key, polled.id, polled.link, polled.unit, polled.profile, "gauge")
    level_gauges: list[tuple[str, GaugeLevels]] = [
        *((f"gauges[{i}] ({g.id})", g) for i, g in enumerate(config.gauges)),
        *((f"sl651_stations[{i}] ({s.id})", s) for i, s in enumerate(config.sl651_stations)),
    ]
    for key, gauge in level_gauges:
        order = ["blue", "yellow", "orange", "red"]
        given = [gauge.levels[c] for c in order if c in gauge.levels]
        if given != sorted(given):
            problems.add(f"{key}.levels", "levels must rise blue < yellow < orange < red")
        watch = config.flood_watch
        if watch is not None and not getattr(gauge, watch.area_by):
            # Storm mode groups gauges by this attribute; a gauge without it would
            # land in one nameless area with every other such gauge.
            problems.add(
                f"{key}.{watch.area_by}",
                f"flood_watch.area_by is {watch.area_by!r} but this gauge has no {watch.area_by}",
            )
    _check_meters(config, profiles, problems, claim_id)
    _check_params(config, profiles, problems)
    sources = _check_sources(config, profiles, problems, claim_id)
    problems.raise_any()
    return sources


def _check_sources(
    config: StreetsenseConfig,
    profiles: ProfileLibrary,
    problems: _Problems,
    claim_id: Callable[[str, str], None],
) -> list[tuple[PushProtocol, SourceConfig]]:
    """Import the protocol packages, then check each source against its protocol's model."""
    for i, module in enumerate(config.protocol_packages):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            problems.add(f"protocol_packages[{i}]", f"cannot import {module!r}: {exc}")
    checked: list[tuple[PushProtocol, SourceConfig]] = []
    ids: set[str] = set()
    for i, entry in enumerate(config.sources):
        key = f"sources[{i}] ({entry.id})"
        if entry.id in ids:
            problems.add(f"{key}.id", "source id used twice")
        ids.add(entry.id)
        protocol = push_protocol(entry.protocol)
        if protocol is None:
            known = ", ".join(push_protocol_names()) or "none registered"
            problems.add(f"{key}.protocol", f"unknown protocol {entry.protocol!r} (known: {known})")
            continue
        raw = entry.model_dump()
        try:
            checked.append((protocol, protocol.config.model_validate(raw)))
        except ValidationError as exc:
            for where, reason in validation_problems(exc, raw):
                problems.add(f"{key}.{where}", reason)
    for i, device in enumerate(config.source_devices):
        key = f"source_devices[{i}] ({device.id})"
        claim_id(device.id, f"{key}.id")
        if device.source not in ids:
            problems.add(f"{key}.source", f"unknown source {device.source!r}")
        profile = any_profile(profiles, device.profile)
        if profile is None:
            problems.add(f"{key}.profile", f"unknown profile {device.profile!r}")
        elif getattr(profile, "device_class", device.device_class) != device.device_class:
            problems.add(
                f"{key}.profile",
                f"profile {device.profile} is not a {device.device_class} profile",
            )
    return checked


def any_profile(profiles: ProfileLibrary, name: str) -> AnyProfile | None:
    """The named profile of any protocol's format, or None."""
    return (
        profiles.get(name)
        or profiles.mqtt.get(name)
        or profiles.sl651.get(name)
        or profiles.dlt645.get(name)
    )


def _check_meters(
    config: StreetsenseConfig,
    profiles: ProfileLibrary,
    problems: _Problems,
    claim_id: Callable[[str, str], None],
) -> None:
    links = {link.id: link for link in config.links}
    cabinets = {cab.id for cab in config.cabinets}
    addresses: dict[tuple[str, str], str] = {}
    for i, meter in enumerate(config.meters):
        key = f"meters[{i}] ({meter.id})"
        claim_id(meter.id, f"{key}.id")
        link = links.get(meter.link)
        if link is None:
            problems.add(f"{key}.link", f"unknown link {meter.link!r}")
        elif link.kind == "modbus_tcp":
            problems.add(
                f"{key}.link",
                f"link {link.id} is modbus_tcp; a DL/T 645 meter needs an rtu_serial line "
                "or an rtu_over_tcp (transparent) DTU",
            )
        if (meter.link, meter.address) in addresses:
            problems.add(
                f"{key}.address",
                f"meter {meter.address} on link {meter.link} is already "
                f"{addresses[meter.link, meter.address]}",
            )
        addresses[meter.link, meter.address] = meter.id
        if meter.profile not in profiles.dlt645:
            known = ", ".join(sorted(profiles.dlt645)) or "none"
            problems.add(
                f"{key}.profile", f"unknown DL/T 645 profile {meter.profile!r} (known: {known})"
            )
        if meter.cabinet is not None and meter.cabinet not in cabinets:
            problems.add(f"{key}.cabinet", f"unknown cabinet {meter.cabinet!r}")


def _check_params(config: StreetsenseConfig, profiles: ProfileLibrary, problems: _Problems) -> None:
    """Each device gives the parameters its profile's derived points need, and no others."""

    devices: list[tuple[str, Located, str, AnyProfile | None]]
    devices = [
        (f"cabinets[{i}] ({c.id})", c, c.profile, profiles.get(c.profile))
        for i, c in enumerate(config.cabinets)
    ]
    devices += [
        (f"lamps[{i}] ({x.id})", x, x.profile, profiles.get(x.profile))
        for i, x in enumerate(config.lamps)
    ]
    devices += [
        (f"gauges[{i}] ({g.id})", g, g.profile, profiles.get(g.profile))
        for i, g in enumerate(config.gauges)
    ]
    devices += [
        (f"mqtt_devices[{i}] ({m.id})", m, m.profile, profiles.mqtt.get(m.profile))
        for i, m in enumerate(config.mqtt_devices)
    ]
    devices += [
        (f"sl651_stations[{i}] ({s.id})", s, s.profile, profiles.sl651.get(s.profile))
        for i, s in enumerate(config.sl651_stations)
    ]
    devices += [
        (f"meters[{i}] ({m.id})", m, m.profile, profiles.dlt645.get(m.profile))
        for i, m in enumerate(config.meters)
    ]
    for key, device, name, profile in devices:
        if profile is None:
            continue  # reported as an unknown profile
        declared = profile.params
        for param in sorted(set(device.params) - set(declared)):
            problems.add(f"{key}.params.{param}", f"profile {name} has no parameter {param!r}")
        for param, default in declared.items():
            if default is None and param not in device.params:
                problems.add(
                    f"{key}.params", f"profile {name} needs parameter {param!r} (no default)"
                )


def _check_stations(
    config: StreetsenseConfig,
    profiles: ProfileLibrary,
    problems: _Problems,
    claim_id: Callable[[str, str], None],
) -> None:
    listeners: dict[str, ListenerConfig] = {}
    for i, listener in enumerate(config.listeners):
        if listener.id in listeners or any(link.id == listener.id for link in config.links):
            problems.add(
                f"listeners[{i}] ({listener.id}).id", "id already used by a link or listener"
            )
        listeners[listener.id] = listener
    addresses: dict[tuple[str, str], str] = {}
    for i, station in enumerate(config.sl651_stations):
        key = f"sl651_stations[{i}] ({station.id})"
        claim_id(station.id, f"{key}.id")
        if station.listener not in listeners:
            problems.add(f"{key}.listener", f"unknown listener {station.listener!r}")
        where = (station.listener, station.station.upper())
        if where in addresses:
            problems.add(
                f"{key}.station", f"station {station.station} is already {addresses[where]}"
            )
        addresses[where] = station.id
        if station.profile not in profiles.sl651:
            known = ", ".join(sorted(profiles.sl651)) or "none"
            problems.add(
                f"{key}.profile", f"unknown SL651 profile {station.profile!r} (known: {known})"
            )


def _check_cabinet_profile(
    cab: CabinetConfig, key: str, profiles: ProfileLibrary, problems: _Problems
) -> None:
    profile = profiles[cab.profile]
    if profile.controls.circuit is not None:
        points = {p.name for p in profile.points}
        for n in range(1, cab.circuits + 1):
            command, feedback = profile.controls.circuit.points_for(n)
            if command not in points or feedback not in points:
                problems.add(
                    f"{key}.circuits",
                    f"{cab.circuits} circuits, but profile {cab.profile} "
                    f"has no {command} / {feedback} for circuit {n}",
                )
                break
    lamp_total = len(cab.lamps) + sum(run.count for run in cab.lamp_runs)
    capacity = profile.blocks[0].count_max if profile.blocks else 0
    if lamp_total > capacity:
        problems.add(
            f"{key}.lamps",
            f"{lamp_total} lamps, but profile {cab.profile} carries at most {capacity}",
        )


def _check_schedules(config: StreetsenseConfig, problems: _Problems) -> None:
    sched = config.schedules
    programs: set[str] = set()
    for i, program in enumerate(sched.programs):
        if program.id in programs:
            problems.add(f"schedules.programs[{i}].id", f"program {program.id} twice")
        programs.add(program.id)

    def known(program: str, key: str) -> None:
        if program not in programs:
            problems.add(key, f"unknown program {program!r} (known: {', '.join(sorted(programs))})")

    calendars: set[str] = set()
    for i, cal in enumerate(sched.calendars):
        key = f"schedules.calendars[{i}] ({cal.id})"
        if cal.id in calendars:
            problems.add(f"{key}.id", f"calendar {cal.id} twice")
        calendars.add(cal.id)
        known(cal.default, f"{key}.default")
        for j, rule in enumerate(cal.rules):
            known(rule.program, f"{key}.rules[{j}].program")
    groups: set[str] = set()
    for i, group in enumerate(sched.groups):
        key = f"schedules.groups[{i}] ({group.id})"
        if group.id in groups:
            problems.add(f"{key}.id", f"group {group.id} twice")
        groups.add(group.id)
        if group.calendar not in calendars:
            problems.add(f"{key}.calendar", f"unknown calendar {group.calendar!r}")
