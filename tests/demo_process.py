"""``streetsense demo`` run as a newcomer runs it, for the tests that need the whole thing."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from simulators.servers import free_port

ROOT = Path(__file__).parent.parent
SIM_TOKEN = "test-simulator-token"


@dataclass
class Demo:
    """Addresses of a running demo, and the API keys it printed (by role)."""

    api: str
    control: str
    keys: dict[str, str] = field(default_factory=dict)
    #: The demo's people by role: (username, password).
    logins: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The demo's process, for tests about signals and exit codes.
    proc: subprocess.Popen[str] | None = None
    #: What it printed after its keys (stdout and stderr), the last lines.
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=2000))
    readers: list[threading.Thread] = field(default_factory=list)

    def output(self) -> str:
        """Everything printed so far; after the process ended, all of it."""
        if self.proc is not None and self.proc.poll() is not None:
            for reader in self.readers:
                reader.join(timeout=10)
        return "".join(self.lines)

    def get(self, url: str, role: str = "admin", **kw: Any) -> httpx.Response:
        """GET from the demo's API with the key it printed for ``role`` (reads need one)."""
        headers = {"X-API-Key": self.keys[role], **kw.pop("headers", {})}
        return httpx.get(url, headers=headers, **kw)


def _drain(stream: IO[str] | None, into: collections.deque[str]) -> None:
    if stream is None:
        return
    for line in stream:
        into.append(line)


@contextmanager
def run_demo(config: Path | None = None, duration: int = 300) -> Iterator[Demo]:
    """Start the demo (the checkout's config.yaml by default); stop it on leaving."""
    port, control_port = free_port(), free_port()
    command = [sys.executable, "-m", "api.cli", "demo"]
    if config is not None:
        command += ["-c", str(config)]
    command += [
        "--port",
        str(port),
        "--sim-control-port",
        str(control_port),
        "--duration",
        str(duration),
    ]
    proc = subprocess.Popen(
        command,
        cwd=config.parent if config is not None else ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STREETSENSE_SIM_TOKEN": SIM_TOKEN},
    )
    demo = Demo(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{control_port}", proc=proc)
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while len(demo.logins) < 5 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.match(r"demo API key (\w+)\s+(ssk_\S+)", line)
            if found:
                demo.keys[found[1]] = found[2]
            login = re.match(r"demo login\s+(\S+)\s+password (\S+)", line)
            if login:
                demo.logins[login[1].replace("-", "_")] = (login[1], login[2])
        # Read the rest of its output all along: a pipe nobody reads fills up, and the
        # demo would then block on its next log line.
        for stream in (proc.stdout, proc.stderr):
            reader = threading.Thread(target=_drain, args=(stream, demo.lines), daemon=True)
            reader.start()
            demo.readers.append(reader)
        while True:
            try:
                health = httpx.get(f"{demo.api}/health", timeout=1).json()
                if health["online"] == health["poll_targets"]:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                raise AssertionError("demo did not come up: " + demo.output())
            time.sleep(0.3)
        yield demo
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def demo_config(folder: Path, api: dict[str, Any] | None = None) -> Path:
    """A copy of config.yaml in ``folder`` with free ports (links and listeners), its
    resources found from there, and ``api`` settings merged in."""
    doc = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    for link in [*doc["links"], *doc.get("listeners", [])]:
        link["port"] = free_port()
    doc["simulator"]["scenario"] = str(ROOT / doc["simulator"]["scenario"])
    doc["site"]["grid_cells"] = str(ROOT / doc["site"]["grid_cells"])
    doc["api"].update(api or {})
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return config
