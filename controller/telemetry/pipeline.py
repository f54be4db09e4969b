"""The telemetry pipeline: every batch to the embedded store, InfluxDB and MQTT.

Each destination gets every batch on its own: they are handed the batch side
by side, and one failing (a full disk, a hung server, a bad payload) never
blocks or skips another. InfluxDB and MQTT payloads are written to their disk
spool before the first send (:class:`SpooledDelivery`); the embedded store is
written directly and spools only what it fails to take (:class:`StoreSink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass

import numpy as np

from controller.config import LoadedConfig, secret
from controller.poller import Poller
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
from controller.telemetry.spool import DiskSpool, SpoolItem
from controller.telemetry.store_sink import StoreSink
from drivers.readings import ReadingBatch
from drivers.tasks import BackgroundTasks

log = logging.getLogger(__name__)


@dataclass
class SinkStatus:
    """State of one destination, for the API, /health and /metrics."""

    name: str
    #: The server (or store) takes data now.
    up: bool
    task_alive: bool
    pending_records: int
    pending_points: int
    pending_bytes: int
    #: Seconds the oldest undelivered record has waited, None when nothing waits.
    oldest_pending_age: float | None
    refused_points: int
    refused_records: int
    dropped_points: int
    rejected_records: int
    #: The spool is full (refusing or dropping) right now.
    spool_full: bool
    stats: DeliveryStats


def sink_status(name: str, delivery: SpooledDelivery, up: bool, now: float) -> SinkStatus:
    """What one delivery and its spool say about a destination."""
    spool = delivery.spool.stats
    oldest = delivery.spool.oldest_created
    return SinkStatus(
        name=name,
        up=up and delivery.stats.server_up,
        task_alive=delivery.task_alive,
        pending_records=spool.records,
        pending_points=spool.points,
        pending_bytes=spool.bytes,
        oldest_pending_age=None if oldest is None else max(0.0, now - oldest),
        refused_points=spool.refused_points,
        refused_records=spool.refused_records,
        dropped_points=spool.dropped_points,
        rejected_records=spool.rejected_records,
        spool_full=spool.full,
        stats=delivery.stats,
    )


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
        storage = cfg.storage
        self._spool_root = loaded.data_path(storage.spool.path)
        self._spool_cfg = storage.spool
        self.embedded: EmbeddedStore | None = None
        self.store_sink: StoreSink | None = None
        if storage.embedded.enabled:
            self.embedded = EmbeddedStore(
                loaded.data_path(storage.embedded.path), registry, storage.embedded.retention_days
            )
            self.store_sink = StoreSink(self.embedded, self._spool("embedded"), registry.layout)
        self.influx: SpooledDelivery | None = None
        self._influx_writer: InfluxV1Writer | InfluxV2Writer | None = None
        self._influx_reader: InfluxReader | None = None
        self._influx_batch_size = 5000
        if storage.influxdb is not None:
            self._setup_influx(loaded, file)
        self._query_from = storage.query_from
        self.schema = schema_for_registry(registry)
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
            self.mqtt = SpooledDelivery(self._mqtt_publisher, self._spool("mqtt"), max_points=1000)
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
        self._tasks = BackgroundTasks()
        self._delivering = False
        #: Batches a sink raised on (a bug, not an outage: outages are spooled).
        self.sink_errors: dict[str, int] = {}

    def _spool(self, sink: str) -> DiskSpool:
        cfg = self._spool_cfg
        return DiskSpool(self._spool_root / sink, cfg.max_bytes, sink, cfg.when_full)

    def _setup_influx(self, loaded: LoadedConfig, file: str) -> None:
        influx = loaded.config.storage.influxdb
        assert influx is not None
        self._influx_batch_size = influx.batch_size
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
        self.influx = SpooledDelivery(writer, self._spool("influxdb"), max_points=influx.batch_size)

    @property
    def reader(self) -> TelemetryReader | None:
        """The store that answers telemetry queries."""
        if self._query_from == "embedded" or self._influx_reader is None:
            return self.embedded
        return self._influx_reader

    async def start(self) -> None:
        """Open stores, start deliveries (replaying spools) and the MQTT device listener;
        the composition root then subscribes :meth:`on_batch` to the poller."""
        await self.start_deliveries()
        if self.mqtt_listener is not None:
            self.mqtt_listener.start()

    async def start_deliveries(self) -> None:
        """Open stores and start deliveries, replaying spools, without taking any device's
        data: a standby delivers what it spooled while it led before its restart."""
        if self._delivering:
            return
        self._delivering = True
        if self.store_sink is not None:
            await self.store_sink.start()
            self._tasks.start(self._prune_loop(), "embedded:prune")
        if self.influx is not None:
            await self.influx.start()
        if self.mqtt is not None:
            await self.mqtt.start()

    async def on_batch(self, batch: ReadingBatch) -> None:
        """Hand one batch to every destination, side by side; each fails alone."""
        if not len(batch):
            return
        work: list[tuple[str, Awaitable[object]]] = []
        if self.store_sink is not None:
            work.append(("embedded", self.store_sink.write(batch)))
        if self.influx is not None:
            work.append(("influxdb", self._to_influx(self.influx, batch)))
        if self.mqtt is not None and self._messages is not None:
            work.append(("mqtt", self._to_mqtt(self.mqtt, self._messages, batch)))
        results = await asyncio.gather(*(w for _, w in work), return_exceptions=True)
        for (name, _), result in zip(work, results, strict=True):
            if isinstance(result, BaseException):
                self._sink_raised(name, result)

    def _sink_raised(self, name: str, exc: BaseException) -> None:
        count = self.sink_errors.get(name, 0) + 1
        self.sink_errors[name] = count
        if count == 1 or count % 1000 == 0:
            log.error(
                "%s sink raised on a batch (%d so far)",
                name,
                count,
                exc_info=exc,
                extra={"sink": name},
            )

    async def _to_influx(self, influx: SpooledDelivery, batch: ReadingBatch) -> None:
        payload = serialize_batch(batch, self.schema)
        chunks = split_lines(payload, self._influx_batch_size)
        await influx.submit([SpoolItem(c, c.count(b"\n")) for c in chunks])

    async def _to_mqtt(
        self, mqtt: SpooledDelivery, messages: TelemetryMessages, batch: ReadingBatch
    ) -> None:
        out = messages.for_batch(batch)
        out += messages.for_state(self.poller.health, self._state_devices)
        if out:
            await mqtt.submit([SpoolItem(encode_messages(out), len(out))])

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(3600)
            if self.embedded is not None:
                try:
                    removed = await self.embedded.prune()
                except Exception:
                    log.exception("embedded store: pruning failed; trying again in an hour")
                    continue
                if removed:
                    log.info("embedded store: pruned %d readings past retention", removed)

    def sinks(self, now: float | None = None) -> list[SinkStatus]:
        """Delivery state of every destination: embedded store, InfluxDB, MQTT."""
        now = time.time() if now is None else now
        out = []
        if self.store_sink is not None:
            out.append(sink_status("embedded", self.store_sink.delivery, self.store_sink.up, now))
        for name, delivery in (("influxdb", self.influx), ("mqtt", self.mqtt)):
            if delivery is not None:
                out.append(sink_status(name, delivery, True, now))
        return out

    async def stop(self, grace: float = 2.0) -> None:
        """Deliver what can go within ``grace`` (the rest stays spooled), close everything."""
        if not self._delivering:
            return
        self._delivering = False
        await self._tasks.stop()
        if self.mqtt_listener is not None:
            await self.mqtt_listener.stop()
        closing = [d.close(grace) for d in (self.influx, self.mqtt) if d is not None]
        await asyncio.gather(*closing)
        for closer in (self._influx_writer, self._mqtt_publisher):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()
        if self._influx_reader is not None:
            await self._influx_reader.client.close()
        if self.store_sink is not None:
            await self.store_sink.close(grace)
