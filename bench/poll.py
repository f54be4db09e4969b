"""Benchmark: polling a city, against the raw-client ceiling, a naive peer and the wire.

The devices are served by the fast responder (:mod:`simulators.fast_responder`)
in a child process on its own core, so the poller's cost is what is measured;
the poller runs in this process on the other core. Figures are process CPU per
request (the steady measure on a shared machine) beside wall times.

- **poller**: full poll cycles (``Poller.poll_all_once``: plans, link policy,
  decoding, batches), interleaved with the **ceiling**, a raw asyncio client
  sending the same coalesced requests with one outstanding per connection, and
  the **peer**, one pymodbus request per point with links polled concurrently
  (the Home Assistant way), on a sample of links.
- **production**: the controller as ``streetsense run`` builds it (embedded
  store, rules, cases subscribed) driven by its own scheduler for a few poll
  intervals: CPU per request with every batch subscriber.
- **mixed city**: a DL/T 645 meter beside each cabinet on its RS-485 line; the
  whole city, then the meters alone, against the raw client speaking both.
- ``--field``: the responder emulates 9600-baud 8E1 lines behind 150 ms 4G DTUs;
  per link, bus utilization (wire time of the requests made / wall time) and
  the city cycle against the physical bound (the busiest link's wire time).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient

from bench.city import requests_made, run_against_city
from bench.raw_client import RawPoller
from controller.config import LoadedConfig, WireConfig
from controller.poller import Poller
from controller.registry import PollTarget
from controller.runtime import Controller
from drivers.modbus.device_plan import DevicePlan, block_point_address
from drivers.profile import DeviceProfile, Table
from simulators.fast_responder import WireModel

ROUNDS = 4
CYCLES_PER_ROUND = 2
PRODUCTION_INTERVAL_S = 4.0
PRODUCTION_INTERVALS = 3
TARGET_RATIO_TO_CEILING = 1.5


def _point_reads(
    controller: Controller, targets: list[PollTarget]
) -> list[tuple[PollTarget, Table, int, int]]:
    """One read per point of each target (the naive peer's requests)."""
    reads = []
    registry = controller.registry
    for target in targets:
        device = registry.devices[target.device]
        profile = device.profile
        assert isinstance(profile, DeviceProfile)  # poll targets are Modbus devices
        for point in profile.points:
            reads.append((target, point.table, point.address, point.type.words))
        for lamp in registry.lamps_of(device.index):
            assert lamp.slot is not None and isinstance(lamp.profile, DeviceProfile)
            block = profile.blocks[0].name
            for point in lamp.profile.points:
                address = block_point_address(profile, block, lamp.slot, point)
                reads.append((target, point.table, address, point.type.words))
    return reads


async def _naive_peer(
    controller: Controller, by_link: dict[str, list[PollTarget]], links: int
) -> dict[str, float]:
    """pymodbus, one request per point, each link its own client, links concurrently."""
    config = {link.id: link for link in controller.loaded.config.links}
    sample = dict(list(by_link.items())[:links])
    clients = {}
    for link_id in sample:
        link = config[link_id]
        framer = FramerType.RTU if link.kind == "rtu_over_tcp" else FramerType.SOCKET
        assert isinstance(link.port, int)
        client = AsyncModbusTcpClient(
            link.host or "127.0.0.1", port=link.port, framer=framer, timeout=5
        )
        await client.connect()
        clients[link_id] = client

    async def poll_link(link_id: str, reads: list[tuple[PollTarget, Table, int, int]]) -> None:
        client = clients[link_id]
        for target, table, address, count in reads:
            if table is Table.HOLDING_REGISTER:
                await client.read_holding_registers(address, count=count, device_id=target.unit)
            elif table is Table.INPUT_REGISTER:
                await client.read_input_registers(address, count=count, device_id=target.unit)
            elif table is Table.COIL:
                await client.read_coils(address, count=count, device_id=target.unit)
            else:
                await client.read_discrete_inputs(address, count=count, device_id=target.unit)

    per_link = {k: _point_reads(controller, v) for k, v in sample.items()}
    points = sum(len(r) for r in per_link.values())
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(poll_link(k, r) for k, r in per_link.items()))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for client in clients.values():
        client.close()
    return {
        "links": len(sample),
        "points": points,
        "wall_s": wall,
        "cpu_us_per_point": cpu / points * 1e6,
    }


async def _poll_targets(poller: Poller, by_link: dict[str, list[PollTarget]]) -> int:
    """Poll these targets once, links concurrently, each link's in turn; readings."""

    async def one(targets: list[PollTarget]) -> int:
        return sum([len((await poller.poll_target(t)).batch) for t in targets])

    return sum(await asyncio.gather(*(one(v) for v in by_link.values())))


async def _poll_all(poller: Poller) -> int:
    """Poll every target once the way the scheduler's cycle does; readings."""
    return len(await poller.poll_all_once())


