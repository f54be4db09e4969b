"""End to end: a fault injected in the simulator raises exactly one alarm of the right kind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.config import LoadedConfig, parse_config
from controller.runtime import Controller
from simulators.faults import FaultKind, FaultSpec, RainEvent, Scenario
from simulators.fleet import SimulatedCity
from simulators.servers import free_port

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
INTERVAL = 0.2

RULES: list[dict[str, Any]] = [
    {
        "id": "flood-level",
        "kind": "threshold",
        "point": "water_level",
        "select": {"device_class": "gauge"},
        "levels_from_device": True,
        "deadband": 0.02,
        "quality": {"valid_min": -0.2, "valid_max": 5.0, "max_jump": 0.5},
    },
    {
        "id": "gauge-stuck",
        "kind": "stuck",
        "point": "water_level",
        "select": {"device_class": "gauge"},
        "samples": 4,
        "tolerance": 0.0005,
        "min_value": 0.02,
    },
    # 8 intervals of 0.2 s: longer than a garbled device's retry, as 3 x 60 s is in the field.
    {"id": "comm-loss", "kind": "comm_loss", "intervals": 8},
    {"id": "lamp-failure", "kind": "lamp_failure", "select": {"device_class": "lamp"}},
    {"id": "lamp-power", "kind": "lamp_power", "select": {"device_class": "lamp"}},
    {"id": "circuit-break", "kind": "circuit_break", "select": {"device_class": "cabinet"}},
    {"id": "contactor", "kind": "contactor", "select": {"device_class": "cabinet"}},
    {
        "id": "leakage",
        "kind": "threshold",
        "point": "leakage_current",
        "select": {"device_class": "cabinet"},
        "limits": [30],
        "deadband": 2,
    },
    {
        "id": "door-open",
        "kind": "threshold",
        "point": "door_open",
        "select": {"device_class": "cabinet"},
        "limits": [0.5],
    },
    *[
        {
            "id": f"under-voltage-{p}",
            "kind": "threshold",
            "point": f"voltage_{p}",
            "direction": "low",
            "select": {"device_class": "cabinet"},
            "limits": [198],
        }
        for p in "abc"
    ],
    {
        "id": "supply-loss",
        "kind": "threshold",
        "point": "mains_present",
        "direction": "low",
        "select": {"device_class": "cabinet"},
        "limits": [0.5],
        "inhibits": ["under-voltage-a", "under-voltage-b", "under-voltage-c", "circuit-break"],
    },
]


def city_doc(tmp_path: Path) -> dict[str, Any]:
    return {
        "polling": {
            "cabinet_interval": INTERVAL,
            "gauge_interval": INTERVAL,
            "lamp_interval": INTERVAL,
            "batch_interval": 0.1,
        },
        "links": [
            {
                "id": "dtu",
                "kind": "rtu_over_tcp",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout": 0.2,
            }
        ],
        "cabinets": [
            {
                "id": "CAB",
                "link": "dtu",
                "unit": 1,
                "district": "江城区",
                "lamp_runs": [
                    {"circuit": 1, "count": 4, "rated_w": 150},
                    {"circuit": 2, "count": 4, "rated_w": 150},
                ],
            }
        ],
        "gauges": [
            {
                "id": "WL",
                "link": "dtu",
                "unit": 2,
                "district": "江城区",
                "levels": {"blue": 0.1, "yellow": 0.2, "orange": 0.3, "red": 0.5},
            }
        ],
        "rules": RULES,
        "storage": {
            "embedded": {"path": str(tmp_path / "e.db")},
            "spool": {"path": str(tmp_path / "spool")},
        },
    }


async def cycles(controller: Controller, n: int) -> None:
    """Poll everything ``n`` times, each batch through the whole pipeline, INTERVAL apart."""
    for _ in range(n):
        await controller.poller.push(await controller.poller.poll_all_once())
        await controller.poller.flush()
        await controller.case_feed.settled()
        await asyncio.sleep(INTERVAL)


def active(controller: Controller) -> set[tuple[str, str, int]]:
    """Active alarms an operator is shown (not suppressed)."""
    return {
        (a.rule, a.device, a.sub)
        for a in controller.rules.manager.list()
        if a.active and not a.suppressed_by
    }


FAULTS = [
    (FaultSpec(kind=FaultKind.LAMP_BURNT_OUT, device="CAB-L003"), ("lamp-failure", "CAB-L003", 0)),
    (FaultSpec(kind=FaultKind.CIRCUIT_CUT, device="CAB", circuit=2), ("circuit-break", "CAB", 2)),
    (FaultSpec(kind=FaultKind.CONTACTOR_FAIL, device="CAB", circuit=1), ("contactor", "CAB", 1)),
    (FaultSpec(kind=FaultKind.DOOR_OPEN, device="CAB"), ("door-open", "CAB", 8)),
    (FaultSpec(kind=FaultKind.LEAKAGE_RISING, device="CAB", rate=6000.0), ("leakage", "CAB", 21)),
    (FaultSpec(kind=FaultKind.MAINS_LOSS, device="CAB"), ("supply-loss", "CAB", 9)),
    (FaultSpec(kind=FaultKind.DEVICE_SILENT, device="WL"), ("comm-loss", "WL", 0)),
    (FaultSpec(kind=FaultKind.GARBLED, device="WL"), ("comm-loss", "WL", 0)),
    (FaultSpec(kind=FaultKind.GAUGE_STUCK, device="WL"), ("gauge-stuck", "WL", 0)),
]


@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f.kind.value for f, _ in FAULTS])
async def test_each_fault_raises_one_alarm_and_it_returns_when_mended(
    fault: FaultSpec, expected: tuple[str, str, int], tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(city_doc(tmp_path))
    # Water stands at 5 cm (below blue) and moving: a stuck gauge shows, a healthy one does not.
    rain = Scenario(rain=[RainEvent(start=0, rise=0.2, peak_m=0.05, hold=1e6, recede=10)])
    async with SimulatedCity(loaded, rain) as city, Controller(loaded) as controller:
        await controller.open_stores()
        await cycles(controller, 3)
        assert active(controller) == set()
        city.inject(fault)
        await cycles(controller, 10)
        assert active(controller) == {expected}
        city.clear(fault.device)
        await cycles(controller, 10)
        assert active(controller) == set()
        alarm = next(a for a in controller.rules.manager.by_id.values() if a.rule == expected[0])
        assert alarm.cleared_at is not None and alarm.count == 1


async def test_flood_levels_follow_the_storm_and_storm_mode_speeds_up_polling(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = city_doc(tmp_path)
    doc["flood_watch"] = {"area_by": "district", "trigger_level": 2, "storm_interval": 0.05}
    loaded = write_config(doc)
    storm = Scenario(rain=[RainEvent(start=0, rise=2, peak_m=0.45, hold=1e6, recede=10)])
    async with SimulatedCity(loaded, storm) as city, Controller(loaded) as controller:
        await controller.open_stores()
        gauge = controller.registry.by_id["WL"]
        target = next(t for t in controller.registry.targets if t.device == gauge.index)
        assert controller.poller.interval_of(target) == INTERVAL
        city.clock.advance(3)
        await cycles(controller, 3)
        flood = next(a for a in controller.rules.manager.list() if a.rule == "flood-level")
        assert flood.level_name == "orange" and flood.severity == "high"
        assert controller.poller.interval_of(target) == 0.05
        assert controller.rules.stats.storms.keys() == {"江城区"}
        city.clock.advance(1e6 + 20)  # the water has drained
        await cycles(controller, 3)
        assert not flood.active
        assert controller.poller.interval_of(target) == INTERVAL


async def test_restart_keeps_the_alarm_and_does_not_raise_it_again(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(city_doc(tmp_path))
    async with SimulatedCity(loaded) as city:
        async with Controller(loaded) as first:
            await first.open_stores()
            city.inject(FaultSpec(kind=FaultKind.CIRCUIT_CUT, device="CAB", circuit=1))
            await cycles(first, 3)
            (alarm,) = first.rules.manager.list()
            await first.rules.manager.acknowledge(alarm.id, "engineer Wang")
        async with Controller(loaded) as second:
            announced: list[str] = []

            async def keep(notice: Any) -> None:
                announced.append(notice.transition)

            second.rules.manager.subscribe(keep)
            await second.open_stores()
            (kept,) = second.rules.manager.list()
            assert (kept.id, kept.condition.value, kept.acked_by) == (
                alarm.id,
                "active_acknowledged",
                "engineer Wang",
            )
            await cycles(second, 3)
            assert announced == [] and kept.count == 1
            city.clear("CAB")
            await cycles(second, 3)
            assert announced == ["cleared"]


async def test_rules_keep_up_with_the_demo_city_batches(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(city_doc(tmp_path))
    async with SimulatedCity(loaded), Controller(loaded) as controller:
        await controller.open_stores()
        started = time.perf_counter()
        await cycles(controller, 2)
        assert controller.rules.stats.batches == 2
        assert controller.rules.stats.last_eval_s < 0.05  # the kernel is compiled at start
        assert time.perf_counter() - started < 5


async def test_comm_loss_grace_counts_from_each_devices_first_poll_not_the_start(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    field = parse_config(city_doc(tmp_path), tmp_path / "field.yaml")
    doc = city_doc(tmp_path)
    doc["links"] = field.config.model_dump()["links"]
    # A gauge nothing answers for: its DTU is not on the simulated network.
    dead = {"id": "dead", "kind": "rtu_over_tcp", "host": "127.0.0.1", "port": free_port()}
    doc["links"].append(dead | {"timeout": 0.1})
    doc["gauges"].append({"id": "WL-DEAD", "link": "dead", "unit": 1, "district": "江城区"})
    loaded = write_config(doc)
    async with SimulatedCity(field), Controller(loaded) as controller:
        await controller.open_stores()
        # A cold start under load: the first polls come long after the comm-loss limit.
        await asyncio.sleep(8 * INTERVAL + 1.2)
        assert [a for a in controller.rules.manager.list() if a.rule == "comm-loss"] == []
        await cycles(controller, 1)
        assert [a for a in controller.rules.manager.list() if a.rule == "comm-loss"] == []
        # The dead gauge is lost once a full limit has passed since its first poll.
        await cycles(controller, 10)
        lost = [a.device for a in controller.rules.manager.list() if a.rule == "comm-loss"]
        assert lost == ["WL-DEAD"]
