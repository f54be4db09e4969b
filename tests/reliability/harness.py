"""A field, a real influxd and broker, and the controller as a process, for fault injection.

Points are counted as InfluxDB counts them: one per device per poll (series and
timestamp). The controller's embedded store, written from the same batches, is
the reference for what was polled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from controller.telemetry.embedded import stored_polls
from simulators.field import create_key, field_config, simulated_field, wait_for_port
from simulators.servers import Influxd, Mosquitto, free_port

Point = tuple[str, int]
#: Seconds between the poller's hand-overs to the pipeline in these fields.
BATCH_INTERVAL = 1.0


def wait(check: Callable[[], bool], within: float, what: str) -> float:
    """Poll ``check`` until it holds; the time it took. Fails naming ``what``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


class Subscriber:
    """A persistent QoS 1 MQTT subscriber (fixed id, clean session off) counting telemetry."""

    def __init__(self, port: int, topic: str) -> None:
        self.points: list[Point] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="reliability-sub", clean_session=False
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        doc = json.loads(message.payload)
        ts = round(float(doc["ts"]) * 1000)
        with self._lock:
            self.points.append((doc["device"], ts))
            self.points += [(lamp, ts) for lamp in doc.get("lamps", {})]

    def received(self) -> set[Point]:
        with self._lock:
            return set(self.points)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Rig:
    """A field config in ``folder`` with the controller run as ``streetsense run``."""

    folder: Path
    influxd: Influxd
    broker: Mosquitto | None = None
    spool: dict[str, Any] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    logs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        sections: dict[str, Any] = {
            "polling": {
                "cabinet_interval": 0.5,
                "gauge_interval": 0.2,
                "lamp_interval": 0.5,
                "batch_interval": BATCH_INTERVAL,
            },
            "storage": {
                "influxdb": {"url": self.influxd.url, "database": "field", "timeout": 10},
                "spool": self.spool,
            },
            "api": {"port": self.api_port},
        }
        if self.broker is not None:
            sections["mqtt"] = {"port": self.broker.port, "keepalive": 5}
        self.config = field_config(self.folder, self.api_port, **sections)
        self.key = create_key(self.config, "reliability", "viewer")

    @property
    def data(self) -> Path:
        return self.folder / "var"

    def start(self) -> None:
        # A file, not a pipe: a pipe nobody reads would block the controller once full.
        self.log_path = self.folder / f"controller-{len(self.logs)}.log"
        log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "run", "-c", str(self.config)],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        wait_for_port(self.api_port, self.proc)

    def log(self) -> str:
        """What the controller wrote so far in this run."""
        return self.log_path.read_text(encoding="utf-8")

    def _get(self, path: str) -> Any:
        response = httpx.get(
            f"http://127.0.0.1:{self.api_port}{path}",
            headers={"X-API-Key": self.key},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def sinks(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self._get("/telemetry/sinks")}

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/health")
        return result

    def delivered(self, sink: str) -> bool:
        """The sink took data and nothing waits for it."""
        return caught_up(self.sinks()[sink])

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; the process must end cleanly."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        text = self.log()
        self.logs.append(text)
        assert self.proc.returncode == 0, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        self.proc = None

    def kill(self) -> float:
        """kill -9; the moment it was sent."""
        assert self.proc is not None
        killed_at = time.time()
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.logs.append(self.log())
        self.proc = None
        return killed_at

    def embedded_points(self) -> set[Point]:
        """(device, ms) of every poll the controller stored in its embedded store."""
        return stored_polls(self.data / "streetsense.db")

    def influx_points(self) -> list[Point]:
        """(device, ms) of every point in InfluxDB (a list: duplicates would show)."""
        return influx_points(self.influxd)

    def spool_records(self, sink: str) -> list[tuple[int, bytes]]:
        """(seq, payload) waiting in a sink's spool, read with sqlite3."""
        with contextlib.closing(sqlite3.connect(self.data / "spool" / sink / "spool.sqlite")) as db:
            return [
                (s, bytes(p))
                for s, p in db.execute("SELECT seq, payload FROM records ORDER BY seq")
            ]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def caught_up(sink: dict[str, Any]) -> bool:
    """A sink's status (``/telemetry/sinks``) says it took data and nothing waits for it."""
    return bool(sink["up"] and sink["delivered_points"] > 0 and sink["pending_points"] == 0)


def influx_points(influxd: Influxd, database: str = "field") -> list[Point]:
    """(device, ms) of every point in ``database`` (a list: duplicates would show)."""
    out: list[Point] = []
    for measurement in ("cabinet", "lamp", "gauge"):
        for series in influxd.query(database, f'SELECT "quality", "device" FROM "{measurement}"'):
            values = series["values"]
            assert isinstance(values, list)
            out += [(row[2], int(row[0])) for row in values]
    return out


def line_points(payload: bytes) -> set[Point]:
    """(device, ms) of the lines of a line-protocol payload."""
    out = set()
    for line in payload.decode().splitlines():
        tags = line.split(" ", 1)[0].split(",")[1:]
        device = dict(t.split("=", 1) for t in tags)["device"]
        out.add((device, int(line.rsplit(" ", 1)[1])))
    return out


@contextlib.contextmanager
def influx_server(folder: Path) -> Iterator[Influxd]:
    """A real influxd, stopped afterwards even if a test left it paused."""
    server = Influxd(folder)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            resume(server)  # a paused server would not hear the SIGTERM
        server.stop()


def pause(server: Influxd) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


def resume(server: Influxd) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def running(rig: Rig) -> Iterator[Rig]:
    """The field's devices up and the controller started; everything ended afterwards."""
    with simulated_field(rig.config):
        try:
            rig.start()
            yield rig
        finally:
            rig.close()
