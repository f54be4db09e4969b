"""Is the controller doing its job? ``ok``, ``degraded`` with reasons, or ``failing``.

``failing`` means data is not flowing: the controller is not running, or no
device has answered for several poll intervals although there are devices
to poll. ``degraded`` means data flows but something needs a person: a sink
or store failing, links down, devices offline, alarms waiting for the case
database. A load balancer or a systemd watchdog acts on ``failing`` (HTTP 503).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from controller.leadership.elector import LeaderElector
from controller.runtime import Controller

Status = Literal["ok", "degraded", "failing"]
#: Polls that may be missed before "nothing answers" counts as failing.
STALE_INTERVALS = 3


@dataclass
class ServiceHealth:
    """The verdict and why."""

    status: Status
    reasons: list[str] = field(default_factory=list)


def _listing(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def assess(controller: Controller, now: float | None = None) -> ServiceHealth:
    """Judge the controller from its own counters (no I/O)."""
    now = time.time() if now is None else now
    if not controller.running:
        return ServiceHealth("failing", ["the controller is not running"])
    elector = controller.leadership
    lease = [] if elector is None else _lease_reasons(elector)
    if elector is not None and not elector.leading:
        lease += _mirror_reasons(controller, now) + _sink_reasons(controller, now)
        return ServiceHealth("degraded" if lease else "ok", lease)
    # Failing, it still says everything else: a leader cut off from the state database
    # with its devices silent also has its lease run out and its alarms waiting.
    failing = _data_not_flowing(controller, now)
    reasons: list[str] = lease
    reasons += _sink_reasons(controller, now)
    down = [link_id for link_id, link in controller.links.items() if not link.health.connected]
    if down:
        reasons.append(f"links down: {_listing(down)}")
    polled = [(t, controller.poller.health[t.device]) for t in controller.registry.targets]
    offline = [
        controller.registry.devices[t.device].id
        for t, h in polled
        if not h.online and not h.never_polled
    ]
    if offline:
        reasons.append(f"{len(offline)} devices offline: {_listing(offline)}")
    unwritten = controller.rules.store.unwritten
    if unwritten:
        reasons.append(f"{unwritten} alarm changes wait for the state database")
    if controller.cases.alarms.pending_notices:
        reasons.append(
            f"{controller.cases.alarms.pending_notices} alarms wait for the state database "
            "to become cases"
        )
    if failing:
        return ServiceHealth("failing", failing + reasons)
    return ServiceHealth("degraded" if reasons else "ok", reasons)


def _lease_reasons(elector: LeaderElector) -> list[str]:
    """What is wrong with the pair, as seen from this node (no I/O)."""
    if not elector.reachable:
        if elector.leading and not elector.holds():
            return [
                "the lease has run out (state database unreachable): polling goes on, "
                "nothing is sent to devices"
            ]
        if not elector.leading:
            return ["the state database is unreachable: this standby cannot take over"]
    if not elector.leading and elector.other is None:
        return ["no controller of the pair holds the lease"]
    return []


def _mirror_reasons(controller: Controller, now: float) -> list[str]:
    """A standby whose copy of the leader's open alarms has gone stale says so."""
    mirror = controller.alarm_mirror
    if mirror is None:
        return []
    read_at = mirror.refreshed_at or controller.started_at or now
    if now - read_at <= STALE_INTERVALS * mirror.interval:
        return []
    return [f"the open alarms shown here were read {now - read_at:.0f} s ago"]


def _data_not_flowing(controller: Controller, now: float) -> list[str]:
    targets = controller.registry.targets
    if not targets:
        return []
    poller = controller.poller
    window = STALE_INTERVALS * max(poller.interval_of(t) for t in targets)
    started = controller.started_at or now
    if now - started < window:
        return []  # the first polls are still coming
    answered = [poller.health[t.device].last_success for t in targets]
    latest = max((t for t in answered if t is not None), default=None)
    if latest is None or now - latest > window:
        since = "since start" if latest is None else f"for {now - latest:.0f} s"
        return [f"no device has answered {since} ({len(targets)} to poll)"]
    return []


#: A backlog older than this, with the destination up, is worth a person's look.
BACKLOG_AGE = 60.0


def _sink_reasons(controller: Controller, now: float) -> list[str]:
    reasons: list[str] = []
    for sink in controller.telemetry.sinks(now):
        waiting = ""
        if sink.pending_points and sink.oldest_pending_age is not None:
            waiting = (
                f"; {sink.pending_points} points wait in the spool"
                f" (oldest {sink.oldest_pending_age:.0f} s)"
            )
        if not sink.up:
            reasons.append(f"{sink.name} down: {sink.stats.last_error}{waiting}")
        elif (sink.oldest_pending_age or 0.0) > BACKLOG_AGE:
            reasons.append(f"{sink.name} catching up{waiting}")
        if not sink.task_alive:
            reasons.append(
                f"{sink.name}: delivery task not running ({sink.stats.restarts} restarts)"
            )
        if sink.spool_full:
            reasons.append(
                f"{sink.name} spool full: {sink.refused_points} points refused, "
                f"{sink.dropped_points} dropped"
            )
    for name, count in controller.telemetry.sink_errors.items():
        reasons.append(f"{name}: raised on {count} batches (see the log)")
    return reasons
