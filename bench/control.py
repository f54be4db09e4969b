"""Benchmark: switch every circuit of a 660-cabinet city and wait for every confirmation.

The devices are served by the fast responder in a child process on its own
core, with contactors that take 50-200 ms to follow a command, so every
confirmation needs read-backs at ``confirm_interval``; the controller runs in
this process on the other core. Measured: one group command for all circuits
(off, then on again), from submission to the last confirmation, and to the
command's end (the map re-read of every confirmed unit included). Baselines in
the same run, on the same links and simulator:

- the **floor**: the raw write-and-read-back, unit by unit on each link, links
  concurrently, re-reading at the same interval until the contactors follow;
- the **peer**: one command per circuit, all submitted at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.city import run_against_city
from controller.config import LoadedConfig
from controller.control.audit import Actor
from controller.control.dispatcher import Command, CommandRequest, CommandStatus
from controller.control.selector import GroupSelector
from controller.control.targets import CircuitTarget
from controller.control.writes import Action
from controller.runtime import Controller
from drivers.priority_lock import Priority
from drivers.profile import DeviceProfile

CONFIRM_INTERVAL_S = 0.1
CONTACTOR_DELAY_MS = (50.0, 200.0)
TARGET_RATIO_TO_FLOOR = 1.2
TARGET_S = 5.0
ROUNDS = 3
BENCH = Actor("bench", "", "engineer")


def _confirmed_after(command: Command, started_wall: float) -> float:
    """Seconds from submission to the last target's confirmation."""
    done = [r.done_at for r in command.results.values() if r.done_at is not None]
    return max(done) - started_wall if done else float("nan")


async def _group(controller: Controller, action: Action) -> tuple[float, float, int, int]:
    """(to last confirmation, to the command's end, confirmed, failed)."""
    started, wall = time.perf_counter(), controller.commands.clock()
    command = await controller.commands.execute(
        CommandRequest(action, GroupSelector(all=True), confirm=True), BENCH, "bench"
    )
    elapsed = time.perf_counter() - started
    counts = command.counts()
    if command.status is not CommandStatus.CONFIRMED:
        failed = [r for r in command.results.values() if r.status == "failed"][:3]
        raise RuntimeError(f"group command {command.status}: {failed}")
    return _confirmed_after(command, wall), elapsed, counts["confirmed"], counts["failed"]


async def _floor(controller: Controller, state: bool) -> float:
    """Write every circuit and re-read its feedback until it follows, nothing else."""
    registry = controller.registry
    by_link: dict[str, list[Any]] = {}
    for device in registry.devices:
        if device.device_class != "cabinet":
            continue
        profile = device.profile
        assert isinstance(profile, DeviceProfile)
        names = {p.name for p in profile.points}
        circuits = [c for c in range(1, 5) if f"circuit{c}_cmd" in names]
        commands = [profile.point(f"circuit{c}_cmd") for c in circuits]
        feedback = [profile.point(f"circuit{c}_on") for c in circuits]
        by_link.setdefault(device.link, []).append((device.unit, commands, feedback))

    async def one_link(link_id: str, units: list[Any]) -> None:
        link = controller.links[link_id]
        for unit, commands, _ in units:
            # One request for all of a cabinet's contactors (their coils are adjacent).
            first = commands[0]
            await link.write(unit, first.table, first.address, [int(state)] * len(commands))
        waiting = units
        while waiting:
            still = []
            for unit, _, feedback in waiting:
                first = feedback[0]
                bits = await link.read(
                    unit, first.table, first.address, len(feedback), priority=Priority.COMMAND
                )
                if any(b != int(state) for b in bits):
                    still.append((unit, _, feedback))
            waiting = still
            if waiting:
                await asyncio.sleep(CONFIRM_INTERVAL_S)

    started = time.perf_counter()
    await asyncio.gather(*(one_link(k, v) for k, v in by_link.items()))
    return time.perf_counter() - started


