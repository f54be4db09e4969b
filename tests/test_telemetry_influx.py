"""Telemetry into real InfluxDB 1.6.7 and, for the v2 write path, victoria-metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from controller.config import LoadedConfig
from controller.runtime import Controller
from controller.telemetry.influx import InfluxV1Writer
from controller.telemetry.lineprotocol import escape_key, escape_string_field
from drivers.readings import Quality, ReadingBatch
from simulators.fleet import SimulatedCity
from simulators.servers import Influxd, VictoriaMetrics, free_port

TRICKY_ROAD = "东风路 一段,北=侧"
TRICKY_GRID = "grid 1,2=3"


def city(influx_url: str | None, spool: Path, interval: float = 0.2) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "site": {"city": "test-city"},
        "polling": {
            "cabinet_interval": interval,
            "gauge_interval": interval,
            "batch_interval": 0.1,
        },
        "links": [
            {
                "id": "dtu",
                "kind": "rtu_over_tcp",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout": 0.5,
            }
        ],
        "cabinets": [
            {
                "id": "CAB-1:a.b",
                "link": "dtu",
                "unit": 1,
                "road": TRICKY_ROAD,
                "grid": TRICKY_GRID,
                "lamp_runs": [{"circuit": 1, "count": 3}],
            }
        ],
        "gauges": [
            {"id": "WL-1", "link": "dtu", "unit": 2, "profile": "wl-pressure", "road": "新江路"}
        ],
        "storage": {
            "embedded": {"path": str(spool.parent / "embedded.db")},
            "spool": {"path": str(spool)},
        },
    }
    if influx_url:
        doc["storage"]["influxdb"] = {
            "url": influx_url,
            "database": "city",
            "flush_interval": 0.2,
            "timeout": 2,
        }
    return doc


class Collector:
    """Every reading the poller handed on, to compare with what the stores hold."""

    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []

    async def __call__(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)

    def expected(self, controller: Controller) -> dict[tuple[str, str, int], float]:
        out = {}
        for b in self.batches:
            for dev, pt, ts, value, q in zip(
                b.device, b.point, b.ts, b.value, b.quality, strict=True
            ):
                if q < Quality.BAD:
                    device = controller.registry.devices[dev]
                    out[device.id, device.points[pt].name, round(ts * 1000)] = float(value)
        return out


async def poll_into_influx(controller: Controller) -> ReadingBatch:
    """Poll once and push the readings through telemetry until InfluxDB has them."""
    await controller.open_stores()
    batch = await controller.poller.poll_all_once()
    await controller.telemetry.on_batch(batch)
    assert controller.telemetry.influx is not None
    assert await controller.telemetry.influx.drain(5)
    return batch


def spooled_records(database: Path) -> int:
    """Records waiting in a sink's spool, read as a person would, with sqlite3."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        (count,) = db.execute("SELECT count(*) FROM records").fetchone()
    return int(count)


def stored(influxd: Influxd, controller: Controller) -> dict[tuple[str, str, int], float]:
    out = {}
    for measurement in ("cabinet", "lamp", "gauge"):
        for series in influxd.query("city", f'SELECT * FROM "{measurement}"'):
            columns = series["columns"]
            assert isinstance(columns, list)
            values = series["values"]
            assert isinstance(values, list)
            for row in values:
                record = dict(zip(columns, row, strict=True))
                device = controller.registry.by_id[record["device"]]
                for p in device.points:
                    if record.get(p.name) is not None:
                        out[device.id, p.name, record["time"]] = float(record[p.name])
    return out


