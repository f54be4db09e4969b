"""The telemetry pipeline: every batch to the embedded store, InfluxDB and MQTT.

Each destination is optional and independent: a slow or absent InfluxDB does
not hold up MQTT, and neither holds up polling, because both deliver through
their own disk-backed queue (:class:`SpooledDelivery`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.config import LoadedConfig, secret
from controller.poller import Poller
from controller.readings import ReadingBatch
from controller.registry import Registry
from controller.telemetry.delivery import DeliveryStats, SpooledDelivery
from controller.telemetry.embedded import EmbeddedStore
from controller.telemetry.influx import InfluxQLClient, InfluxV1Writer, InfluxV2Writer
from controller.telemetry.influx_reader import InfluxReader
from controller.telemetry.lineprotocol import serialize_batch
from controller.telemetry.mqtt import (
    MqttCredentials,
    MqttDeviceListener,
    MqttPublisher,
    TelemetryMessages,
    encode_messages,
)
from controller.telemetry.query import TelemetryReader
from controller.telemetry.schema import schema_for_registry
from controller.telemetry.spool import DiskSpool

log = logging.getLogger(__name__)


@dataclass
class SinkStatus:
    """State of one destination, for the API."""

    name: str
    pending: int
    spooled_bytes: int
    refused: int
    stats: DeliveryStats


@dataclass
class StoreHealth:
    """Writes of the embedded store: a failing store is reported, not silent."""

    writes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_write: float | None = None


def split_lines(payload: bytes, max_lines: int) -> list[bytes]:
    """Cut line protocol into chunks of at most ``max_lines`` lines."""
    if not payload:
        return []
    ends = np.flatnonzero(np.frombuffer(payload, dtype=np.uint8) == 10) + 1
    if len(ends) <= max_lines:
        return [payload]
    cuts = [0, *ends[max_lines - 1 :: max_lines].tolist()]
    if cuts[-1] != len(payload):
        cuts.append(len(payload))
    return [payload[a:b] for a, b in itertools.pairwise(cuts)]


class TelemetryPipeline:
    """Takes reading batches from the poller to every configured destination."""

    def __init__(self, loaded: LoadedConfig, registry: Registry, poller: Poller) -> None:
        cfg = loaded.config
        file = str(loaded.path)
        self.registry = registry
        self.poller = poller
        self.embedded_health = StoreHealth()
        storage = cfg.storage
        spool_root = loaded.data_path(storage.spool.path)
        self.embedded: EmbeddedStore | None = None
        if storage.embedded.enabled:
            self.embedded = EmbeddedStore(
                loaded.data_path(storage.embedded.path), registry, storage.embedded.retention_days
            )
        self.influx: SpooledDelivery | None = None
        self._influx_writer: InfluxV1Writer | InfluxV2Writer | None = None
        self._influx_reader: InfluxReader | None = None
        self._influx_batch_size = 5000
        self._influx_flush_interval = 1.0
        if storage.influxdb is not None:
            self._setup_influx(loaded, spool_root, file)
        self._query_from = storage.query_from
        self.schema = schema_for_registry(registry)
        self._lines: list[bytes] = []
        self._line_count = 0
        self._last_flush = time.monotonic()
        self.mqtt: SpooledDelivery | None = None
        self.mqtt_listener: MqttDeviceListener | None = None
        self._messages: TelemetryMessages | None = None
        self._mqtt_publisher: MqttPublisher | None = None
        if cfg.mqtt is not None:
            m = cfg.mqtt
            creds = MqttCredentials(
                secret(m.username_env, file, "mqtt.username_env"),
                secret(m.password_env, file, "mqtt.password_env"),
            )
            client_id = m.client_id or f"streetsense-{cfg.site.city}"
            self._messages = TelemetryMessages(
                registry, f"{m.topic_prefix}/{cfg.site.city}", m.telemetry_qos
            )
            self._mqtt_publisher = MqttPublisher(m, f"{client_id}-out", creds)
            self.mqtt = SpooledDelivery(
                self._mqtt_publisher,
                DiskSpool(spool_root / "mqtt", storage.spool.max_bytes, "mqtt"),
            )
            if registry.mqtt_topics:
                self.mqtt_listener = MqttDeviceListener(
                    m,
                    f"{client_id}-in",
                    creds,
                    registry,
                    registry.mqtt_topics,
                    poller.health,
                    poller.push,
                    poller.clock,
                )
        #: Devices with a communication state of their own (polled units, MQTT devices).
        self._state_devices = [t.device for t in registry.targets]
        self._state_devices += list(registry.mqtt_topics.values())
        self._tasks: list[asyncio.Task[None]] = []

    def _setup_influx(self, loaded: LoadedConfig, spool_root: Path, file: str) -> None:
        influx = loaded.config.storage.influxdb
        assert influx is not None
        self._influx_batch_size = influx.batch_size
        self._influx_flush_interval = influx.flush_interval
        username = secret(influx.username_env, file, "storage.influxdb.username_env")
        password = secret(influx.password_env, file, "storage.influxdb.password_env")
        token = secret(influx.token_env, file, "storage.influxdb.token_env")
        writer: InfluxV1Writer | InfluxV2Writer
        if influx.api == "v1":
            writer = InfluxV1Writer(
                influx.url,
                influx.database,
                influx.retention_policy,
                username,
                password,
                influx.gzip,
                influx.timeout,
                create_database=influx.create_database,
            )
        else:
            writer = InfluxV2Writer(
                influx.url, influx.org, influx.bucket, token, influx.gzip, influx.timeout
            )
        self._influx_writer = writer
        database = influx.database if influx.api == "v1" else influx.bucket
        self._influx_reader = InfluxReader(
            InfluxQLClient(influx.url, database, username, password, token, influx.timeout)
        )
        self.influx = SpooledDelivery(
            writer,
            DiskSpool(spool_root / "influxdb", loaded.config.storage.spool.max_bytes, "influxdb"),
        )

    @property
    def reader(self) -> TelemetryReader | None:
        """The store that answers telemetry queries."""
        if self._query_from == "embedded" or self._influx_reader is None:
            return self.embedded
        return self._influx_reader

    async def start(self) -> None:
        """Open stores, start deliveries (replaying spools), subscribe to the poller."""
        if self.embedded is not None:
            await self.embedded.open()
        if self.influx is not None:
            await self.influx.start()
            self._tasks.append(asyncio.create_task(self._influx_timer(), name="influx:flush"))
        if self.mqtt is not None:
            await self.mqtt.start()
        if self.mqtt_listener is not None:
            self.mqtt_listener.start()
        if self.embedded is not None:
            self._tasks.append(asyncio.create_task(self._prune_loop(), name="embedded:prune"))
        self.poller.subscribe(self.on_batch)

    async def on_batch(self, batch: ReadingBatch) -> None:
        """Hand one batch to every destination; a failing store does not stop the others."""
        if self.embedded is not None:
            try:
                await self.embedded.write(batch)
            except Exception as exc:
                health = self.embedded_health
                health.failures += 1
                health.consecutive_failures += 1
                health.last_error = f"{type(exc).__name__}: {exc}"
                if health.consecutive_failures == 1:
                    log.exception("embedded store write failed", extra={"sink": "embedded"})
            else:
                self.embedded_health.writes += 1
                self.embedded_health.consecutive_failures = 0
                self.embedded_health.last_write = time.time()
        if self.influx is not None and len(batch):
            payload = serialize_batch(batch, self.schema)
            self._lines.append(payload)
            self._line_count += payload.count(b"\n")
            if self._line_count >= self._influx_batch_size:
                await self.flush_influx()
        if self.mqtt is not None and self._messages is not None:
            messages = self._messages.for_batch(batch)
            messages += self._messages.for_state(self.poller.health, self._state_devices)
            if messages:
                await self.mqtt.submit(encode_messages(messages))

    async def flush_influx(self) -> None:
        """Send what has gathered for InfluxDB, in chunks of at most ``batch_size`` lines."""
        self._last_flush = time.monotonic()
        if self.influx is None or not self._lines:
            return
        payload = b"".join(self._lines)
        self._lines, self._line_count = [], 0
        for chunk in split_lines(payload, self._influx_batch_size):
            await self.influx.submit(chunk)

    async def _influx_timer(self) -> None:
        while True:
            await asyncio.sleep(self._influx_flush_interval / 2)
            if time.monotonic() - self._last_flush >= self._influx_flush_interval:
                await self.flush_influx()

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(3600)
            if self.embedded is not None:
                removed = await self.embedded.prune()
                if removed:
                    log.info("embedded store: pruned %d readings past retention", removed)

    def sinks(self) -> list[SinkStatus]:
        """Delivery state of InfluxDB and MQTT."""
        out = []
        for name, delivery in (("influxdb", self.influx), ("mqtt", self.mqtt)):
            if delivery is not None:
                out.append(
                    SinkStatus(
                        name,
                        delivery.pending,
                        delivery.spool.stats.bytes,
                        delivery.spool.stats.refused_total,
                        delivery.stats,
                    )
                )
        return out

    async def stop(self, grace: float = 2.0) -> None:
        """Flush, deliver what can go within ``grace``, spool the rest, close everything."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.mqtt_listener is not None:
            await self.mqtt_listener.stop()
        await self.flush_influx()
        if self.influx is not None:
            await self.influx.close(grace)
        if self.mqtt is not None:
            await self.mqtt.close(grace)
        for closer in (self._influx_writer, self._mqtt_publisher):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()
        if self._influx_reader is not None:
            await self._influx_reader.client.close()
        if self.embedded is not None:
            await self.embedded.close()
