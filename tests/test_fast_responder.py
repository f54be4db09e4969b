"""The fast responder and wire emulation serve what the physics says, in the wire's time."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import yaml

from controller.config import LoadedConfig, load_config
from controller.control.audit import Actor
from controller.control.dispatcher import CommandRequest, CommandStatus
from controller.control.selector import GroupSelector
from controller.control.writes import Action
from simulators.city_generator import generate_city
from simulators.fast_responder import WireModel
from tests.helpers import city_with_controller

ENGINEER = Actor("test", "", "engineer")


def _free_base_port(count: int) -> int:
    """A base port with ``count`` free ports after it (probed, not guessed)."""
    for base in range(31000, 60000, 97):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


def _city(tmp_path: Path, simulator: dict[str, Any], **more: Any) -> LoadedConfig:
    doc = generate_city(cabinets=4, lamps=40, gauges=2, base_port=_free_base_port(6))
    doc["simulator"] = simulator
    doc["data_dir"] = str(tmp_path / "var")
    doc.update(more)
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_config(path)


async def test_the_fast_responder_serves_the_physics_images(tmp_path: Path) -> None:
    loaded = _city(tmp_path, {"responder": "fast"})
    async with city_with_controller(loaded) as (city, controller):
        assert city.fast is not None and not city._servers  # every link is a fast line
        batch = await controller.poller.poll_all_once()
        assert controller.poller.stats.failed_polls == 0
        registry = controller.registry
        cabinet = registry.by_id["CAB-0001"]
        model = city.cabinets["CAB-0001"]
        values = dict(
            zip(
                batch.point[batch.device == cabinet.index],
                batch.value[batch.device == cabinet.index],
                strict=True,
            )
        )
        names = [p.name for p in cabinet.points]
        assert values[names.index("lamp_count")] == len(model.lamps)
        assert 215 <= values[names.index("voltage_a")] <= 235
        lamp = registry.lamps_of(cabinet.index)[0]
        lamp_values = batch.value[batch.device == lamp.index]
        assert len(lamp_values) == len(lamp.points)


async def test_a_slow_contactor_is_confirmed_only_once_it_has_followed(tmp_path: Path) -> None:
    loaded = _city(
        tmp_path,
        {"responder": "fast", "contactor_delay_ms": [300, 300]},
        control={"confirm_interval": 0.05, "db_path": "control.db"},
    )
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        started = time.time()
        command = await controller.commands.execute(
            CommandRequest(Action.CIRCUIT_OFF, GroupSelector(cabinets=["CAB-0002"])),
            ENGINEER,
            "test",
        )
        assert command.status is CommandStatus.CONFIRMED
        done = [r.done_at for r in command.results.values() if r.done_at is not None]
        # Read back every 50 ms: confirmed after the contactors' 300 ms, not at the first read.
        assert len(done) == 4
        assert 0.3 <= min(done) - started < 1.5
        assert city.cabinets["CAB-0002"].circuit_cmd == [False] * 4


def test_the_wire_model_counts_eleven_bits_a_character_at_8e1() -> None:
    from controller.config import WireConfig
    from controller.device_config import LinkConfig

    wire = WireConfig(baudrate=9600, parity="E", dtu_rtt_ms=150)
    dtu = LinkConfig(id="d", kind="rtu_over_tcp", host="127.0.0.1", port=1)
    model = WireModel.of(wire, dtu)
    # 10 registers: an 8-byte request, a 25-byte answer, two 3.5-character silences.
    expected = (8 + 25 + 7) * 11 / 9600 + 0.005
    assert abs(model.rtu_read_time(10) - expected) < 1e-9
    assert model.rtt_s == 0.15
    gateway = LinkConfig(id="g", kind="modbus_tcp", host="127.0.0.1", port=1)
    assert WireModel.of(wire, gateway).rtt_s == 0.0
