"""A small field run as a city would: ``streetsense simulate`` devices, ``streetsense run``.

Shared by the tests and benchmarks that run the controller as a subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from simulators.servers import free_port


def field_config(folder: Path, api_port: int, **sections: Any) -> Path:
    """A small field: one DTU with a cabinet, one gateway with a gauge (``sections`` added)."""
    doc: dict[str, Any] = {
        "site": {"city": "test-field", "timezone": "Asia/Shanghai"},
        # Readings wait two seconds in the poller's buffer: the stop must hand them on.
        "polling": {
            "cabinet_interval": 0.5,
            "gauge_interval": 0.1,
            "lamp_interval": 0.5,
            "batch_interval": 2.0,
        },
        "links": [
            {"id": "dtu-1", "kind": "rtu_over_tcp", "host": "127.0.0.1", "port": free_port()},
            {"id": "gw-1", "kind": "modbus_tcp", "host": "127.0.0.1", "port": free_port()},
        ],
        "cabinets": [
            {
                "id": "CAB-1",
                "link": "dtu-1",
                "unit": 1,
                "lamp_runs": [{"circuit": 1, "count": 3}, {"circuit": 2, "count": 3}],
            }
        ],
        "gauges": [{"id": "WL-1", "link": "gw-1", "unit": 1}],
        "api": {"port": api_port},
        "control": {"confirm_timeout": 3.0, "confirm_interval": 0.1},
    }
    doc.update(sections)
    path = folder / "field.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def streetsense(*args: str, cwd: Path, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process ended: {proc.communicate()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@contextmanager
def simulated_field(config: Path) -> Iterator[subprocess.Popen[str]]:
    """``streetsense simulate`` of the config's devices, once every link listens.

    Yields the simulator's process, so that a test can pause every device at once.
    """
    sim = streetsense("simulate", "-c", str(config), cwd=config.parent)
    try:
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        for link in doc["links"]:
            wait_for_port(link["port"], sim)
        yield sim
    finally:
        sim.send_signal(signal.SIGINT)
        sim.communicate(timeout=20)


def create_key(config: Path, name: str, role: str) -> str:
    command = ["keys", "create", "-c", str(config), "--name", name, "--role", role]
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", *command],
        capture_output=True,
        text=True,
        check=True,
        cwd=config.parent,
    ).stdout
    return out.split()[0]


@dataclass
class FieldController:
    """One ``streetsense run`` of a field as its service manager would run it: its own
    data folder, node name and API address (for a pair), its output in files there."""

    name: str
    config: Path
    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> Path:
        """Its embedded telemetry store."""
        return self.folder / "var" / "streetsense.db"

    def start(self) -> None:
        """Start it and wait until its API listens."""
        env = {
            **os.environ,
            "STREETSENSE_NODE": self.name,
            "STREETSENSE_ADVERTISE_URL": self.url,
            "STREETSENSE_DATA_DIR": str(self.folder / "var"),
        }
        self.folder.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "api.cli", "run", "-c", str(self.config)]
        with open(self.folder / "out.log", "ab") as out, open(self.folder / "err.log", "ab") as err:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=self.folder,
                env=env,
                stdout=out,
                stderr=err,
            )
        wait_for_port(self.port, self.proc)  # type: ignore[arg-type]

    def health(self) -> dict[str, Any]:
        """Its ``/health`` (an empty one while it does not answer)."""
        try:
            body: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return body

    def serving(self, role: str, health: dict[str, Any]) -> bool:
        """Whether ``health`` says ``role`` (single or leader: with every device answering)."""
        if not health:
            return False
        pair = health.get("leadership") or {"role": "single"}
        flowing = health.get("online") == health.get("poll_targets", -1) > 0
        return bool(pair.get("role") == role and (role == "standby" or flowing))

    def wait_for(self, role: str, timeout: float = 30.0) -> float:
        """Seconds until it is ``role``; TimeoutError, with its health and log, if not."""
        started = time.monotonic()
        health = self.health()
        while not self.serving(role, health):
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} ended ({self.proc.returncode}): {self.log()}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{self.name} is not {role}: {health}, {self.log()}")
            time.sleep(0.05)
            health = self.health()
        return time.monotonic() - started

    def log(self) -> str:
        """The end of what it wrote to stderr."""
        return (self.folder / "err.log").read_text(encoding="utf-8", errors="replace")[-3000:]

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, should it be paused), kill -9 after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
