"""Benchmark: a megacity in one process, the whole production path on.

Shenzhen-sized at ``--size shenzhen`` (1.0): 6,000 cabinets each behind its own
4G DTU, 50,000 single-lamp controllers on the cabinets' concentrators, 500
water-level gauges of which a fifth are SL651 stations dialling in, at the
shipped intervals (60 s cabinets and lamps, 10 s gauges). The controller runs
here as ``streetsense run`` builds it (``Controller.start``), on core 0, with
every sink on: the embedded store, a real influxd, a real mosquitto, rules,
alarms, cases in a real PostgreSQL. The devices are served by the fast
responder in ``streetsense simulate`` on core 1. Rain rises on a tenth of the
gauges, and at the window's start circuits are cut, mains lost and lamps
burnt out through the simulator's control API, so alarms, storm mode and
cases happen while it is measured.

Each size runs in a fresh process (so its RSS is its own), at the size asked
and at half of it, to show the cost per device and how linear it is. After a
warm-up of one lamp interval the window is two lamp intervals; figures:

- CPU share of one core (process CPU, threads included, over wall time);
- RSS: the peak sampled each second over the window, and the kernel's high-water mark;
- batch-to-alarm (a batch's arrival at the rules until its alarms are applied,
  stored and published; cases follow from their own queue) and
  reading-to-alarm (its oldest polled reading taken until then: the batching
  wait included) p50 / p99 / max;
- whether the sinks keep up: what was pending at the window's end, and how
  long it took to deliver once polling stopped;
- CPU per device per minute, and its ratio between the two sizes;
- the baseline: a raw asyncio client making the same coalesced requests
  (``bench.raw_client``), CPU per request, in the same process before the
  controller starts; the controller's CPU per request over it is the price of
  everything beyond the wire (decoding, batches, four sinks, rules, cases).

CPU of influxd, mosquitto and PostgreSQL is theirs, not in the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.city import pin_to_cpu, requests_made, start_simulator
from bench.raw_client import RawPoller
from controller.config import LoadedConfig, load_config
from controller.latency import LatencyRecord
from controller.runtime import Controller
from rules.alarm_model import AlarmNotice
from simulators.city_generator import generate_city
from simulators.servers import Influxd, Mosquitto, PostgresServer, free_port

BASE_PORT = 10000  # below the ephemeral range: the controller's own connections never take one
WARMUP_S = 65.0
WINDOW_S = 120.0
TARGET_CORE_SHARE = 0.25
TARGET_RSS_BYTES = 2 * 1024**3
RAW_CYCLES = 2


@dataclass(frozen=True)
class CityShape:
    """How many devices of each kind a city has."""

    cabinets: int
    single_lamp_controllers: int
    gauges: int
    sl651_stations: int

    def scaled(self, size: float) -> CityShape:
        """This city at ``size`` (at least one of each)."""
        return CityShape(
            max(1, round(self.cabinets * size)),
            round(self.single_lamp_controllers * size),
            max(1, round(self.gauges * size)),
            round(self.sl651_stations * size),
        )

    @property
    def devices(self) -> int:
        """Cabinets, single-lamp controllers and gauges."""
        return self.cabinets + self.single_lamp_controllers + self.gauges


SHENZHEN = CityShape(cabinets=6000, single_lamp_controllers=50_000, gauges=500, sl651_stations=100)
#: Named sizes for ``--size``, as fractions of Shenzhen.
SIZES = {"shenzhen": 1.0, "yangjiang": 659 / 6000}


def _scenario(doc: dict[str, Any]) -> dict[str, Any]:
    """Rain on a tenth of the gauges from the start, slowly enough (ten minutes to
    peak) that the water crosses blue and yellow during the window whatever the
    setup took, putting their districts into storm mode."""
    gauges = [g["id"] for g in doc["gauges"]] + [s["id"] for s in doc.get("sl651_stations", [])]
    return {"rain": [{"gauges": gauges[::10], "start": 0, "rise": 600, "peak_m": 0.5}]}


def _faults(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Faults put in at the window's start: a circuit cut in one cabinet in a hundred,
    mains lost in one in three hundred, one lamp in two hundred burnt out."""
    cabinets = [c["id"] for c in doc["cabinets"]]
    lamps = [
        f"{c['id']}-L{n:03d}"
        for c in doc["cabinets"]
        for n in range(1, sum(r["count"] for r in c["lamp_runs"]) + 1)
    ]
    faults: list[dict[str, Any]] = [
        {"kind": "circuit_cut", "device": c, "circuit": 1} for c in cabinets[::100]
    ]
    faults += [{"kind": "mains_loss", "device": c} for c in cabinets[50::300]]
    faults += [{"kind": "lamp_burnt_out", "device": lamp} for lamp in lamps[::200]]
    return faults


