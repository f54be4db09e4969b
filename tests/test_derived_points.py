"""Derived points: safe expressions in profiles, checked at load, computed per poll."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from controller.config import LoadedConfig
from controller.derived_points import DerivedPoints
from controller.registry import Registry
from controller.runtime import Controller
from drivers.derived import parse_expression
from drivers.errors import ConfigError
from drivers.profile import load_profile
from drivers.readings import ReadingBatch
from simulators.faults import RainEvent, Scenario
from simulators.fleet import SimulatedCity
from tests.test_rules_e2e import city_doc, cycles

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]

# A radar gauge that reports only the distance from the sensor to the water.
RADAR_RAW: dict[str, Any] = {
    "name": "wl-radar-raw",
    "device_class": "gauge",
    "points": [
        {"name": "distance", "table": "input_register", "address": 2, "type": "f32", "unit": "m"},
        {"name": "sensor_status", "table": "input_register", "address": 4},
    ],
    "params": {"install_height": None, "datum": 0.0},
    "derived": [
        {"name": "water_level", "expr": "max(0, depth_raw)", "unit": "m"},
        {"name": "depth_raw", "expr": "install_height - distance - datum", "unit": "m"},
    ],
}


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("install_height - distance", {"install_height": 5.0, "distance": 4.2}, 0.8),
        ("max(0, h - d) * 100", {"h": 1.0, "d": 1.5}, 0.0),
        ("-x / 2 + abs(y)", {"x": 3.0, "y": -1.0}, -0.5),
        ("(a + b) * (a - b)", {"a": 3.0, "b": 2.0}, 5.0),
    ],
)
def test_expressions_compute_on_arrays(
    text: str, values: dict[str, float], expected: float
) -> None:
    expression = parse_expression(text)
    assert expression.names == frozenset(values)
    result = expression.evaluate({k: np.array([v, v]) for k, v in values.items()})
    assert result.tolist() == pytest.approx([expected, expected])


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('id')",
        "distance.real",
        "distance ** 2",
        "[distance]",
        "lambda: 1",
        "open('x')",
        "distance if x else y",
        "'5' + distance",
        "abs(a, b)",
        "True + 1",
    ],
)
def test_anything_but_arithmetic_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_expression(text)


def _profile(tmp_path: Path, doc: dict[str, Any]) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("derived", "reason"),
    [
        ([{"name": "level", "expr": "height - distanse"}], "reads unknown distanse, height"),
        (
            [{"name": "a", "expr": "b + 1"}, {"name": "b", "expr": "a + distance"}],
            "depends on itself",
        ),
        ([{"name": "distance", "expr": "1"}], "is already a point"),
        ([{"name": "x", "expr": "distance ** 2"}], "is not allowed"),
    ],
)
def test_a_bad_derived_point_is_refused_at_load_with_its_place(
    tmp_path: Path, derived: list[dict[str, str]], reason: str
) -> None:
    path = _profile(tmp_path, {**RADAR_RAW, "params": {}, "derived": derived})
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    assert str(path) in str(caught.value) and reason in str(caught.value)


def _city(tmp_path: Path, params: dict[str, float]) -> dict[str, Any]:
    _profile(tmp_path, RADAR_RAW)
    doc = city_doc(tmp_path)
    doc["profile_dirs"] = [str(tmp_path / "profiles")]
    doc["gauges"][0] |= {"profile": "wl-radar-raw", "params": params}
    return doc


def test_a_device_must_give_the_parameters_its_profile_needs(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    with pytest.raises(ConfigError, match=r"gauges\[0\] \(WL\)\.params: .*install_height"):
        write_config(_city(tmp_path, {}))
    with pytest.raises(ConfigError, match=r"gauges\[0\] \(WL\)\.params\.height: .*no parameter"):
        write_config(_city(tmp_path, {"install_height": 5.0, "height": 1.0}))


def test_derived_readings_follow_their_poll_and_carry_its_quality(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    registry = Registry(write_config(_city(tmp_path, {"install_height": 5.0})))
    gauge = registry.by_id["WL"]
    names = [p.name for p in gauge.points]
    assert names[-2:] == ["water_level", "depth_raw"]
    cabinet = registry.by_id["CAB"]
    distance = names.index("distance")
    batch = ReadingBatch(
        np.array([gauge.index, gauge.index, cabinet.index, gauge.index], np.int32),
        np.array([distance, names.index("sensor_status"), 0, distance], np.int16),
        np.array([100.0, 100.0, 100.0, 110.0]),
        np.array([4.6, 0.0, 1.0, 9.0]),
        np.array([0, 0, 0, 2], np.uint8),  # the second poll's distance is bad
    )
    out = DerivedPoints(registry).apply(batch)
    rows = list(zip(out.device.tolist(), out.point.tolist(), out.ts.tolist(), strict=True))
    # Each poll's derived readings come right after its own readings.
    level, depth = names.index("water_level"), names.index("depth_raw")
    assert rows == [
        (gauge.index, distance, 100.0),
        (gauge.index, names.index("sensor_status"), 100.0),
        (gauge.index, depth, 100.0),
        (gauge.index, level, 100.0),
        (cabinet.index, 0, 100.0),
        (gauge.index, distance, 110.0),
        (gauge.index, depth, 110.0),
        (gauge.index, level, 110.0),
    ]
    assert out.value[2:4].tolist() == pytest.approx([0.4, 0.4])
    assert out.quality[2:4].tolist() == [0, 0]
    assert math.isnan(out.value[6]) and out.quality[6:8].tolist() == [2, 2]


async def test_a_radar_gauge_that_reports_distance_raises_the_flood_alarm(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    # The simulated radar sits 5 m above the road datum, as the config says.
    loaded = write_config(_city(tmp_path, {"install_height": 5.0}))
    storm = Scenario(rain=[RainEvent(start=0, rise=2, peak_m=0.45, hold=1e6, recede=10)])
    async with SimulatedCity(loaded, storm) as city, Controller(loaded) as controller:
        await controller.open_stores()
        city.clock.advance(3)
        await cycles(controller, 3)
        gauge = controller.registry.by_id["WL"]
        names = [p.name for p in gauge.points]
        level = controller.latest.value[gauge.index, names.index("water_level")]
        assert level == pytest.approx(0.45, abs=0.02)
        flood = next(a for a in controller.rules.manager.list() if a.rule == "flood-level")
        assert flood.active and flood.level_name == "orange"
