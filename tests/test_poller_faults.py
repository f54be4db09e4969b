"""A dead, garbled or slow device costs its own timeout; neighbours keep their data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.config import LoadedConfig
from controller.runtime import Controller
from drivers.readings import ReadingBatch
from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import SimulatedCity
from simulators.servers import free_port
from tests.helpers import (
    FixedModel,
    chosen_values,
    city_with_controller,
    readings_by_device,
    three_transport_links,
)

TIMEOUT = 0.3


def bus_config(tmp_path: Path, kind: str = "serial", gauges: int = 4) -> dict[str, Any]:
    links = three_transport_links(tmp_path, (free_port(), free_port()))
    link = next(x for x in links if x["id"] == (kind if kind != "tcp" else "tcp"))
    link["timeout"] = TIMEOUT
    return {
        "polling": {
            "gauge_interval": 0.2,
            "offline_after": 2,
            "offline_backoff_max": 8,
            "batch_interval": 0.1,
        },
        "links": [link],
        "gauges": [
            {"id": f"WL-{u}", "link": link["id"], "unit": u, "profile": "wl-pressure"}
            for u in range(1, gauges + 1)
        ],
    }


def fix_values(city: SimulatedCity, loaded: LoadedConfig) -> dict[str, dict[str, float]]:
    expected = {}
    for store in city.stores.values():
        for unit_id, unit in store.units.items():
            values = chosen_values(loaded.profiles["wl-pressure"], seed=unit_id)
            unit.model = FixedModel(values)
            expected[unit.device_id] = values
    return expected


async def timed_cycle(controller: Controller) -> tuple[float, ReadingBatch]:
    started = time.perf_counter()
    batch = await controller.poller.poll_all_once()
    return time.perf_counter() - started, batch


async def test_silent_device_on_serial_line_costs_only_its_own_timeout(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(bus_config(tmp_path))
    async with SimulatedCity(loaded) as city:
        expected = fix_values(city, loaded)
        async with Controller(loaded) as controller:
            healthy, _ = await timed_cycle(controller)
            city.inject(FaultSpec(kind=FaultKind.DEVICE_SILENT, device="WL-2"))
            cycles = [await timed_cycle(controller) for _ in range(3)]
    for elapsed, batch in cycles:
        # One timeout for the dead unit, no retries on its account.
        assert elapsed - healthy <= TIMEOUT + 0.2, (elapsed, healthy)
        seen = readings_by_device(controller, batch)
        assert "WL-2" not in seen
        for device in ("WL-1", "WL-3", "WL-4"):
            assert seen[device] == pytest.approx(expected[device])
    health = controller.poller.health[controller.registry.by_id["WL-2"].index]
    assert not health.online
    assert health.errors["timeout"] == 3
    link = controller.links["serial"].health
    assert link.errors["timeout"] == 3


@pytest.mark.parametrize("kind", ["tcp", "rtutcp", "serial"])
async def test_garbled_frames_are_counted_and_polling_goes_on(
    kind: str, tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(bus_config(tmp_path, kind=kind, gauges=3))
    async with SimulatedCity(loaded) as city:
        expected = fix_values(city, loaded)
        async with Controller(loaded) as controller:
            await controller.poller.poll_all_once()
            city.inject(FaultSpec(kind=FaultKind.GARBLED, device="WL-2"))
            garbled_batch = await controller.poller.poll_all_once()
            city.clear("WL-2")
            recovered = await controller.poller.poll_all_once()
    seen = readings_by_device(controller, garbled_batch)
    assert "WL-2" not in seen
    assert seen["WL-1"] == pytest.approx(expected["WL-1"])
    assert seen["WL-3"] == pytest.approx(expected["WL-3"])
    health = controller.poller.health[controller.registry.by_id["WL-2"].index]
    assert health.errors["garbled"] == 1
    assert health.errors["timeout"] == 0
    assert controller.links[kind].health.errors["garbled"] >= 1
    assert readings_by_device(controller, recovered)["WL-2"] == pytest.approx(expected["WL-2"])
    assert health.online


async def test_late_answer_of_slow_device_never_lands_on_its_neighbour(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(bus_config(tmp_path, gauges=3))
    async with SimulatedCity(loaded) as city:
        expected = fix_values(city, loaded)
        async with Controller(loaded) as controller:
            await controller.poller.poll_all_once()
            # WL-2 answers just after its timeout, while the poller waits for WL-3, and
            # WL-3 (slow, but within its timeout) after that: WL-2's late answer is on
            # the line first.
            city.inject(FaultSpec(kind=FaultKind.SLOW, device="WL-2", delay=TIMEOUT * 1.2))
            city.inject(FaultSpec(kind=FaultKind.SLOW, device="WL-3", delay=TIMEOUT * 0.6))
            batches = [await controller.poller.poll_all_once() for _ in range(3)]
    answered = 0
    for batch in batches:
        seen = readings_by_device(controller, batch)
        # Whatever arrives for WL-3 is WL-3's own values, never WL-2's late frame.
        if "WL-3" in seen:
            answered += 1
            assert seen["WL-3"] == pytest.approx(expected["WL-3"])
        assert seen["WL-1"] == pytest.approx(expected["WL-1"])
        assert "WL-2" not in seen
    # The stray frame is skipped, not taken for a garbled answer that costs WL-3 its turn.
    assert answered >= 2
    assert controller.poller.health[controller.registry.by_id["WL-2"].index].errors["timeout"] >= 1


async def test_link_down_backs_off_then_reconnects_when_the_server_returns(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    doc = bus_config(tmp_path, kind="tcp", gauges=2)
    doc["links"][0]["backoff_initial"] = 0.2
    loaded = write_config(doc)
    async with Controller(loaded) as controller:
        started = time.perf_counter()
        assert len(await controller.poller.poll_all_once()) == 0
        assert time.perf_counter() - started < 1.0  # refused at once, not a hang
        link = controller.links["tcp"]
        assert link.health.connect_failures == 1
        # Within the backoff the link does not even try: the second device fails at once.
        assert link.health.errors["link_down"] == 2
        async with SimulatedCity(loaded):
            await asyncio.sleep(0.25)
            batch = await controller.poller.poll_all_once()
        assert len(batch) > 0
        assert link.health.connected or link.health.connects == 1


async def test_cabinet_with_64_lamps_is_read_in_its_planned_requests(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    links = three_transport_links(tmp_path, (free_port(), free_port()))[:1]
    loaded = write_config(
        {
            "links": links,
            "cabinets": [
                {
                    "id": "CAB-1",
                    "link": "tcp",
                    "unit": 1,
                    "lamp_runs": [{"circuit": 1, "count": 32}, {"circuit": 2, "count": 32}],
                }
            ],
        }
    )
    async with SimulatedCity(loaded) as city:
        async with Controller(loaded) as controller:
            batch = await controller.poller.poll_all_once()
        received = city.store_of("CAB-1").request_total(1)
    target = controller.registry.targets[0]
    points = 28 + 64 * 10
    assert len(batch) == points
    assert received == target.plan.request_count
    assert received <= 12  # against 668 requests if each point were read on its own


async def test_scheduled_polling_backs_off_a_dead_device_and_welcomes_it_back(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(bus_config(tmp_path, kind="rtutcp", gauges=3))
    batches: list[ReadingBatch] = []

    async def collect(batch: ReadingBatch) -> None:
        batches.append(batch)

    async with SimulatedCity(loaded) as city:
        fix_values(city, loaded)
        city.inject(FaultSpec(kind=FaultKind.DEVICE_SILENT, device="WL-2"))
        controller = Controller(loaded)
        controller.poller.subscribe(collect)
        await controller.start()
        try:
            await asyncio.sleep(3.0)
            dead = controller.poller.health[controller.registry.by_id["WL-2"].index]
            alive = controller.poller.health[controller.registry.by_id["WL-1"].index]
            assert not dead.online
            assert dead.polls * 3 < alive.polls
            city.clear("WL-2")
            await asyncio.sleep(0.2 * 8 + 0.5)  # the longest backoff, and a poll
            assert dead.online
        finally:
            await controller.stop()
    devices = {controller.registry.devices[d].id for b in batches for d in b.device}
    assert devices == {"WL-1", "WL-2", "WL-3"}


async def test_a_garbled_cabinet_costs_one_retry_not_one_per_request(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    doc = bus_config(tmp_path, gauges=0)
    link = doc["links"][0]["id"]
    doc["cabinets"] = [
        {
            "id": "CAB-G",
            "link": link,
            "unit": 1,
            "lamp_runs": [{"circuit": 1, "count": 30}, {"circuit": 2, "count": 30}],
        }
    ]
    loaded = write_config(doc)
    async with city_with_controller(loaded) as (city, controller):
        target = controller.registry.targets[0]
        health = controller.links[link].health
        before = health.requests
        healthy = await controller.poller.poll_target(target)
        assert healthy.error is None and health.requests - before > 2  # a plan of many reads
        city.inject(FaultSpec(kind=FaultKind.GARBLED, device="CAB-G"))
        before = health.requests
        garbled = await controller.poller.poll_target(target)
    assert garbled.error is not None and garbled.error.kind == "garbled"
    # The first read and its one retry; not two attempts for each of the plan's reads.
    assert health.requests - before == 2


async def test_a_stop_during_a_slow_flush_still_hands_that_batch_to_every_subscriber(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    """A batch one subscriber has stored must reach the next one too (InfluxDB after
    the embedded store): stopping may not cut a flush in half."""
    loaded = write_config(bus_config(tmp_path, kind="tcp"))
    stored: list[int] = []
    sent_on: list[int] = []
    flushing = asyncio.Event()

    async def slow_store(batch: ReadingBatch) -> None:
        stored.append(len(batch))
        flushing.set()
        await asyncio.sleep(0.5)

    async def next_sink(batch: ReadingBatch) -> None:
        sent_on.append(len(batch))

    async with SimulatedCity(loaded), Controller(loaded) as controller:
        controller.poller.subscribe(slow_store)
        controller.poller.subscribe(next_sink)
        controller.poller.start()
        await asyncio.wait_for(flushing.wait(), 10)
        await controller.poller.stop()
    assert stored and sum(stored) > 0
    assert sent_on == stored
