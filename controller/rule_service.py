"""The rules service: every reading batch through the engine, events into alarms.

Also publishes alarm transitions on MQTT and runs flood watch: when a gauge
reaches the trigger level or rises fast, the gauges of its area are polled at
the storm interval until the water recedes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from controller.alarm_store import UNWRITTEN_ALARMS, AlarmStore
from controller.config import LoadedConfig
from controller.latency import LatencyRecord
from controller.poller import Poller
from controller.registry import Registry
from controller.state.database import StateDatabase
from controller.telemetry.mqtt import encode_messages
from controller.telemetry.pipeline import TelemetryPipeline
from controller.telemetry.spool import SpoolItem
from drivers.readings import ReadingBatch
from drivers.tasks import BackgroundTasks
from rules import kernels as K
from rules.alarm_model import Alarm, AlarmNotice, alarm_payload
from rules.alarms import AlarmManager
from rules.compile import compile_rules
from rules.config import FloodWatchConfig, RateRule, ThresholdRule
from rules.engine import RuleEngine, RuleEvents

log = logging.getLogger(__name__)


@dataclass
class RuleStats:
    """How the engine keeps up."""

    batches: int = 0
    readings: int = 0
    events: int = 0
    last_eval_s: float = 0.0
    last_batch_to_alarm_s: float = 0.0
    #: From a batch's arrival at the rules until its alarms are applied and stored.
    batch_to_alarm: LatencyRecord = field(default_factory=LatencyRecord)
    #: From the oldest polled reading of a batch being taken until its alarms are
    #: applied (the batching wait included): how stale the city's picture can be.
    reading_to_alarm: LatencyRecord = field(default_factory=LatencyRecord)
    storms: dict[str, float] = field(default_factory=dict)


class PollRate(Protocol):
    """What flood watch may change about polling: how often some devices are read."""

    def set_interval_override(self, devices: list[int], interval: float | None) -> None:
        """Read these devices every ``interval`` seconds, or as configured (None)."""
        ...


class FloodWatch:
    """Storm mode per area of gauges: their polling quickens while the water rises."""

    def __init__(
        self,
        cfg: FloodWatchConfig,
        loaded: LoadedConfig,
        registry: Registry,
        poll_rate: PollRate,
        manager: AlarmManager,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.poll_rate = poll_rate
        self.manager = manager
        rules = loaded.config.rules
        self.level_rules = set(cfg.level_rules) or {
            r.id for r in rules if isinstance(r, ThresholdRule) and r.levels_from_device
        }
        self.rate_rules = set(cfg.rate_rules) or {r.id for r in rules if isinstance(r, RateRule)}
        self.areas: dict[str, list[int]] = {}
        for d in registry.devices:
            if d.device_class == "gauge":
                self.areas.setdefault(self._area_of(d.id), []).append(d.index)
        self.storms: dict[str, float] = {}

    def _area_of(self, device_id: str) -> str:
        return getattr(self.registry.by_id[device_id].location, self.cfg.area_by) or "(none)"

    def _stormy(self, alarm: Alarm) -> bool:
        if not alarm.active:
            return False
        if alarm.rule in self.level_rules:
            return alarm.level >= self.cfg.trigger_level
        return alarm.rule in self.rate_rules

    async def on_notice(self, notice: AlarmNotice) -> None:
        """Start or end storm mode for the alarm's area."""
        alarm = notice.alarm
        if alarm.device_class != "gauge" or alarm.rule not in self.level_rules | self.rate_rules:
            return
        area = self._area_of(alarm.device)
        stormy = any(
            self._stormy(a)
            for a in self.manager.open.values()
            if a.device_class == "gauge" and self._area_of(a.device) == area
        )
        gauges = self.areas.get(area, [])
        if stormy and area not in self.storms:
            self.storms[area] = time.time()
            self.poll_rate.set_interval_override(gauges, self.cfg.storm_interval)
            log.warning(
                "storm mode ON in %s %s: %d gauges polled every %.0f s",
                self.cfg.area_by,
                area,
                len(gauges),
                self.cfg.storm_interval,
            )
        elif not stormy and area in self.storms:
            del self.storms[area]
            self.poll_rate.set_interval_override(gauges, None)
            log.warning("storm mode OFF in %s %s", self.cfg.area_by, area)


