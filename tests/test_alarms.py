"""Alarm lifecycle (ISA-18.2 style), dedup, chattering, floods, inhibition, persistence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.alarm_store import AlarmStore
from controller.config import LoadedConfig
from rules.alarm_model import Alarm, AlarmError, AlarmNotice, Condition
from rules.alarms import AlarmManager
from rules.config import AlarmsConfig
from tests.helpers import sqlite_state
from tests.rules_helpers import T0, Bench, cabinet_poll, lamp_poll
from tests.test_rules_kernels import LEVELS

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]


class Rig:
    """Engine + alarm manager over the small site, with a store in a temp folder."""

    def __init__(
        self, write_config: WriteConfig, path: Path, rules: list[dict[str, Any]], **alarm_cfg: Any
    ) -> None:
        self.bench = Bench(write_config, rules)
        self.path = path
        self.alarm_cfg = AlarmsConfig(**alarm_cfg)
        #: The manager's (virtual) clock; a test may move it.
        self.now = T0 + 10_000
        self.manager = self._manager()
        self.notices: list[AlarmNotice] = []

    def _manager(self) -> AlarmManager:
        manager = AlarmManager(
            self.bench.compiled.rules,
            self.bench.registry,
            self.alarm_cfg,
            AlarmStore(sqlite_state(self.path), self.path.with_suffix(".unwritten.json")),
            clock=lambda: self.now,
        )

        async def keep(notice: AlarmNotice) -> None:
            self.notices.append(notice)

        manager.subscribe(keep)
        return manager

    async def feed(self, readings: list[tuple[str, str, float, float]]) -> list[str]:
        events = self.bench.engine.evaluate(self.bench.batch(readings))
        notices = await self.manager.apply(events)
        return [f"{n.alarm.rule}:{n.alarm.device}:{n.transition}" for n in notices]

    async def level(self, t: float, value: float) -> list[str]:
        return await self.feed([("WL", "water_level", t, value)])


async def test_raise_acknowledge_clear_and_return(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    rig = Rig(write_config, tmp_path / "a.db", [LEVELS])
    await rig.manager.start()
    assert await rig.level(0, 0.15) == ["flood:WL:raised"]
    alarm = rig.manager.list()[0]
    assert (alarm.condition, alarm.level_name, alarm.severity) == (
        Condition.ACTIVE_UNACK,
        "blue",
        "low",
    )
    await rig.manager.acknowledge(alarm.id, "duty officer Li")
    assert (
        rig.manager.state_of(alarm) == "active_acknowledged" and alarm.acked_by == "duty officer Li"
    )
    assert await rig.level(10, 0.25) == ["flood:WL:escalated"]  # back to unacknowledged
    assert rig.manager.state_of(alarm) == "active_unacknowledged" and alarm.level_name == "yellow"
    assert await rig.level(20, 0.0) == ["flood:WL:returned"]
    assert rig.manager.state_of(alarm) == "returned_unacknowledged"
    await rig.manager.acknowledge(alarm.id, "duty officer Li")
    assert rig.manager.state_of(alarm) == "normal" and alarm.closed_at is not None
    assert rig.manager.list() == []
    with pytest.raises(KeyError):
        await rig.manager.acknowledge(alarm.id, "again")
    await rig.manager.close()


async def test_one_alarm_per_device_and_rule_repeats_count(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    rig = Rig(write_config, tmp_path / "a.db", [LEVELS])
    await rig.manager.start()
    await rig.level(0, 0.15)
    alarm = rig.manager.list()[0]
    await rig.manager.acknowledge(alarm.id, "x")
    await rig.level(10, 0.0)  # acknowledged and cleared: closed
    await rig.level(20, 0.15)
    await rig.level(30, 0.0)
    await rig.level(40, 0.15)  # returned-unacknowledged alarm raised again: same alarm
    open_alarms = rig.manager.list()
    assert len(open_alarms) == 1 and open_alarms[0].id != alarm.id and open_alarms[0].count == 2
    with pytest.raises(AlarmError):
        await rig.manager.unshelve(open_alarms[0].id, "x")
    await rig.manager.close()


async def shelved_blue_alarm(write_config: WriteConfig, tmp_path: Path) -> tuple[Rig, Alarm]:
    """A rig whose gauge is at blue, its alarm shelved for an hour."""
    rig = Rig(write_config, tmp_path / "a.db", [LEVELS])
    await rig.manager.start()
    await rig.level(0, 0.15)
    alarm = rig.manager.list()[0]
    await rig.manager.shelve(alarm.id, "x", minutes=60)
    assert rig.manager.state_of(alarm) == "shelved"
    return rig, alarm


async def test_shelved_alarm_is_evaluated_but_not_announced(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    rig, alarm = await shelved_blue_alarm(write_config, tmp_path)
    assert await rig.level(10, 0.45) == []  # escalates silently
    assert alarm.level_name == "red"
    await rig.manager.unshelve(alarm.id, "x")
    assert rig.manager.state_of(alarm) == "active_unacknowledged"
    await rig.manager.close()


async def test_shelving_ends_by_the_managers_clock_not_the_wall(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    # The virtual clock runs ahead of the wall clock: the shelf must expire by it.
    rig, alarm = await shelved_blue_alarm(write_config, tmp_path)
    rig.now += 2 * 3600
    assert rig.manager.state_of(alarm) == "active_unacknowledged"
    await rig.manager.close()


async def test_chattering_is_flagged_after_three_transitions_in_a_minute(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    rig = Rig(write_config, tmp_path / "a.db", [LEVELS])
    await rig.manager.start()
    said = []
    for i, v in enumerate([0.15, 0.0, 0.15, 0.0, 0.15]):
        said += await rig.level(i * 10, v)
    alarm = rig.manager.list()[0]
    assert alarm.chattering
    assert said == ["flood:WL:raised", "flood:WL:returned"]  # then flagged, not announced
    await rig.manager.close()


async def test_alarm_flood_in_an_area(write_config: WriteConfig, tmp_path: Path) -> None:
    rules: list[dict[str, Any]] = [
        {**LEVELS, "id": f"r{i}", "levels_from_device": False, "limits": [0.01 * (i + 1)]}
        for i in range(12)
    ]
    rig = Rig(
        write_config,
        tmp_path / "a.db",
        rules,
        flood_count=10,
        flood_window=600,
        flood_area_by="grid",
    )
    await rig.manager.start()
    await rig.level(0, 0.5)
    assert len(rig.manager.list()) == 12
    assert "(none)" in rig.manager.floods
    await rig.manager.close()


async def test_offline_device_and_cut_circuit_mute_what_they_cause(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    rules: list[dict[str, Any]] = [
        LEVELS,
        {"id": "comm", "kind": "comm_loss", "intervals": 3},
        {"id": "cut", "kind": "circuit_break", "select": {"device_class": "cabinet"}},
        {"id": "power", "kind": "lamp_power", "select": {"device_class": "lamp"}},
    ]
    rig = Rig(write_config, tmp_path / "a.db", rules)
    await rig.manager.start()
    await rig.level(0, 0.15)
    flood = rig.manager.list()[0]
    await rig.feed(cabinet_poll(40, [1, 1, 1, 1], [1, 1, 1, 1], [0.9, 0.9, 0, 0]))
    await rig.manager.apply(rig.bench.engine.sweep_comm_loss(T0 + 45))  # WL silent since 0
    comm = next(a for a in rig.manager.list() if a.rule == "comm" and a.device == "WL")
    assert rig.manager.state_of(comm) == "active_unacknowledged"
    assert rig.manager.state_of(flood) == "suppressed"
    # A cut circuit: one circuit alarm, and the dimmed-looking lamp on it is muted.
    said = await rig.feed(
        cabinet_poll(50, [1, 1, 1, 1], [1, 1, 1, 1], [0.0, 0.9, 0, 0])
        + lamp_poll("CAB-L001", 50, power=40)
    )
    assert "cut:CAB:raised" in said and not any(s.startswith("power:") for s in said)
    lamp = next(a for a in rig.manager.list() if a.rule == "power")
    assert lamp.suppressed_by == "circuit_break:CAB/1"
    await rig.manager.close()


async def test_restart_keeps_alarms_without_raising_them_again(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path = tmp_path / "alarms.db"
    first = Rig(write_config, path, [LEVELS])
    await first.manager.start()
    await first.level(0, 0.25)
    alarm_id = first.manager.list()[0].id
    await first.manager.acknowledge(alarm_id, "x")
    await first.manager.close()

    second = Rig(write_config, path, [LEVELS])
    for alarm in await second.manager.start():
        rule = second.bench.compiled.rule_index(alarm.rule)
        device = second.bench.registry.by_id[alarm.device].index
        second.bench.engine.seed(rule, device, alarm.sub, 0, alarm.level)
    kept = second.manager.list()
    assert [(a.id, a.condition, a.level_name) for a in kept] == [
        (alarm_id, Condition.ACTIVE_ACK, "yellow")
    ]
    assert await second.level(100, 0.25) == []  # still yellow: nothing new
    assert await second.level(110, 0.0) == ["flood:WL:cleared"]  # the seeded state clears it
    await second.manager.close()
