"""Take-over of an active/standby pair: ``python -m bench failover``.

Two ``streetsense run`` processes with the production lease (8 s, renewed every
2 s) on one real PostgreSQL, the devices (``streetsense simulate``) in a third
process. Each run kills the leader with -9 and times until the standby leads
with every device answering, and the gap in the gauge's stored readings (polled
every 0.1 s) across the switch. The same field with one controller restarted
by its service manager after a kill -9 (what a single machine offers) is the
baseline; the lease, which the standby must wait out, is the floor. The
standby's CPU while it stands by is the cost of keeping it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from controller.telemetry.embedded import stored_polls
from simulators.field import FieldController, field_config, simulated_field
from simulators.servers import PostgresServer, free_port, fresh_postgres_database

LEASE_SECONDS = 8.0
RENEW_SECONDS = 2.0
GAUGE = "WL-1"
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(node: FieldController) -> float:
    """User and system CPU the node's process has used."""
    assert node.proc is not None
    fields = Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _gauge_times(store: Path) -> list[float]:
    return sorted(ts / 1000.0 for name, ts in stored_polls(store) if name == GAUGE)


def _gap(before: Path, after: Path, killed_at: float) -> float:
    """Seconds between the last gauge reading stored before the kill and the first after."""
    last = max(t for t in _gauge_times(before) if t <= killed_at)
    first = min(t for t in _gauge_times(after) if t > killed_at)
    return first - last


def _pair_run(folder: Path, state_url: str) -> dict[str, float]:
    leadership = {
        "enabled": True,
        "lease_seconds": LEASE_SECONDS,
        "renew_seconds": RENEW_SECONDS,
    }
    config = field_config(folder, free_port(), database={"url": state_url}, leadership=leadership)
    a, b = FieldController("a", config, folder / "a"), FieldController("b", config, folder / "b")
    with simulated_field(config):
        try:
            a.start()
            a.wait_for("leader", timeout=60)
            b.start()
            b.wait_for("standby", timeout=60)
            cpu_before, standing_from = _cpu_seconds(b), time.monotonic()
            time.sleep(LEASE_SECONDS)  # a few renewals into the lease, as at a random moment
            standby_cpu = (_cpu_seconds(b) - cpu_before) / (time.monotonic() - standing_from)
            killed_at = time.time()
            a.kill()
            took = b.wait_for("leader", timeout=60)
            time.sleep(1.0)  # the new leader's first batch reaches its store
        finally:
            a.kill()
            b.stop()
    return {"takeover_s": took, "gap_s": _gap(a.store, b.store, killed_at), "cpu": standby_cpu}


def _restart_run(folder: Path) -> dict[str, float]:
    """The baseline: one controller, killed and started again at once (systemd's
    Restart= with no delay)."""
    config = field_config(folder, free_port())
    node = FieldController("single", config, folder / "single")
    with simulated_field(config):
        try:
            node.start()
            node.wait_for("single", timeout=60)
            time.sleep(LEASE_SECONDS)  # as long as the pair runs before its kill
            killed_at = time.time()
            started = time.monotonic()
            node.kill()
            node.start()
            node.wait_for("single", timeout=60)
            took = time.monotonic() - started
            time.sleep(1.0)
        finally:
            node.stop()
    return {"takeover_s": took, "gap_s": _gap(node.store, node.store, killed_at)}


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def run(size: float = 1.0) -> dict[str, Any]:
    """Kill the leader ``5 × size`` times (at least 2), and restart a single node as often."""
    runs = max(2, round(5 * size))
    wall, cpu = time.monotonic(), time.process_time()
    server = PostgresServer()
    server.start()
    pair: list[dict[str, float]] = []
    single: list[dict[str, float]] = []
    try:
        for i in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                state_url = asyncio.run(fresh_postgres_database(server.url))
                pair.append(_pair_run(Path(tmp), state_url))
            with tempfile.TemporaryDirectory() as tmp:
                single.append(_restart_run(Path(tmp)))
            print(f"run {i + 1}/{runs}: pair {pair[-1]}, restart {single[-1]}", file=sys.stderr)
    finally:
        server.stop()
    takeover = [r["takeover_s"] for r in pair]
    restart = [r["takeover_s"] for r in single]
    return {
        "benchmark": "failover",
        "runs": runs,
        "lease_s": LEASE_SECONDS,
        "renew_s": RENEW_SECONDS,
        "takeover_s": [round(t, 2) for t in takeover],
        "takeover": _summary(takeover),
        "poll_gap": _summary([r["gap_s"] for r in pair]),
        "target_s": 15.0,
        "within_target": all(t < 15.0 for t in takeover),
        "baseline_restart": _summary(restart),
        "baseline_poll_gap": _summary([r["gap_s"] for r in single]),
        "takeover_vs_restart": round(statistics.median(takeover) / statistics.median(restart), 2),
        "takeover_vs_lease_floor": round(statistics.median(takeover) / LEASE_SECONDS, 2),
        "standby_cpu_share": round(statistics.median(r["cpu"] for r in pair), 4),
        "wall_s": round(time.monotonic() - wall, 1),
        "bench_cpu_s": round(time.process_time() - cpu, 1),
    }
