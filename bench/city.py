"""The benchmarks' simulated city: generated, served by a simulator process on its own core."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import yaml

from controller.config import LoadedConfig, load_config
from drivers.modbus.links import ModbusLink
from simulators.city_generator import (
    SHANTOU_GAUGES,
    YANGJIANG_CABINETS,
    YANGJIANG_SINGLE_LAMP_CONTROLLERS,
    generate_city,
)

Measure = Callable[[LoadedConfig, float], Coroutine[Any, Any, dict[str, Any]]]


def requests_made(links: Mapping[str, ModbusLink]) -> int:
    """Requests the controller's links have sent so far."""
    return sum(link.health.requests for link in links.values())


def pin_to_cpu(cpu: int) -> None:
    """Keep this process on one core (the simulator gets the other one)."""
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def start_simulator(
    config: Path, control_port: int | None = None, token: str = ""
) -> subprocess.Popen[str]:
    """``streetsense simulate`` for the config, on core 1; returns once it serves.

    With ``control_port``, faults can be injected over its control API with ``token``.
    Its log goes to ``simulator.log`` beside the config (a pipe nobody reads would
    fill and stop the devices answering).
    """
    command = [sys.executable, "-m", "api.cli", "simulate", "-c", str(config)]
    if control_port is not None:
        command += ["--control-port", str(control_port)]
    log_path = config.parent / "simulator.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=lambda: pin_to_cpu(1),
            env=os.environ | ({"STREETSENSE_SIM_TOKEN": token} if token else {}),
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("simulating"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"simulator did not start: {line} {log_path.read_text()[-3000:]}")
    if control_port is not None:
        proc.stdout.readline()  # the control API's address: it listens
    return proc


def city_of_size(size: float, base_port: int, meters: bool = False) -> dict[str, Any]:
    """The generated city scaled to ``size`` (1.0: Yangjiang's cabinets and lamps);
    with ``meters``, a DL/T 645 meter beside each cabinet."""
    return generate_city(
        cabinets=max(1, round(YANGJIANG_CABINETS * size)),
        lamps=round(YANGJIANG_SINGLE_LAMP_CONTROLLERS * size),
        gauges=max(1, round(SHANTOU_GAUGES * size)),
        base_port=base_port,
        meters=meters,
    )


def run_against_city(
    base_port: int, size: float, extra: dict[str, Any], measure: Measure, meters: bool = False
) -> dict[str, Any]:
    """Generate a city of ``size`` (1.0: Yangjiang), serve it, run ``measure``.

    ``extra`` config sections are added to the generated city; a ``{folder}`` in a
    string value is the temporary folder the city's files live in.
    """
    doc = city_of_size(size, base_port, meters)
    with tempfile.TemporaryDirectory() as folder:
        for key, section in extra.items():
            doc[key] = (
                section.format(folder=folder)
                if isinstance(section, str)
                else {
                    k: v.format(folder=folder) if isinstance(v, str) else v
                    for k, v in section.items()
                }
            )
        config = Path(folder) / "city.yaml"
        config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        loaded = load_config(config)
        simulator = start_simulator(config)
        try:
            pin_to_cpu(0)
            return asyncio.run(measure(loaded, size))
        finally:
            simulator.terminate()
            simulator.wait(timeout=30)
