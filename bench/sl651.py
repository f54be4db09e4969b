"""Benchmark: 2,000 SL651 stations dial in at once and all report within 10 s (a storm).

The stations are a load generator in their own process on the other core
(bench/sl651_load.py); the centre runs in this process: the production
listener, station reports into the poller's batches, every subscriber (the
embedded store, rules, cases) with the shipped defaults. Measured from the
first report to the last station's readings in a batch: the centre's CPU
seconds (process CPU) and wall time, frames decoded and stored per CPU
second, and the delay from a frame's arrival to its readings being handed on
(p50, p99; the batch interval, 1 s by default, is part of it).

The baseline, in the same run against the same load: a straightforward
centre that reads each frame by its length, decodes it and inserts its
readings into SQLite with a commit per frame, in the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import yaml

from bench.city import pin_to_cpu
from bench.sl651_load import PASSWORD, station_address
from controller.config import LoadedConfig, load_config
from controller.runtime import Controller
from drivers.readings import ReadingBatch
from drivers.sl651 import frame as fr
from drivers.sl651.body import parse_report
from simulators.servers import free_port

STATIONS = 2000
BURST_WINDOW_S = 10.0
TARGET_CPU_S = 2.0
TZ = ZoneInfo("Asia/Shanghai")


def _config(folder: Path, port: int, stations: int) -> LoadedConfig:
    doc: dict[str, Any] = {
        "data_dir": str(folder / "var"),
        "listeners": [{"id": "centre", "protocol": "sl651", "host": "127.0.0.1", "port": port}],
        "sl651_stations": [
            {
                "id": f"WL-{k:04d}",
                "listener": "centre",
                "station": station_address(k),
                "password": f"{PASSWORD:04X}",
                "district": "江城区",
                "levels": {"blue": 0.1, "yellow": 0.2, "orange": 0.3, "red": 0.4},
            }
            for k in range(1, stations + 1)
        ],
        "rules": [
            {
                "id": "flood-level",
                "kind": "threshold",
                "point": "water_level",
                "select": {"device_class": "gauge"},
                "levels_from_device": True,
            }
        ],
    }
    path = folder / "centre.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def _start_load(port: int, stations: int) -> subprocess.Popen[str]:
    args = ["--port", str(port), "--stations", str(stations), "--window", str(BURST_WINDOW_S)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sl651_load", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: pin_to_cpu(1),
    )
    return proc


async def _drive(proc: subprocess.Popen[str], done: asyncio.Event, limit: float) -> dict[str, Any]:
    """Wait for the stations to connect, start the burst, wait for the centre to see all."""
    assert proc.stdin is not None and proc.stdout is not None
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, proc.stdout.readline)
    if line.strip() != "connected":
        raise RuntimeError(f"load generator: {line!r}")
    cpu, wall = time.process_time(), time.perf_counter()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), limit)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    summary = await loop.run_in_executor(None, proc.stdout.readline)
    proc.wait(timeout=30)
    return {"cpu_s": cpu, "wall_s": wall, "load": yaml.safe_load(summary)}


async def _streetsense(loaded: LoadedConfig, port: int, stations: int) -> dict[str, Any]:
    controller = Controller(loaded)
    await controller.open_stores()
    await controller.start_listeners()
    controller.poller.start()
    listener = controller.listeners[0]
    address_of = {d: s for d, s, _ in controller.registry.sl651_stations["centre"]}
    delays: dict[int, float] = {}
    done = asyncio.Event()

    async def handed_on(batch: ReadingBatch) -> None:
        now = time.time()
        for device in np.unique(batch.device).tolist():
            if device not in delays:
                heard = listener.stats.stations[address_of[device]].last_frame or now
                delays[device] = now - heard
        if len(delays) >= stations:
            done.set()

    controller.poller.subscribe(handed_on)  # last: after the store and the rules
    try:
        run = await _drive(_start_load(port, stations), done, BURST_WINDOW_S + 60)
    finally:
        await controller.stop()
    values = np.array(list(delays.values()) or [np.nan])
    return {
        **run,
        "stations_stored": len(delays),
        "delay_p50_s": round(float(np.percentile(values, 50)), 3),
        "delay_p99_s": round(float(np.percentile(values, 99)), 3),
        "bad_frames": listener.stats.bad_frames + listener.stats.bad_crc,
    }


async def _naive(folder: Path, port: int, stations: int) -> dict[str, Any]:
    """A straightforward centre: per frame, parse, insert each reading, commit, confirm."""
    db = sqlite3.connect(folder / "naive.db")
    db.execute("CREATE TABLE reading (station TEXT, element INTEGER, ts REAL, value REAL)")
    known = {station_address(k) for k in range(1, stations + 1)}
    stored: set[str] = set()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(fr.HEADER)
                length = ((head[11] & 0x0F) << 8) | head[12]
                frame = fr.parse(head + await reader.readexactly(length + 4))
                if frame.station not in known or frame.password != PASSWORD:
                    continue
                report = parse_report(frame.function, frame.body, TZ)
                for o in report.observations:
                    db.execute(
                        "INSERT INTO reading VALUES (?, ?, ?, ?)",
                        (frame.station, o.element, o.at, o.value),
                    )
                db.commit()
                writer.write(fr.confirm(frame))
                await writer.drain()
                stored.add(frame.station)
                if len(stored) >= stations:
                    done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    try:
        run = await _drive(_start_load(port, stations), done, BURST_WINDOW_S + 60)
    finally:
        server.close()
        db.close()
    return {**run, "stations_stored": len(stored)}


def run(size: float = 1.0) -> dict[str, Any]:
    """Both centres against the same burst, one after the other, on core 0."""
    stations = max(10, round(STATIONS * size))
    pin_to_cpu(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        ours = asyncio.run(_streetsense(_config(folder, port, stations), port, stations))
        naive = asyncio.run(_naive(folder, free_port(), stations))
    frames = ours["load"]["confirmed"]
    return {
        "bench": "sl651",
        "size": size,
        "stations": stations,
        "burst_window_s": BURST_WINDOW_S,
        "streetsense": {
            "cpu_s": round(ours["cpu_s"], 3),
            "wall_s": round(ours["wall_s"], 2),
            "frames_confirmed": frames,
            "stations_stored": ours["stations_stored"],
            "frames_per_cpu_s": round(frames / ours["cpu_s"]) if ours["cpu_s"] else None,
            "cpu_us_per_frame": round(ours["cpu_s"] / max(frames, 1) * 1e6, 1),
            "delay_arrival_to_batch_p50_s": ours["delay_p50_s"],
            "delay_arrival_to_batch_p99_s": ours["delay_p99_s"],
            "resent": ours["load"]["resent"],
            "failed": ours["load"]["failed"],
            "bad_frames": ours["bad_frames"],
        },
        "baseline_per_frame_decode_and_insert": {
            "cpu_s": round(naive["cpu_s"], 3),
            "wall_s": round(naive["wall_s"], 2),
            "stations_stored": naive["stations_stored"],
            "cpu_us_per_frame": round(naive["cpu_s"] / max(naive["stations_stored"], 1) * 1e6, 1),
        },
        "ratio_cpu_to_baseline": round(ours["cpu_s"] / naive["cpu_s"], 2)
        if naive["cpu_s"]
        else None,
        "steady_load_frames_per_s": round(stations / 300, 1),
        "target_cpu_s": TARGET_CPU_S * size,
        "target_met": ours["cpu_s"] <= TARGET_CPU_S * size and ours["stations_stored"] == stations,
    }