async def _inject(control: str, token: str, faults: list[dict[str, Any]]) -> None:
    """Put the faults in force through the simulator's control API."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=control, headers=headers, timeout=30) as client:
        for fault in faults:
            (await client.post("/faults", json=fault)).raise_for_status()


class RaisedAlarms:
    """Alarms raised while subscribed, by rule."""

    def __init__(self) -> None:
        self.by_rule: Counter[str] = Counter()

    async def on_notice(self, notice: AlarmNotice) -> None:
        if notice.transition == "raised":
            self.by_rule[notice.alarm.rule] += 1


def _rss_bytes() -> tuple[int, int]:
    """This process's resident set now and its high-water mark, in bytes."""
    now = peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return now, peak


def _delivered(controller: Controller) -> dict[str, int]:
    """Readings each sink has taken (the embedded store counts its direct writes too)."""
    out = {s.name: s.stats.delivered_points for s in controller.telemetry.sinks()}
    if controller.telemetry.store_sink is not None:
        out["embedded"] = controller.telemetry.store_sink.health.points
    return out


async def _raw_baseline(controller: Controller) -> dict[str, float]:
    """CPU per request of the raw client over the city's targets (a full cycle, twice)."""
    raw = RawPoller.of_links(controller.loaded.config.links)
    await raw.connect()
    by_link = controller.poller.targets_by_link()
    await raw.poll_all_once(by_link)  # warm-up
    raw.requests = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(RAW_CYCLES):
        await raw.poll_all_once(by_link)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    requests = raw.requests
    raw.close()
    return {"cpu_us_per_request": cpu / requests * 1e6, "cycle_s": wall / RAW_CYCLES}


async def _sample_rss(peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], _rss_bytes()[0])
        await asyncio.sleep(1.0)


def _latency(record: LatencyRecord) -> dict[str, float]:
    return {
        "p50_ms": round(record.quantile(0.5) * 1e3, 2),
        "p99_ms": round(record.quantile(0.99) * 1e3, 2),
        "max_ms": round(max(record.recent, default=0.0) * 1e3, 2),
        "samples": len(record.recent),
    }


async def _measure(
    loaded: LoadedConfig, shape: CityShape, faults: list[dict[str, Any]], control: tuple[str, str]
) -> dict[str, Any]:
    controller = Controller(loaded)
    try:
        await controller.poller.poll_all_once()  # connects every link; not measured
        baseline = await _raw_baseline(controller)
        await controller.start()
        await asyncio.sleep(WARMUP_S)
        raised = RaisedAlarms()
        controller.rules.manager.subscribe(raised.on_notice)
        rules = controller.rules.stats
        rules.batch_to_alarm.clear_recent()
        rules.reading_to_alarm.clear_recent()
        polls, failed = controller.poller.stats.polls, controller.poller.stats.failed_polls
        requests, readings = requests_made(controller.links), controller.poller.stats.readings
        cases = len(await controller.cases.find(limit=1_000_000))
        delivered = _delivered(controller)
        peak = [0]
        sampler = asyncio.create_task(_sample_rss(peak))
        cpu, wall = time.process_time(), time.perf_counter()
        await _inject(*control, faults)
        await asyncio.sleep(WINDOW_S - (time.perf_counter() - wall))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sampler.cancel()
        pending_at_end = {s.name: s.pending_points for s in controller.telemetry.sinks()}
        # What was waiting at the window's end, delivered: the time it takes says
        # whether the sinks keep up (a backlog that only grows would never drain).
        await controller.poller.stop()
        drained = time.perf_counter()
        drain_ok = all(
            [
                await delivery.drain(120)
                for delivery in (controller.telemetry.influx, controller.telemetry.mqtt)
                if delivery is not None
            ]
        )
        drain_s = time.perf_counter() - drained
        rss_now, rss_hwm = _rss_bytes()
        poll_stats = controller.poller.stats
        requests = requests_made(controller.links) - requests
        sinks = {
            s.name: {
                "points_delivered": _delivered(controller)[s.name] - delivered[s.name],
                "pending_points_at_window_end": pending_at_end[s.name],
                "up": s.up,
            }
            for s in controller.telemetry.sinks()
        }
        listener = controller.listeners[0].stats if controller.listeners else None
        figures: dict[str, Any] = {
            "devices": {
                "cabinets": shape.cabinets,
                "single_lamp_controllers": shape.single_lamp_controllers,
                "gauges": shape.gauges,
                "of_which_sl651_stations": shape.sl651_stations,
                "links": len(controller.links),
            },
            "window_s": round(wall, 1),
            "cpu_s": round(cpu, 2),
            "core_share": round(cpu / wall, 4),
            "rss_peak_mb": round(max(peak[0], rss_now) / 2**20, 1),
            "rss_high_water_mb": round(rss_hwm / 2**20, 1),
            "polls": poll_stats.polls - polls,
            "failed_polls": poll_stats.failed_polls - failed,
            "requests": requests,
            "readings": poll_stats.readings - readings,
            "sl651_reports": sum(s.reports for s in listener.stations.values()) if listener else 0,
            "faults_injected": len(faults),
            "alarms_raised": dict(raised.by_rule.most_common()),
            "cases_opened": len(await controller.cases.find(limit=1_000_000)) - cases,
            "sinks": sinks,
            "sinks_drained_after_window_s": round(drain_s, 2) if drain_ok else None,
            "batch_to_alarm": _latency(rules.batch_to_alarm),
            "reading_to_alarm": _latency(rules.reading_to_alarm),
            "cpu_ms_per_device_minute": round(cpu / shape.devices / (wall / 60) * 1e3, 4),
            "cpu_us_per_request": round(cpu / max(requests, 1) * 1e6, 1),
            "baseline_raw_asyncio": {
                "kind": "raw asyncio client, the same coalesced requests, no decoding or sinks",
                "cpu_us_per_request": round(baseline["cpu_us_per_request"], 1),
                "cycle_s": round(baseline["cycle_s"], 2),
            },
        }
        figures["ratio_cpu_per_request_to_raw"] = round(
            figures["cpu_us_per_request"] / baseline["cpu_us_per_request"], 2
        )
        return figures
    finally:
        await controller.stop()


