"""Schedules: calendars, astronomical timelines, a simulated night in two cities, overrides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import yaml

from api.keys import Role
from controller.config import LoadedConfig
from controller.control.audit import Actor, AuditQuery
from controller.control.selector import GroupSelector
from controller.runtime import Controller
from controller.schedules.calendar import program_for
from controller.schedules.clocks import VirtualClock, WallClock
from controller.schedules.config import Calendar, Program
from controller.schedules.device_tables import collapse_ramps, encode_table
from controller.schedules.overrides import Override
from controller.schedules.timeline import night_of, plan_night
from drivers.errors import ConfigError
from drivers.profile import Table, TimeTableSpec
from rules.astro import sun_times
from simulators.fleet import SimulatedCity
from simulators.servers import free_port
from tests.helpers import api_client, new_key
from tests.test_rules_e2e import cycles

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
TZ = ZoneInfo("Asia/Shanghai")
YANGJIANG = (21.8585, 111.9822)
KASHGAR = (39.4704, 75.9898)  # the same time zone, 36 degrees further west


def local(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


def sun(place: tuple[float, float], day: str) -> tuple[float, float]:
    rise, sset = sun_times(np.array([place[0]]), np.array([place[1]]), local(f"{day}T12:00"))
    return float(rise[0]), float(sset[0])


@pytest.mark.parametrize(
    ("place", "day", "published"),
    [
        ((39.9042, 116.4074), "2024-06-21", ("04:46", "19:46")),  # Beijing, summer solstice
        ((39.9042, 116.4074), "2024-12-21", ("07:33", "16:53")),  # Beijing, winter solstice
        ((23.1291, 113.2644), "2024-06-21", ("05:43", "19:15")),  # Guangzhou
    ],
)
def test_sunrise_and_sunset_match_published_times(
    place: tuple[float, float], day: str, published: tuple[str, str]
) -> None:
    for got, want in zip(sun(place, day), published, strict=True):
        assert abs(got - local(f"{day}T{want}")) <= 3 * 60


CALENDAR = Calendar.model_validate(
    {
        "id": "city",
        "default": "standard",
        "rules": [
            {"program": "festival", "yearly": ["10-01", "10-02", "10-03"]},
            {"program": "festival", "dates": ["2026-02-17"], "description": "Spring Festival"},
            {"program": "saving", "date_ranges": [{"start": "2026-07-01", "end": "2026-07-31"}]},
            {"program": "market", "nth_weekday": {"n": 2, "weekday": "sat"}},
            {"program": "month-end", "nth_weekday": {"n": -1, "weekday": "fri"}, "months": [1, 6]},
            {"program": "weekend", "weekdays": ["sat", "sun"]},
        ],
    }
)


@pytest.mark.parametrize(
    ("night", "program"),
    [
        ("2026-11-18", "standard"),  # a Wednesday
        ("2026-11-21", "weekend"),  # Saturday, but the third one
        ("2026-11-14", "market"),  # the second Saturday wins: rules are ordered
        ("2026-10-03", "festival"),  # National Day holiday, a Saturday
        ("2027-10-01", "festival"),  # yearly
        ("2026-02-17", "festival"),
        ("2026-07-11", "saving"),  # in the range, before the weekend rule
        ("2026-06-26", "month-end"),  # last Friday of June
        ("2026-06-19", "standard"),  # a Friday, not the last
        ("2026-11-27", "standard"),  # last Friday, but not in January or June
    ],
)
def test_calendar_rules_pick_the_first_match(night: str, program: str) -> None:
    assert program_for(CALENDAR, date.fromisoformat(night)) == program


STANDARD: dict[str, Any] = {
    "id": "standard",
    "steps": [
        {"at": {"event": "sunset", "offset_minutes": 10}, "action": "on"},
        {"at": "23:00", "action": "dim", "level": 50, "ramp_minutes": 10},
        {"at": "01:00", "action": "dim", "level": 30},
        {"at": {"event": "sunrise", "offset_minutes": -10}, "action": "off"},
    ],
}


def test_a_night_follows_each_places_own_sun_and_ramps_in_steps() -> None:
    program = Program.model_validate(STANDARD)
    yj, ks = plan_night(
        program, date(2026, 11, 22), [YANGJIANG[0], KASHGAR[0]], [YANGJIANG[1], KASHGAR[1]], TZ
    )
    _, yj_sunset = sun(YANGJIANG, "2026-11-22")
    ks_sunrise, _ = sun(KASHGAR, "2026-11-23")
    assert yj[0].action == "on" and yj[0].at == pytest.approx(yj_sunset + 600)
    assert ks[-1].action == "off" and ks[-1].at == pytest.approx(ks_sunrise - 600)
    assert ks[0].at - yj[0].at > 1.5 * 3600  # Kashgar's dusk comes hours later by the clock
    ramp = [(datetime.fromtimestamp(s.at, TZ).strftime("%H:%M"), s.level) for s in yj[1:6]]
    assert ramp == [("23:02", 90), ("23:04", 80), ("23:06", 70), ("23:08", 60), ("23:10", 50)]
    assert [s.level for s in yj] == [100, 90, 80, 70, 60, 50, 30, None]
    assert night_of(local("2026-11-23T03:00"), TZ) == date(2026, 11, 22)


def two_city_doc(tmp_path: Path, mode: str = "central") -> dict[str, Any]:
    def cabinet(cab_id: str, link: str, place: tuple[float, float]) -> dict[str, Any]:
        return {
            "id": cab_id,
            "link": link,
            "unit": 1,
            "lat": place[0],
            "lon": place[1],
            "lamp_runs": [{"circuit": 1, "count": 3}, {"circuit": 2, "count": 3}],
        }

    return {
        "links": [
            {
                "id": n,
                "kind": "modbus_tcp",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout": 0.3,
            }
            for n in ("dtu-yj", "dtu-ks")
        ],
        "cabinets": [cabinet("YJ-001", "dtu-yj", YANGJIANG), cabinet("KS-001", "dtu-ks", KASHGAR)],
        "schedules": {
            "programs": [STANDARD],
            "calendars": [{"id": "city", "default": "standard"}],
            "groups": [
                {"id": "streets", "calendar": "city", "targets": {"all": True}, "mode": mode}
            ],
        },
        # Stores, audit log and overrides default to var/ beside the temporary config.yaml.
        "control": {
            "confirm_timeout": 1.0,
            "confirm_interval": 0.05,
        },
    }


def lamps(city: SimulatedCity, cabinet: str) -> list[tuple[int, int]]:
    return [(lamp.switch_cmd, lamp.dim_cmd) for lamp in city.cabinets[cabinet].lamps]


async def test_a_simulated_night_switches_and_dims_two_cities_at_their_own_times(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(two_city_doc(tmp_path))
    clock = VirtualClock(local("2026-11-22T12:00"))
    _, yj_sunset = sun(YANGJIANG, "2026-11-22")
    _, ks_sunset = sun(KASHGAR, "2026-11-22")
    yj_sunrise, _ = sun(YANGJIANG, "2026-11-23")
    ks_sunrise, _ = sun(KASHGAR, "2026-11-23")
    async with SimulatedCity(loaded) as city, Controller(loaded, schedule_clock=clock) as ctl:
        ctl.commands.clock = clock.now
        await ctl.start_schedules()
        await clock.settle()
        # At noon the schedule wants last night's last step: everything off.
        assert city.cabinets["YJ-001"].circuit_cmd == [False] * 4
        assert city.cabinets["KS-001"].circuit_cmd == [False] * 4

        await clock.run_until(yj_sunset + 600)
        assert city.cabinets["YJ-001"].circuit_cmd == [True] * 4
        assert lamps(city, "YJ-001") == [(1, 100)] * 6
        assert city.cabinets["KS-001"].circuit_cmd == [False] * 4  # still light in Kashgar

        await clock.run_until(ks_sunset + 600)
        assert city.cabinets["KS-001"].circuit_cmd == [True] * 4

        # An engineer keeps Kashgar dark for an hour of maintenance.
        engineer = Actor("Chen Gong", "k1", "engineer")
        start = local("2026-11-22T21:00")
        await ctl.schedules.add_override(
            Override(
                0,
                GroupSelector(cabinets=["KS-001"]),
                "off",
                None,
                start,
                start + 3600,
                "cable repair",
                engineer,
                clock.now(),
            )
        )
        await clock.run_until(start + 1800)
        assert city.cabinets["KS-001"].circuit_cmd == [False] * 4
        assert city.cabinets["YJ-001"].circuit_cmd[0]
        await clock.run_until(start + 3600)
        assert city.cabinets["KS-001"].circuit_cmd == [True] * 4  # back on schedule

        await clock.run_until(local("2026-11-22T23:05"))
        assert lamps(city, "YJ-001") == [(1, 80)] * 6  # half-way down the ramp
        await clock.run_until(local("2026-11-22T23:10"))
        assert lamps(city, "KS-001") == [(1, 50)] * 6
        await clock.run_until(local("2026-11-23T01:00"))
        assert lamps(city, "YJ-001") == [(1, 30)] * 6

        await clock.run_until(yj_sunrise - 600)
        assert city.cabinets["YJ-001"].circuit_cmd == [False] * 4
        assert city.cabinets["KS-001"].circuit_cmd == [True] * 4
        await clock.run_until(ks_sunrise - 600)
        assert city.cabinets["KS-001"].circuit_cmd == [False] * 4

        # Every step is in the audit log at its virtual time, by the scheduler.
        entries = await ctl.audit.query(AuditQuery(limit=1000))
        ons = [(e.at, e.selector) for e in entries if e.action == "circuit_on"]
        assert (yj_sunset + 600, "cabinets=YJ-001") in ons
        assert (ks_sunset + 600, "cabinets=KS-001") in ons
        assert (start + 3600, "cabinets=KS-001") in ons  # restored after the override
        assert all(e.outcome == "confirmed" for e in entries), [
            (e.action, e.outcome, e.reason) for e in entries if e.outcome != "confirmed"
        ]
        overridden = [e for e in entries if e.source == "override:1"]
        assert [(e.action, e.actor.name, e.at) for e in overridden] == [
            ("circuit_off", "Chen Gong", start)
        ]
        # The dims at 23:00 to 23:10 and 01:00 skipped nothing and sent nothing twice.
        yj_dims = [
            e.dim for e in reversed(entries) if e.action == "lamp_dim" and "YJ" in e.selector
        ]
        assert yj_dims == [100, 90, 80, 70, 60, 50, 30]


async def test_device_mode_pushes_the_night_into_the_cabinet_which_switches_by_it(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(two_city_doc(tmp_path, mode="device"))
    clock = VirtualClock(local("2026-11-22T12:00"))
    _, yj_sunset = sun(YANGJIANG, "2026-11-22")
    city = SimulatedCity(loaded, wall_clock=clock.now)
    async with city, Controller(loaded, schedule_clock=clock) as ctl:
        await ctl.start_schedules()
        await clock.settle()
        status = {p.cabinet: p for p in await ctl.table_pushes.latest()}
        assert status["YJ-001"].ok and status["KS-001"].ok, status
        assert status["YJ-001"].entries == 4  # on, dim 50 (the ramp's end), dim 30, off
        image = city.stores["dtu-yj"].units[1].image[Table.HOLDING_REGISTER]
        entries = image[300:364].reshape(16, 4).tolist()
        on = datetime.fromtimestamp(yj_sunset + 600, TZ)
        assert entries[0] == [on.hour * 60 + on.minute, 0b1111, 1, 100]
        assert entries[1] == [23 * 60 + 10, 0b1111, 1, 50]
        assert entries[2] == [60, 0b1111, 1, 30]
        assert entries[3][1:] == [0b1111, 0, 0]
        assert entries[4][0] == 0xFFFF
        # The terminal runs the table by its own clock; the centre sends no commands.
        cabinet = city.cabinets["YJ-001"]
        cabinet.circuit_cmd = [False] * 4  # dark in the afternoon

        async def poll_at(moment: float) -> None:
            await clock.run_until(moment)
            await asyncio.sleep(0.25)  # past the simulator's image refresh period
            await ctl.poller.poll_all_once()

        await poll_at(yj_sunset + 600 - 120)
        assert cabinet.circuit_cmd == [False] * 4
        await poll_at(yj_sunset + 600 + 60)
        assert cabinet.circuit_cmd == [True] * 4
        await poll_at(local("2026-11-22T23:15"))
        assert lamps(city, "YJ-001") == [(1, 50)] * 6
        await poll_at(local("2026-11-23T07:30"))
        assert cabinet.circuit_cmd == [False] * 4
        commands = await ctl.audit.query(AuditQuery(limit=100))
        assert {e.action for e in commands} == {"time_table"}
        # The next push comes at the daily planning time, for the next night.
        await clock.run_until(local("2026-11-23T12:00"))
        status = {p.cabinet: p for p in await ctl.table_pushes.latest()}
        assert status["YJ-001"].night == "2026-11-23"
        pushed = sorted((p.cabinet, p.night, p.entries, p.ok) for p in status.values())

    # The push status is in the state database: a controller that pushed nothing, as the
    # standby of a pair or a new leader before its first push, shows the last pushes.
    viewer = {"X-API-Key": new_key(loaded, "Zhou", Role.VIEWER)}
    async with Controller(loaded) as other, api_client(other) as client:
        await other.open_stores()
        shown = await client.get("/schedules/device-tables", headers=viewer)
        assert shown.status_code == 200, shown.text
        got = sorted((p["cabinet"], p["night"], p["entries"], p["ok"]) for p in shown.json())
        assert got == pushed and ("YJ-001", "2026-11-23", 4, True) in got, got


async def test_wall_clock_wakes_through_apscheduler() -> None:
    clock = WallClock()
    clock.start()
    try:
        target = clock.now() + 0.3
        await clock.sleep_until(target)
        assert clock.now() >= target - 0.01
    finally:
        clock.stop()


def test_a_group_naming_an_unknown_cabinet_is_a_config_error(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = two_city_doc(tmp_path)
    doc["schedules"]["groups"][0]["targets"] = {"cabinets": ["NOPE"]}
    with pytest.raises(ConfigError) as err:
        Controller(write_config(doc))
    assert err.value.key == "schedules.groups[0] (streets).targets"
    assert "no cabinet 'NOPE'" in err.value.reason


async def test_schedules_and_overrides_through_the_api(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = two_city_doc(tmp_path)
    loaded = write_config(doc)
    engineer = {"X-API-Key": new_key(loaded, "Chen Gong", Role.ENGINEER)}
    viewer = {"X-API-Key": new_key(loaded, "Zhou", Role.VIEWER)}
    clock = VirtualClock(local("2026-11-22T20:00"))
    async with SimulatedCity(loaded) as city, Controller(loaded, schedule_clock=clock) as ctl:
        ctl.commands.clock = clock.now
        await ctl.start_schedules()
        await clock.settle()
        assert city.cabinets["YJ-001"].circuit_cmd == [True] * 4  # restored: it is evening
        async with api_client(ctl) as client:
            [group] = (await client.get("/schedules")).json()
            assert group["program"] == "standard" and group["places"] == 2
            # Without a name in the config, a group and a program go by their ids.
            assert (group["name"], group["program_name"]) == ("streets", "standard")
            assert group["next_step"]["action"] == "dim"
            assert group["next_step"]["at"] == "2026-11-22T15:02:00Z"  # 23:02 in Yangjiang
            line = (await client.get("/schedules/streets/timeline")).json()
            assert [p["place"] for p in line["places"]] == ["YJ-001", "KS-001"]
            assert len(line["places"][0]["steps"]) == 8
            assert (await client.get("/schedules/nope/timeline")).status_code == 404

            body = {
                "targets": {"cabinets": ["YJ-001"]},
                "action": "dim",
                "level": 20,
                "expires_at": "2026-11-22T22:00:00+08:00",
                "reason": "festival light show next door",
            }
            assert (await client.post("/overrides", json=body, headers=viewer)).status_code == 403
            # Refused, each of a type the console words in the reader's language.
            for odd, kind in (
                ({"expires_at": "2026-11-22T22:00:00"}, "timezone_aware"),
                ({"starts_at": "2026-11-22T23:00:00+08:00"}, "expires_before_start"),
            ):
                refused = await client.post("/overrides", json={**body, **odd}, headers=engineer)
                assert refused.status_code == 422, refused.text
                assert [i["type"] for i in refused.json()["detail"]] == [kind]
            past = {**body, "expires_at": "2026-01-01T00:00:00+08:00"}
            refused = await client.post("/overrides", json=past, headers=engineer)
            assert refused.status_code == 422, refused.text
            assert refused.json()["message"]["key"] == "refusal.expires_in_past"
            created = await client.post("/overrides", json=body, headers=engineer)
            assert created.status_code == 201, created.text
            assert created.json()["state"] == "active"
            assert lamps(city, "YJ-001") == [(1, 20)] * 6  # applied before the answer
            cancelled = await client.delete(f"/overrides/{created.json()['id']}", headers=engineer)
            assert cancelled.json()["state"] == "cancelled"
            assert lamps(city, "YJ-001") == [(1, 100)] * 6  # back to the schedule
            gone = await client.delete("/overrides/99", headers=engineer)
            assert gone.status_code == 404
            assert gone.json()["message"] == {
                "key": "refusal.no_override",
                "params": {"override": 99},
            }
            listed = (await client.get("/overrides")).json()
            assert [(o["id"], o["state"], o["by"]) for o in listed] == [
                (1, "cancelled", "Chen Gong")
            ]
            log = (await client.get("/schedules/log")).json()
            assert [entry["source"] for entry in log[:2]] == ["schedule:streets", "override:1"]
            audit = (await client.get("/audit", params={"target": "YJ-001"})).json()
            assert audit[0]["action"] == "lamp_dim" and audit[0]["level"] == 100
            by_engineer = [
                (a["source"], a["action"], a["level"]) for a in audit if a["by"] == "Chen Gong"
            ]
            assert by_engineer == [("override:1", "lamp_dim", 20)]
            # Refused schedule operations are audited like refused commands.
            assert (
                await client.post("/schedules/streets/push", headers=engineer)
            ).status_code == 409
            assert (await client.delete("/overrides/1", headers=viewer)).status_code == 403
            refused = (await client.get("/audit", params={"outcome": "refused"})).json()
            assert {(a["action"], a["by"], a["reason"][:12]) for a in refused} >= {
                ("cancel_override", "Chen Gong", "no running o"),
                ("time_table", "Chen Gong", "group street"),
                ("cancel_override", "Zhou", "role viewer "),
            }


async def test_a_restart_in_the_night_puts_lights_into_the_scheduled_state(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(two_city_doc(tmp_path))
    clock = VirtualClock(local("2026-11-23T02:00"))
    async with SimulatedCity(loaded) as city, Controller(loaded, schedule_clock=clock) as ctl:
        # The field state after a power cut: contactors open.
        city.cabinets["YJ-001"].circuit_cmd = [False] * 4
        await ctl.start_schedules()
        await clock.settle()
        # The last step due was "dim 30": restoring it closes the circuits too.
        assert city.cabinets["YJ-001"].circuit_cmd == [True] * 4
        assert lamps(city, "YJ-001") == [(1, 30)] * 6
        [restored] = [f for f in ctl.schedules.log if f.source == "schedule:streets"]
        assert (restored.action, restored.level) == ("on", 30)


def test_a_device_table_keeps_every_step_but_a_ramps_sub_steps() -> None:
    program = Program.model_validate(
        {
            "id": "late-market",
            "steps": [
                {"at": "18:30", "action": "on"},
                {"at": "23:00", "action": "dim", "level": 50, "ramp_minutes": 10},
                {"at": "23:30", "action": "dim", "level": 30},
                {"at": "06:30", "action": "off"},
            ],
        }
    )
    [steps] = plan_night(program, date(2026, 11, 22), [YANGJIANG[0]], [YANGJIANG[1]], TZ)
    table = collapse_ramps(steps)
    assert [(datetime.fromtimestamp(s.at, TZ).strftime("%H:%M"), s.level) for s in table] == [
        ("18:30", 100),
        ("23:10", 50),  # the ramp's end
        ("23:30", 30),  # a step of its own, 20 minutes later: kept
        ("06:30", None),
    ]


async def test_lamps_lit_at_start_are_not_day_burning_until_the_schedule_has_run(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = two_city_doc(tmp_path)
    doc["cabinets"] = doc["cabinets"][:1]
    doc["links"] = doc["links"][:1]
    doc["rules"] = [{"id": "day", "kind": "day_burning", "select": {"device_class": "lamp"}}]
    loaded = write_config(doc)
    clock = VirtualClock(local("2026-11-22T12:00"))  # noon in Yangjiang
    async with SimulatedCity(loaded) as city, Controller(loaded, schedule_clock=clock) as ctl:
        ctl.poller.clock = clock.now  # readings stamped at the virtual noon
        await ctl.open_stores()
        assert all(lamp.switch_cmd for lamp in city.cabinets["YJ-001"].lamps)  # lit at start
        await cycles(ctl, 2)
        assert [a for a in ctl.rules.manager.list() if a.active] == []
        await ctl.start_schedules()
        await clock.settle()
        assert city.cabinets["YJ-001"].circuit_cmd == [False] * 4  # the schedule: day, off
        await cycles(ctl, 2)
        assert [a for a in ctl.rules.manager.list() if a.active] == []
        # From now on a lamp lit by day is day-burning: circuit 1 closed by hand.
        city.cabinets["YJ-001"].circuit_cmd[0] = True
        await cycles(ctl, 2)
        burning = sorted((a.rule, a.device) for a in ctl.rules.manager.list() if a.active)
        assert burning == [("day", f"YJ-001-L00{n}") for n in (1, 2, 3)]


def test_a_step_may_fall_on_a_second_and_a_device_table_keeps_its_minute() -> None:
    program = Program.model_validate(
        {
            "id": "test-switch",
            "steps": [{"at": "18:30:45", "action": "on"}, {"at": "06:30:05", "action": "off"}],
        }
    )
    [steps] = plan_night(program, date(2026, 11, 22), [YANGJIANG[0]], [YANGJIANG[1]], TZ)
    assert [datetime.fromtimestamp(s.at, TZ).isoformat() for s in steps] == [
        "2026-11-22T18:30:45+08:00",
        "2026-11-23T06:30:05+08:00",
    ]
    # A cabinet's own table holds minutes of the day: 18:30 and 06:30.
    words = encode_table(steps, [1], TZ, TimeTableSpec(base=0, entries=4))
    assert words[0::4][:2] == [18 * 60 + 30, 6 * 60 + 30]
    with pytest.raises(ValueError, match="is not a time"):
        Program.model_validate({"id": "x", "steps": [{"at": "18:30:60", "action": "on"}]})
    # YAML 1.1 reads an unquoted 18:30:45 as 66645: refused, saying to quote it.
    unquoted = yaml.safe_load("at: 18:30:45")["at"]
    with pytest.raises(ValueError, match="put it in quotes"):
        Program.model_validate({"id": "x", "steps": [{"at": unquoted, "action": "on"}]})
