"""Embedded store, disk spool, and a payload InfluxDB refuses for good."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.config import LoadedConfig
from controller.readings import ReadingBatch
from controller.registry import Registry
from controller.telemetry.delivery import SpooledDelivery
from controller.telemetry.embedded import EmbeddedStore
from controller.telemetry.influx import InfluxV1Writer
from controller.telemetry.pipeline import split_lines
from controller.telemetry.spool import DiskSpool
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


async def test_spool_is_bounded_ordered_and_survives_reopening(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "s", max_bytes=10_000, name="test")
    await spool.open()
    for i in range(3):
        assert await spool.append(f"payload {i}".encode() * 100)
    assert not await spool.append(b"x" * 8_000)  # would pass the limit: refused
    assert spool.stats.refused_total == 1
    again = DiskSpool(tmp_path / "s", max_bytes=10_000, name="test")
    await again.open()
    assert len(again) == 3
    seen = []
    while (payload := await again.peek()) is not None:
        seen.append(payload[:9])
        await again.pop()
    assert seen == [b"payload 0", b"payload 1", b"payload 2"]


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
        await delivery.submit(b"m,t=1 v=oops= 1000\n")
        await delivery.submit(b"m,t=1 v=2 2000\n")
        assert await delivery.drain(5)
    finally:
        await delivery.close()
        await writer.close()
    assert delivery.stats.rejected == 1 and delivery.stats.delivered == 1
    kept = list((tmp_path / "spool" / "rejected").glob("*.payload"))
    assert [p.read_bytes() for p in kept] == [b"m,t=1 v=oops= 1000\n"]
    rows = influxd.query("db", 'SELECT "v" FROM "m"')
    assert rows[0]["values"] == [[2000, 2]]
