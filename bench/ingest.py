"""Benchmark: line-protocol serialization and sustained ingest into a local influxd.

Serialization: our batch serializer against influxdb-client's
``Point.to_line_protocol()`` on the same lamps (tags + 6 fields each).
End to end: poller-shaped batches through serialization, batching and the
spooled delivery into influxd, against raw HTTP POSTs of the same
pre-serialized chunks (the server's own ceiling on this machine).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.city import pin_to_cpu
from controller.readings import ReadingBatch
from controller.telemetry.delivery import SpooledDelivery
from controller.telemetry.influx import InfluxV1Writer
from controller.telemetry.lineprotocol import LineSchema, point_decimals, serialize_batch
from controller.telemetry.pipeline import split_lines
from controller.telemetry.spool import DiskSpool, SpoolItem
from drivers.profile import ProfileLibrary
from simulators.servers import Influxd

FIELDS = ("voltage", "current", "power", "power_factor", "burn_hours", "dim_level")
BATCH_SIZE = 5000


def lamp_fleet(lamps: int) -> tuple[LineSchema, list[dict[str, str]], list[int]]:
    """Schema and tags for ``lamps`` lamps behind 64-lamp cabinets."""
    profile = ProfileLibrary.load()["slc-lamp"]
    points = [profile.point(name) for name in FIELDS]
    tags = [
        {
            "device": f"YJ-{i // 64:04d}-L{i % 64:03d}",
            "cabinet": f"YJ-{i // 64:04d}",
            "circuit": str(1 + i % 4),
            "phase": "ABC"[i % 3],
            "grid": f"4417020{i // 2000:02d}",
            "road": f"东风路{i // 500}段",
            "district": "江城区",
        }
        for i in range(lamps)
    ]
    schema = LineSchema.build(
        ["lamp"] * lamps, tags, [[(p.name, point_decimals(p)) for p in points]], [0] * lamps
    )
    return schema, tags, [profile.point_index(n) for n in FIELDS]


def poll_batch(lamps: int, ts: float, rng: np.random.Generator) -> ReadingBatch:
    """One poll of every lamp, shaped like the poller's batches, values at register resolution."""
    n = lamps * len(FIELDS)
    values = np.column_stack(
        [
            rng.integers(2150, 2350, lamps) * 0.1,  # voltage
            rng.integers(100, 900, lamps) * 0.001,  # current
            rng.integers(300, 2600, lamps) * 0.1,  # power
            rng.integers(800, 990, lamps) * 0.001,  # power factor
            rng.integers(0, 200000, lamps) * 0.1,  # burn hours
            rng.integers(0, 101, lamps).astype(np.float64),  # dim level
        ]
    ).ravel()
    return ReadingBatch(
        device=np.repeat(np.arange(lamps, dtype=np.int32), len(FIELDS)),
        point=np.tile(np.arange(len(FIELDS), dtype=np.int16), lamps),
        ts=np.full(n, ts, dtype=np.float64),
        value=values,
        quality=np.zeros(n, dtype=np.uint8),
    )


def bench_serialization(lamps: int) -> dict[str, Any]:
    """Points/s of our serializer and of influxdb-client's Point, on the same lamps."""
    from influxdb_client.client.write.point import Point

    schema, tags, _ = lamp_fleet(lamps)
    batch = poll_batch(lamps, 1795368000.123, np.random.default_rng(1))
    serialize_batch(batch, schema)  # compile (or load the cache) outside the timing
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        ours = serialize_batch(batch, schema)
        runs.append(time.perf_counter() - started)
    ours_rate = lamps / min(runs)

    sample = min(lamps, 20_000)
    values = batch.value.reshape(lamps, len(FIELDS))
    started = time.perf_counter()
    lines = []
    for i in range(sample):
        point = Point("lamp")
        for key, value in tags[i].items():
            point = point.tag(key, value)
        for j, name in enumerate(FIELDS):
            point = point.field(name, float(values[i, j]))
        lines.append(point.time(1795368000123, "ms").to_line_protocol())
    baseline_rate = sample / (time.perf_counter() - started)
    return {
        "points": lamps,
        "fields_per_point": len(FIELDS),
        "bytes": len(ours),
        "points_per_s": round(ours_rate),
        "baseline_point_to_line_protocol_points_per_s": round(baseline_rate),
        "ratio_vs_baseline": round(ours_rate / baseline_rate, 1),
    }


