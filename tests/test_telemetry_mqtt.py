"""Telemetry over a real Mosquitto broker: topics, payloads, a broker restart, MQTT devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from controller.config import LoadedConfig, parse_config
from controller.registry import Registry
from controller.runtime import Controller
from controller.telemetry.lineprotocol import serialize_batch
from controller.telemetry.mqtt import TelemetryMessages
from controller.telemetry.schema import schema_for_registry
from drivers.readings import ReadingBatch, milliseconds
from simulators.fleet import SimulatedCity
from simulators.servers import Mosquitto
from tests.test_telemetry_influx import Collector, city


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


def mqtt_city(broker: Mosquitto, tmp_path: Path, qos: int = 0) -> dict[str, Any]:
    doc = city(None, tmp_path / "spool")
    doc["mqtt"] = {"port": broker.port, "telemetry_qos": qos, "keepalive": 5}
    return doc


class Subscriber:
    """A persistent-session QoS 1 subscriber that reconnects and keeps every message."""

    def __init__(self, port: int, topic: str) -> None:
        self.port = port
        self.topic = topic
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier="test-sub",
                    clean_session=False,
                    queue_type=self._recorder(),
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.connected.set()
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    def _recorder(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """Messages are kept as they arrive: aiomqtt drops those still queued at a disconnect."""
        messages = self.messages

        class Recorder(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, m: aiomqtt.Message) -> None:
                assert isinstance(m.payload, bytes)
                messages.append((str(m.topic), json.loads(m.payload), bool(m.retain)))

        return Recorder

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def running_city(loaded: LoadedConfig) -> AsyncIterator[SimulatedCity]:
    async with SimulatedCity(loaded) as sim:
        yield sim


async def wait_for(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_cabinet_message_carries_its_lamps_and_state_is_retained(
    broker: Mosquitto, tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(mqtt_city(broker, tmp_path))
    async with (
        Subscriber(broker.port, "streetsense/test-city/#") as sub,
        running_city(loaded),
        Controller(loaded) as controller,
    ):
        await controller.open_stores()
        batch = await controller.poller.poll_all_once()
        await controller.telemetry.on_batch(batch)
        await wait_for(lambda: len(sub.messages) >= 4)
    topics = {topic: payload for topic, payload, _ in sub.messages}
    cabinet = topics["streetsense/test-city/cabinet/CAB-1:a.b/telemetry"]
    assert set(cabinet["lamps"]) == {"CAB-1:a.b-L001", "CAB-1:a.b-L002", "CAB-1:a.b-L003"}
    assert cabinet["lamps"]["CAB-1:a.b-L001"]["values"]["lamp_on"] == 1
    assert 200 < cabinet["values"]["voltage_a"] < 250 and cabinet["quality"] == "good"
    gauge = topics["streetsense/test-city/gauge/WL-1/telemetry"]
    assert gauge["values"]["water_level"] == 0 and gauge["ts"] > 1.7e9
    assert not any("/lamp/" in t for t in topics)  # lamps ride in their cabinet's message
    state = topics["streetsense/test-city/gauge/WL-1/state"]
    assert state["online"] is True
    # A late subscriber still learns the state: it is retained.
    async with aiomqtt.Client("127.0.0.1", broker.port) as late:
        await late.subscribe("streetsense/test-city/+/+/state", qos=1)
        first = await asyncio.wait_for(anext(late.messages), 5)
        assert first.retain and json.loads(first.payload)["online"] is True


async def test_every_qos1_message_arrives_across_a_broker_restart(
    broker: Mosquitto, tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    loaded = write_config(mqtt_city(broker, tmp_path, qos=1))
    collector = Collector()
    async with Subscriber(broker.port, "streetsense/test-city/+/+/telemetry") as sub:
        async with running_city(loaded):
            controller = Controller(loaded)
            controller.poller.subscribe(collector)
            await controller.start()
            try:
                mqtt = controller.telemetry.mqtt
                assert mqtt is not None
                await asyncio.sleep(1.2)
                await asyncio.to_thread(broker.stop)
                # The broker stays away 2 s, and until readings have gone to the disk spool (on
                # a busy machine the first failed publish can take longer than that).
                await asyncio.sleep(2.0)
                await wait_for(lambda: mqtt.spool.stats.bytes > 0, 20)
                await asyncio.to_thread(broker.start)
                # The reconnect backs off with jitter: wait for the spool to drain, not a
                # fixed time, so that the last batch (sent at stop) finds the broker.
                await wait_for(lambda: mqtt.stats.server_up and mqtt.spool.stats.bytes == 0, 20)
            finally:
                await controller.stop()
        sent = {
            (controller.registry.devices[d].id, round(float(ts), 3))
            for b in collector.batches
            for d, ts in zip(b.device, b.ts, strict=True)
            if controller.registry.devices[d].parent is None
        }
        await wait_for(lambda: {(p["device"], p["ts"]) for _, p, _ in sub.messages} >= sent, 15)
    assert len(sent) > 20


async def test_json_gauge_over_mqtt_becomes_readings_and_bad_json_is_counted(
    broker: Mosquitto, tmp_path: Path, write_config: Callable[[dict[str, Any]], LoadedConfig]
) -> None:
    doc = mqtt_city(broker, tmp_path)
    doc["mqtt_devices"] = [
        {
            "id": "WL-M1",
            "profile": "wl-mqtt-ultrasonic",
            "topic": "vendor/gauges/868001/up",
            "road": "滨江路",
        }
    ]
    loaded = write_config(doc)
    async with Controller(loaded) as controller:
        await controller.open_stores()
        listener = controller.telemetry.mqtt_listener
        assert listener is not None
        await asyncio.wait_for(listener.subscribed.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", broker.port) as device:
            await device.publish("vendor/gauges/868001/up", b"{not json", qos=1)
            await device.publish(
                "vendor/gauges/868001/up",
                json.dumps(
                    {"ts": 1795368000, "level_cm": 23.4, "status": 0, "bat": 3.61, "rssi": -78}
                ),
                qos=1,
            )
        await wait_for(lambda: listener.received == 1 and listener.rejected == 1)
        await controller.poller.flush()
        gauge = controller.registry.by_id["WL-M1"]
        store = controller.telemetry.embedded
        assert store is not None
        latest = {r.point: (r.ts, r.value) for r in await store.latest([gauge])}
    assert latest["water_level"][0] == 1795368000.0
    assert latest["water_level"][1] == pytest.approx(0.234)
    assert latest["signal_strength"][1] == -78
    assert controller.poller.health[gauge.index].online


def test_a_reading_has_the_same_millisecond_on_mqtt_as_in_the_stores(tmp_path: Path) -> None:
    """A time on a half millisecond (one reading in 2,000): the MQTT message's ``ts`` is the
    millisecond the embedded store and InfluxDB keep, not one rounded apart from them."""
    doc = {
        "links": [{"id": "gw-1", "kind": "modbus_tcp", "host": "127.0.0.1", "port": 1502}],
        "gauges": [{"id": "WL-1", "link": "gw-1", "unit": 1}],
    }
    registry = Registry(parse_config(doc, tmp_path / "config.yaml"))
    ts = 1796655063.1255  # round(ts, 3) gives ...125; the stores keep ...126
    batch = ReadingBatch(
        device=np.zeros(1, np.int32),
        point=np.zeros(1, np.int16),
        ts=np.full(1, ts),
        value=np.full(1, 1.5),
        quality=np.zeros(1, np.uint8),
    )
    [message] = TelemetryMessages(registry, "streetsense/test", 1).for_batch(batch)
    stored = int(milliseconds(batch.ts)[0])
    assert stored == 1796655063126
    assert round(message["payload"]["ts"] * 1000) == stored
    line = serialize_batch(batch, schema_for_registry(registry))
    assert line.decode().rstrip("\n").endswith(f" {stored}")