def _city_doc(shape: CityShape, folder: Path, servers: dict[str, str]) -> dict[str, Any]:
    demo = yaml.safe_load((Path(__file__).parent.parent / "config.yaml").read_text("utf-8"))
    doc = generate_city(
        cabinets=shape.cabinets,
        lamps=shape.single_lamp_controllers,
        gauges=shape.gauges,
        base_port=BASE_PORT,
        sl651_stations=shape.sl651_stations,
    )
    (folder / "scenario.yaml").write_text(yaml.safe_dump(_scenario(doc)), encoding="utf-8")
    doc |= {
        "site": {"city": "shenzhen-bench", "timezone": "Asia/Shanghai"},
        "data_dir": str(folder / "var"),
        # The lamps burn as at night whatever hour the bench runs: day-burning is left out.
        "rules": [r for r in demo["rules"] if r["kind"] != "day_burning"],
        "alarms": demo["alarms"] | {"path": "alarms.db"},
        "flood_watch": demo["flood_watch"],
        "storage": {"influxdb": {"url": servers["influx"], "database": "megacity"}},
        "mqtt": {"host": "127.0.0.1", "port": int(servers["mqtt_port"])},
        "cases": {"db_url": servers["postgres"], "routing": demo["cases"]["routing"]},
        "simulator": {
            "responder": "fast",
            "scenario": "scenario.yaml",
            "lamps_at_start": "lit",
        },
    }
    return doc


def run_one(size: float) -> dict[str, Any]:
    """Measure one size (a fraction of Shenzhen) in this process."""
    shape = SHENZHEN.scaled(size)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each link is a socket here and two in the simulator (listening and accepted).
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="streetsense-megacity-") as tmp:
        folder = Path(tmp)
        influxd, mosquitto, postgres = Influxd(folder / "influxd"), Mosquitto(folder / "mq"), None
        try:
            # Started before this process pins itself: the servers use both cores.
            influxd.start()
            mosquitto.start()
            postgres = PostgresServer()
            postgres.start()
            servers = {
                "influx": influxd.url,
                "mqtt_port": str(mosquitto.port),
                "postgres": postgres.url,
            }
            config = folder / "city.yaml"
            doc = _city_doc(shape, folder, servers)
            config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
            loaded = load_config(config)
            control_port, token = free_port(), secrets.token_urlsafe(16)
            simulator = start_simulator(config, control_port, token)
            control = (f"http://127.0.0.1:{control_port}", token)
            try:
                pin_to_cpu(0)
                figures = asyncio.run(_measure(loaded, shape, _faults(doc), control))
            finally:
                simulator.terminate()
                simulator.wait(timeout=60)
        finally:
            if postgres is not None:
                postgres.stop()
            mosquitto.stop()
            influxd.stop()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return {"size": size} | figures


def run(size: float = 1.0) -> dict[str, Any]:
    """Half the size, then the size, each in a fresh process; the two compared."""
    runs = []
    for each in (size / 2, size):
        out = subprocess.run(
            [sys.executable, "-m", "bench.megacity", str(each)],
            capture_output=True,
            text=True,
            check=False,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        if out.returncode != 0:
            raise RuntimeError(f"the city of size {each} failed: {out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    half, full = runs
    per_device = full["cpu_ms_per_device_minute"] / half["cpu_ms_per_device_minute"]
    return {
        "bench": "city",
        "size": size,
        "half": half,
        "full": full,
        "cpu_per_device_full_over_half": round(per_device, 3),
        "rss_per_device_kb": round(
            (full["rss_peak_mb"] - half["rss_peak_mb"])
            * 1024
            / max(1, _devices(full) - _devices(half)),
            2,
        ),
        "targets": {"core_share": TARGET_CORE_SHARE, "rss_mb": TARGET_RSS_BYTES / 2**20},
        "targets_met": {
            "core_share": full["core_share"] < TARGET_CORE_SHARE,
            "rss": full["rss_peak_mb"] * 2**20 < TARGET_RSS_BYTES,
            "linear": 0.8 <= per_device <= 1.25,
        },
    }


def _devices(figures: dict[str, Any]) -> int:
    d = figures["devices"]
    return int(d["cabinets"] + d["single_lamp_controllers"] + d["gauges"])


if __name__ == "__main__":
    print(json.dumps(run_one(float(sys.argv[1])), ensure_ascii=False))
