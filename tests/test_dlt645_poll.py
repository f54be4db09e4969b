"""DL/T 645 meters as devices of the city: polled beside Modbus units on one line,
on their own serial line, with the faults real meters have."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.config import LoadedConfig
from controller.registry import PollTarget
from controller.runtime import Controller
from drivers.errors import ConfigError
from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import SimulatedCity
from simulators.servers import free_port
from tests.helpers import readings_by_device


def meter_city(tmp_path: Path) -> dict[str, Any]:
    return {
        "site": {"city": "test-city"},
        "polling": {"batch_interval": 0.1, "offline_after": 1},
        "links": [
            # A cabinet's controller and its meter on one RS-485 line behind one DTU.
            {
                "id": "dtu",
                "kind": "rtu_over_tcp",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout": 0.4,
            },
            # Meters alone on a 2400-baud serial line, as most are wired (in the field
            # 8E1; a PTY refuses parity settings every other time, so 8N1 here).
            {
                "id": "rs485",
                "kind": "rtu_serial",
                "port": str(tmp_path / "meters"),
                "sim_port": str(tmp_path / "meters-sim"),
                "baudrate": 2400,
                "timeout": 1.0,
            },
        ],
        "cabinets": [
            {"id": "CAB-1", "link": "dtu", "unit": 1, "lamp_runs": [{"circuit": 1, "count": 6}]}
        ],
        "meters": [
            {"id": "MTR-1", "link": "dtu", "address": "000000000161", "cabinet": "CAB-1"},
            {"id": "MTR-2", "link": "rs485", "address": "100023669245"},
            {"id": "MTR-3", "link": "rs485", "address": "000000000003"},
        ],
        "simulator": {"lamps_at_start": "lit"},
        "storage": {"embedded": {"path": str(tmp_path / "embedded.db")}},
    }


def target_of(controller: Controller, device: str) -> PollTarget:
    index = controller.registry.by_id[device].index
    return next(t for t in controller.registry.targets if t.device == index)


async def test_a_meter_shares_its_cabinets_line_and_reads_what_the_cabinet_draws(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(meter_city(tmp_path))
    async with SimulatedCity(loaded) as sim, Controller(loaded) as controller:
        batch = await controller.poller.poll_all_once()
        got = readings_by_device(controller, batch)
        cabinet, meter = got["CAB-1"], got["MTR-1"]
        # The same supply seen by the cabinet's Modbus terminal and by its meter.
        assert meter["voltage_a"] == pytest.approx(cabinet["voltage_a"], abs=6.1)
        assert 200 < meter["voltage_b"] < 240 and 200 < meter["voltage_c"] < 240
        lamps_w = sum(lamp.rated_w for lamp in sim.lamps.values())
        assert meter["active_power"] == pytest.approx(lamps_w / 1000, rel=0.3)
        assert meter["frequency"] == pytest.approx(50.0, abs=0.05)
        assert not math.isnan(meter["energy"]) and 0 < meter["power_factor"] <= 1
        # Two blocks (voltages, currents) and four single reads: 6 round trips, not 10.
        outcome = await controller.poller.poll_target(target_of(controller, "MTR-1"))
        assert (outcome.requests, outcome.answered, outcome.error) == (6, 6, None)
        # The meter's readings carry the cabinet it measures, for InfluxDB and the API.
        mtr = controller.registry.by_id["MTR-1"]
        assert mtr.measures == controller.registry.by_id["CAB-1"].index
        # Meters on the serial line (one answers with an FE preamble) read as well.
        assert 200 < got["MTR-2"]["voltage_a"] < 240
        assert got["MTR-3"]["frequency"] == pytest.approx(50.0, abs=0.05)
        assert controller.poller.health[controller.registry.by_id["MTR-2"].index].online


async def test_a_silent_or_garbled_meter_is_counted_and_costs_only_its_own_time(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(meter_city(tmp_path))
    async with SimulatedCity(loaded) as sim, Controller(loaded) as controller:
        sim.inject(FaultSpec(kind=FaultKind.DEVICE_SILENT, device="MTR-2"))
        sim.inject(FaultSpec(kind=FaultKind.GARBLED, device="MTR-1"))
        batch = await controller.poller.poll_all_once()
        got = readings_by_device(controller, batch)
        health = controller.poller.health
        silent = health[controller.registry.by_id["MTR-2"].index]
        garbled = health[controller.registry.by_id["MTR-1"].index]
        assert not silent.online and silent.errors["timeout"] == 1
        assert not garbled.online and garbled.errors["garbled"] == 1
        assert "checksum" in garbled.last_error
        # Their neighbours on each line answer as before.
        assert "CAB-1" in got and "MTR-3" in got
        assert controller.links["rs485"].health.errors["timeout"] >= 1
        assert controller.links["dtu"].health.errors["garbled"] >= 1
        # A dead meter costs one timeout, not one per identifier.
        outcome = await controller.poller.poll_target(target_of(controller, "MTR-2"))
        assert outcome.requests == 1 and outcome.error is not None
        sim.clear("MTR-2")
        sim.clear("MTR-1")
        await controller.poller.poll_all_once()
        assert silent.online and garbled.online


async def test_a_meter_that_refuses_blocks_is_read_point_by_point(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(meter_city(tmp_path))
    async with SimulatedCity(loaded) as sim, Controller(loaded) as controller:
        meter = sim.meters["rs485"]["000000000003"]
        meter.blocks = False
        meter.frame_limit = 4  # and splits longer answers into follow-up frames
        outcome = await controller.poller.poll_target(target_of(controller, "MTR-3"))
        got = readings_by_device(controller, outcome.batch)["MTR-3"]
        assert outcome.error is None and len(got) == 10
        assert 200 < got["voltage_c"] < 240 and got["frequency"] == pytest.approx(50, abs=0.05)
        # Each refused block costs one round trip more: 2 + 10 singles.
        assert outcome.requests == 12
        assert controller.links["rs485"].health.errors["exception"] == 2


async def test_a_cabinet_without_metering_takes_its_supply_from_its_meter(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    doc = meter_city(tmp_path)
    # A switching terminal without a concentrator: its lamps have no controllers.
    doc["cabinets"][0].update(profile="sl-cabinet-4c-switching", lamp_runs=[])
    doc["rules"] = [
        {
            "id": "under-voltage-a",
            "kind": "threshold",
            "point": "voltage_a",
            "direction": "low",
            "select": {"device_class": "cabinet"},
            "limits": [198],
        }
    ]
    doc["alarms"] = {"path": str(tmp_path / "alarms.db")}
    loaded = write_config(doc)
    async with SimulatedCity(loaded) as sim, Controller(loaded) as controller:
        await controller.open_stores()
        cabinet = controller.registry.by_id["CAB-1"]
        # Its terminal measures nothing of the supply: the meter's points become its own.
        assert "voltage_a" not in {p.name for p in cabinet.profile.points}
        assert {"voltage_a", "current_b", "active_power", "energy"} <= {
            p.name for p in cabinet.points
        }
        batch = await controller.poller.poll_all_once()
        got = readings_by_device(controller, batch)
        for point in ("voltage_a", "current_c", "active_power", "frequency", "energy"):
            assert got["CAB-1"][point] == got["MTR-1"][point], point
        assert "circuit1_on" in got["CAB-1"]  # and its own terminal's points as before
        # The cabinet's voltage rule watches the meter's voltage: mains lost, it alarms.
        sim.inject(FaultSpec(kind=FaultKind.MAINS_LOSS, device="CAB-1"))
        for _ in range(3):
            await controller.poller.push(await controller.poller.poll_all_once())
            await controller.poller.flush()
        alarms = [a for a in controller.rules.manager.list() if a.active]
        assert [(a.rule, a.device) for a in alarms] == [("under-voltage-a", "CAB-1")]


def test_meter_config_errors_name_the_key(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    doc = meter_city(tmp_path)
    doc["links"].append(
        {"id": "gw", "kind": "modbus_tcp", "host": "127.0.0.1", "port": free_port()}
    )
    doc["meters"] += [
        {"id": "MTR-4", "link": "gw", "address": "000000000004"},
        {"id": "MTR-5", "link": "rs485", "address": "000000000003", "cabinet": "CAB-9"},
        {"id": "MTR-6", "link": "rs485", "address": "000000000006", "profile": "wl-radar"},
    ]
    with pytest.raises(ConfigError) as caught:
        write_config(doc)
    text = str(caught.value)
    assert "meters[3] (MTR-4).link: link gw is modbus_tcp" in text
    assert "meters[4] (MTR-5).address: meter 000000000003 on link rs485 is already MTR-3" in text
    assert "meters[4] (MTR-5).cabinet: unknown cabinet 'CAB-9'" in text
    assert "meters[5] (MTR-6).profile: unknown DL/T 645 profile 'wl-radar'" in text
    doc = meter_city(tmp_path)
    doc["meters"][0]["address"] = "16100000000"
    with pytest.raises(ConfigError, match=r"meters\[0\] \(MTR-1\)\.address"):
        write_config(doc)
