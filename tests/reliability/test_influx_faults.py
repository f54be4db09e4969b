"""InfluxDB paused, killed and restarted, and the controller killed meanwhile: nothing lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simulators.servers import Influxd
from tests.reliability.harness import (
    BATCH_INTERVAL,
    Rig,
    pause,
    resume,
    running,
    wait,
)

OUTAGE = 30.0


def assert_same_points(rig: Rig) -> None:
    stored = rig.influx_points()
    polled = rig.embedded_points()
    assert len(stored) == len(set(stored)), "a series and timestamp stored twice"
    assert len(polled) > 100
    missing = polled - set(stored)
    extra = set(stored) - polled
    assert not missing, f"{len(missing)} of {len(polled)} points never reached InfluxDB"
    assert not extra, f"{len(extra)} points in InfluxDB the controller never polled"


@pytest.mark.slow
def test_influxd_paused_30_s_loses_and_doubles_nothing(tmp_path: Path, influxd: Influxd) -> None:
    rig = Rig(tmp_path, influxd)
    with running(rig):
        wait(lambda: rig.delivered("influxdb"), 30, "first points in InfluxDB")
        pause(influxd)  # SIGSTOP: connections hang, sends time out after 10 s
        time.sleep(OUTAGE)
        sinks = rig.sinks()["influxdb"]
        assert not sinks["up"] and sinks["pending_points"] > 0, sinks
        health = rig.health()
        assert health["status"] == "degraded" and any(
            r.startswith("influxdb down") for r in health["reasons"]
        ), health
        resume(influxd)
        wait(lambda: rig.delivered("influxdb"), 30, "the spool drained after SIGCONT")
        time.sleep(2 * BATCH_INTERVAL)
        rig.stop()
    assert_same_points(rig)


@pytest.mark.slow
def test_influxd_killed_and_restarted_is_caught_up_within_5_s_of_being_ready(
    tmp_path: Path, influxd: Influxd
) -> None:
    rig = Rig(tmp_path, influxd)
    with running(rig):
        wait(lambda: rig.delivered("influxdb"), 30, "first points in InfluxDB")
        assert influxd.proc is not None
        influxd.proc.kill()
        influxd.proc.wait()
        time.sleep(OUTAGE)
        assert rig.sinks()["influxdb"]["pending_points"] > 0
        influxd.start()  # returns once /ping answers
        took = wait(lambda: rig.delivered("influxdb"), 30, "the spool drained")
        assert took < 5.0, f"caught up {took:.1f} s after influxd was ready"
        time.sleep(2 * BATCH_INTERVAL)
        rig.stop()
    assert_same_points(rig)


def test_controller_killed_while_influxd_hangs_loses_only_the_last_batch(
    tmp_path: Path, influxd: Influxd
) -> None:
    rig = Rig(tmp_path, influxd)
    with running(rig):
        wait(lambda: rig.delivered("influxdb"), 30, "first points in InfluxDB")
        pause(influxd)
        time.sleep(8.0)  # sends hang (the timeout is 10 s): data waits in memory or spool
        killed_at = rig.kill()
        resume(influxd)
        rig.start()
        wait(lambda: rig.delivered("influxdb"), 30, "the earlier run's spool replayed")
        rig.stop()
    stored = set(rig.influx_points())
    cutoff = round((killed_at - BATCH_INTERVAL - 0.2) * 1000)
    before = {p for p in rig.embedded_points() if p[1] < cutoff}
    assert len(before) > 50
    missing = before - stored
    assert not missing, f"{len(missing)} points polled before the kill never reached InfluxDB"
