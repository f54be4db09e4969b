"""Each rule kind on crafted series: edges of hysteresis, on-delay and off-delay included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.config import LoadedConfig
from controller.registry import Registry
from drivers.profile import DeviceProfile
from drivers.readings import ReadingBatch
from rules import engine as engine_module
from rules.astro import sun_times
from rules.compile import CompiledRules, compile_rules
from rules.engine import RuleEngine
from rules.kernels import EV_SENSOR
from tests.rules_helpers import T0, Bench, cabinet_poll, lamp_poll

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
LEVELS = {
    "id": "flood",
    "kind": "threshold",
    "point": "water_level",
    "select": {"device_class": "gauge"},
    "levels_from_device": True,
    "deadband": 0.02,
}


def levels(events: list[Any]) -> list[tuple[float, int]]:
    return [(e.ts, e.level) for e in events]


def test_levels_rise_at_the_limit_and_fall_only_past_the_deadband(
    write_config: WriteConfig,
) -> None:
    b = Bench(write_config, [LEVELS])
    got = b.series(
        "WL", "water_level", [0.0, 0.0999, 0.1, 0.2, 0.39, 0.41, 0.385, 0.379, 0.19, 0.081, 0.079]
    )
    # 0.1 reaches blue exactly; 0.39 is orange, 0.41 red; 0.385 stays red (within 0.02 of
    # 0.4); 0.379 falls to orange; 0.19 is held at yellow; 0.081 held blue; 0.079 clears.
    assert levels(got) == [(20, 1), (30, 2), (40, 3), (50, 4), (70, 3), (80, 2), (90, 1), (100, 0)]
    assert got[0].value == pytest.approx(0.1)


def test_on_delay_ignores_short_excursions_and_raises_long_ones(write_config: WriteConfig) -> None:
    b = Bench(write_config, [{**LEVELS, "on_delay": 25}])
    short = b.series("WL", "water_level", [0.15, 0.15, 0.05])  # 20 s above blue: too short
    assert short == []
    long = b.series("WL", "water_level", [0.15, 0.15, 0.15, 0.15], start=100)
    assert levels(long) == [(130, 1)]  # held from 100 to 130 >= 25 s


def test_off_delay_keeps_the_alarm_through_a_short_dip(write_config: WriteConfig) -> None:
    b = Bench(write_config, [{**LEVELS, "off_delay": 30}])
    got = b.series("WL", "water_level", [0.25, 0.05, 0.05, 0.25, 0.05, 0.05, 0.05, 0.05])
    # raised at 0; the dip at 10-20 (< 30 s) does not clear; from 40 on it clears at 70.
    assert levels(got) == [(0, 2), (70, 0)]


def test_low_direction_raises_below_the_limit(write_config: WriteConfig) -> None:
    rule = {
        "id": "uv",
        "kind": "threshold",
        "point": "voltage_a",
        "direction": "low",
        "select": {"device_class": "cabinet"},
        "limits": [198],
        "deadband": 3,
    }
    b = Bench(write_config, [rule])
    got = b.series("CAB", "voltage_a", [225, 198.5, 198, 199, 200.9, 201.1])
    assert levels(got) == [(20, 1), (50, 0)]


def test_rate_of_change_raises_on_a_fast_rise_and_ignores_one_spike(
    write_config: WriteConfig,
) -> None:
    rule = {
        "id": "rise",
        "kind": "rate_of_change",
        "point": "water_level",
        "select": {"device_class": "gauge"},
        "rise": 0.05,
        "window": 300,
        "quality": {"max_jump": 0.5},
    }
    b = Bench(write_config, [rule])
    slow = b.series("WL", "water_level", [0.008 * i for i in range(12)], step=60)  # 0.8 cm/min
    assert slow == []  # at most 4 cm in any 300 s window
    b2 = Bench(write_config, [rule])
    spiky = b2.series("WL", "water_level", [0.0, 0.0, 1.5, 0.0, 0.0])
    assert spiky == []  # the spike is dropped, not read as a 1.5 m rise
    fast = b2.series("WL", "water_level", [0.0, 0.03, 0.06, 0.06], start=100)
    assert levels(fast) == [(120, 1)]
    assert fast[0].value == pytest.approx(0.06)


def test_stuck_sensor_after_n_equal_samples_above_min_value(write_config: WriteConfig) -> None:
    rule = {
        "id": "stuck",
        "kind": "stuck",
        "point": "water_level",
        "select": {"device_class": "gauge"},
        "samples": 4,
        "tolerance": 0.001,
        "min_value": 0.05,
    }
    b = Bench(write_config, [rule])
    dry = b.series("WL", "water_level", [0.0] * 8)
    assert dry == []  # a dry road reads 0 all day: not stuck
    got = b.series("WL", "water_level", [0.2, 0.2005, 0.2, 0.2, 0.25], start=100)
    assert levels(got) == [(130, 1), (140, 0)]


def test_bad_readings_raise_a_sensor_fault_and_leave_the_level_alone(
    write_config: WriteConfig,
) -> None:
    b = Bench(write_config, [{**LEVELS, "quality": {"valid_min": -0.2, "valid_max": 5.0}}])
    first = b.series("WL", "water_level", [0.25])
    out_of_range = b.series("WL", "water_level", [9.9, 7.0], start=10)
    flagged_bad = b.feed([("WL", "water_level", 30, 0.0)], bad=True)
    back = b.series("WL", "water_level", [0.26], start=40)
    assert levels(first) == [(0, 2)]
    assert [(e.kind, e.level) for e in out_of_range] == [(EV_SENSOR, 1)]
    assert flagged_bad == []  # fault already active; level untouched (no clear at 0.0)
    assert [(e.kind, e.level, e.ts) for e in back] == [(EV_SENSOR, 0, 40)]


def test_comm_loss_after_n_intervals_and_back(write_config: WriteConfig) -> None:
    b = Bench(write_config, [{"id": "comm", "kind": "comm_loss", "intervals": 3}])
    b.feed([("WL", "water_level", 0, 0.0), ("CAB", "voltage_a", 0, 225)])
    assert len(b.engine.sweep_comm_loss(T0 + 29)) == 0
    # Three intervals (30 s) have passed, not yet the batch (1 s) that may still carry one.
    assert len(b.engine.sweep_comm_loss(T0 + 30.5)) == 0
    lost = b.named(b.engine.sweep_comm_loss(T0 + 32))
    assert {(e.device, e.level) for e in lost} == {("WL", 1), ("CAB", 1), ("SLC", 1)}
    b.feed([("WL", "water_level", 35, 0.0)])
    back = b.named(b.engine.sweep_comm_loss(T0 + 36))
    assert [(e.device, e.level) for e in back] == [("WL", 0)]


def test_lamp_failure_power_and_cycling(write_config: WriteConfig) -> None:
    rules: list[dict[str, Any]] = [
        {"id": "fail", "kind": "lamp_failure", "select": {"device_class": "lamp"}},
        {
            "id": "power",
            "kind": "lamp_power",
            "select": {"device_class": "lamp"},
            "tolerance": 0.25,
        },
        {
            "id": "cycle",
            "kind": "lamp_cycling",
            "select": {"device_class": "lamp"},
            "transitions": 3,
            "window": 100,
        },
    ]
    b = Bench(write_config, rules)
    assert b.feed(lamp_poll("SLC", 0)) == []  # 103 W of an expected 100 W + 3 %
    failed = b.feed(lamp_poll("SLC", 10, lit=0, power=0.5))
    assert [(e.rule, e.level) for e in failed] == [("fail", 1)]
    off_by_command = b.feed(lamp_poll("SLC", 20, switch=0, lit=0, power=0))
    assert [(e.rule, e.level) for e in off_by_command] == [("fail", 0)]
    dimmed_but_full = b.feed(lamp_poll("SLC", 30, dim=50, power=103))
    assert [(e.rule, e.level) for e in dimmed_but_full] == [("power", 1)]  # 2 = too low
    low = b.feed(lamp_poll("SLC", 40, power=60))
    assert [(e.rule, e.level) for e in low] == [("power", 2)]
    cycled = b.feed(lamp_poll("SLC", 50, lit=0, power=0, switch=0))
    assert ("cycle", 1) in [(e.rule, e.level) for e in cycled]  # on-off-on-off in 100 s


def test_lamp_with_no_supply_is_not_a_lamp_failure(write_config: WriteConfig) -> None:
    b = Bench(write_config, [{"id": "fail", "kind": "lamp_failure", "select": {}}])
    assert b.feed(lamp_poll("CAB-L001", 0, lit=0, volts=0, power=0)) == []


def test_day_burning_follows_the_sun_at_the_lamps_place(write_config: WriteConfig) -> None:
    b = Bench(
        write_config,
        [
            {
                "id": "day",
                "kind": "day_burning",
                "select": {"devices": ["SLC"]},
                "margin_minutes": 30,
            }
        ],
    )
    rise, sset = sun_times(np.array([21.86]), np.array([111.98]), T0)
    noon = float((rise[0] + sset[0]) / 2) - T0
    dusk = float(sset[0]) - T0 - 10 * 60  # within the 30 min margin
    assert b.feed(lamp_poll("SLC", dusk)) == []
    got = b.feed(lamp_poll("SLC", noon))
    assert [(e.rule, e.level) for e in got] == [("day", 1)]
    assert b.feed(lamp_poll("SLC", noon + 60, lit=0, power=0, switch=0))[0].level == 0


def test_cut_circuit_is_one_alarm_for_the_circuit(write_config: WriteConfig) -> None:
    rules: list[dict[str, Any]] = [
        {"id": "cut", "kind": "circuit_break", "select": {"device_class": "cabinet"}},
        {"id": "fail", "kind": "lamp_failure", "select": {"device_class": "lamp"}},
    ]
    b = Bench(write_config, rules)
    healthy = cabinet_poll(0, [1, 1, 1, 1], [1, 1, 1, 1], [0.9, 0.9, 0, 0])
    assert b.feed(healthy) == []  # circuits 3-4 carry no lamps: no current is right
    cut = cabinet_poll(10, [1, 1, 1, 1], [1, 1, 1, 1], [0.0, 0.9, 0, 0])
    for lamp in ("CAB-L001", "CAB-L002"):
        cut += lamp_poll(lamp, 10, lit=0, volts=0, power=0)
    got = b.feed(cut)
    assert [(e.rule, e.device, e.sub, e.level) for e in got] == [("cut", "CAB", 1, 1)]
    off = cabinet_poll(20, [0, 1, 1, 1], [0, 1, 1, 1], [0.0, 0.9, 0, 0])
    assert [(e.rule, e.sub, e.level) for e in b.feed(off)] == [("cut", 1, 0)]


def test_contactor_error_after_its_on_delay(write_config: WriteConfig) -> None:
    b = Bench(write_config, [{"id": "k", "kind": "contactor", "select": {}, "on_delay": 15}])
    assert b.feed(cabinet_poll(0, [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0])) == []
    assert b.feed(cabinet_poll(10, [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0])) == []
    got = b.feed(cabinet_poll(20, [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]))
    assert [(e.sub, e.level) for e in got] == [(1, 1)]
    assert [
        (e.sub, e.level) for e in b.feed(cabinet_poll(30, [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]))
    ] == [(1, 0)]


def random_city_batch(b: Bench, n_polls: int, seed: int) -> ReadingBatch:
    rng = np.random.default_rng(seed)
    readings: list[tuple[str, str, float, float]] = []
    for k in range(n_polls):
        t = k * 10.0
        readings += [("WL", "water_level", t, float(rng.choice([0.0, 0.15, 0.25, 0.45, 3.0])))]
        readings += lamp_poll(
            "SLC", t, lit=float(rng.integers(0, 2)), power=float(rng.uniform(0, 120))
        )
        readings += cabinet_poll(
            t,
            [1, 1, 0, 1],
            [1, float(rng.integers(0, 2)), 0, 1],
            [float(rng.uniform(0, 1)), 0.5, 0, 0],
        )
    return b.batch(readings)


ALL_KINDS: list[dict[str, Any]] = [
    LEVELS,
    {
        "id": "rise",
        "kind": "rate_of_change",
        "point": "water_level",
        "select": {"device_class": "gauge"},
        "rise": 0.1,
        "window": 60,
    },
    {"id": "fail", "kind": "lamp_failure", "select": {"device_class": "lamp"}},
    {"id": "power", "kind": "lamp_power", "select": {"device_class": "lamp"}},
    {"id": "cycle", "kind": "lamp_cycling", "select": {"device_class": "lamp"}},
    {"id": "cut", "kind": "circuit_break", "select": {"device_class": "cabinet"}},
    {"id": "k", "kind": "contactor", "select": {"device_class": "cabinet"}},
]


def test_parallel_partitions_give_the_same_events_as_one_pass(write_config: WriteConfig) -> None:
    serial, parallel = Bench(write_config, ALL_KINDS), Bench(write_config, ALL_KINDS)
    batch = random_city_batch(serial, 200, seed=3)
    one = serial.named(serial.engine.evaluate(batch))
    many = parallel.named(parallel.engine.evaluate(batch, parts=4))
    assert len(one) > 50
    key = lambda e: (e.ts, e.rule, e.device, e.sub, e.kind)  # noqa: E731
    assert sorted(one, key=key) == sorted(many, key=key)


def test_a_batch_grouped_by_device_runs_in_ranges_with_the_same_events(
    write_config: WriteConfig,
) -> None:
    serial, parallel = Bench(write_config, ALL_KINDS), Bench(write_config, ALL_KINDS)
    mixed = random_city_batch(serial, 200, seed=4)
    # As the poller sends a cycle: each device's polls together, in time order.
    order = np.argsort(mixed.device, kind="stable")
    batch = ReadingBatch(
        mixed.device[order],
        mixed.point[order],
        mixed.ts[order],
        mixed.value[order],
        mixed.quality[order],
    )
    one = serial.named(serial.engine.evaluate(batch))
    many = parallel.named(parallel.engine.evaluate(batch, parts=2))
    assert parallel.engine.last_split == "ranges"
    assert len(one) > 50
    key = lambda e: (e.ts, e.rule, e.device, e.sub, e.kind)  # noqa: E731
    assert sorted(one, key=key) == sorted(many, key=key)
    # Interleaved polls cannot be cut into ranges without sharing a device.
    parallel.engine.evaluate(mixed, parts=2)
    assert parallel.engine.last_split == "groups"


def test_a_pass_that_fills_its_event_buffer_resumes_without_loss(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, chunked = Bench(write_config, ALL_KINDS), Bench(write_config, ALL_KINDS)
    batch = random_city_batch(whole, 200, seed=5)
    expected = whole.named(whole.engine.evaluate(batch))
    monkeypatch.setattr(engine_module, "EVENT_CAPACITY", 16)
    monkeypatch.setattr(engine_module, "_RESERVE", 8)
    assert chunked.named(chunked.engine.evaluate(batch)) == expected


def test_independent_python_reference_raises_the_same_events(write_config: WriteConfig) -> None:
    from rules.reference import ReferenceEngine

    rules = [
        *ALL_KINDS,
        {
            "id": "stuck",
            "kind": "stuck",
            "point": "water_level",
            "select": {"device_class": "gauge"},
            "samples": 3,
            "min_value": 0.1,
        },
        {"id": "day", "kind": "day_burning", "select": {"device_class": "lamp"}},
    ]
    b = Bench(write_config, rules)
    batch = random_city_batch(b, 300, seed=11)
    kernel = b.engine.evaluate(batch)
    reference = ReferenceEngine(b.compiled, b.engine.sunrise, b.engine.sunset).run(batch)
    got = [
        (
            int(kernel.rule[i]),
            int(kernel.device[i]),
            int(kernel.sub[i]),
            int(kernel.kind[i]),
            int(kernel.level[i]),
            float(kernel.ts[i]),
        )
        for i in range(len(kernel))
    ]
    assert len(got) > 100
    assert got == reference


def test_a_held_lamp_is_not_judged_for_day_burning_until_its_schedule_applies(
    write_config: WriteConfig,
) -> None:
    b = Bench(write_config, [{"id": "day", "kind": "day_burning", "select": {"devices": ["SLC"]}}])
    rise, sset = sun_times(np.array([21.86]), np.array([111.98]), T0)
    noon = float((rise[0] + sset[0]) / 2) - T0
    slc = b.registry.by_id["SLC"].index
    b.engine.hold_day_burning([slc])
    assert b.feed(lamp_poll("SLC", noon)) == []  # lit at noon, but its schedule has not run
    b.engine.judge_day_burning([slc])
    assert [(e.rule, e.level) for e in b.feed(lamp_poll("SLC", noon + 60))] == [("day", 1)]


def write_cabinet_profile(folder: Path, name: str, circuits: int, coil_feedback: bool) -> None:
    """A third-party cabinet profile: ``circuits`` outputs, feedback contacts or not."""
    import yaml

    points: list[dict[str, Any]] = []
    for n in range(1, circuits + 1):
        points.append(
            {"name": f"circuit{n}_cmd", "table": "coil", "address": n, "type": "bool"}
            | {"access": "rw"}
        )
        if not coil_feedback:
            points.append(
                {"name": f"circuit{n}_on", "table": "discrete_input", "address": n, "type": "bool"}
            )
        points.append(
            {"name": f"circuit{n}_current", "table": "input_register", "address": n}
            | {"scale": 0.01, "unit": "A"}
        )
    feedback = "circuit{n}_cmd" if coil_feedback else "circuit{n}_on"
    profile = {
        "name": name,
        "device_class": "cabinet",
        "points": points,
        "controls": {"circuit": {"command": "circuit{n}_cmd", "feedback": feedback}},
        "blocks": [
            {
                "name": "lamps",
                "profile": "slc-lamp",
                "count_max": 16,
                "base": {"holding_register": 2000, "input_register": 1000},
                "stride": {"holding_register": 2, "input_register": 10},
            }
        ],
    }
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(profile), encoding="utf-8")


def cabinet_site(
    write_config: WriteConfig, folder: Path, profile: str, circuits: int
) -> tuple[Registry, CompiledRules, RuleEngine]:
    loaded = write_config(
        {
            "profile_dirs": [str(folder)],
            "links": [{"id": "l", "kind": "modbus_tcp", "host": "127.0.0.1", "port": 1502}],
            "cabinets": [
                {
                    "id": "CAB",
                    "link": "l",
                    "unit": 1,
                    "profile": profile,
                    "circuits": circuits,
                    "lamp_runs": [{"circuit": min(6, circuits), "count": 2, "rated_w": 100}],
                }
            ],
            "rules": [
                {"id": "cut", "kind": "circuit_break", "select": {"device_class": "cabinet"}},
                {"id": "k", "kind": "contactor", "select": {"device_class": "cabinet"}},
            ],
        }
    )
    registry = Registry(loaded)
    compiled = compile_rules(loaded.rule_site(), registry)
    engine = RuleEngine(compiled, len(registry), registry.max_points, clock=lambda: T0)
    return registry, compiled, engine


def raised_by(
    registry: Registry, compiled: CompiledRules, engine: RuleEngine, values: dict[str, float]
) -> set[tuple[str, int]]:
    cab = registry.by_id["CAB"]
    names = [p.name for p in cab.points]
    batch = ReadingBatch(
        np.full(len(values), cab.index, np.int32),
        np.asarray([names.index(k) for k in values], np.int16),
        np.full(len(values), T0),
        np.asarray(list(values.values())),
        np.zeros(len(values), np.uint8),
    )
    events = engine.evaluate(batch)
    return {
        (compiled.rules[int(r)].id, int(s))
        for r, s, lv in zip(events.rule, events.sub, events.level, strict=True)
        if lv
    }


def test_an_eight_circuit_cabinet_is_watched_on_every_circuit(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    write_cabinet_profile(tmp_path / "profiles", "cabinet-8c", 8, coil_feedback=False)
    registry, compiled, engine = cabinet_site(write_config, tmp_path / "profiles", "cabinet-8c", 8)
    assert compiled.circuits == 8
    values = {f"circuit{n}_cmd": 1.0 for n in range(1, 9)}
    values |= {f"circuit{n}_on": 1.0 for n in range(1, 9)}
    values |= {f"circuit{n}_current": 2.0 for n in range(1, 9)}
    values["circuit6_current"] = 0.0  # circuit 6 feeds its lamps nothing: cut
    values["circuit7_on"] = 0.0  # circuit 7's contactor did not pull in
    assert raised_by(registry, compiled, engine, values) == {("cut", 6), ("k", 7)}


def test_a_cabinet_that_reads_back_its_coils_is_judged_by_circuit_current(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    write_cabinet_profile(tmp_path / "profiles", "cabinet-coil", 4, coil_feedback=True)
    registry, compiled, engine = cabinet_site(
        write_config, tmp_path / "profiles", "cabinet-coil", 4
    )
    profile = registry.by_id["CAB"].profile
    assert isinstance(profile, DeviceProfile) and profile.coil_feedback
    values = {
        "circuit1_cmd": 1.0,  # on, current flows: fine
        "circuit1_current": 5.0,
        "circuit2_cmd": 1.0,  # on, no current: the contactor did not close (or a cut)
        "circuit2_current": 0.0,
        "circuit3_cmd": 0.0,  # off, yet current flows: a welded contactor
        "circuit3_current": 4.0,
        "circuit4_cmd": 0.0,
        "circuit4_current": 0.0,
    }
    assert raised_by(registry, compiled, engine, values) == {("k", 2), ("k", 3)}


def test_a_lamp_listed_without_coordinates_takes_its_cabinets_sun(
    write_config: WriteConfig,
) -> None:
    from tests.rules_helpers import site

    doc = site([{"id": "day", "kind": "day_burning", "select": {"device_class": "lamp"}}])
    doc["cabinets"][0]["lamps"] = [{"id": "CAB-P01", "circuit": 1}]  # no lat, lon given
    loaded = write_config(doc)
    registry = Registry(loaded)
    compiled = compile_rules(loaded.rule_site(), registry)
    lamp, cabinet = registry.by_id["CAB-P01"], registry.by_id["CAB"]
    assert (compiled.lat[lamp.index], compiled.lon[lamp.index]) == (21.86, 111.98)
    assert (cabinet.location.lat, lamp.location.lat) == (21.86, 0.0)
    # 20:00 in Yangjiang, noon at 0°N 0°E: a lamp lit now is not burning by day.
    engine = RuleEngine(compiled, len(registry), registry.max_points, clock=lambda: T0)
    evening = T0 + 4 * 3600
    names = [p.name for p in lamp.points]
    batch = ReadingBatch(
        np.full(2, lamp.index, np.int32),
        np.asarray([names.index("lamp_on"), names.index("switch_cmd")], np.int16),
        np.full(2, evening),
        np.ones(2),
        np.zeros(2, np.uint8),
    )
    assert len(engine.evaluate(batch)) == 0