async def _against_ceiling(
    controller: Controller,
    by_link: dict[str, list[PollTarget]],
    poll: Callable[[], Awaitable[int]],
) -> dict[str, Any]:
    """CPU per request of ``poll`` (the poller over ``by_link``) against the raw client
    polling the same targets with the same requests, interleaved round by round."""
    links = controller.links
    raw = RawPoller.of_links(controller.loaded.config.links)
    await raw.connect()
    await raw.poll_all_once(by_link)  # warm-up; not measured
    poller_cpu, poller_wall, raw_cpu, raw_wall = [], [], [], []
    readings = 0
    requests = 0
    for _ in range(ROUNDS):
        # Interleaved, so a noisy neighbour on the machine hits both alike.
        before, wall, cpu = requests_made(links), time.perf_counter(), time.process_time()
        for _ in range(CYCLES_PER_ROUND):
            readings = await poll()
        requests = (requests_made(links) - before) // CYCLES_PER_ROUND
        poller_cpu.append((time.process_time() - cpu) / (requests * CYCLES_PER_ROUND))
        poller_wall.append((time.perf_counter() - wall) / CYCLES_PER_ROUND)
        raw.requests = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(CYCLES_PER_ROUND):
            await raw.poll_all_once(by_link)
        raw_cpu.append((time.process_time() - cpu) / raw.requests)
        raw_wall.append((time.perf_counter() - wall) / CYCLES_PER_ROUND)
    raw.close()
    ours_us = statistics.median(poller_cpu) * 1e6
    ceiling_us = statistics.median(raw_cpu) * 1e6
    return {
        "requests_per_cycle": requests,
        "points_per_cycle": readings,
        "cycle_s": round(statistics.median(poller_wall), 3),
        "cpu_us_per_request": round(ours_us, 1),
        "cpu_us_per_request_rounds": [round(c * 1e6, 1) for c in poller_cpu],
        "cpu_us_per_point": round(statistics.median(poller_cpu) * requests / readings * 1e6, 2),
        "ceiling_raw_asyncio": {
            "kind": "raw asyncio client, same coalesced requests, one outstanding per connection",
            "cycle_s": round(statistics.median(raw_wall), 3),
            "cpu_us_per_request": round(ceiling_us, 1),
            "cpu_us_per_request_rounds": [round(c * 1e6, 1) for c in raw_cpu],
        },
        "ratio_cpu_to_ceiling": round(ours_us / ceiling_us, 2),
        "target_ratio_to_ceiling": TARGET_RATIO_TO_CEILING,
        "target_met": ours_us / ceiling_us <= TARGET_RATIO_TO_CEILING,
    }


async def _poller_against_ceiling(controller: Controller, sample_links: int) -> dict[str, Any]:
    poller = controller.poller
    by_link = poller.targets_by_link()
    figures = await _against_ceiling(controller, by_link, partial(_poll_all, poller))
    peer = await _naive_peer(controller, by_link, sample_links)
    figures["peer_pymodbus_per_point"] = {
        "kind": "pymodbus client, one request per point, links concurrently (sample)",
        "links": peer["links"],
        "points": peer["points"],
        "cpu_us_per_point": round(peer["cpu_us_per_point"], 1),
        "city_cpu_s_per_cycle": round(
            peer["cpu_us_per_point"] * figures["points_per_cycle"] / 1e6, 2
        ),
    }
    figures["cpu_per_point_vs_peer"] = round(
        peer["cpu_us_per_point"] / figures["cpu_us_per_point"], 1
    )
    return figures


async def _measure_mixed(loaded: LoadedConfig, size: float) -> dict[str, Any]:
    """A DL/T 645 meter beside each cabinet on its line: the whole city, then the
    meters alone, each against the raw client speaking both protocols."""
    controller = Controller(loaded)
    poller = controller.poller
    try:
        await poller.poll_all_once()  # connects every link; not measured
        by_link = poller.targets_by_link()
        city = await _against_ceiling(controller, by_link, partial(_poll_all, poller))
        meters = {
            k: m for k, v in by_link.items() if (m := [t for t in v if t.device_class == "meter"])
        }
        alone = await _against_ceiling(controller, meters, partial(_poll_targets, poller, meters))
        failed = poller.stats.failed_polls
    finally:
        await controller.stop()
    return {
        "meters": sum(len(v) for v in meters.values()),
        "failed_polls": failed,
        "city": city,
        "meters_alone": alone,
    }


async def _production(controller: Controller) -> dict[str, Any]:
    """The real scheduler and every batch subscriber, for a few poll intervals."""
    await controller.open_stores()
    links = controller.links
    before, cpu, wall = requests_made(links), time.process_time(), time.perf_counter()
    polls_before = controller.poller.stats.polls
    controller.poller.start()
    await asyncio.sleep(PRODUCTION_INTERVAL_S * PRODUCTION_INTERVALS)
    await controller.poller.stop()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    requests = requests_made(links) - before
    polls = controller.poller.stats.polls - polls_before
    targets = len(controller.registry.targets)
    return {
        "interval_s": PRODUCTION_INTERVAL_S,
        "wall_s": round(wall, 2),
        "polls": polls,
        "polls_expected_at_least": targets * (PRODUCTION_INTERVALS - 1),
        "requests": requests,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request_with_subscribers": round(cpu / max(requests, 1) * 1e6, 1),
        "failed_polls": controller.poller.stats.failed_polls,
    }


