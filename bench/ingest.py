"""Benchmark: readings into storage, through the production pipeline, against influxd's ceiling.

A Yangjiang-sized city with its full 42,000 lamps behind 659 cabinets; every
poll of it is one batch of about half a million readings.

- **pipeline**: batches through ``TelemetryPipeline.on_batch`` with the
  shipped defaults (embedded store on, InfluxDB with gzip as configured, the
  disk spool) into a real influxd, until InfluxDB has acknowledged everything.
  Each stage alone as well: serialization, the embedded store, the spooled
  InfluxDB delivery.
- **ceiling**: influxd's own intake in the same run, the same pre-serialized
  chunks posted raw over 1, 2 and 4 connections.
- **serialization**: our serializer against well-written f-string code (tag
  prefixes built once), and against influxdb-client's ``Point``.

CPU figures are this process's (threads included); influxd's own work is not in them.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from bench.city import pin_to_cpu
from controller.config import LoadedConfig, load_config
from controller.poller import Poller
from controller.registry import Registry
from controller.telemetry.delivery import SpooledDelivery
from controller.telemetry.embedded import EmbeddedStore
from controller.telemetry.influx import InfluxV1Writer
from controller.telemetry.lineprotocol import serialize_batch
from controller.telemetry.pipeline import TelemetryPipeline, split_lines
from controller.telemetry.schema import device_tags, schema_for_registry
from controller.telemetry.spool import DiskSpool, SpoolItem
from drivers.readings import ReadingBatch
from simulators.city_generator import YANGJIANG_CABINETS, generate_city
from simulators.servers import Influxd

FULL_LAMPS = 42_000
POLLS = 4
TARGET_RATIO_TO_CEILING = 0.7


def city_config(folder: Path, size: float, influx_url: str) -> LoadedConfig:
    """The city at ``size`` with InfluxDB configured and every other storage default."""
    doc = generate_city(
        cabinets=max(1, round(YANGJIANG_CABINETS * size)),
        lamps=round(FULL_LAMPS * size),
        gauges=max(1, round(57 * size)),
        base_port=40000,
    )
    doc["data_dir"] = str(folder / "var")
    doc["storage"] = {"influxdb": {"url": influx_url, "database": "pipeline"}}
    path = folder / "city.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def poll_batches(registry: Registry, polls: int, rng: np.random.Generator) -> list[ReadingBatch]:
    """``polls`` polls of every point of every device, one minute apart, at register resolution."""
    counts = np.asarray([len(d.points) for d in registry.devices])
    device = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    point = np.concatenate([np.arange(c, dtype=np.int16) for c in counts])
    batches = []
    for k in range(polls):
        n = len(device)
        batches.append(
            ReadingBatch(
                device=device,
                point=point,
                ts=np.full(n, 1795368000.0 + 60 * k),
                value=(rng.integers(0, 30000, n) * 0.01).astype(np.float64),
                quality=np.zeros(n, dtype=np.uint8),
            )
        )
    return batches


def bench_serialization(registry: Registry, batch: ReadingBatch) -> dict[str, Any]:
    """Lines/s of our serializer, of f-string code and of influxdb-client's Point."""
    from influxdb_client.client.write.point import Point

    schema = schema_for_registry(registry)
    serialize_batch(batch, schema)  # compile (or load the cache) outside the timing
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        ours = serialize_batch(batch, schema)
        runs.append(time.perf_counter() - started)
    lines = ours.count(b"\n")
    ours_rate = lines / min(runs)

    # Well-written plain Python: each device's measurement and tags escaped and
    # joined once, then one f-string per line.
    starts = np.flatnonzero(np.r_[True, np.diff(batch.device) != 0])
    ends = np.r_[starts[1:], len(batch)]
    prefix = {}
    for d in registry.devices:
        tags = ",".join(
            f"{k}={v.replace(' ', '_')}" for k, v in sorted(device_tags(registry, d).items())
        )
        prefix[d.index] = f"{d.device_class},{tags}"
    names = {d.index: [p.name for p in d.points] for d in registry.devices}
    values = batch.value.tolist()
    points = batch.point.tolist()
    devices = batch.device.tolist()
    ts_ms = int(batch.ts[0] * 1000)
    started = time.perf_counter()
    out = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        d = devices[a]
        n = names[d]
        fields = ",".join(f"{n[points[i]]}={values[i]}" for i in range(a, b))
        out.append(f"{prefix[d]} {fields} {ts_ms}\n")
    fstring_bytes = "".join(out).encode()
    fstring_rate = len(out) / (time.perf_counter() - started)

    sample = min(len(starts), 5000)
    started = time.perf_counter()
    for a, b in zip(starts[:sample].tolist(), ends[:sample].tolist(), strict=True):
        d = devices[a]
        p = Point(registry.devices[d].device_class)
        for key, value in device_tags(registry, registry.devices[d]).items():
            p = p.tag(key, value)
        for i in range(a, b):
            p = p.field(names[d][points[i]], values[i])
        p.time(ts_ms, "ms").to_line_protocol()
    point_rate = sample / (time.perf_counter() - started)
    return {
        "lines": lines,
        "bytes": len(ours),
        "fstring_bytes": len(fstring_bytes),
        "lines_per_s": round(ours_rate),
        "peer_fstring_lines_per_s": round(fstring_rate),
        "peer_influxdb_client_point_lines_per_s": round(point_rate),
        "ratio_vs_fstring": round(ours_rate / fstring_rate, 1),
        "ratio_vs_point": round(ours_rate / point_rate, 1),
    }


