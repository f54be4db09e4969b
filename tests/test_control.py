"""Remote control against the simulators: switch, dim, confirm by read-back, fail cleanly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.catalogue import catalogue
from controller.config import LoadedConfig
from controller.control.audit import Actor, AuditQuery
from controller.control.dispatcher import CommandRefused, CommandRequest, CommandStatus
from controller.control.selector import GroupSelector
from controller.control.writes import Action
from controller.runtime import Controller
from drivers.errors import NeedsConfirmation, NotFound, PeopleMessage
from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import SimulatedCity
from simulators.servers import free_port
from tests.helpers import city_with_controller, readings_by_device

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
ENGINEER = Actor("Chen Gong", "k1", "engineer")
TIMEOUT = 0.3


def control_city(tmp_path: Path) -> dict[str, Any]:
    """Two DTUs: CAB-A and CAB-B share one, CAB-C has its own; plus a lamp on its own unit."""

    def link(name: str) -> dict[str, Any]:
        return {
            "id": name,
            "kind": "rtu_over_tcp",
            "host": "127.0.0.1",
            "port": free_port(),
            "timeout": TIMEOUT,
        }

    def cabinet(cab_id: str, link_id: str, unit: int, road: str) -> dict[str, Any]:
        return {
            "id": cab_id,
            "link": link_id,
            "unit": unit,
            "road": road,
            "grid": "G1",
            "tags": ["main-road"] if road == "东风路" else [],
            "lamp_runs": [
                {"circuit": 1, "count": 6, "rated_w": 150},
                {"circuit": 2, "count": 3, "rated_w": 100, "road": f"{road}辅道"},
            ],
        }

    return {
        "links": [link("dtu-a"), link("dtu-b")],
        "cabinets": [
            cabinet("CAB-A", "dtu-a", 1, "东风路"),
            cabinet("CAB-B", "dtu-a", 2, "东风路"),
            cabinet("CAB-C", "dtu-b", 1, "新江路"),
        ],
        "lamps": [{"id": "RS-1", "link": "dtu-b", "unit": 9, "rated_w": 40, "road": "滨江步道"}],
        # Stores, audit log and overrides default to var/ beside the temporary config.yaml.
        "control": {
            "confirm_timeout": 1.0,
            "confirm_interval": 0.1,
            "confirm_above_lamps": 10,
        },
    }


async def read_city(controller: Controller) -> dict[str, dict[str, float]]:
    return readings_by_device(controller, await controller.poller.poll_all_once())


async def test_switching_a_circuit_moves_the_contactor_and_the_currents_follow(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(control_city(tmp_path))
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        before = await read_city(controller)
        assert before["CAB-A"]["circuit1_current"] > 3.0  # six 150 W lamps
        off = await controller.commands.execute(
            CommandRequest(Action.CIRCUIT_OFF, GroupSelector(cabinets=["CAB-A"], circuits=[1])),
            ENGINEER,
            "test",
        )
        assert off.status is CommandStatus.CONFIRMED, off.results
        assert list(off.results) == ["CAB-A/circuit1"]
        assert city.cabinets["CAB-A"].circuit_cmd == [False, True, True, True]
        after = await read_city(controller)
        assert after["CAB-A"]["circuit1_on"] == 0
        assert after["CAB-A"]["circuit1_current"] == 0
        assert after["CAB-A"]["circuit2_current"] == pytest.approx(
            before["CAB-A"]["circuit2_current"], rel=0.05
        )
        assert all(after[f"CAB-A-L00{i}"]["lamp_on"] == 0 for i in range(1, 7))
        assert after["CAB-B"]["circuit1_on"] == 1  # its neighbour on the bus is untouched

        on = await controller.commands.execute(
            CommandRequest(Action.CIRCUIT_ON, GroupSelector(cabinets=["CAB-A"], circuits=[1])),
            ENGINEER,
            "test",
        )
        assert on.status is CommandStatus.CONFIRMED
        again = await read_city(controller)
        assert again["CAB-A"]["circuit1_current"] == pytest.approx(
            before["CAB-A"]["circuit1_current"], rel=0.05
        )


async def test_dimming_lowers_the_power_and_the_lamp_reports_the_level(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(control_city(tmp_path))
    async with SimulatedCity(loaded), Controller(loaded) as controller:
        await controller.open_stores()
        before = await read_city(controller)
        dim = await controller.commands.execute(
            CommandRequest(
                Action.LAMP_DIM, GroupSelector(road="东风路", cabinets=["CAB-A"]), dim=50
            ),
            ENGINEER,
            "test",
        )
        # Only the main-road lamps of CAB-A: its side-road circuit is another road.
        assert sorted(dim.results) == [f"CAB-A-L00{i}" for i in range(1, 7)]
        assert dim.status is CommandStatus.CONFIRMED, dim.results
        after = await read_city(controller)
        for i in range(1, 7):
            lamp = f"CAB-A-L00{i}"
            assert after[lamp]["dim_level"] == 50
            assert after[lamp]["power"] == pytest.approx(before[lamp]["power"] / 2, rel=0.03)
        assert after["CAB-A"]["active_power"] < before["CAB-A"]["active_power"] * 0.75
        assert after["CAB-A-L007"]["dim_level"] == 100  # side road not in the group
        # A single-lamp controller on its own unit id is commanded the same way.
        off = await controller.commands.execute(
            CommandRequest(Action.LAMP_OFF, GroupSelector(lamps=["RS-1"])), ENGINEER, "test"
        )
        assert off.status is CommandStatus.CONFIRMED
        assert (await read_city(controller))["RS-1"]["power"] == 0


async def test_a_dead_cabinet_fails_its_part_without_delaying_the_rest(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(control_city(tmp_path))
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        city.inject(FaultSpec(kind=FaultKind.DEVICE_SILENT, device="CAB-B"))
        started = time.monotonic()
        command = await controller.commands.execute(
            CommandRequest(Action.CIRCUIT_OFF, GroupSelector(all=True), confirm=True),
            ENGINEER,
            "test",
        )
        elapsed = time.monotonic() - started
        assert command.status is CommandStatus.PARTIAL
        failed = {k for k, r in command.results.items() if r.status == "failed"}
        assert failed == {f"CAB-B/circuit{c}" for c in range(1, 5)}
        reason = command.results["CAB-B/circuit1"].reason
        assert "write failed" in reason and "no answer" in reason
        # The same in the catalogue's words, which the console shows.
        words = command.results["CAB-B/circuit1"].message
        assert words == PeopleMessage("result.write_failed", {"error": "timeout"})
        assert catalogue().text(words.key, "zh", error="应答超时") == "下发失败：应答超时"
        confirmed = {k for k, r in command.results.items() if r.status == "confirmed"}
        assert len(confirmed) == 8
        # The dead cabinet cost its one timeout, not one per circuit and not the confirm timeout.
        assert elapsed < TIMEOUT + 0.6
        done_c = max(command.results[f"CAB-C/circuit{c}"].done_at or 0 for c in range(1, 5))
        assert done_c - command.created_at < TIMEOUT  # another link: not delayed at all
        assert city.cabinets["CAB-A"].circuit_cmd == [False] * 4
        assert city.cabinets["CAB-C"].circuit_cmd == [False] * 4


async def test_a_contactor_that_does_not_follow_fails_with_what_it_reads(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(control_city(tmp_path))
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        city.inject(FaultSpec(kind=FaultKind.CONTACTOR_FAIL, device="CAB-C", circuit=2))
        command = await controller.commands.execute(
            CommandRequest(Action.CIRCUIT_OFF, GroupSelector(cabinets=["CAB-C"], circuits=[1, 2])),
            ENGINEER,
            "test",
        )
        assert command.status is CommandStatus.PARTIAL
        assert command.results["CAB-C/circuit1"].status == "confirmed"
        result = command.results["CAB-C/circuit2"]
        assert result.status == "failed"
        assert "not confirmed within 1s" in result.reason
        assert "circuit2_on reads 1, expected 0" in result.reason
        assert result.message == PeopleMessage(
            "result.reads_otherwise",
            {"seconds": "1", "point": "circuit2_on", "reading": "1", "expected": "0"},
        )
        # The audit log has the same outcome, per target, after the command ended.
        [entry] = await controller.audit.query(AuditQuery(target="CAB-C"))
        assert entry.outcome == "partial"
        assert entry.results["CAB-C/circuit2"]["status"] == "failed"
        assert entry.results["CAB-C/circuit2"]["message"]["key"] == "result.reads_otherwise"
        assert entry.actor == ENGINEER


async def test_large_switch_off_needs_confirm_and_unknown_targets_are_refused(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(control_city(tmp_path))
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        road = GroupSelector(road="东风路")  # 12 lamps on two cabinets: over the limit of 10
        with pytest.raises(CommandRefused) as refused:
            await controller.commands.submit(CommandRequest(Action.CIRCUIT_OFF, road), ENGINEER)
        assert isinstance(refused.value, NeedsConfirmation)
        assert "puts out 12 lamps" in refused.value.reason
        assert city.cabinets["CAB-A"].circuit_cmd == [True] * 4  # nothing was sent
        # Switching on never needs a confirm.
        on = await controller.commands.execute(
            CommandRequest(Action.CIRCUIT_ON, road), ENGINEER, "t"
        )
        assert sorted(on.results) == ["CAB-A/circuit1", "CAB-B/circuit1"]
        with pytest.raises(CommandRefused) as unknown:
            await controller.commands.submit(
                CommandRequest(Action.CIRCUIT_ON, GroupSelector(cabinets=["NOPE"])), ENGINEER
            )
        assert isinstance(unknown.value, NotFound)
        assert unknown.value.message == PeopleMessage(
            "refusal.no_target", {"device_class": "cabinet", "device": "NOPE"}
        )
        entries = await controller.audit.query(AuditQuery())
        assert [e.outcome for e in entries] == ["refused", "confirmed", "refused"]
        assert "no cabinet 'NOPE'" in entries[0].reason


async def test_commands_go_ahead_of_queued_polls(tmp_path: Path, write_config: WriteConfig) -> None:
    loaded = write_config(control_city(tmp_path))
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        city.inject(FaultSpec(kind=FaultKind.SLOW, device="CAB-A", delay=0.1))
        targets = [t for t in controller.registry.targets if t.link == "dtu-a"]
        polls = [asyncio.create_task(controller.poller.poll_target(t)) for t in targets * 3]
        await asyncio.sleep(0.05)  # the first poll holds the bus, the rest queue
        command = await controller.commands.execute(
            CommandRequest(Action.CIRCUIT_OFF, GroupSelector(cabinets=["CAB-B"], circuits=[4])),
            ENGINEER,
            "test",
        )
        unfinished = sum(1 for p in polls if not p.done())
        await asyncio.gather(*polls)
        assert command.status is CommandStatus.CONFIRMED
        # Had the command queued behind the polls, all of them would be done by now.
        assert unfinished >= 3