async def _measure(loaded: LoadedConfig, size: float) -> dict[str, Any]:
    controller = Controller(loaded)
    try:
        await controller.poller.poll_all_once()  # connects every link; not measured
        sample = max(10, len(controller.links) // 10)
        poller = await _poller_against_ceiling(controller, sample)
        production = await _production(controller)
    finally:
        await controller.stop()
    counts = controller.registry.count_by_class()
    return {
        "bench": "poll",
        "size": size,
        "city": {
            "cabinets": counts.get("cabinet", 0),
            "lamps": counts.get("lamp", 0),
            "gauges": counts.get("gauge", 0),
            "links": len(controller.links),
        },
        "poller": poller,
        "production": production,
    }


def _wire_time(target: PollTarget, wire: WireModel) -> float:
    """The least time a poll of ``target`` takes on its wire: its requests back to back."""
    total = 0.0
    assert isinstance(target.plan, DevicePlan)
    for request in target.plan.plan.requests:
        total += (
            wire.rtt_s + wire.jitter_s / 2 + wire.rtu_read_time(request.count, request.table.is_bit)
        )
    return total


async def _measure_field(loaded: LoadedConfig, size: float) -> dict[str, Any]:
    wire_cfg = loaded.config.simulator.wire
    assert wire_cfg is not None
    controller = Controller(loaded)
    config = {link.id: link for link in loaded.config.links}
    try:
        await controller.poller.poll_all_once()  # connects every link
        by_link = controller.poller.targets_by_link()
        cycles = []
        cpu = time.process_time()
        for _ in range(3):
            started = time.perf_counter()
            await controller.poller.poll_all_once()
            cycles.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu
        # The city's cycle is its busiest link's; each link's utilization is over
        # its own poll (links run side by side, each on its own clock).
        cycle = statistics.median(cycles)
        per_link = await _per_link_utilization(controller, by_link, wire_cfg, config)
    finally:
        await controller.stop()
    bound = max(u["wire_s"] for u in per_link.values())
    busiest = max(per_link, key=lambda k: per_link[k]["wire_s"])
    # Links with at least half the busiest link's work: the ones the cycle depends on.
    busy_links = [u for u in per_link.values() if u["wire_s"] >= 0.5 * bound]
    return {
        "bench": "poll --field",
        "size": size,
        "wire": wire_cfg.model_dump(),
        "links": len(by_link),
        "cycle_s": round(cycle, 3),
        "physical_bound_s": round(bound, 3),
        "busiest_link": busiest,
        "ratio_cycle_to_bound": round(cycle / bound, 3),
        "bus_utilization_busy_links": {
            "count": len(busy_links),
            "min": round(min(u["utilization"] for u in busy_links), 3),
            "median": round(statistics.median(u["utilization"] for u in busy_links), 3),
        },
        "bus_utilization_all_links_median": round(
            statistics.median(u["utilization"] for u in per_link.values()), 3
        ),
        "cpu_s_per_cycle": round(cpu / 3, 3),
        "targets": {"bus_utilization": 0.9, "ratio_cycle_to_bound": 1.1},
        "targets_met": {
            "bus_utilization": min(u["utilization"] for u in busy_links) >= 0.9,
            "ratio_cycle_to_bound": cycle / bound <= 1.1,
        },
    }


async def _per_link_utilization(
    controller: Controller,
    by_link: dict[str, list[PollTarget]],
    wire_cfg: WireConfig,
    config: dict[str, Any],
) -> dict[str, dict[str, float]]:
    """Each link polled once on its own clock: wire time of its requests / its wall time."""
    poller = controller.poller

    async def one(link_id: str, targets: list[PollTarget]) -> tuple[str, dict[str, float]]:
        wire = WireModel.of(wire_cfg, config[link_id])
        started = time.perf_counter()
        for target in targets:
            await poller.poll_target(target)
        wall = time.perf_counter() - started
        busy = sum(_wire_time(t, wire) for t in targets)
        return link_id, {"wire_s": busy, "wall_s": wall, "utilization": busy / wall}

    results = await asyncio.gather(*(one(k, v) for k, v in by_link.items()))
    return dict(results)


def run(size: float = 1.0, field: bool = False) -> dict[str, Any]:
    """Generate the city, start the fast responder, measure, stop."""
    simulator: dict[str, Any] = {"responder": "fast"}
    if field:
        simulator["wire"] = {
            "baudrate": 9600,
            "parity": "E",
            "dtu_rtt_ms": 150,
            "dtu_jitter_ms": 30,
        }
        return run_against_city(21000, size, {"simulator": simulator}, _measure_field)
    extra = {
        "simulator": simulator,
        "data_dir": "{folder}/var",
        "polling": {
            "cabinet_interval": PRODUCTION_INTERVAL_S,
            "lamp_interval": PRODUCTION_INTERVAL_S,
            "gauge_interval": PRODUCTION_INTERVAL_S,
        },
    }
    figures = run_against_city(21000, size, extra, _measure)
    figures["mixed_city"] = run_against_city(
        24000, size, {"simulator": simulator}, _measure_mixed, meters=True
    )
    return figures