async def _ceiling(influxd: Influxd, chunks: list[bytes], connections: int) -> float:
    """Lines/s influxd takes of raw pre-serialized chunks over ``connections`` connections."""
    database = f"raw{connections}"
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await client.post(f"{influxd.url}/query", params={"q": f'CREATE DATABASE "{database}"'})

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                response = await client.post(
                    f"{influxd.url}/write",
                    params={"db": database, "precision": "ms"},
                    content=chunk,
                )
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return sum(c.count(b"\n") for c in chunks) / elapsed


async def _pipeline(
    loaded: LoadedConfig, registry: Registry, batches: list[ReadingBatch]
) -> dict[str, Any]:
    pipeline = TelemetryPipeline(loaded, registry, Poller(registry, {}, loaded.config.polling))
    await pipeline.start()
    assert pipeline.influx is not None
    serialize_batch(batches[0], pipeline.schema)
    lines = 0
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        await pipeline.on_batch(batch)
    accepted_s = time.perf_counter() - started
    assert await pipeline.influx.drain(600)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    lines = pipeline.influx.stats.delivered_points
    await pipeline.stop()
    readings = sum(len(b) for b in batches)
    return {
        "lines": lines,
        "readings": readings,
        "lines_per_s": round(lines / elapsed),
        "readings_per_s": round(readings / elapsed),
        "accepted_s": round(accepted_s, 2),
        "delivered_s": round(elapsed, 2),
        "cpu_us_per_reading": round(cpu / readings * 1e6, 3),
        "cpu_us_per_line": round(cpu / lines * 1e6, 2),
    }


async def _stages(
    folder: Path,
    loaded: LoadedConfig,
    registry: Registry,
    batches: list[ReadingBatch],
    influxd: Influxd,
) -> dict[str, Any]:
    """Each stage of the pipeline alone, on the same batches."""
    schema = schema_for_registry(registry)
    readings = sum(len(b) for b in batches)
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        serialize_batch(batch, schema)
    serialize = (time.perf_counter() - started, time.process_time() - cpu)

    store = EmbeddedStore(folder / "stage.sqlite", registry, 30)
    await store.open()
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        await store.write(batch)
    embedded = (time.perf_counter() - started, time.process_time() - cpu)
    await store.close()

    influx_cfg = loaded.config.storage.influxdb
    assert influx_cfg is not None
    payloads = [split_lines(serialize_batch(b, schema), influx_cfg.batch_size) for b in batches]
    influx = {}
    lines = 0
    for use_gzip in (True, False):
        name = f"stage_gzip_{use_gzip}".lower()
        writer = InfluxV1Writer(influxd.url, name, use_gzip=use_gzip, timeout=120)
        await writer.create_database()
        spool = DiskSpool(folder / f"spool-{name}", 1 << 33, name)
        delivery = SpooledDelivery(writer, spool, max_points=influx_cfg.batch_size)
        await delivery.start()
        started, cpu = time.perf_counter(), time.process_time()
        for chunks in payloads:
            await delivery.submit([SpoolItem(c, c.count(b"\n")) for c in chunks])
        assert await delivery.drain(600)
        influx[use_gzip] = (time.perf_counter() - started, time.process_time() - cpu)
        lines = delivery.stats.delivered_points
        await delivery.close()
        await writer.close()

    def stage(wall_cpu: tuple[float, float], per: int) -> dict[str, float]:
        wall, used = wall_cpu
        return {"per_s": round(per / wall), "cpu_us_each": round(used / per * 1e6, 3)}

    return {
        "serialize_readings": stage(serialize, readings),
        "embedded_store_readings": stage(embedded, readings),
        # Shipped default: gzip on (a remote InfluxDB over a WAN gains from it);
        # on loopback it only costs CPU, which these two figures put side by side.
        "influx_spooled_delivery_lines_gzip": stage(influx[True], lines),
        "influx_spooled_delivery_lines_plain": stage(influx[False], lines),
        "default_gzip": influx_cfg.gzip,
    }


def run(size: float = 1.0) -> dict[str, Any]:
    """All measurements, with influxd in its own temp folder."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        influxd = Influxd(folder / "influxd")
        influxd.start()  # before pinning: the server must not inherit our core
        pin_to_cpu(0)
        try:
            loaded = city_config(folder, size, influxd.url)
            registry = Registry(loaded)
            batches = poll_batches(registry, POLLS, np.random.default_rng(2))
            serialization = bench_serialization(registry, batches[0])
            schema = schema_for_registry(registry)
            chunks = [c for b in batches for c in split_lines(serialize_batch(b, schema), 5000)]
            ceilings = {n: asyncio.run(_ceiling(influxd, chunks, n)) for n in (1, 2, 4)}
            pipeline = asyncio.run(_pipeline(loaded, registry, batches))
            stages = asyncio.run(_stages(folder, loaded, registry, batches, influxd))
        finally:
            influxd.stop()
    best = max(ceilings.values())
    ratio = pipeline["lines_per_s"] / best
    return {
        "bench": "ingest",
        "size": size,
        "city": {"devices": len(registry), "readings_per_poll": len(batches[0]), "polls": POLLS},
        "serialization": serialization,
        "pipeline_default_config": pipeline,
        "stages": stages,
        "ceiling_influxd_lines_per_s": {f"{n}_connections": round(r) for n, r in ceilings.items()},
        "ratio_pipeline_to_best_ceiling": round(ratio, 2),
        "target_ratio_to_ceiling": TARGET_RATIO_TO_CEILING,
        "target_met": ratio >= TARGET_RATIO_TO_CEILING,
    }
