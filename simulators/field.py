"""A small field run as a city would: ``streetsense simulate`` devices, ``streetsense run``.

Shared by the tests and benchmarks that run the controller as a subprocess.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
def simulated_field(config: Path) -> Iterator[None]:
    sim = streetsense("simulate", "-c", str(config), cwd=config.parent)
    try:
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        for link in doc["links"]:
            wait_for_port(link["port"], sim)
        yield
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
