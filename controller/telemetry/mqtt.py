"""MQTT: telemetry and device state out to the city's bus, JSON devices in.

Topics (``<prefix>`` is ``topic_prefix``/``site.city``):

- ``<prefix>/<class>/<device>/telemetry``: one JSON message per device per poll;
  a cabinet's message carries its lamps (one message per cabinet, not per lamp);
- ``<prefix>/<class>/<device>/state``: retained, QoS 1, when a device goes
  online or offline.

Outgoing messages go through :class:`SpooledDelivery`, so while the broker is
away they wait on disk, in order. Delivery is at least once: a payload cut off
half way is sent again whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import numpy as np

from controller.registry import Registry
from controller.storage_config import MqttConfig
from controller.telemetry.delivery import DeliveryError, RejectedPayload
from controller.telemetry.lineprotocol import line_groups
from drivers.health import DeviceHealth
from drivers.mqtt_profile import MqttDeviceProfile
from drivers.readings import Quality, ReadingBatch, milliseconds

log = logging.getLogger(__name__)
# aiomqtt warns on every publish once more than 10 are pending; our spool counts that.
_quiet = logging.getLogger("streetsense.mqtt.client")
_quiet.setLevel(logging.ERROR)


@dataclass(frozen=True)
class MqttCredentials:
    """Resolved secrets for the broker (from environment variables)."""

    username: str | None = None
    password: str | None = None


def _tls(cfg: MqttConfig) -> aiomqtt.TLSParameters | None:
    if cfg.tls is None:
        return None
    return aiomqtt.TLSParameters(
        ca_certs=cfg.tls.ca_file,
        certfile=cfg.tls.cert_file,
        keyfile=cfg.tls.key_file,
        cert_reqs=ssl.CERT_REQUIRED,
    )


#: QoS 1 messages a publisher keeps unacknowledged on the wire (paho's default is 20).
PUBLISH_WINDOW = 100


def kept_inbox(inbox: asyncio.Queue[aiomqtt.Message]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue type for aiomqtt that hands every received message to ``inbox``.

    aiomqtt's message iterator raises on a disconnect while messages it has
    already acknowledged to the broker still sit in the client's own queue, and
    the next client starts with an empty one: at QoS 1 those messages would be
    lost. Kept in a queue that outlives the client, they are handled after all.
    """

    class Inbox(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            inbox.put_nowait(item)

    return Inbox


def make_client(
    cfg: MqttConfig,
    identifier: str,
    creds: MqttCredentials,
    inbox: asyncio.Queue[aiomqtt.Message] | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client with a persistent session (clean_session off, fixed id).

    With ``inbox``, received messages go there (see :func:`kept_inbox`).
    """
    return aiomqtt.Client(
        queue_type=kept_inbox(inbox) if inbox is not None else asyncio.Queue,
        max_inflight_messages=PUBLISH_WINDOW,
        hostname=cfg.host,
        port=cfg.port,
        identifier=identifier,
        clean_session=False,
        username=creds.username,
        password=creds.password,
        tls_params=_tls(cfg),
        keepalive=cfg.keepalive,
        logger=_quiet,
        timeout=10,
    )


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 9)


class TelemetryMessages:
    """Builds the JSON messages for a batch and for device state changes."""

    def __init__(self, registry: Registry, prefix: str, telemetry_qos: int) -> None:
        self.registry = registry
        self.prefix = prefix.rstrip("/")
        self.qos = telemetry_qos
        self._state: dict[int, bool] = {}

    def topic(self, device_index: int, kind: str) -> str:
        """``<prefix>/<class>/<device>/<kind>``."""
        d = self.registry.devices[device_index]
        return f"{self.prefix}/{d.device_class}/{d.id}/{kind}"

    def for_batch(self, batch: ReadingBatch) -> list[dict[str, Any]]:
        """One telemetry message per polled device; lamps ride in their cabinet's message."""
        starts, ends = line_groups(batch)
        docs: dict[tuple[int, int], dict[str, Any]] = {}
        order: list[tuple[int, int]] = []
        values = batch.value.tolist()
        points = batch.point.tolist()
        times = milliseconds(batch.ts).tolist()
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            index = int(batch.device[start])
            ts = times[start]
            device = self.registry.devices[index]
            reading = {
                "values": {
                    device.points[points[i]].name: _clean(values[i]) for i in range(start, end)
                },
                "quality": Quality(int(batch.quality[start:end].max())).name.lower(),
            }
            owner = device.parent if device.parent is not None else index
            key = (owner, ts)
            if key not in docs:
                owner_dev = self.registry.devices[owner]
                docs[key] = {
                    "device": owner_dev.id,
                    "class": owner_dev.device_class,
                    # The milliseconds the other sinks store, in seconds.
                    "ts": ts / 1000,
                }
                order.append(key)
            if owner == index:
                docs[key].update(reading)
            else:
                docs[key].setdefault("lamps", {})[device.id] = reading
        return [
            {
                "topic": self.topic(key[0], "telemetry"),
                "payload": docs[key],
                "qos": self.qos,
                "retain": False,
            }
            for key in order
        ]

    def for_state(self, health: list[DeviceHealth], indices: list[int]) -> list[dict[str, Any]]:
        """Retained state messages for devices whose online state changed since last time."""
        out = []
        for index in indices:
            h = health[index]
            if h.never_polled or self._state.get(index) == h.online:
                continue
            self._state[index] = h.online
            out.append(
                {
                    "topic": self.topic(index, "state"),
                    "payload": {
                        "device": self.registry.devices[index].id,
                        "online": h.online,
                        "last_success": h.last_success,
                        "last_error": h.last_error,
                    },
                    "qos": 1,
                    "retain": True,
                }
            )
        return out


def encode_messages(messages: list[dict[str, Any]]) -> bytes:
    """A spoolable payload: one JSON message per line."""
    return b"".join(
        json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        for m in messages
    )


@dataclass(frozen=True)
class OutgoingMessage:
    """One message of a spooled payload, ready to publish."""

    topic: str
    payload: str
    qos: int
    retain: bool


def decode_messages(payload: bytes) -> list[OutgoingMessage]:
    """The messages of a payload :func:`encode_messages` wrote; RejectedPayload if it is not one.

    Checked whole before anything is published, so a bad payload is set aside
    without half of it on the bus.
    """
    out = []
    for number, line in enumerate(payload.splitlines(), 1):
        try:
            m = json.loads(line)
            out.append(
                OutgoingMessage(
                    str(m["topic"]),
                    json.dumps(m["payload"], ensure_ascii=False, separators=(",", ":")),
                    int(m["qos"]),
                    bool(m["retain"]),
                )
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise RejectedPayload(f"line {number} is not a spooled message: {exc}") from exc
    return out


class MqttPublisher:
    """Publishes spooled message payloads to the broker, reconnecting as needed."""

    def __init__(self, cfg: MqttConfig, identifier: str, creds: MqttCredentials) -> None:
        self.name = f"mqtt {cfg.host}:{cfg.port}"
        self.cfg = cfg
        self.identifier = identifier
        self.creds = creds
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: aiomqtt.Client | None = None

    async def _connected(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                make_client(self.cfg, self.identifier, self.creds)
            )
        except aiomqtt.MqttError as exc:
            await stack.aclose()
            raise DeliveryError(f"cannot connect: {exc}") from exc
        self._stack, self._client = stack, client
        return client

    async def _drop(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def send(self, payload: bytes) -> None:
        """Publish every message of a payload, in order."""
        messages = decode_messages(payload)
        client = await self._connected()
        # Published together, not one acknowledgement after another: at QoS 1 a broker
        # 20 ms away would otherwise take 14 s for a city's 700 cabinet messages. paho
        # keeps them in order on the wire and within its in-flight window.
        results = await asyncio.gather(
            *(client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in messages),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._drop()
            if not all(isinstance(e, aiomqtt.MqttError) for e in errors):
                raise errors[0]
            raise DeliveryError(f"publish failed: {errors[0]}") from errors[0]

    async def close(self) -> None:
        """Disconnect."""
        await self._drop()


BatchSink = Callable[[ReadingBatch], Awaitable[None]]


class MqttDeviceListener:
    """Subscribes to the topics of MQTT devices and turns their JSON into readings."""

    def __init__(
        self,
        cfg: MqttConfig,
        identifier: str,
        creds: MqttCredentials,
        registry: Registry,
        topics: dict[str, int],
        health: list[DeviceHealth],
        sink: BatchSink,
        clock: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.identifier = identifier
        self.creds = creds
        self.registry = registry
        self.topics = topics
        self.health = health
        self.sink = sink
        self.clock = clock
        self.received = 0
        self.rejected = 0
        self.subscribed = asyncio.Event()
        self._inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start listening (reconnecting with backoff while the broker is away)."""
        self._tasks = [
            asyncio.create_task(self._connect(), name="mqtt:devices"),
            asyncio.create_task(self._consume(), name="mqtt:devices:handle"),
        ]

    async def _consume(self) -> None:
        while True:
            message = await self._inbox.get()
            await self.handle(str(message.topic), message.payload)

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                async with make_client(
                    self.cfg, self.identifier, self.creds, self._inbox
                ) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.subscribed.set()
                    delay = 0.5
                    # Messages arrive in the inbox; this only waits for the disconnect.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                self.subscribed.clear()
                log.warning("MQTT device listener disconnected (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def handle(self, topic: str, raw: Any) -> None:
        """Decode one device message; a malformed one is counted and logged, never fatal."""
        index = self.topics.get(topic)
        if index is None:
            return
        device = self.registry.devices[index]
        profile = device.profile
        assert isinstance(profile, MqttDeviceProfile)
        try:
            payload = json.loads(raw)
        except (ValueError, TypeError) as exc:
            self.rejected += 1
            self.health[index].record_failure("garbled", f"bad JSON on {topic}: {exc}", 1)
            return
        ts, values = profile.extract(payload)
        now = self.clock()
        array = np.asarray(values, dtype=np.float64)
        valid = ~np.isnan(array)
        if not valid.any():
            self.rejected += 1
            self.health[index].record_failure("garbled", f"no known values on {topic}", 1)
            return
        self.received += 1
        self.health[index].record_success(now)
        n = int(valid.sum())
        await self.sink(
            ReadingBatch(
                device=np.full(n, index, dtype=np.int32),
                point=np.flatnonzero(valid).astype(np.int16),
                ts=np.full(n, ts if ts is not None else now, dtype=np.float64),
                value=array[valid],
                quality=np.zeros(n, dtype=np.uint8),
            )
        )

    async def stop(self) -> None:
        """Stop listening."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
