"""Embedded store, disk spool, and a payload InfluxDB refuses for good."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.config import LoadedConfig
from controller.registry import Registry
from controller.telemetry.delivery import RejectedPayload, SpooledDelivery
from controller.telemetry.embedded import EmbeddedStore
from controller.telemetry.influx import InfluxV1Writer
from controller.telemetry.mqtt import decode_messages, encode_messages
from controller.telemetry.pipeline import split_lines
from controller.telemetry.spool import DiskSpool, SpoolItem, SpoolRecord
from drivers.readings import ReadingBatch
from simulators.servers import Influxd
from tests.test_telemetry_influx import city


def gauge_batch(registry: Registry, start: float, n: int, value: float = 0.25) -> ReadingBatch:
    gauge = registry.by_id["WL-1"]
    return ReadingBatch(
        device=np.full(n, gauge.index, dtype=np.int32),
        point=np.zeros(n, dtype=np.int16),
        ts=start + np.arange(n, dtype=np.float64) * 10,
        value=np.full(n, value),
        quality=np.zeros(n, dtype=np.uint8),
    )


async def test_embedded_store_keeps_data_across_restarts_once_and_prunes_old(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(city(None, tmp_path / "spool"))
    registry = Registry(loaded)
    gauge = registry.by_id["WL-1"]
    path = tmp_path / "store.db"
    now = time.time()
    store = EmbeddedStore(path, registry, retention_days=1)
    await store.open()
    await store.write(gauge_batch(registry, now - 2 * 86400, 5))  # older than retention
    recent = gauge_batch(registry, now - 100, 5)
    await store.write(recent)
    await store.write(recent)  # a replay stores nothing twice
    await store.close()

    reopened = EmbeddedStore(path, registry, retention_days=1)
    await reopened.open()  # prunes on open
    try:
        rows = await reopened.raw(gauge, "water_level", now - 3 * 86400, now, 100)
        assert [r.ts for r in rows] == pytest.approx(list(recent.ts))
        latest = await reopened.latest([gauge])
        assert [(r.point, r.value) for r in latest] == [("water_level", 0.25)]
    finally:
        await reopened.close()


async def drain_spool(spool: DiskSpool) -> list[bytes]:
    seen = []
    while records := await spool.oldest(max_points=1):
        seen += [r.payload for r in records]
        await spool.ack(records)
    return seen


async def test_spool_is_bounded_ordered_and_survives_reopening(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "s", max_bytes=10_000, name="test")
    await spool.open()
    for i in range(3):
        assert await spool.append([SpoolItem(f"payload {i}".encode() * 100, 100)])
    # Would pass the limit: the whole batch is refused, its points counted.
    assert not await spool.append([SpoolItem(b"x" * 4_000, 7), SpoolItem(b"y" * 4_000, 5)])
    assert spool.stats.refused_points == 12 and spool.stats.refused_records == 2
    assert spool.stats.full and spool.stats.full_episodes == 1
    await spool.close()  # as a kill would leave it: nothing acknowledged
    again = DiskSpool(tmp_path / "s", max_bytes=10_000, name="test")
    await again.open()
    assert len(again) == 3 and again.stats.points == 300
    seen = await drain_spool(again)
    assert [p[:9] for p in seen] == [b"payload 0", b"payload 1", b"payload 2"]
    await again.close()


async def test_a_full_spool_with_drop_oldest_keeps_the_newest_and_counts_the_loss(
    tmp_path: Path,
) -> None:
    spool = DiskSpool(tmp_path / "s", max_bytes=3_000, name="test", policy="drop_oldest")
    await spool.open()
    for i in range(5):
        assert await spool.append([SpoolItem(bytes([65 + i]) * 1_000, 10)])
    assert spool.stats.dropped_points == 20 and spool.stats.dropped_records == 2
    assert [p[:1] for p in await drain_spool(spool)] == [b"C", b"D", b"E"]
    assert spool.stats.refused_points == 0
    await spool.close()


async def test_torn_and_corrupt_records_are_set_aside_and_the_rest_is_read(
    tmp_path: Path,
) -> None:
    spool = DiskSpool(tmp_path / "s", max_bytes=10**6, name="test")
    await spool.open()
    for i in range(4):
        assert await spool.append([SpoolItem(f"m v={i} {i}\n".encode() * 10, 10)])
    await spool.close()
    with sqlite3.connect(tmp_path / "s" / "spool.sqlite") as db:
        # A record cut short, and one with a flipped byte, as a bad disk would leave them.
        db.execute("UPDATE records SET payload = substr(payload, 1, length - 5) WHERE seq = 2")
        db.execute(
            "UPDATE records SET payload = CAST(replace(CAST(payload AS TEXT), 'v=3', 'v=8')"
            " AS BLOB) WHERE seq = 4"
        )
    again = DiskSpool(tmp_path / "s", max_bytes=10**6, name="test")
    await again.open()
    seen = await drain_spool(again)
    assert [p[:7] for p in seen] == [b"m v=0 0", b"m v=2 2"]
    assert again.stats.rejected_records == 2
    reasons = sorted(p.read_text() for p in (tmp_path / "s" / "rejected").glob("*.reason.txt"))
    assert reasons == [
        "corrupt record: checksum does not match\n",
        "torn record: 75 of 80 bytes\n",
    ]
    await again.close()


async def test_a_spool_database_sqlite_cannot_read_is_set_aside_and_a_new_one_started(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "spool.sqlite").write_bytes(b"this is not a database" * 100)
    spool = DiskSpool(folder, max_bytes=10**6, name="test")
    await spool.open()
    assert spool.stats.rejected_records == 1
    assert await spool.append([SpoolItem(b"m v=1 1\n", 1)])
    assert await drain_spool(spool) == [b"m v=1 1\n"]
    assert list((folder / "rejected").glob("*.spool.sqlite"))
    await spool.close()


async def test_payload_files_of_the_old_spool_are_taken_over_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    for seq in (10, 2, 7):
        (folder / f"{seq:012d}.spool").write_bytes(f"m v={seq} {seq}\n".encode())
    spool = DiskSpool(folder, max_bytes=10**6, name="test")
    await spool.open()
    assert await drain_spool(spool) == [b"m v=2 2\n", b"m v=7 7\n", b"m v=10 10\n"]
    assert not list(folder.glob("*.spool"))
    await spool.close()


def test_split_lines_keeps_whole_lines() -> None:
    payload = b"".join(f"m v={i} {i}\n".encode() for i in range(10))
    chunks = split_lines(payload, 4)
    assert [c.count(b"\n") for c in chunks] == [4, 4, 2]
    assert b"".join(chunks) == payload


async def test_malformed_payload_is_set_aside_and_later_data_still_flows(
    influxd: Influxd, tmp_path: Path
) -> None:
    writer = InfluxV1Writer(influxd.url, "db", use_gzip=False)
    await writer.create_database()
    delivery = SpooledDelivery(writer, DiskSpool(tmp_path / "spool", 10**6, "influxdb"))
    await delivery.start()
    try:
        # Both wait in the spool, are sent together, refused together, then one by one.
        await delivery.submit([SpoolItem(b"m,t=1 v=oops= 1000\n", 1)])
        await delivery.submit([SpoolItem(b"m,t=1 v=2 2000\n", 1)])
        assert await delivery.drain(5)
    finally:
        await delivery.close()
        await writer.close()
    assert delivery.stats.rejected == 1 and delivery.stats.delivered == 1
    kept = list((tmp_path / "spool" / "rejected").glob("*.payload"))
    assert [p.read_bytes() for p in kept] == [b"m,t=1 v=oops= 1000\n"]
    rows = influxd.query("db", 'SELECT "v" FROM "m"')
    assert rows[0]["values"] == [[2000, 2]]


def test_a_spooled_mqtt_payload_that_is_not_messages_is_refused_for_good() -> None:
    good = encode_messages([{"topic": "a/b", "payload": {"v": 1}, "qos": 1, "retain": False}])
    assert [m.topic for m in decode_messages(good)] == ["a/b"]
    # Refused whole before anything is published: no half payload on the bus.
    with pytest.raises(RejectedPayload, match="line 2"):
        decode_messages(good + b'{"topic": "a/b", "payl\n')
    with pytest.raises(RejectedPayload, match="line 1"):
        decode_messages(b'{"payload": {}}\n')


class FlakyTransport:
    """A destination whose send raises what it is told to, then takes payloads."""

    name = "flaky"

    def __init__(self, failures: dict[bytes, int]) -> None:
        self.failures = failures
        self.taken: list[bytes] = []

    async def send(self, payload: bytes) -> None:
        if self.failures.get(payload, 0) > 0:
            self.failures[payload] -= 1
            raise RuntimeError(f"bug while sending {payload!r}")
        self.taken.append(payload)


async def test_a_delivery_survives_unexpected_errors_and_sets_aside_only_what_keeps_failing(
    tmp_path: Path,
) -> None:
    transport = FlakyTransport({b"a\n": 2, b"b\n": 99})
    delivery = SpooledDelivery(
        transport, DiskSpool(tmp_path / "s", 10**6, "flaky"), retry_initial=0.01, coalesce=False
    )
    await delivery.start()
    try:
        for line in (b"a\n", b"b\n", b"c\n"):
            await delivery.submit([SpoolItem(line, 1)])
        assert await delivery.drain(10)
    finally:
        await delivery.close()
    # "a" failed twice and then went; "b" always failed: set aside after three tries.
    assert transport.taken == [b"a\n", b"c\n"]
    assert delivery.stats.rejected == 1 and delivery.spool.stats.rejected_records == 1
    (reason,) = (tmp_path / "s" / "rejected").glob("*.reason.txt")
    assert "RuntimeError" in reason.read_text()


async def test_a_delivery_task_that_dies_is_restarted_and_counted(tmp_path: Path) -> None:
    transport = FlakyTransport({})
    spool = DiskSpool(tmp_path / "s", 10**6, "flaky")
    delivery = SpooledDelivery(transport, spool)
    await delivery.start()
    try:
        real_oldest = spool.oldest
        calls = 0

        async def broken_once(max_points: int, max_records: int = 10_000) -> list[SpoolRecord]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("disk read error")
            return await real_oldest(max_points, max_records)

        spool.oldest = broken_once  # type: ignore[method-assign]
        await delivery.submit([SpoolItem(b"x\n", 1)])
        assert await delivery.drain(5)  # after the restart, 1 s later
    finally:
        await delivery.close()
    assert delivery.stats.restarts == 1 and transport.taken == [b"x\n"]
