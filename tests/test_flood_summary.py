"""The report's flood figures: the peak, not the last reading."""

from __future__ import annotations

import pytest

from controller.telemetry.flood_summary import summarize_flood
from controller.telemetry.query import Sample

LEVELS = {"blue": 0.05, "yellow": 0.15, "orange": 0.25, "red": 0.35}


def test_a_gauge_that_reached_red_reports_its_peak_and_time_above_each_band() -> None:
    # Every 60 s: up to red (0.40 m) for two readings, back down to orange 0.27 m.
    values = [0.02, 0.10, 0.20, 0.30, 0.40, 0.38, 0.27]
    samples = [Sample(1000.0 + 60 * i, v, 0) for i, v in enumerate(values)]
    s = summarize_flood(samples, LEVELS, max_gap=180)
    assert s is not None
    assert s.peak == 0.40 and s.peak_at == 1240.0 and s.peak_band == "red"
    assert s.current == 0.27 and s.current_at == 1360.0
    # A reading counts until the next one: red held from 1240 to 1360.
    assert s.above == {"blue": 300.0, "yellow": 240.0, "orange": 180.0, "red": 120.0}


def test_a_silent_gauge_is_not_assumed_flooded_through_the_gap() -> None:
    samples = [Sample(0.0, 0.40, 0), Sample(3600.0, 0.0, 0)]
    s = summarize_flood(samples, LEVELS, max_gap=60)
    assert s is not None and s.above["red"] == 60.0
    assert summarize_flood([Sample(0.0, None, 1)], LEVELS, max_gap=60) is None


def test_the_flood_panel_reads_level_band_and_trend_from_the_last_minutes() -> None:
    from controller.telemetry.query import Sample
    from controller.telemetry.water_now import water_now

    levels = {"blue": 0.1, "yellow": 0.2, "orange": 0.3, "red": 0.4}
    rising = [Sample(1000.0 + 60 * k, 0.20 + 0.01 * k, 0) for k in range(11)]
    now = water_now(rising, levels)
    assert now is not None
    assert now.level == pytest.approx(0.30)
    assert (now.band, now.trend) == ("orange", "rising")
    assert now.rise_cm_per_min == pytest.approx(1.0)
    falling = [Sample(1000.0, 0.15, 0), Sample(1300.0, 0.05, 0), Sample(1310.0, None, 2)]
    now = water_now(falling, levels)
    assert now is not None and (now.band, now.trend) == (None, "falling")
    steady = [Sample(1000.0, 0.12, 0), Sample(1600.0, 0.12, 0)]
    assert water_now(steady, levels).trend == "steady"  # type: ignore[union-attr]
    assert water_now([Sample(1000.0, None, 2)], levels) is None
    assert water_now([Sample(1000.0, 0.5, 0)], levels).trend == "unknown"  # type: ignore[union-attr]
