"""Torn and corrupt spool records, and a spool that fills: counted to the point."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from simulators.servers import Influxd, Mosquitto
from tests.reliability.harness import BATCH_INTERVAL, Rig, Subscriber, line_points, running, wait


def test_torn_and_corrupt_records_are_set_aside_and_everything_else_is_delivered(
    tmp_path: Path, influxd: Influxd, broker: Mosquitto
) -> None:
    rig = Rig(tmp_path, influxd, broker)
    influxd.stop()
    with running(rig):
        wait(lambda: rig.sinks()["influxdb"]["pending_records"] >= 6, 30, "records spooled")
        rig.stop()
    records = rig.spool_records("influxdb")
    (torn_seq, torn), (flipped_seq, flipped) = records[1], records[3]
    lost = line_points(torn) | line_points(flipped)
    database = rig.data / "spool" / "influxdb" / "spool.sqlite"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("UPDATE records SET payload = ? WHERE seq = ?", (torn[:-5], torn_seq))
        damaged = bytearray(flipped)
        damaged[len(damaged) // 2] ^= 0x41
        db.execute("UPDATE records SET payload = ? WHERE seq = ?", (bytes(damaged), flipped_seq))

    influxd.start()
    subscriber = Subscriber(broker.port, "streetsense/test-field/+/+/telemetry")
    try:
        with running(rig):
            wait(lambda: rig.delivered("influxdb"), 30, "the spool replayed")
            assert rig.sinks()["influxdb"]["rejected_records"] == 2
            seen = len(subscriber.received())
            wait(lambda: len(subscriber.received()) > seen + 5, 10, "MQTT still publishing")
            rig.stop()
    finally:
        subscriber.close()
    polled = rig.embedded_points()
    stored = set(rig.influx_points())
    assert polled - stored == lost, "exactly the points of the two damaged records are missing"
    assert not stored & lost
    reasons = sorted(
        p.read_text() for p in (rig.data / "spool" / "influxdb" / "rejected").glob("*.reason.txt")
    )
    assert reasons[0] == "corrupt record: checksum does not match\n"
    assert reasons[1].startswith("torn record: ")
    assert "torn record" in rig.logs[-1] and "checksum does not match" in rig.logs[-1]


@pytest.mark.parametrize("policy", ["refuse_new", "drop_oldest"])
def test_a_full_spool_counts_exactly_the_points_it_lost(
    tmp_path: Path, influxd: Influxd, policy: str
) -> None:
    # About 4 s of this field's lines fit: a 15 s outage overflows it.
    rig = Rig(tmp_path, influxd, spool={"max_bytes": 16_384, "when_full": policy})
    with running(rig):
        wait(lambda: rig.delivered("influxdb"), 30, "first points in InfluxDB")
        influxd.stop()
        wait(lambda: rig.sinks()["influxdb"]["spool_full"], 30, "the spool filled")
        health = rig.health()
        assert any("spool full" in r for r in health["reasons"]), health
        time.sleep(5.0)
        influxd.start()
        back = time.time()
        wait(lambda: rig.delivered("influxdb"), 30, "the spool drained")
        time.sleep(3 * BATCH_INTERVAL)
        sink = rig.sinks()["influxdb"]
        rig.stop()
    missing = rig.embedded_points() - set(rig.influx_points())
    assert missing, "the outage was meant to overflow the spool"
    assert sink["refused_points"] + sink["dropped_points"] == len(missing)
    if policy == "refuse_new":
        assert sink["dropped_points"] == 0
    else:
        assert sink["refused_points"] == 0
    late = [p for p in missing if p[1] > (back + 2.0) * 1000]
    assert not late, f"{len(late)} points polled after InfluxDB was back were lost"
    assert rig.logs[-1].count("spool FULL") == 1, "one log line per episode"
