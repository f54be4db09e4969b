"""The simulators behave like the street: checked by polling them over Modbus."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from controller.config import LoadedConfig
from controller.runtime import Controller
from drivers.profile import Table
from simulators.faults import FaultKind, FaultSpec, RainEvent, Scenario
from simulators.fleet import SimulatedCity
from simulators.servers import free_port
from tests.helpers import city_with_controller, readings_by_device


def city_doc() -> dict[str, Any]:
    return {
        "links": [
            {
                "id": "dtu",
                "kind": "rtu_over_tcp",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout": 0.5,
            }
        ],
        "cabinets": [
            {
                "id": "CAB-1",
                "link": "dtu",
                "unit": 1,
                "lamp_runs": [
                    {"circuit": 1, "count": 12, "rated_w": 150},
                    {"circuit": 2, "count": 6, "rated_w": 100},
                ],
            }
        ],
        "gauges": [{"id": "WL-1", "link": "dtu", "unit": 9, "profile": "wl-radar"}],
    }


async def poll(controller: Controller) -> dict[str, dict[str, float]]:
    return readings_by_device(controller, await controller.poller.poll_all_once())


async def test_phase_and_circuit_currents_are_sums_of_the_lamps(
    write_config: Callable[[dict[str, Any]], LoadedConfig],
) -> None:
    loaded = write_config(city_doc())
    async with SimulatedCity(loaded), Controller(loaded) as controller:
        seen = await poll(controller)
    cab = seen["CAB-1"]
    lamps = {k: v for k, v in seen.items() if k.startswith("CAB-1-L")}
    assert len(lamps) == 18
    for phase in "abc":
        on_phase = [
            v["current"]
            for k, v in lamps.items()
            if controller.registry.by_id[k].phase == phase.upper()
        ]
        standby = 0.05 if phase == "a" else 0.0
        assert cab[f"current_{phase}"] == pytest.approx(sum(on_phase) + standby, abs=0.03)
    circuit1 = sum(
        v["current"] for k, v in lamps.items() if controller.registry.by_id[k].circuit == 1
    )
    assert cab["circuit1_current"] == pytest.approx(circuit1, abs=0.02)
    assert cab["active_power"] == pytest.approx(
        sum(v["power"] for v in lamps.values()) / 1000, rel=0.01
    )
    for lamp in lamps.values():
        rated = 150 if lamp["power"] > 120 else 100
        assert lamp["power"] == pytest.approx(rated * 1.03, rel=0.02)


async def test_switching_a_circuit_off_over_modbus_drops_its_current(
    write_config: Callable[[dict[str, Any]], LoadedConfig],
) -> None:
    loaded = write_config(city_doc())
    async with city_with_controller(loaded) as (city, controller):
        before = await poll(controller)
        cmd = loaded.profiles["sl-cabinet-4c"].point("circuit1_cmd")
        await controller.links["dtu"].write(1, Table.COIL, cmd.address, [0])
        city.stores["dtu"].units[1].refresh(city.board, city.clock.now(), force=True)
        after = await poll(controller)
    assert before["CAB-1"]["circuit1_current"] == pytest.approx(
        12 * 150 * 1.03 / 225 / 0.95, rel=0.03
    )
    assert after["CAB-1"]["circuit1_cmd"] == 0
    assert after["CAB-1"]["circuit1_on"] == 0
    assert after["CAB-1"]["circuit1_current"] == 0
    assert after["CAB-1"]["circuit2_current"] == pytest.approx(
        before["CAB-1"]["circuit2_current"], rel=0.02
    )
    assert after["CAB-1-L001"]["lamp_on"] == 0


async def test_dimming_a_lamp_through_the_concentrator_lowers_its_power(
    write_config: Callable[[dict[str, Any]], LoadedConfig],
) -> None:
    loaded = write_config(city_doc())
    async with SimulatedCity(loaded), Controller(loaded) as controller:
        before = await poll(controller)
        dim = loaded.profiles["slc-lamp"].point("dim_cmd")
        block = loaded.profiles["sl-cabinet-4c"].blocks[0]
        address = block.base[Table.HOLDING_REGISTER] + 2 * block.stride[Table.HOLDING_REGISTER]
        await controller.links["dtu"].write(1, Table.HOLDING_REGISTER, address + dim.address, [50])
        after = await poll(controller)
    assert after["CAB-1-L003"]["dim_level"] == 50
    assert after["CAB-1-L003"]["power"] == pytest.approx(
        before["CAB-1-L003"]["power"] / 2, rel=0.03
    )
    assert after["CAB-1-L004"]["power"] == pytest.approx(before["CAB-1-L004"]["power"], rel=0.02)


async def test_cut_cable_leaves_circuit_commanded_on_with_no_current(
    write_config: Callable[[dict[str, Any]], LoadedConfig],
) -> None:
    loaded = write_config(city_doc())
    async with city_with_controller(loaded) as (city, controller):
        city.inject(FaultSpec(kind=FaultKind.CIRCUIT_CUT, device="CAB-1", circuit=1))
        city.inject(FaultSpec(kind=FaultKind.LAMP_BURNT_OUT, device="CAB-1-L014"))
        seen = await poll(controller)
    cab = seen["CAB-1"]
    assert cab["circuit1_cmd"] == 1 and cab["circuit1_on"] == 1
    assert cab["circuit1_current"] == 0
    assert cab["circuit2_current"] > 1
    assert seen["CAB-1-L014"]["lamp_on"] == 0 and seen["CAB-1-L014"]["fault_bits"] == 1
    assert seen["CAB-1-L001"]["fault_bits"] == 16  # no supply


def test_rain_event_rises_peaks_and_recedes() -> None:
    event = RainEvent(start=100, rise=600, peak_m=0.4, hold=300, recede=900)
    levels = [event.level(t) for t in range(0, 2200, 50)]
    peak_at = levels.index(max(levels))
    assert levels[0] == 0 and max(levels) == pytest.approx(0.4)
    assert all(a <= b for a, b in itertools.pairwise(levels[: peak_at + 1]))
    assert all(a >= b for a, b in itertools.pairwise(levels[peak_at:]))
    assert levels[-1] == 0


async def test_gauge_follows_rain_sticks_and_spikes(
    write_config: Callable[[dict[str, Any]], LoadedConfig],
) -> None:
    loaded = write_config(city_doc())
    scenario = Scenario(rain=[RainEvent(start=0, rise=600, peak_m=0.4, hold=600, recede=600)])
    async with SimulatedCity(loaded, scenario) as city:
        controller = Controller(loaded)
        unit = city.stores["dtu"].units[9]
        try:
            city.clock.advance(300)
            mid_rise = (await poll(controller))["WL-1"]["water_level"]
            city.clock.advance(400)
            unit.refresh(city.board, city.clock.now(), force=True)
            peak = (await poll(controller))["WL-1"]["water_level"]
            city.inject(FaultSpec(kind=FaultKind.GAUGE_STUCK, device="WL-1"))
            unit.refresh(city.board, city.clock.now(), force=True)
            city.clock.advance(900)
            unit.refresh(city.board, city.clock.now(), force=True)
            stuck = (await poll(controller))["WL-1"]["water_level"]
            city.clear("WL-1")
            city.inject(FaultSpec(kind=FaultKind.GAUGE_SPIKE, device="WL-1", magnitude=1.5))
            unit.refresh(city.board, city.clock.now(), force=True)
            spiked = (await poll(controller))["WL-1"]["water_level"]
            unit.refresh(city.board, city.clock.now(), force=True)
            after_spike = (await poll(controller))["WL-1"]["water_level"]
        finally:
            await controller.stop()
    assert mid_rise == pytest.approx(0.2, abs=0.01)
    assert peak == pytest.approx(0.4, abs=0.01)
    assert stuck == pytest.approx(peak, abs=0.01)  # the real water has receded by now
    assert spiked == pytest.approx(after_spike + 1.5, abs=0.01)


def test_a_city_simulated_by_sun_starts_lit_only_where_it_is_night(
    write_config: Callable[[dict[str, Any]], LoadedConfig],
) -> None:
    doc = city_doc()
    now = 1_800_000_000.0  # 08:00 UTC: afternoon in China, the small hours in California
    doc["cabinets"][0] |= {"lat": 21.86, "lon": 111.98}
    doc["cabinets"].append(
        {
            "id": "CAB-2",
            "link": "dtu",
            "unit": 2,
            "lat": 37.77,
            "lon": -122.42,
            "lamp_runs": [{"circuit": 1, "count": 2}],
        }
    )
    doc["simulator"] = {"lamps_at_start": "by_sun"}
    city = SimulatedCity(write_config(doc), wall_clock=lambda: now)
    assert city.cabinets["CAB-1"].circuit_cmd == [False] * 4
    assert {lamp.switch_cmd for lamp in city.cabinets["CAB-1"].lamps} == {0}
    assert city.cabinets["CAB-2"].circuit_cmd == [True] * 4
    assert {lamp.switch_cmd for lamp in city.cabinets["CAB-2"].lamps} == {1}