class RuleService:
    """Engine, alarm manager, MQTT alarm topics and flood watch, fed by the poller."""

    def __init__(
        self,
        loaded: LoadedConfig,
        registry: Registry,
        poller: Poller,
        telemetry: TelemetryPipeline,
        state_db: StateDatabase,
    ) -> None:
        cfg = loaded.config
        self.registry = registry
        self.poller = poller
        self.telemetry = telemetry
        self.compiled = compile_rules(loaded.rule_site(), registry)
        self.engine = RuleEngine(self.compiled, len(registry), registry.max_points)
        #: Every alarm, open and closed (history and statistics read it).
        self.store = AlarmStore(state_db, loaded.data_path(UNWRITTEN_ALARMS))
        self.manager = AlarmManager(self.compiled.rules, registry, cfg.alarms, self.store)
        self.stats = RuleStats()
        # Readings a push device stamps itself (an SL651 observation minute) would
        # measure its protocol, not us: reading-to-alarm counts polled readings.
        self._polled = np.zeros(len(registry), dtype=bool)
        for target in registry.targets:
            self._polled[target.field_device] = True
        self.flood_watch: FloodWatch | None = None
        if cfg.flood_watch is not None:
            self.flood_watch = FloodWatch(cfg.flood_watch, loaded, registry, poller, self.manager)
            self.stats.storms = self.flood_watch.storms
        self._prefix = None
        if cfg.mqtt is not None:
            self._prefix = f"{cfg.mqtt.topic_prefix}/{cfg.site.city}/alarms"
        self._tasks = BackgroundTasks()
        self._lock = asyncio.Lock()
        # Devices by the poll target that reads them, until each target's first poll.
        self._awaiting_first_poll: dict[int, npt.NDArray[np.int64]] = {}
        for target in registry.targets:
            self._awaiting_first_poll[target.device] = np.unique(target.field_device).astype(
                np.int64
            )

    def _start_grace(self) -> None:
        """Start the comm-loss grace of devices whose poll target has now been polled."""
        for device in list(self._awaiting_first_poll):
            first = self.poller.health[device].first_polled
            if first is not None:
                self.engine.start_grace(self._awaiting_first_poll.pop(device), first)

    def warm_up(self) -> None:
        """Compile (or load from the cache) the kernels before the first batch arrives.

        A throwaway engine on the same tables takes one reading, so the real
        engine's state is untouched.
        """
        if not len(self.registry):
            return
        probe = RuleEngine(self.compiled, len(self.registry), self.registry.max_points)
        probe.evaluate(
            ReadingBatch(
                np.zeros(1, np.int32),
                np.zeros(1, np.int16),
                np.zeros(1),
                np.zeros(1),
                np.zeros(1, np.uint8),
            )
        )

    async def start(self) -> None:
        """Load open alarms, seed the engine with them, start the comm-loss sweep; the
        composition root then subscribes :meth:`on_batch` to the poller."""
        for alarm in await self.manager.start():
            if not alarm.active:
                continue
            device = self.registry.by_id.get(alarm.device)
            if device is None:
                continue
            if alarm.kind == "sensor_fault":
                self.engine.seed_sensor(device.index, alarm.sub)
                continue
            try:
                rule = self.compiled.rule_index(alarm.rule)
            except KeyError:
                continue  # the rule was removed from config.yaml
            self.engine.seed(rule, device.index, alarm.sub, K.EV_RULE, alarm.level)
        # Devices no poller target reads (MQTT) get their grace from the start.
        polled = {int(d) for ds in self._awaiting_first_poll.values() for d in ds}
        pushed = np.array([d for d in range(len(self.registry)) if d not in polled], np.int64)
        self.engine.start_grace(pushed, self.engine.clock())
        await asyncio.to_thread(self.warm_up)
        self._tasks.start(self._sweep_loop(), "rules:comm-loss")

    async def on_batch(self, batch: ReadingBatch) -> None:
        """Evaluate a batch and apply its alarm events."""
        arrived = time.perf_counter()
        async with self._lock:
            events = self.engine.evaluate(batch)
            evaluated = time.perf_counter()
            self._start_grace()
            comm = self.engine.sweep_comm_loss()
            await self.manager.apply(RuleEvents.concat([events, comm]))
        self.stats.batches += 1
        self.stats.readings += len(batch)
        self.stats.events += len(events) + len(comm)
        self.stats.last_eval_s = evaluated - arrived
        self.stats.last_batch_to_alarm_s = time.perf_counter() - arrived
        self.stats.batch_to_alarm.observe(self.stats.last_batch_to_alarm_s)
        polled = batch.ts[self._polled[batch.device]]
        if len(polled):
            self.stats.reading_to_alarm.observe(max(0.0, time.time() - float(polled.min())))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            async with self._lock:
                self._start_grace()
                comm = self.engine.sweep_comm_loss()
                if len(comm):
                    await self.manager.apply(comm)

    async def publish(self, notice: AlarmNotice) -> None:
        """Publish an alarm transition on its MQTT topic (retained), if MQTT is configured."""
        if self.telemetry.mqtt is None or self._prefix is None:
            return
        alarm = notice.alarm
        topic = f"{self._prefix}/{alarm.device}/{alarm.rule}"
        if alarm.sub:
            topic += f"/{alarm.sub}"
        payload = alarm_payload(alarm, self.manager.clock()) | {"transition": notice.transition}
        message = encode_messages([{"topic": topic, "payload": payload, "qos": 1, "retain": True}])
        await self.telemetry.mqtt.submit([SpoolItem(message, 1)])

    async def stop(self) -> None:
        """Stop the sweep and save alarms."""
        await self._tasks.stop()
        await self.manager.close()
