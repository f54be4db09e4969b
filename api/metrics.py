"""Prometheus metrics, read from the controller's own counters at scrape time.

Nothing is counted twice: the poller, links, deliveries, rules, dispatcher and
schedule runner keep their counters for the API anyway; a collector turns
them into metric families when Prometheus asks. Case figures need the case
database, so they are fetched first (async) and handed to the collector.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from controller.runtime import Controller
from controller.service_health import assess

SEVERITIES = ("low", "medium", "high", "urgent")


@dataclass(frozen=True)
class CaseFigures:
    """Open and overdue cases at scrape time."""

    open: int
    overdue: int


class ControllerCollector(Collector):
    """Metric families of one controller."""

    def __init__(self, controller: Controller, cases: CaseFigures, auth_failures: int = 0) -> None:
        self.controller = controller
        self.cases = cases
        self.auth_failures = auth_failures

    def collect(self) -> Iterator[Metric]:
        """Every family, fresh from the counters."""
        yield from self._polling()
        yield from self._links()
        yield from self._sinks()
        yield from self._rules_and_alarms()
        yield from self._work()
        yield from self._leadership()

    def _leadership(self) -> Iterator[Metric]:
        """Which node of a pair leads (nothing for a controller alone)."""
        elector = self.controller.leadership
        if elector is None:
            return
        node = [elector.lease.node]
        leader = GaugeMetricFamily(
            "streetsense_leader", "1 while this node leads its pair", labels=["node"]
        )
        leader.add_metric(node, 1.0 if elector.leading else 0.0)
        yield leader
        epoch = GaugeMetricFamily(
            "streetsense_leader_epoch", "Epoch of the lease this node holds", labels=["node"]
        )
        since = GaugeMetricFamily(
            "streetsense_leader_since_seconds",
            "Unix time this node took the lease",
            labels=["node"],
        )
        if elector.leading and elector.epoch is not None and elector.since is not None:
            epoch.add_metric(node, float(elector.epoch))
            since.add_metric(node, elector.since)
        yield epoch
        yield since
        elections = CounterMetricFamily(
            "streetsense_leader_elections", "Times this node took the lease", labels=["node"]
        )
        elections.add_metric(node, float(elector.elections))
        yield elections
        fenced = CounterMetricFamily(
            "streetsense_writes_fenced",
            "Alarms and case notices judged here that PostgreSQL refused: another node led since",
            labels=["node", "kind"],
        )
        fenced.add_metric([*node, "alarm"], float(self.controller.rules.store.fenced))
        fenced.add_metric([*node, "case_notice"], float(self.controller.cases.alarms.fenced))
        yield fenced

    def _polling(self) -> Iterator[Metric]:
        c = self.controller
        polls = CounterMetricFamily(
            "streetsense_polls", "Polls by link and device class", labels=["link", "device_class"]
        )
        failed = CounterMetricFamily(
            "streetsense_polls_failed",
            "Polls that did not get every answer",
            labels=["link", "device_class"],
        )
        cycle = GaugeMetricFamily(
            "streetsense_poll_cycle_seconds",
            "Time the last poll of every unit held each link (the bus time of one cycle)",
            labels=["link"],
        )
        online = GaugeMetricFamily(
            "streetsense_devices_online", "Polled units online", labels=["device_class"]
        )
        total: Counter[tuple[str, str]] = Counter()
        failures: Counter[tuple[str, str]] = Counter()
        bus: dict[str, float] = {}
        up: Counter[str] = Counter()
        for target in c.registry.targets:
            health = c.poller.health[target.device]
            key = (target.link, target.device_class)
            total[key] += health.polls
            failures[key] += sum(health.errors.values())
            bus[target.link] = bus.get(target.link, 0.0) + health.last_latency
            up[target.device_class] += int(health.online)
        for (link, device_class), n in sorted(total.items()):
            polls.add_metric([link, device_class], n)
            failed.add_metric([link, device_class], failures[link, device_class])
        for link, seconds in sorted(bus.items()):
            cycle.add_metric([link], seconds)
        for device_class in sorted({t.device_class for t in c.registry.targets}):
            online.add_metric([device_class], up[device_class])
        readings = CounterMetricFamily(
            "streetsense_readings", "Readings polled (rate() gives points per second)"
        )
        readings.add_metric([], c.poller.stats.readings)
        yield from (polls, failed, cycle, online, readings)

    def _links(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("streetsense_link_up", "Link connected (1) or not", labels=["link"])
        errors = CounterMetricFamily(
            "streetsense_link_errors", "Failed requests by kind", labels=["link", "kind"]
        )
        for link_id, link in sorted(self.controller.links.items()):
            up.add_metric([link_id], int(link.health.connected))
            for kind, n in sorted(link.health.errors.items()):
                errors.add_metric([link_id, kind], n)
        yield from (up, errors)

    def _sinks(self) -> Iterator[Metric]:
        def counter(name: str, text: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"streetsense_sink_{name}", text, labels=["sink"])

        def gauge(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"streetsense_sink_{name}", text, labels=["sink"])

        sent = counter("sent_records", "Spool records delivered")
        sent_points = counter("sent_points", "Points delivered (lines, messages, readings)")
        sent_bytes = counter("sent_bytes", "Bytes delivered")
        failures = counter("failures", "Failed delivery attempts")
        refused = counter("refused_points", "Points a full spool refused")
        dropped = counter("dropped_points", "Points a full spool deleted (drop_oldest)")
        rejected = counter("rejected_records", "Records set aside as corrupt or refused for good")
        restarts = counter("task_restarts", "Delivery tasks restarted after dying")
        pending_points = gauge("pending_points", "Points waiting in the spool")
        pending_bytes = gauge("spooled_bytes", "Bytes waiting in the spool")
        oldest = gauge("oldest_pending_seconds", "Age of the oldest waiting record")
        full = gauge("spool_full", "Spool full (refusing or dropping)")
        up = gauge("up", "Destination takes data")
        alive = gauge("task_alive", "Delivery task running")
        last = gauge("last_success_timestamp_seconds", "Unix time of the last delivery")
        for sink in self.controller.telemetry.sinks():
            label = [sink.name]
            sent.add_metric(label, sink.stats.delivered)
            sent_points.add_metric(label, sink.stats.delivered_points)
            sent_bytes.add_metric(label, sink.stats.delivered_bytes)
            failures.add_metric(label, sink.stats.failures)
            refused.add_metric(label, sink.refused_points)
            dropped.add_metric(label, sink.dropped_points)
            rejected.add_metric(label, sink.rejected_records)
            restarts.add_metric(label, sink.stats.restarts)
            pending_points.add_metric(label, sink.pending_points)
            pending_bytes.add_metric(label, sink.pending_bytes)
            oldest.add_metric(label, sink.oldest_pending_age or 0.0)
            full.add_metric(label, int(sink.spool_full))
            up.add_metric(label, int(sink.up))
            alive.add_metric(label, int(sink.task_alive))
            if sink.stats.last_delivery is not None:
                last.add_metric(label, sink.stats.last_delivery)
        yield from (sent, sent_points, sent_bytes, failures, refused, dropped, rejected, restarts)
        yield from (pending_points, pending_bytes, oldest, full, up, alive, last)

    def _rules_and_alarms(self) -> Iterator[Metric]:
        rules = self.controller.rules
        duration = GaugeMetricFamily(
            "streetsense_rule_pass_seconds", "Time the rules took over the last batch"
        )
        duration.add_metric([], rules.stats.last_eval_s)
        batches = CounterMetricFamily("streetsense_rule_batches", "Batches the rules judged")
        batches.add_metric([], rules.stats.batches)
        alarms = GaugeMetricFamily(
            "streetsense_alarms_open", "Active alarms by severity", labels=["severity"]
        )
        by_severity = Counter(a.severity for a in rules.manager.list() if a.active)
        for severity in SEVERITIES:
            alarms.add_metric([severity], by_severity[severity])
        latency = HistogramMetricFamily(
            "streetsense_batch_to_alarm_seconds",
            "From a batch's arrival at the rules until its alarms are applied",
        )
        record = rules.stats.batch_to_alarm
        latency.add_metric([], record.cumulative(), record.total_s)
        age = HistogramMetricFamily(
            "streetsense_reading_to_alarm_seconds",
            "From a batch's oldest polled reading until its alarms are applied",
        )
        record = rules.stats.reading_to_alarm
        age.add_metric([], record.cumulative(), record.total_s)
        yield from (duration, batches, alarms, latency, age)

    def _work(self) -> Iterator[Metric]:
        c = self.controller
        cases = GaugeMetricFamily("streetsense_cases_open", "Open cases")
        cases.add_metric([], self.cases.open)
        overdue = GaugeMetricFamily("streetsense_cases_overdue", "Open cases past their time")
        overdue.add_metric([], self.cases.overdue)
        commands = CounterMetricFamily(
            "streetsense_commands", "Finished commands by outcome", labels=["outcome"]
        )
        for outcome in ("confirmed", "partial", "failed"):
            commands.add_metric([outcome], c.commands.outcomes[outcome])
        feed = GaugeMetricFamily(
            "streetsense_case_feed_backlog",
            "Alarm notices and batches queued for the case workflow",
        )
        feed.add_metric([], c.case_feed.backlog)
        steps = CounterMetricFamily(
            "streetsense_schedule_steps", "Schedule steps and overrides carried out"
        )
        steps.add_metric([], c.schedules.steps_applied)
        health = GaugeMetricFamily(
            "streetsense_health", "1 for the current verdict of /health", labels=["status"]
        )
        verdict = assess(c).status
        for status in ("ok", "degraded", "failing"):
            health.add_metric([status], int(status == verdict))
        failures = CounterMetricFamily(
            "streetsense_auth_failures", "Requests refused for an unknown key or ticket"
        )
        failures.add_metric([], self.auth_failures)
        yield from (cases, overdue, feed, commands, steps, health, failures)


async def controller_registry(controller: Controller, auth_failures: int = 0) -> CollectorRegistry:
    """A registry holding the controller's metrics as they are now."""
    try:
        open_cases, overdue = await controller.cases.open_counts()
    except Exception:
        # The case database away must not blank every other metric.
        open_cases, overdue = -1, -1
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        ControllerCollector(controller, CaseFigures(open_cases, overdue), auth_failures)
    )
    return registry
