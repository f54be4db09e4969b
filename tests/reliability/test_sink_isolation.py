"""One sink failing never starves another; a broker outage loses nothing for a QoS 1 subscriber."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from simulators.servers import Influxd, Mosquitto
from tests.reliability.harness import BATCH_INTERVAL, Rig, Subscriber, running, wait

TOPIC = "streetsense/test-field/+/+/telemetry"


def test_a_locked_embedded_store_stops_neither_influxdb_nor_mqtt_and_catches_up(
    tmp_path: Path, influxd: Influxd, broker: Mosquitto
) -> None:
    rig = Rig(tmp_path, influxd, broker)
    subscriber = Subscriber(broker.port, TOPIC)
    try:
        with running(rig):
            wait(lambda: rig.delivered("influxdb"), 30, "first points in InfluxDB")
            # Another program holds the store's write lock (a backup tool, a stuck sqlite3):
            # every write the controller tries fails with "database is locked".
            with contextlib.closing(
                sqlite3.connect(rig.data / "streetsense.db", timeout=10, isolation_level=None)
            ) as blocker:
                blocker.execute("BEGIN IMMEDIATE")
                locked_at = time.time()
                wait(lambda: not rig.sinks()["embedded"]["up"], 30, "the store reported down")
                time.sleep(6.0)
                health = rig.health()
                sinks = rig.sinks()
                blocker.execute("COMMIT")
            assert health["status"] == "degraded", health
            assert any("embedded down" in r and "locked" in r for r in health["reasons"]), health
            assert sinks["embedded"]["pending_points"] > 0
            assert sinks["influxdb"]["up"] and sinks["mqtt"]["up"], sinks
            wait(lambda: rig.delivered("embedded"), 30, "the store caught up")
            time.sleep(2 * BATCH_INTERVAL)
            rig.stop()
        wait(lambda: subscriber.received() >= rig.embedded_points(), 10, "MQTT has it all")
    finally:
        subscriber.close()
    polled = rig.embedded_points()
    stored = set(rig.influx_points())
    during = {p for p in stored if p[1] > locked_at * 1000 + 2000}
    assert len(during) > 30, "InfluxDB kept receiving while the store was locked"
    assert polled == stored, "the store caught up with every reading InfluxDB has"


def test_a_broker_stopped_20_s_loses_nothing_for_a_persistent_qos1_subscriber(
    tmp_path: Path, influxd: Influxd, broker: Mosquitto
) -> None:
    rig = Rig(tmp_path, influxd, broker)
    subscriber = Subscriber(broker.port, TOPIC)
    try:
        with running(rig):
            wait(lambda: rig.delivered("mqtt"), 30, "first messages published")
            wait(lambda: len(subscriber.received()) > 10, 30, "the subscriber receiving")
            broker.stop()
            stopped_at = time.time()
            time.sleep(20.0)
            assert rig.sinks()["mqtt"]["pending_points"] > 0
            broker.start()
            started_at = time.time()
            wait(lambda: rig.delivered("mqtt"), 30, "the MQTT spool replayed")
            time.sleep(2 * BATCH_INTERVAL)
            sink = rig.sinks()["mqtt"]
            rig.stop()
        polled = rig.embedded_points()
        with contextlib.suppress(AssertionError):
            wait(lambda: subscriber.received() >= polled, 20, "every polled point delivered")
    finally:
        subscriber.close()
    missing = sorted(polled - subscriber.received(), key=lambda p: p[1])
    # Where the lost points sit against the outage says which hop dropped them.
    assert not missing, (
        f"{len(missing)} of {len(polled)} polled points never reached the subscriber; "
        f"broker stopped at {stopped_at * 1000:.0f} ms, started at {started_at * 1000:.0f} ms; "
        f"first missing {missing[:8]}, last {missing[-3:]}; "
        f"{len(rig.spool_records('mqtt'))} records left in the MQTT spool; sink {sink}; "
        f"{broker_counts(broker, missing[0][0])}"
    )


def broker_counts(broker: Mosquitto, device: str) -> str:
    """What the broker's log says of a device's messages: taken in, and sent on."""
    lines = broker.log.read_text(encoding="utf-8", errors="replace").splitlines()
    topic = f"/{device}/telemetry"
    took = sum("Received PUBLISH" in line and topic in line for line in lines)
    sent = sum("Sending PUBLISH to reliability-sub" in line and topic in line for line in lines)
    return f"the broker took {took} PUBLISH of {device} and sent the subscriber {sent}"