async def bench_end_to_end(influxd: Influxd, lamps: int, polls: int, spool: Path) -> dict[str, Any]:
    """Sustained points/s through our pipeline path and through raw POSTs."""
    schema, _, _ = lamp_fleet(lamps)
    rng = np.random.default_rng(2)
    batches = [poll_batch(lamps, 1795368000.0 + 60 * k, rng) for k in range(polls)]
    total = lamps * polls

    writer = InfluxV1Writer(influxd.url, "pipeline", use_gzip=False, timeout=60)
    await writer.create_database()
    delivery = SpooledDelivery(writer, DiskSpool(spool, 1 << 32, "bench"))
    await delivery.start()
    serialize_batch(batches[0], schema)
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        # As TelemetryPipeline does: each batch's chunks are spooled (one fsync) before sending.
        chunks = split_lines(serialize_batch(batch, schema), BATCH_SIZE)
        await delivery.submit([SpoolItem(c, c.count(b"\n")) for c in chunks])
    assert await delivery.drain(600)
    pipeline_s = time.perf_counter() - started
    pipeline_cpu = time.process_time() - cpu
    await delivery.close()

    # The same writer without the spool: what durability costs.
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        for chunk in split_lines(serialize_batch(batch, schema), BATCH_SIZE):
            await writer.send(chunk)
    unspooled_s = time.perf_counter() - started
    unspooled_cpu = time.process_time() - cpu
    await writer.close()

    chunks = [c for b in batches for c in split_lines(serialize_batch(b, schema), BATCH_SIZE)]
    async with httpx.AsyncClient(timeout=60) as client:
        await client.post(f"{influxd.url}/query", params={"q": 'CREATE DATABASE "raw"'})
        started = time.perf_counter()
        for chunk in chunks:
            response = await client.post(
                f"{influxd.url}/write", params={"db": "raw", "precision": "ms"}, content=chunk
            )
            response.raise_for_status()
        raw_s = time.perf_counter() - started

    stored = influxd.query("pipeline", 'SELECT count("power") FROM "lamp"')
    values = stored[0]["values"]
    assert isinstance(values, list)
    count = values[0][1]
    return {
        "points": total,
        "stored_points": count,
        "batch_lines": BATCH_SIZE,
        "gzip": False,
        "points_per_s": round(total / pipeline_s),
        "without_spool_points_per_s": round(total / unspooled_s),
        "raw_post_points_per_s": round(total / raw_s),
        "ratio_spool_vs_without": round(unspooled_s / pipeline_s, 2),
        # Our process only (threads included): influxd's own work is not in these.
        "cpu_us_per_point": round(pipeline_cpu / total * 1e6, 2),
        "without_spool_cpu_us_per_point": round(unspooled_cpu / total * 1e6, 2),
        "ratio_vs_raw_post": round(raw_s / pipeline_s, 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Both measurements, with influxd in its own temp folder."""
    lamps = 20_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as folder:
        influxd = Influxd(Path(folder) / "influxd")
        influxd.start()  # before pinning: the server must not inherit our core
        pin_to_cpu(0)
        serialization = bench_serialization(lamps)
        try:
            e2e = asyncio.run(
                bench_end_to_end(
                    influxd,
                    lamps=10_000 if quick else 42_000,
                    polls=3 if quick else 6,
                    spool=Path(folder) / "spool",
                )
            )
        finally:
            influxd.stop()
    return {
        "bench": "ingest",
        "serialization": serialization,
        "end_to_end": e2e,
        "targets": {
            "serialization_points_per_s": 1_000_000,
            "serialization_ratio": 20,
            "end_to_end_ratio": 0.9,
        },
        "targets_met": {
            "serialization_points_per_s": serialization["points_per_s"] >= 1_000_000,
            "serialization_ratio": serialization["ratio_vs_baseline"] >= 20,
            "end_to_end_ratio": e2e["ratio_vs_raw_post"] >= 0.9,
        },
    }
