"""A protocol added from outside the core runs end to end.

``tests/toy_protocol`` is a push protocol written against drivers/sources.py
alone. Named in a config, its readings go through the poller's batches into
the stores, the latest values, the rules and the alarms, and the API shows the
device's health, exactly as for a protocol shipped with streetsense.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.config import LoadedConfig
from controller.runtime import Controller
from drivers.errors import ConfigError
from simulators.servers import free_port
from tests.helpers import api_client

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]


def toy_city(tmp_path: Path, port: int) -> dict[str, Any]:
    """A site whose only device is a water gauge reporting by the toy protocol."""
    return {
        "data_dir": str(tmp_path / "var"),
        "polling": {"batch_interval": 0.1},
        "protocol_packages": ["tests.toy_protocol"],
        "sources": [{"id": "toy1", "protocol": "toy-line", "port": port}],
        "source_devices": [
            {
                "id": "TOY-G1",
                "source": "toy1",
                "profile": "wl-radar",
                "district": "江城区",
                "levels": {"blue": 0.1, "yellow": 0.2, "orange": 0.3, "red": 0.4},
            }
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


async def _until(check: Callable[[], Any], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_a_toy_push_protocol_reaches_stores_rules_and_the_api(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    port = free_port()
    loaded = write_config(toy_city(tmp_path, port))
    async with Controller(loaded) as controller, api_client(controller) as client:
        await controller.start()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"TOY TOY-G1 water_level=0.05 battery_voltage=12.6\n")
        writer.write(b"TOY TOY-G1 water_level=0.35\n")
        await writer.drain()

        async def alarmed() -> bool:
            alarms = (await client.get("/alarms")).json()
            return any(a["device"] == "TOY-G1" for a in alarms)

        await _until(alarmed)
        [alarm] = (await client.get("/alarms")).json()
        assert (alarm["rule"], alarm["level"]) == ("flood-level", 3)  # orange: 0.35 m
        device = (await client.get("/devices/TOY-G1")).json()
        assert device["health"]["online"] is True
        values = {r["point"]: r["value"] for r in device["readings"]}
        assert values["water_level"] == 0.35 and values["battery_voltage"] == 12.6

        async def stored() -> bool:
            rows = (await client.get("/telemetry/latest", params={"device": "TOY-G1"})).json()
            return bool(rows) and rows[0]["values"].get("water_level") == 0.35

        await _until(stored)
        # A line the protocol cannot read is counted on the device, not a crash.
        writer.write(b"TOY TOY-G1 water_level=high\n")
        await writer.drain()

        async def garbled() -> bool:
            health = (await client.get("/devices/TOY-G1")).json()["health"]
            return bool(health["errors"].get("garbled") == 1)

        await _until(garbled)
        writer.close()


def test_an_unknown_protocol_or_a_bad_protocol_key_names_the_key(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = toy_city(tmp_path, 5999)
    doc["sources"] = [{"id": "toy1", "protocol": "carrier-pigeon", "port": 5999}]
    with pytest.raises(ConfigError) as unknown:
        write_config(doc)
    assert unknown.value.key == "sources[0] (toy1).protocol"
    assert "carrier-pigeon" in unknown.value.reason and "toy-line" in unknown.value.reason
    doc["sources"] = [{"id": "toy1", "protocol": "toy-line", "port": 70000}]
    with pytest.raises(ConfigError) as bad_port:
        write_config(doc)
    assert bad_port.value.key == "sources[0] (toy1).port"
    doc["sources"] = [{"id": "toy1", "protocol": "toy-line", "port": 5999}]
    doc["source_devices"][0]["source"] = "toy2"
    with pytest.raises(ConfigError) as no_source:
        write_config(doc)
    assert no_source.value.key == "source_devices[0] (TOY-G1).source"
