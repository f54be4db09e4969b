"""The running controller: registry, links, poller and the consumers of its batches."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Literal

from controller.assets.store import AssetStore
from controller.cases.alarm_bridge import fault_key
from controller.cases.case_feed import CaseFeed
from controller.cases.evidence import EvidenceCollector
from controller.cases.service import CaseService
from controller.cases.webhook import WebhookSender
from controller.config import LoadedConfig, secret
from controller.control.audit import AuditLog
from controller.control.dispatcher import CommandDispatcher
from controller.derived_points import DerivedPoints
from controller.latest import LatestValues
from controller.leadership.elector import LeaderElector
from controller.leadership.lease import LeaderLease
from controller.leadership.mirror import StandbyAlarmMirror
from controller.link_factory import build_link
from controller.poller import BatchHandler, Poller
from controller.registry import Registry
from controller.rule_service import RuleService
from controller.schedules.clocks import ScheduleClock, WallClock
from controller.schedules.overrides import OverrideStore
from controller.schedules.plan import SchedulePlan
from controller.schedules.push_status import TablePushStore
from controller.schedules.runner import ScheduleRunner
from controller.schedules.table_pusher import DeviceTablePusher
from controller.startup import opening
from controller.state.database import StateDatabase
from controller.state.legacy import import_legacy, legacy_files
from controller.station_commands import StationCommands
from controller.station_reports import StationReports
from controller.telemetry.pipeline import TelemetryPipeline
from drivers.readings import ReadingBatch
from drivers.sl651.encoding import ENCODINGS
from drivers.sl651.listener import Sl651Listener, StationKey
from drivers.sources import SourceDevice

log = logging.getLogger(__name__)

#: Where a node of a pair takes its name in the lease, unless the config names it.
NODE_ENV = "STREETSENSE_NODE"
#: ... and where the other node and callers reach its API.
ADVERTISE_ENV = "STREETSENSE_ADVERTISE_URL"


class Controller:
    """Everything the API and the command line need of a running controller."""

    def __init__(self, loaded: LoadedConfig, schedule_clock: ScheduleClock | None = None) -> None:
        self.loaded = loaded
        self.registry = Registry(loaded)
        self.links = {cfg.id: build_link(cfg) for cfg in loaded.config.links}
        self.poller = Poller(self.registry, self.links, loaded.config.polling)
        derived = DerivedPoints(self.registry)
        if derived.active:
            self.poller.transform = derived.apply
        self.latest = LatestValues(len(self.registry), self.registry.max_points)
        self.poller.subscribe(self.latest.on_batch)
        self.telemetry = TelemetryPipeline(loaded, self.registry, self.poller)
        #: Everything the controller keeps but telemetry: one database, one URL.
        self.state_db = StateDatabase.of_config(loaded)
        self.rules = RuleService(loaded, self.registry, self.poller, self.telemetry, self.state_db)
        control = loaded.config.control
        self.audit = AuditLog(self.state_db)
        self.assets = AssetStore(self.state_db)
        self.commands = CommandDispatcher(
            self.registry, self.links, self.audit, control, poles_on=self.assets.poles_on
        )
        self.commands.read_back = self.poller.read_now
        self.commands.may_write = self.may_write
        self.station_reports = StationReports(self.registry, self.poller, self.telemetry.on_batch)
        self.listeners = [
            Sl651Listener(
                cfg.id,
                cfg.host,
                cfg.port,
                [StationKey(*s) for s in self.registry.sl651_stations.get(cfg.id, [])],
                loaded.config.site.tz,
                self.station_reports.on_report,
                cfg.idle_timeout,
                ENCODINGS[cfg.encoding],
                self.station_reports.on_history,
                cfg.auto_set_clock,
                cfg.command_expiry,
            )
            for cfg in loaded.config.listeners
        ]
        self.station_commands = StationCommands(self.registry, self.listeners, self.audit)
        self.sources = [
            protocol.build(cfg, self._source_devices(cfg.id)) for protocol, cfg in loaded.sources
        ]
        schedules = loaded.config.schedules
        self.overrides = OverrideStore(self.state_db)
        tz = loaded.config.site.tz
        self.schedule_plan = SchedulePlan(self.registry, schedules, tz, str(loaded.path))
        self.table_pushes = TablePushStore(self.state_db)
        self.table_pusher = DeviceTablePusher(
            self.registry, self.links, self.audit, self.table_pushes, tz
        )
        self.table_pusher.may_write = self.may_write
        self.schedules = ScheduleRunner(
            self.schedule_plan,
            self.commands,
            self.table_pusher,
            schedule_clock or WallClock(),
            self.overrides,
        )
        # A lamp a schedule switches is not judged for day-burning until the schedule
        # has put it in its state: at start it may be lit only because nobody has
        # switched it yet.
        self.rules.engine.hold_day_burning(self.schedule_plan.scheduled_lamps())
        self.schedules.on_places_applied(self.rules.engine.judge_day_burning)
        self._build_cases(loaded)
        self.leadership = self._build_leadership(loaded)
        #: On a standby: the leader's open alarms, read from the shared database.
        self.alarm_mirror = (
            StandbyAlarmMirror(self.rules.manager, self.rules.store, self.leadership.renew_seconds)
            if self.leadership is not None
            else None
        )
        #: Set when another node has taken the lease: the process should stop (and its
        #: service manager start it again, as the standby).
        self.deposed = asyncio.Event()
        self._stores_open = False
        self._schedules_running = False
        #: What start opened, each with its stop; stop unwinds it in reverse.
        self._started = AsyncExitStack()
        self.running = False
        #: When :meth:`start` began polling (for health: the first polls take a while).
        self.started_at: float | None = None

    def _source_devices(self, source: str) -> list[SourceDevice]:
        """The devices a push source serves, each with its health record."""
        return [
            SourceDevice(
                index,
                self.registry.devices[index].id,
                tuple(p.name for p in self.registry.devices[index].points),
                self.poller.health[index],
            )
            for index in self.registry.source_devices.get(source, [])
        ]

    def _build_leadership(self, loaded: LoadedConfig) -> LeaderElector | None:
        cfg = loaded.config.leadership
        if not cfg.enabled:
            return None
        node = cfg.node or os.environ.get(NODE_ENV) or socket.gethostname()
        api = loaded.config.api
        address = (
            cfg.advertise_url
            or os.environ.get(ADVERTISE_ENV)
            or f"http://{socket.gethostname()}:{api.port}"
        )
        lease = LeaderLease(self.state_db, node, address, cfg.lease_seconds)
        return LeaderElector(
            lease, cfg.renew_seconds, self._elected, self._deposed, self._new_epoch
        )

    def may_write(self) -> bool:
        """Whether this controller may send to devices now (in a pair: while it leads)."""
        return self.leadership is None or self.leadership.holds()

    def may_judge(self) -> bool:
        """Whether batches may raise alarms and cases here now.

        A leader whose lease ran out while the database answered its last try has
        been paused (SIGSTOP, a frozen VM): the other node may lead by now, and
        alarms judged here would be raised twice. One that lost the database keeps
        judging (nobody can take over meanwhile): its alarms wait to be written.
        """
        elector = self.leadership
        return elector is None or elector.holds() or not elector.reachable

    def _judged(self, handler: BatchHandler) -> BatchHandler:
        """``handler``, called only while :meth:`may_judge`."""

        async def judged(batch: ReadingBatch) -> None:
            if self.may_judge():
                await handler(batch)

        return judged

    @property
    def role(self) -> Literal["single", "leader", "standby"]:
        """A controller alone, or which of its pair this one is."""
        if self.leadership is None:
            return "single"
        return "leader" if self.leadership.leading else "standby"

    async def _elected(self) -> None:
        # The epoch is already on the state database (``_new_epoch`` runs first).
        if self.alarm_mirror is not None:
            # Its last read must not land over the alarms this node now loads itself.
            await self.alarm_mirror.stop()
        try:
            await self.start_duties()
        except Exception:
            log.exception("elected, but the duties did not start: giving the lease up")
            self.deposed.set()

    async def _deposed(self) -> None:
        self.deposed.set()

    def _new_epoch(self, epoch: int) -> None:
        # Stamped on every audit entry, alarm and case this node writes from now on.
        self.state_db.epoch = epoch

    def _build_cases(self, loaded: LoadedConfig) -> None:
        cfg = loaded.config.cases
        file = str(loaded.path)
        self.case_db = self.state_db
        evidence = EvidenceCollector(
            self.registry, self.latest, lambda: self.telemetry.reader, cfg.evidence_minutes
        )
        self.cases = CaseService(cfg, self.case_db, self.registry, evidence.collect)
        self.case_feed = CaseFeed(self.cases.alarms)
        self.webhook: WebhookSender | None = None
        if cfg.webhook is not None:
            key = secret(cfg.webhook.secret_env, file, "cases.webhook.secret_env")
            assert key is not None
            self.webhook = WebhookSender(cfg.webhook, key, self.case_db)

            async def wake(*_: object) -> None:
                if self.webhook is not None:
                    self.webhook.wake()

            self.cases.on_transition(wake)

    async def open_stores(self) -> None:
        """Open the stores: telemetry (replaying spools), the state database (importing the
        files of the release before it), alarms (seeding rules), assets, cases."""
        if not self._stores_open:
            stack = self._started
            async with self._opening_telemetry():
                await self.telemetry.start()
            stack.push_async_callback(self.telemetry.stop)
            await self._open_state()
            async with opening(f"the alarms of {self.state_db.shown_url}"):
                await self.rules.start()
            stack.push_async_callback(self.rules.stop)
            async with opening(f"the asset register of {self.state_db.shown_url}"):
                await self.assets.open()
            await self.cases.start()
            stack.push_async_callback(self.cases.stop)
            self.case_feed.start()
            # Stopped before the case database closes: what is queued becomes cases.
            stack.push_async_callback(self.case_feed.stop)
            # Commands are audited: any still running end before the audit log closes.
            stack.push_async_callback(self.commands.stop)
            active = {fault_key(a): a for a in self.rules.manager.list() if a.active and a.case}
            await self.cases.alarms.resume_verification(active)
            self._wire_flow()
            if self.webhook is not None:
                self.webhook.start()
                stack.push_async_callback(self.webhook.stop)
            self._stores_open = True

    def _wire_flow(self) -> None:
        """The flow of data, in the order correctness depends on (docs/architecture.md).

        Batches go to the latest values first (subscribed at construction, so a
        controller used without its stores still answers reads), then the sinks, then
        the rules, then case verification: a batch's alarms are known when cases
        count it. Alarm notices go to flood watch (storm mode changes poll rates
        before anyone reads the alarm), the MQTT alarm topics, cases; the API adds
        its live event stream last. Cases take notices and batches through the
        case feed, one queue in that same order, so opening cases never holds up
        the next batch's alarms.
        """
        self.poller.subscribe(self.telemetry.on_batch)
        self.poller.subscribe(self._judged(self.rules.on_batch))
        self.poller.subscribe(self._judged(self.case_feed.on_batch))
        manager = self.rules.manager
        if self.rules.flood_watch is not None:
            manager.subscribe(self.rules.flood_watch.on_notice)
        manager.subscribe(self.rules.publish)
        manager.subscribe(self.case_feed.on_alarm)

    def _opening_telemetry(self) -> AbstractAsyncContextManager[None]:
        storage = self.loaded.config.storage
        embedded = self.loaded.data_path(storage.embedded.path) if storage.embedded.enabled else ""
        return opening(f"the telemetry store {embedded}".strip())

    async def _open_state(self) -> None:
        """Open the state database (importing the files of the release before it)."""
        if not self.state_db.is_open:
            async with opening(f"the state database {self.state_db.shown_url}"):
                await self.state_db.open()
                await import_legacy(self.state_db, legacy_files(self.loaded))
            # Closed last: every store opened after it writes to it until it stops.
            self._started.push_async_callback(self.state_db.close)

    async def start(self) -> None:
        """Start: alone, everything at once; in a pair, the state database and the
        election, and everything else once this node leads."""
        if self.leadership is None:
            await self.start_duties()
            return
        await self._open_state()
        # What this node spooled while it led before a restart goes out while it stands by.
        async with self._opening_telemetry():
            await self.telemetry.start_deliveries()
        self._started.push_async_callback(self.telemetry.stop)
        self.started_at = time.time()
        if self.alarm_mirror is not None:
            self.alarm_mirror.start()
            self._started.push_async_callback(self.alarm_mirror.stop)
        # The rules' kernels are compiled (or loaded from numba's cache) before this node
        # may lead: compiling holds the interpreter for seconds at a time, which, once
        # elected, would keep the lease from being renewed, and it would lengthen a
        # take-over.
        await asyncio.to_thread(self.rules.warm_up)
        await self.leadership.start()
        self._started.push_async_callback(self.leadership.stop)
        self.running = True

    async def start_duties(self) -> None:
        """Open the stores, start polling, the push sources and the schedules."""
        await self.open_stores()
        self.started_at = time.time()
        # Polling starts before the push sources: stopped in reverse, a source then
        # stops before the poller's last flush, which hands on what it delivered.
        self.poller.start()
        self._started.push_async_callback(self.poller.stop)
        # Commands go over the poller's links: they end before the links close.
        self._started.push_async_callback(self.commands.stop)
        await self.start_listeners()
        await self.start_schedules()
        self.running = True

    async def start_listeners(self) -> None:
        """Open the ports that stations dial in to, and start every push source."""
        # Station commands are audited once their listener has ended them: after it.
        self._started.push_async_callback(self.station_commands.stop)
        for listener in self.listeners:
            async with opening(f"the {listener.id} listener on {listener.host}:{listener.port}"):
                await listener.start()
            self._started.push_async_callback(listener.stop)
        for source in self.sources:
            async with opening(f"the push source {source.id}"):
                await source.start(self.poller.push)
            self._started.push_async_callback(source.stop)

    async def start_schedules(self) -> None:
        """Put lights into their scheduled state and keep them on schedule."""
        await self.open_stores()
        if not self._schedules_running:
            await self.schedules.start()
            self._started.push_async_callback(self.schedules.stop)
            self._schedules_running = True

    async def stop(self) -> None:
        """Stop what started, in reverse: schedules, push sources and listeners, commands,
        polling (its last flush delivers or spools the last readings), then the stores."""
        started, self._started = self._started, AsyncExitStack()
        await started.aclose()
        # Built here, shared by the poller, the dispatcher and the table pusher; also open
        # on a controller used without start (one poll from the CLI).
        for link in self.links.values():
            await link.close()
        self._stores_open = False
        self._schedules_running = False
        self.running = False

    async def __aenter__(self) -> Controller:
        """Use the controller (polling on demand); leaving the block closes its links."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
