"""The registry: every installed device with a dense index, and what to poll.

Readings refer to devices by index (a column of int32), so the index is fixed
when the registry is built. Lamps behind a cabinet are devices of their own,
but they are polled through the cabinet: one poll target, many devices.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from controller.config import LoadedConfig
from controller.config_checks import any_profile
from controller.device_config import LampConfig, Located

# The pull protocols this registry builds targets for; importing their readers
# registers them with ``drivers.pull``, where the poller finds them by plan type.
from drivers.dlt645 import meter_reader as _meter_reader  # noqa: F401
from drivers.dlt645.profile import MeterPlan, plan_meter
from drivers.modbus import unit_reader as _unit_reader  # noqa: F401
from drivers.modbus.device_plan import SELF, DevicePlan, SubDevice, plan_device
from drivers.profile import AnyProfile, DeviceProfile
from rules.site import PointLike


@dataclass(frozen=True)
class Device:
    """One installed device."""

    index: int
    id: str
    device_class: str
    profile: AnyProfile
    location: Located
    #: Link and unit the device answers on (for lamps in a block: the cabinet's).
    link: str
    unit: int
    #: Index of the cabinet for a lamp behind a concentrator, else None.
    parent: int | None = None
    #: Slot in the cabinet's lamp block.
    slot: int | None = None
    circuit: int | None = None
    phase: str | None = None
    rated_w: float | None = None
    #: A meter's 12-digit DL/T 645 address.
    address: str = ""
    #: Index of the cabinet a meter measures.
    measures: int | None = None
    #: Points a cabinet takes from its meter because its own profile lacks them.
    borrowed: tuple[PointLike, ...] = ()

    @property
    def points(self) -> Sequence[PointLike]:
        """The device's points, its derived points, then the points it takes from its
        meter (the index of each is the ``point`` column of readings)."""
        if not self.profile.derived and not self.borrowed:
            return self.profile.points
        return [*self.profile.points, *self.profile.derived, *self.borrowed]

    @property
    def point_set(self) -> str:
        """A name shared by exactly the devices with the same points in the same order."""
        if not self.borrowed:
            return self.profile.name
        return f"{self.profile.name}+{','.join(p.name for p in self.borrowed)}"


@dataclass(frozen=True)
class PollTarget:
    """One unit on one link, polled with one plan, feeding one or more devices."""

    device: int
    link: str
    unit: int
    device_class: str
    plan: DevicePlan | MeterPlan
    #: Device index of every decoded field.
    field_device: npt.NDArray[np.int32]
    #: A meter's DL/T 645 address (Modbus units go by ``unit``).
    address: str = ""
    #: A meter feeding its cabinet: that cabinet, and per meter point the cabinet's
    #: point that takes a copy of the reading (-1: the cabinet measures it itself).
    feeds: int = -1
    feed_point: npt.NDArray[np.int16] | None = None


class Registry:
    """All devices of the site, indexed, and the poll targets over them."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.devices: list[Device] = []
        self.targets: list[PollTarget] = []
        cfg = loaded.config
        #: ``site.city``: tags every series, so that a province's cities share one store.
        self.city = cfg.site.city
        library = loaded.profiles
        for cab in cfg.cabinets:
            profile = library[cab.profile]
            cab_dev = self._add(Device(0, cab.id, "cabinet", profile, cab, cab.link, cab.unit))
            block = profile.blocks[0].name if profile.blocks else ""
            lamp_profile = library[profile.blocks[0].profile] if profile.blocks else None
            members: list[int] = []
            subs: list[SubDevice] = []
            for slot, lamp in enumerate(cab.all_lamps()):
                assert lamp_profile is not None  # checked when the config was loaded
                dev = self._add(
                    self._lamp(
                        lamp, lamp_profile, cab.link, cab.unit, parent=cab_dev.index, slot=slot
                    )
                )
                members.append(dev.index)
                subs.append(SubDevice(block, slot))
            self._add_target(cab_dev, plan_device(profile, library, subs), members)
        for lamp_cfg in cfg.lamps:
            lamp_profile = library[lamp_cfg.profile]
            lamp_dev = self._add(self._lamp(lamp_cfg, lamp_profile, lamp_cfg.link, lamp_cfg.unit))
            self._add_target(lamp_dev, plan_device(lamp_profile, library, []), [])
        for gauge in cfg.gauges:
            gauge_profile = library[gauge.profile]
            gauge_dev = self._add(
                Device(0, gauge.id, "gauge", gauge_profile, gauge, gauge.link, gauge.unit)
            )
            self._add_target(gauge_dev, plan_device(gauge_profile, library, []), [])
        for meter in cfg.meters:
            meter_profile = library.dlt645[meter.profile]
            measures, feed_point = None, None
            if meter.cabinet is not None:
                measures = next(d.index for d in self.devices if d.id == meter.cabinet)
                feed_point = self._borrow(measures, meter_profile.points)
            meter_dev = self._add(
                Device(
                    0,
                    meter.id,
                    "meter",
                    meter_profile,
                    meter,
                    meter.link,
                    0,
                    address=meter.address,
                    measures=measures,
                )
            )
            self.targets.append(
                PollTarget(
                    meter_dev.index,
                    meter.link,
                    0,
                    "meter",
                    plan_meter(meter_profile),
                    np.full(len(meter_profile.points), meter_dev.index, dtype=np.int32),
                    meter.address,
                    -1 if measures is None else measures,
                    feed_point,
                )
            )
        #: Topic of each MQTT device -> its device index.
        self.mqtt_topics: dict[str, int] = {}
        for mdev in cfg.mqtt_devices:
            mqtt_profile = library.mqtt[mdev.profile]
            added = self._add(
                Device(0, mdev.id, mqtt_profile.device_class, mqtt_profile, mdev, "mqtt", 0)
            )
            self.mqtt_topics[mdev.topic] = added.index
        #: SL651 stations by listener id: (device index, station address, password).
        self.sl651_stations: dict[str, list[tuple[int, str, int]]] = {}
        for station in cfg.sl651_stations:
            sl651_profile = library.sl651[station.profile]
            added = self._add(
                Device(0, station.id, "gauge", sl651_profile, station, station.listener, 0)
            )
            self.sl651_stations.setdefault(station.listener, []).append(
                (added.index, station.station.upper(), int(station.password, 16))
            )
        #: Devices of each push source, by source id (device indices).
        self.source_devices: dict[str, list[int]] = {}
        for reporting in cfg.source_devices:
            reported = any_profile(library, reporting.profile)
            assert reported is not None  # checked with the config
            added = self._add(
                Device(
                    0,
                    reporting.id,
                    reporting.device_class,
                    reported,
                    reporting,
                    reporting.source,
                    0,
                )
            )
            self.source_devices.setdefault(reporting.source, []).append(added.index)
        self.by_id = {d.id: d for d in self.devices}
        self._children: dict[int, list[Device]] = {}
        for d in self.devices:
            if d.parent is not None:
                self._children.setdefault(d.parent, []).append(d)
        self.max_points = max((len(d.points) for d in self.devices), default=0)

    def _borrow(
        self, cabinet: int, meter_points: Sequence[PointLike]
    ) -> npt.NDArray[np.int16] | None:
        """Give a cabinet the meter points its profile lacks; where each meter point's
        copy goes among the cabinet's points (-1: nowhere), or None if nowhere at all."""
        device = self.devices[cabinet]
        own = {p.name for p in device.points}
        taken = [p for p in meter_points if p.name not in own]
        if not taken:
            return None
        base = len(device.points)
        slot = {p.name: base + k for k, p in enumerate(taken)}
        self.devices[cabinet] = replace(device, borrowed=(*device.borrowed, *taken))
        return np.asarray([slot.get(p.name, -1) for p in meter_points], dtype=np.int16)

    @staticmethod
    def _lamp(
        lamp: LampConfig,
        profile: DeviceProfile,
        link: str,
        unit: int,
        parent: int | None = None,
        slot: int | None = None,
    ) -> Device:
        return Device(
            0,
            lamp.id,
            "lamp",
            profile,
            lamp,
            link,
            unit,
            parent=parent,
            slot=slot,
            circuit=lamp.circuit,
            phase=lamp.phase,
            rated_w=lamp.rated_w,
        )

    def _add(self, device: Device) -> Device:
        indexed = Device(**{**device.__dict__, "index": len(self.devices)})
        self.devices.append(indexed)
        return indexed

    def _add_target(self, device: Device, plan: DevicePlan, members: list[int]) -> None:
        lookup = np.asarray([*members, device.index], dtype=np.int32)
        # owner SELF (-1) indexes the last element: the addressed device itself.
        field_device = lookup[np.where(plan.owner == SELF, len(members), plan.owner)]
        self.targets.append(
            PollTarget(
                device.index,
                device.link,
                device.unit,
                device.device_class,
                plan,
                field_device.astype(np.int32),
            )
        )

    def __len__(self) -> int:
        return len(self.devices)

    @functools.cached_property
    def layout(self) -> bytes:
        """8 bytes that change whenever a device or point would get another index."""
        digest = hashlib.blake2b(digest_size=8)
        for d in self.devices:
            digest.update(d.id.encode("utf-8") + b"\0")
            for point in d.points:
                digest.update(point.name.encode("utf-8") + b"\1")
        return digest.digest()

    def lamps_of(self, cabinet_index: int) -> list[Device]:
        """Lamps behind the concentrator of a cabinet, in slot order."""
        return self._children.get(cabinet_index, [])

    def count_by_class(self) -> dict[str, int]:
        """How many cabinets, lamps and gauges the site has."""
        counts: dict[str, int] = {}
        for d in self.devices:
            counts[d.device_class] = counts.get(d.device_class, 0) + 1
        return counts