async def _per_circuit_concurrent(controller: Controller, action: Action) -> tuple[float, int]:
    """One command per circuit, all submitted at once."""
    registry = controller.registry
    circuits = [
        CircuitTarget(device.index, c)
        for device in registry.devices
        if device.device_class == "cabinet"
        for c in range(1, 5)
    ]

    async def one(target: CircuitTarget) -> Command:
        return await controller.commands.execute(
            CommandRequest(
                action,
                GroupSelector(cabinets=[registry.devices[target.cabinet].id]),
                circuits=(target,),
            ),
            BENCH,
            "bench-peer",
        )

    started = time.perf_counter()
    commands = await asyncio.gather(*(one(t) for t in circuits))
    elapsed = time.perf_counter() - started
    bad = [c for c in commands if c.status is not CommandStatus.CONFIRMED]
    if bad:
        raise RuntimeError(f"{len(bad)} per-circuit commands not confirmed: {bad[0].status}")
    return elapsed, len(circuits)


async def _measure(loaded: LoadedConfig, size: float) -> dict[str, Any]:
    controller = Controller(loaded)
    try:
        await controller.open_stores()
        await controller.poller.poll_all_once()  # connects every link; not measured
        await _group(controller, Action.CIRCUIT_ON)  # warm-up (they are on already)
        # Command and floor in turns, best of each: the machine is shared.
        off: list[tuple[float, float, int, int]] = []
        on: list[tuple[float, float, int, int]] = []
        floor_off: list[float] = []
        floor_on: list[float] = []
        cpu = 0.0
        for _ in range(ROUNDS):
            started_cpu = time.process_time()
            off.append(await _group(controller, Action.CIRCUIT_OFF))
            on.append(await _group(controller, Action.CIRCUIT_ON))
            cpu += time.process_time() - started_cpu
            floor_off.append(await _floor(controller, False))
            floor_on.append(await _floor(controller, True))
        group_cpu = cpu / (2 * ROUNDS)
        confirmed, failed = off[0][2], max(r[3] for r in off + on)
        peer_off, peer_n = await _per_circuit_concurrent(controller, Action.CIRCUIT_OFF)
        await _group(controller, Action.CIRCUIT_ON)
    finally:
        await controller.stop()
    counts = controller.registry.count_by_class()
    off_confirmed, on_confirmed = min(r[0] for r in off), min(r[0] for r in on)
    off_s, on_s = min(r[1] for r in off), min(r[1] for r in on)
    confirmed_s = max(off_confirmed, on_confirmed)
    # Each direction against its own floor; the worse of the two is the ratio.
    ratio = max(off_confirmed / min(floor_off), on_confirmed / min(floor_on))
    return {
        "bench": "control",
        "size": size,
        "city": {"cabinets": counts.get("cabinet", 0), "circuits": confirmed},
        "contactor_delay_ms": list(CONTACTOR_DELAY_MS),
        "confirm_interval_s": CONFIRM_INTERVAL_S,
        "all_off_confirmed_s": round(off_confirmed, 3),
        "all_on_confirmed_s": round(on_confirmed, 3),
        "all_off_done_s": round(off_s, 3),
        "all_on_done_s": round(on_s, 3),
        "group_cpu_s_per_command": round(group_cpu, 3),
        "failed": failed,
        "circuits_per_s": round(confirmed / confirmed_s),
        "floor_raw_write_and_read_back": {
            "off_s": round(min(floor_off), 3),
            "on_s": round(min(floor_on), 3),
        },
        "rounds": ROUNDS,
        "ratio_confirmed_to_floor": round(ratio, 2),
        "peer_per_circuit_commands_concurrently": {
            "commands": peer_n,
            "seconds": round(peer_off, 3),
        },
        "speedup_vs_peer": round(peer_off / confirmed_s, 1),
        "target_ratio_to_floor": TARGET_RATIO_TO_FLOOR,
        "target_met": ratio <= TARGET_RATIO_TO_FLOOR,
    }


def run(size: float = 1.0) -> dict[str, Any]:
    """Generate the city, start the fast responder with slow contactors, measure, stop."""
    extra = {
        "data_dir": "{folder}/var",
        "control": {"confirm_interval": CONFIRM_INTERVAL_S},
        "simulator": {"responder": "fast", "contactor_delay_ms": list(CONTACTOR_DELAY_MS)},
    }
    return run_against_city(23000, size, extra, _measure)