async def test_every_reading_lands_once_across_an_influxd_outage(
    influxd: Influxd, tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(city(influxd.url, tmp_path / "spool"))
    collector = Collector()
    async with SimulatedCity(loaded):
        controller = Controller(loaded)
        controller.poller.subscribe(collector)
        await controller.start()
        try:
            await asyncio.sleep(1.5)
            await asyncio.to_thread(influxd.stop)
            await asyncio.sleep(3.0)
            (sink,) = [s for s in controller.telemetry.sinks() if s.name == "influxdb"]
            assert not sink.up and sink.pending_points > 0
            await asyncio.to_thread(influxd.start)
            assert controller.telemetry.influx is not None
            assert await controller.telemetry.influx.drain(35)  # the replay, after its backoff
            await asyncio.sleep(0.5)  # and a few more polls with the server back
        finally:
            await controller.stop()
    assert controller.telemetry.influx is not None
    assert controller.telemetry.influx.pending == 0
    want = collector.expected(controller)
    got = stored(influxd, controller)
    polls = {ts for (_, _, ts) in want}
    assert len(polls) > 15  # polls before, during and after the outage
    assert got.keys() == want.keys()  # each reading once: none missing, none extra
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


async def test_spool_left_by_a_stopped_controller_is_replayed_on_restart(
    influxd: Influxd, tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(city(influxd.url, tmp_path / "spool"))
    influxd.stop()
    async with SimulatedCity(loaded):
        first = Controller(loaded)
        await first.open_stores()
        batch = await first.poller.poll_all_once()
        await first.telemetry.on_batch(batch)
        await first.stop()
    spool = tmp_path / "spool" / "influxdb" / "spool.sqlite"
    assert spooled_records(spool), "readings taken during the outage must be on disk"
    influxd.start()
    second = Controller(loaded)
    await second.open_stores()
    try:
        assert second.telemetry.influx is not None
        assert await second.telemetry.influx.drain(10)
    finally:
        await second.stop()
    assert spooled_records(spool) == 0
    rows = influxd.query("city", 'SELECT count("water_level") FROM "gauge"')
    values = rows[0]["values"]
    assert isinstance(values, list) and values[0][1] == 1


async def test_tags_with_spaces_commas_equals_and_chinese_round_trip(
    influxd: Influxd, tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(city(influxd.url, tmp_path / "spool"))
    async with SimulatedCity(loaded), Controller(loaded) as controller:
        await poll_into_influx(controller)
    roads = influxd.query("city", 'SHOW TAG VALUES FROM "cabinet" WITH KEY = "road"')
    assert roads[0]["values"] == [["road", TRICKY_ROAD]]
    devices = influxd.query("city", 'SHOW TAG VALUES FROM "lamp" WITH KEY = "cabinet"')
    assert devices[0]["values"] == [["cabinet", "CAB-1:a.b"]]
    lamps = influxd.query("city", f'SELECT "power" FROM "lamp" WHERE "grid" = \'{TRICKY_GRID}\'')
    assert len(lamps[0]["values"]) == 3  # type: ignore[arg-type]


async def test_string_fields_with_quotes_and_backslashes_round_trip(influxd: Influxd) -> None:
    writer = InfluxV1Writer(influxd.url, "events", use_gzip=False)
    await writer.create_database()
    text = 'lamp "7" at C:\\cab\\7, 路灯=灭'
    line = (
        f"event,{escape_key('kind')}={escape_key('note x')} text={escape_string_field(text)} 1000\n"
    )
    try:
        await writer.send(line.encode("utf-8"))
    finally:
        await writer.close()
    rows = influxd.query("events", 'SELECT "text" FROM "event"')
    assert rows[0]["values"] == [[1000, text]]


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics(tmp_path / "vm")
    server.start()
    yield server
    server.stop()


async def test_v2_write_path_through_influxdb_client(
    victoria: VictoriaMetrics,
    tmp_path: Path,
    write_config: Callable[[dict[str, Any]], LoadedConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "not-a-real-token")
    doc = city(None, tmp_path / "spool")
    doc["storage"]["influxdb"] = {
        "url": victoria.url,
        "api": "v2",
        "org": "city-org",
        "bucket": "city",
        "token_env": "TEST_INFLUX_TOKEN",
        "flush_interval": 0.2,
    }
    loaded = write_config(doc)
    async with SimulatedCity(loaded), Controller(loaded) as controller:
        batch = await poll_into_influx(controller)
        assert controller.telemetry.influx is not None
        assert controller.telemetry.influx.stats.delivered >= 1
    # victoria-metrics makes fresh rows searchable within a second or so (more when busy).
    lines: list[dict[str, Any]] = []
    async with httpx.AsyncClient() as client:
        for _ in range(40):
            await asyncio.sleep(0.5)
            response = await client.get(
                f"{victoria.url}/api/v1/export",
                params={"match[]": '{__name__="gauge_water_level"}'},
            )
            lines = [json.loads(line) for line in response.text.splitlines() if line]
            if lines:
                break
    assert len(lines) == 1
    exported = lines[0]
    assert exported["metric"]["device"] == "WL-1"
    assert exported["metric"]["road"] == "新江路"
    gauge = controller.registry.by_id["WL-1"]
    mask = (batch.device == gauge.index) & (batch.point == 0)
    assert exported["values"] == pytest.approx([float(batch.value[mask][0])])
    assert exported["timestamps"] == [round(float(batch.ts[mask][0]) * 1000)]


async def test_queries_answer_the_same_from_influxdb_and_the_embedded_store(
    influxd: Influxd, tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(city(influxd.url, tmp_path / "spool"))
    async with Controller(loaded) as controller:
        await controller.open_stores()
        gauge = controller.registry.by_id["WL-1"]
        base = time.time() - 600
        n = 120
        batch = ReadingBatch(
            device=np.full(n, gauge.index, dtype=np.int32),
            point=np.zeros(n, dtype=np.int16),
            ts=(base + np.arange(n) * 5.0).astype(np.float64),
            value=np.round(np.sin(np.arange(n) / 10.0), 3).astype(np.float64),
            quality=np.zeros(n, dtype=np.uint8),
        )
        await controller.telemetry.on_batch(batch)
        assert controller.telemetry.influx is not None
        assert await controller.telemetry.influx.drain(5)
        influx = controller.telemetry.reader
        embedded = controller.telemetry.embedded
        assert influx is not None and influx.name == "influxdb" and embedded is not None
        start, end = base + 60, base + 400
        raw_i = await influx.raw(gauge, "water_level", start, end, 1000)
        raw_e = await embedded.raw(gauge, "water_level", start, end, 1000)
        assert [(s.ts, s.value) for s in raw_i] == [(s.ts, s.value) for s in raw_e]
        assert len(raw_i) == 68
        down_i = await influx.downsampled(gauge, "water_level", start, end, 60)
        down_e = await embedded.downsampled(gauge, "water_level", start, end, 60)
        assert [b.count for b in down_i] == [b.count for b in down_e]
        assert [b.ts for b in down_i] == [b.ts for b in down_e]
        for bi, be in zip(down_i, down_e, strict=True):
            assert (bi.mean, bi.min, bi.max) == pytest.approx((be.mean, be.min, be.max))
        latest_i = await influx.latest([gauge])
        latest_e = await embedded.latest([gauge])
        assert {(r.point, r.ts, r.value) for r in latest_i} == {
            (r.point, r.ts, r.value) for r in latest_e
        }
        assert {r.value for r in latest_e if r.point == "water_level"} == {float(batch.value[-1])}
