"""Every point of every shipped profile, read over each transport from a real simulator."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from controller.config import LoadedConfig
from controller.runtime import Controller
from simulators.fleet import SimulatedCity
from simulators.servers import free_port
from tests.helpers import FixedModel, chosen_values, three_transport_links

LAMPS_PER_CABINET = 3


def fleet_config(tmp_path: Path) -> dict[str, Any]:
    links = three_transport_links(tmp_path, (free_port(), free_port()))
    doc: dict[str, Any] = {"links": links, "cabinets": [], "lamps": [], "gauges": []}
    for link in links:
        name = link["id"]
        doc["cabinets"].append(
            {
                "id": f"CAB-{name}",
                "link": name,
                "unit": 1,
                "lamp_runs": [{"circuit": 1, "count": LAMPS_PER_CABINET}],
            }
        )
        doc["lamps"].append({"id": f"SLC-{name}", "link": name, "unit": 5})
        doc["gauges"].append(
            {"id": f"RADAR-{name}", "link": name, "unit": 7, "profile": "wl-radar"}
        )
        doc["gauges"].append(
            {"id": f"PRESS-{name}", "link": name, "unit": 8, "profile": "wl-pressure"}
        )
    return doc


def install_fixed_models(city: SimulatedCity, loaded: LoadedConfig) -> dict[str, dict[str, float]]:
    """Swap every simulated unit's physics for fixed values; return them by device id."""
    expected: dict[str, dict[str, float]] = {}
    lamp_profile = loaded.profiles["slc-lamp"]
    for store in city.stores.values():
        for unit in store.units.values():
            cfg = loaded.config
            profile_of = {c.id: c.profile for c in cfg.cabinets}
            profile_of.update({c.id: c.profile for c in cfg.lamps})
            profile_of.update({c.id: c.profile for c in cfg.gauges})
            profile = loaded.profiles[profile_of[unit.device_id]]
            own = chosen_values(profile)
            subs = []
            if profile.device_class == "cabinet":
                for slot in range(LAMPS_PER_CABINET):
                    subs.append(chosen_values(lamp_profile, seed=slot + 1))
                    expected[f"{unit.device_id}-L{slot + 1:03d}"] = subs[-1]
            unit.model = FixedModel(own, subs)
            expected[unit.device_id] = own
    return expected


async def test_every_point_reads_correctly_over_tcp_rtu_over_tcp_and_serial(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(fleet_config(tmp_path))
    async with SimulatedCity(loaded) as city:
        expected = install_fixed_models(city, loaded)
        async with Controller(loaded) as controller:
            batch = await controller.poller.poll_all_once()
    assert controller.poller.stats.failed_polls == 0
    got: dict[tuple[str, str], float] = {}
    for dev, pt, value, quality in zip(
        batch.device, batch.point, batch.value, batch.quality, strict=True
    ):
        device = controller.registry.devices[dev]
        assert quality == 0
        got[device.id, device.profile.points[pt].name] = float(value)
    checked = 0
    for device in controller.registry.devices:
        for p in device.profile.points:
            want = expected[device.id][p.name]
            assert got[device.id, p.name] == pytest.approx(want, rel=1e-6, abs=1e-9), (
                f"{device.id}.{p.name} over {device.link}"
            )
            checked += 1
    # 3 links x (cabinet 28 + 3 lamps x 10 + lamp 10 + radar 7 + pressure 5) points
    assert checked == 3 * (28 + 30 + 10 + 7 + 5)


async def test_cdab_energy_register_is_on_the_wire_low_word_first(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(fleet_config(tmp_path))
    async with SimulatedCity(loaded) as city:
        expected = install_fixed_models(city, loaded)
        port = loaded.config.links[0].port
        assert isinstance(port, int)
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        try:
            rsp = await client.read_input_registers(10, count=2, device_id=1)
        finally:
            client.close()
    raw = round(expected["CAB-tcp"]["energy"] / 0.1)
    high, low = struct.unpack(">HH", struct.pack(">I", raw))
    assert list(rsp.registers) == [low, high]
