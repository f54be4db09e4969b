"""Benchmark: a full poll cycle of a Yangjiang-sized city against loopback simulators.

The simulators run in a child process pinned to one core, the poller in this
process pinned to the other. Baseline, measured in the same run on a sample of
the city: one request per point, sent one after another (how a naive
integration polls), extrapolated to the whole city's points.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.city import run_against_city
from controller.config import LoadedConfig
from controller.runtime import Controller
from drivers.codec import decode_value
from drivers.device_plan import block_point_address
from drivers.profile import DeviceProfile, PointSpec

CYCLES = 3
TARGET_CYCLE_S = 10.0


async def _naive_baseline(controller: Controller, sample_targets: int) -> dict[str, float]:
    """One request per point, sequentially, over a sample of the city's targets."""
    registry = controller.registry
    reads: list[tuple[str, int, PointSpec, int]] = []
    for target in registry.targets[:sample_targets]:
        device = registry.devices[target.device]
        profile = device.profile
        assert isinstance(profile, DeviceProfile)  # poll targets are Modbus devices
        for point in profile.points:
            reads.append((target.link, target.unit, point, point.address))
        for lamp in registry.lamps_of(device.index):
            assert lamp.slot is not None
            lamp_profile = lamp.profile
            assert isinstance(lamp_profile, DeviceProfile)
            block = profile.blocks[0].name
            for point in lamp_profile.points:
                address = block_point_address(profile, block, lamp.slot, point)
                reads.append((target.link, target.unit, point, address))
    started = time.perf_counter()
    for link_id, unit, point, address in reads:
        words = await controller.links[link_id].read(unit, point.table, address, point.type.words)
        decode_value(point, words)
    elapsed = time.perf_counter() - started
    return {"sampled_points": len(reads), "seconds": elapsed, "points_per_s": len(reads) / elapsed}


async def _measure(loaded: LoadedConfig, quick: bool) -> dict[str, Any]:
    controller = Controller(loaded)
    poller = controller.poller
    try:
        await poller.poll_all_once()  # connects every link; not measured
        poller.stats.latencies.clear()
        failed_before = poller.stats.failed_polls
        requests_before = sum(link.health.requests for link in controller.links.values())
        cycles, cpu, readings = [], [], 0
        for _ in range(CYCLES):
            wall, proc = time.perf_counter(), time.process_time()
            batch = await poller.poll_all_once()
            cycles.append(time.perf_counter() - wall)
            cpu.append(time.process_time() - proc)
            readings = len(batch)
        requests = sum(link.health.requests for link in controller.links.values()) - requests_before
        latencies = sorted(poller.stats.latencies)
        failed = poller.stats.failed_polls - failed_before
        baseline = await _naive_baseline(controller, 10 if quick else 66)
    finally:
        await controller.stop()
    cycle = statistics.median(cycles)
    targets = len(controller.registry.targets)
    baseline_cycle = readings / baseline["points_per_s"]
    counts = controller.registry.count_by_class()
    return {
        "bench": "poll",
        "city": {
            "cabinets": counts.get("cabinet", 0),
            "lamps": counts.get("lamp", 0),
            "gauges": counts.get("gauge", 0),
            "links": len(controller.links),
            "points": readings,
        },
        "cycle_s": round(cycle, 3),
        "cycles_s": [round(c, 3) for c in cycles],
        "device_polls_per_s": round(targets / cycle, 1),
        "points_per_s": round(readings / cycle),
        "requests_per_cycle": requests // CYCLES,
        "failed_polls": failed,
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        "poller_cpu_s_per_cycle": round(statistics.median(cpu), 3),
        "baseline": {
            "kind": "one request per point, sequential",
            "sampled_points": baseline["sampled_points"],
            "points_per_s": round(baseline["points_per_s"]),
            "cycle_s_extrapolated": round(baseline_cycle, 2),
        },
        "speedup_vs_baseline": round(baseline_cycle / cycle, 1),
        "target_cycle_s": TARGET_CYCLE_S,
        "target_met": cycle < TARGET_CYCLE_S,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Generate the city, start its simulators, measure, stop."""
    return run_against_city(21000, quick, {}, _measure)
