"""Benchmark: switch every circuit of a 660-cabinet city and wait for every confirmation.

The simulators run in a child process pinned to one core, the controller in
this process pinned to the other. Measured: one group command for all
circuits (off, then on again), from submission to the last read-back
confirmation. Baseline, in the same run: the same circuits commanded one at a
time (each command sent and confirmed before the next), on a sample of the
cabinets, extrapolated to the city.
"""

from __future__ import annotations

import time
from typing import Any

from bench.city import run_against_city
from controller.config import LoadedConfig
from controller.control.audit import Actor
from controller.control.dispatcher import CommandRequest, CommandStatus
from controller.control.selector import GroupSelector
from controller.control.targets import CircuitTarget
from controller.control.writes import Action
from controller.runtime import Controller

TARGET_S = 5.0
BENCH = Actor("bench", "", "engineer")


async def _group(controller: Controller, action: Action) -> tuple[float, int, int]:
    started = time.perf_counter()
    command = await controller.commands.execute(
        CommandRequest(action, GroupSelector(all=True), confirm=True), BENCH, "bench"
    )
    elapsed = time.perf_counter() - started
    counts = command.counts()
    if command.status is not CommandStatus.CONFIRMED:
        failed = [r for r in command.results.values() if r.status == "failed"][:3]
        raise RuntimeError(f"group command {command.status}: {failed}")
    return elapsed, counts["confirmed"], counts["failed"]


async def _one_at_a_time(controller: Controller, cabinets: int) -> tuple[float, int]:
    """Each circuit its own command, confirmed before the next is sent."""
    registry = controller.registry
    circuits = [
        CircuitTarget(device.index, c)
        for device in registry.devices
        if device.device_class == "cabinet"
        for c in range(1, 5)
    ][: cabinets * 4]
    started = time.perf_counter()
    for target in circuits:
        command = await controller.commands.execute(
            CommandRequest(
                Action.CIRCUIT_ON,
                GroupSelector(cabinets=[registry.devices[target.cabinet].id]),
                circuits=(target,),
            ),
            BENCH,
            "bench-baseline",
        )
        if command.status is not CommandStatus.CONFIRMED:
            raise RuntimeError(f"baseline command {command.id}: {command.status}")
    return time.perf_counter() - started, len(circuits)


async def _measure(loaded: LoadedConfig, quick: bool) -> dict[str, Any]:
    controller = Controller(loaded)
    try:
        await controller.open_stores()
        await controller.poller.poll_all_once()  # connects every link; not measured
        await _group(controller, Action.CIRCUIT_ON)  # warm-up (they are on already)
        off_s, confirmed, failed = await _group(controller, Action.CIRCUIT_OFF)
        on_s, _, _ = await _group(controller, Action.CIRCUIT_ON)
        await _group(controller, Action.CIRCUIT_OFF)  # the baseline switches them on again
        sample = 10 if quick else 66
        base_s, base_n = await _one_at_a_time(controller, sample)
    finally:
        await controller.stop()
    counts = controller.registry.count_by_class()
    per_circuit = base_s / base_n
    baseline_city = per_circuit * confirmed
    slower = max(off_s, on_s)
    return {
        "bench": "control",
        "city": {"cabinets": counts.get("cabinet", 0), "circuits": confirmed},
        "all_off_confirmed_s": round(off_s, 3),
        "all_on_confirmed_s": round(on_s, 3),
        "failed": failed,
        "circuits_per_s": round(confirmed / slower),
        "baseline": {
            "kind": "one command per circuit, each confirmed before the next",
            "sampled_circuits": base_n,
            "seconds_per_circuit": round(per_circuit, 5),
            "city_s_extrapolated": round(baseline_city, 2),
        },
        # Against the slower of the two group commands, so the ratio is not flattered.
        "speedup_vs_baseline": round(baseline_city / slower, 1),
        "target_s": TARGET_S,
        "target_met": max(off_s, on_s) < TARGET_S,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Generate the city, start its simulators, measure, stop."""
    control = {"db_path": "{folder}/control.db", "confirm_interval": 0.1}
    return run_against_city(23000, quick, {"control": control}, _measure)
