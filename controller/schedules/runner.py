"""The schedule runner: tonight's steps sent on time, overrides honoured, device tables pushed.

What is due when comes from :class:`SchedulePlan`; pushing a cabinet's table
from :class:`DeviceTablePusher`; this module decides when to act and sends.

One task sleeps on a :class:`ScheduleClock` until the next thing is due: a
step of some place, an override starting or ending, or the daily planning
time (when device tables are pushed). When it wakes it looks at everything
due since it last woke, so a late wake-up (a busy machine, a restart) still
ends in the state the schedule wants, not in a burst of stale steps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from controller.control.audit import Actor
from controller.control.dispatcher import CommandDispatcher, CommandRefused, CommandRequest
from controller.control.selector import GroupSelector
from controller.control.targets import CircuitTarget
from controller.control.writes import Action
from controller.schedules.clocks import ScheduleClock
from controller.schedules.device_tables import TablePush
from controller.schedules.overrides import Override, OverrideStore
from controller.schedules.places import SchedulePlace, resolve_places
from controller.schedules.plan import GroupPlan, SchedulePlan
from controller.schedules.table_pusher import SCHEDULER, DeviceTablePusher
from controller.schedules.timeline import PlannedStep, night_of
from drivers.tasks import BackgroundTasks

log = logging.getLogger(__name__)


State = tuple[Literal["on", "off", "dim"], int | None]
#: Called with the lamp device indices of places whose scheduled state was just set.
PlacesApplied = Callable[[list[int]], None]


@dataclass(frozen=True)
class FiredStep:
    """What the runner did at one moment for one group (or override)."""

    at: float
    source: str
    action: str
    level: int | None
    places: tuple[str, ...]
    commands: tuple[int, ...]


@dataclass
class _Batch:
    circuits: list[CircuitTarget] = field(default_factory=list)
    lamps: list[int] = field(default_factory=list)
    standalone: list[int] = field(default_factory=list)
    places: list[str] = field(default_factory=list)


class ScheduleRunner:
    """Runs the configured schedules against the command dispatcher."""

    def __init__(
        self,
        plan: SchedulePlan,
        dispatcher: CommandDispatcher,
        table_pusher: DeviceTablePusher,
        clock: ScheduleClock,
        overrides: OverrideStore,
    ) -> None:
        self.plan = plan
        self.registry = plan.registry
        self.dispatcher = dispatcher
        self.table_pusher = table_pusher
        self.tz = plan.tz
        self.clock = clock
        self.overrides = overrides
        self.log: deque[FiredStep] = deque(maxlen=2000)
        self._active: list[Override] = []
        self._override_places: dict[int, list[SchedulePlace]] = {}
        self._tasks = BackgroundTasks()
        self._last = 0.0
        self._wake = asyncio.Event()
        #: Set while the runner sleeps: everything due so far has been done.
        self._idle = asyncio.Event()
        self._applied_hooks: list[PlacesApplied] = []
        #: Schedule steps and overrides carried out since start, for metrics.
        self.steps_applied = 0

    def on_places_applied(self, hook: PlacesApplied) -> None:
        """Call ``hook`` with the lamps of places once a schedule step or a device table
        has put them in their scheduled state (day-burning is judged from then on)."""
        self._applied_hooks.append(hook)

    def _applied(self, places: list[SchedulePlace]) -> None:
        if self._applied_hooks and places:
            lamps = self.plan.lamps_of(places)
            for hook in self._applied_hooks:
                hook(lamps)

    # -- running ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load overrides, put every place in its scheduled state, push tables, run."""
        self.clock.start()
        self._active = await self.overrides.unfinished()
        now = self.clock.now()
        self._last = now
        await self._override_transitions(now)
        await self._restore_all(now)
        await self.push_tables(now)
        self._tasks.start(self._run(), "schedules")

    async def stop(self) -> None:
        """Stop the runner."""
        await self._tasks.stop()
        self.clock.stop()

    async def poke(self) -> None:
        """Act on what is due now and re-plan the next wake-up; return when done."""
        if not self._tasks.running:
            return
        self._idle.clear()
        self._wake.set()
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            now = self.clock.now()
            due = [self.plan.next_plan_time(now)]
            step = self.plan.next_step_after(self._last)
            if step is not None:
                due.append(step)
            for o in self._active:
                due += [t for t in (o.starts_at, o.expires_at) if t > self._last]
            wake = max(min(due), now)
            self._wake.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep_until(wake))
            poked = asyncio.ensure_future(self._wake.wait())
            self._idle.set()
            try:
                await asyncio.wait({sleeper, poked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._idle.clear()
                sleeper.cancel()
                poked.cancel()
            await self._tick(self.clock.now())

    async def _tick(self, now: float) -> None:
        start, self._last = self._last, now
        try:
            await self._override_transitions(now)
            for plan in self.plan.central():
                steps = self.plan.steps_in(plan, start, now)
                if steps:
                    await self._apply_steps(plan, steps, now)
            if start < self.plan.next_plan_time(start) <= now:
                self.plan.forget_before(now)
                await self.push_tables(now)
        except Exception:
            # A schedule must survive one bad step; the next one comes regardless.
            log.exception("schedule step at %s failed", datetime.fromtimestamp(now, self.tz))

    def _places_of(self, o: Override) -> list[SchedulePlace]:
        """An override's places, resolved once (every step checks them)."""
        if o.id not in self._override_places:
            self._override_places[o.id] = resolve_places(self.registry, o.selector)
        return self._override_places[o.id]

    def _covered(self, now: float) -> tuple[set[CircuitTarget], set[int]]:
        circuits: set[CircuitTarget] = set()
        lamps: set[int] = set()
        for o in self._active:
            if o.active(now) and o.applied:
                for place in self._places_of(o):
                    circuits.update(place.circuits)
                    lamps.update(place.lamps)
                    lamps.update(place.standalone)
        return circuits, lamps

    async def _apply_steps(
        self, plan: GroupPlan, steps: dict[int, PlannedStep], now: float
    ) -> None:
        by_state: dict[State, list[SchedulePlace]] = {}
        for place, step in steps.items():
            by_state.setdefault((step.action, step.level), []).append(plan.places[place])
        for state, places in by_state.items():
            await self._apply(state, places, f"schedule:{plan.group.id}", SCHEDULER, now)

    async def _apply(
        self,
        state: State,
        places: list[SchedulePlace],
        source: str,
        actor: Actor,
        now: float,
        honour_overrides: bool = True,
    ) -> None:
        covered_c, covered_l = self._covered(now) if honour_overrides else (set(), set())
        batch = _Batch()
        for place in places:
            batch.circuits += [c for c in place.circuits if c not in covered_c]
            batch.lamps += [i for i in place.lamps if i not in covered_l]
            batch.standalone += [i for i in place.standalone if i not in covered_l]
            batch.places.append(place.key)
        action, level = state
        plain = [i for i in batch.standalone if i not in set(batch.lamps)]
        requests: list[tuple[Action, list[CircuitTarget], list[int], int | None]] = []
        if action == "on":
            requests += [
                (Action.CIRCUIT_ON, batch.circuits, [], None),
                (Action.LAMP_DIM, [], batch.lamps, level or 100),
                (Action.LAMP_ON, [], plain, None),
            ]
        elif action == "dim":
            requests.append((Action.LAMP_DIM, [], batch.lamps, level))
        else:
            requests += [
                (Action.CIRCUIT_OFF, batch.circuits, [], None),
                (Action.LAMP_OFF, [], batch.standalone, None),
            ]
        ids: list[int] = []
        described = _describe(places)
        for command_action, circuits, lamps, dim in requests:
            if not circuits and not lamps:
                continue
            request = CommandRequest(
                command_action,
                described,
                dim=dim,
                confirm=True,
                circuits=tuple(circuits),
                lamps=tuple(lamps),
            )
            try:
                # Circuits first: a lamp can only confirm its level once its circuit is live.
                command = await self.dispatcher.execute(request, actor, source)
            except CommandRefused as exc:
                log.warning("%s: %s refused: %s", source, command_action.value, exc.reason)
                continue
            ids.append(command.id)
        self.log.append(FiredStep(now, source, action, level, tuple(batch.places), tuple(ids)))
        self.steps_applied += 1
        self._applied(places)

    async def _restore_all(self, now: float) -> None:
        """Put every centrally scheduled place into the state the schedule wants now."""
        for plan in self.plan.central():
            steps = {
                i: _as_state(step)
                for i in range(len(plan.places))
                if (step := self.plan.desired(plan, i, now)) is not None
            }
            if steps:
                await self._apply_steps(plan, steps, now)

    async def _override_transitions(self, now: float) -> None:
        for o in list(self._active):
            if o.cancelled_at is None and not o.applied and o.starts_at <= now < o.expires_at:
                o.applied = True
                await self.overrides.save(o)
                state: State = (o.action, o.level)
                await self._apply(
                    state,
                    self._places_of(o),
                    f"override:{o.id}",
                    o.actor,
                    now,
                    honour_overrides=False,
                )
            if o.cancelled_at is not None or now >= o.expires_at:
                o.ended = True
                await self.overrides.save(o)
                self._active.remove(o)
                if o.applied:
                    await self._restore_covered(o, now)
                self._override_places.pop(o.id, None)

    async def _restore_covered(self, o: Override, now: float) -> None:
        keys = {p.key for p in self._places_of(o)}
        for plan in self.plan.central():
            steps = {
                i: _as_state(step)
                for i, place in enumerate(plan.places)
                if place.key in keys and (step := self.plan.desired(plan, i, now)) is not None
            }
            if steps:
                await self._apply_steps(plan, steps, now)

    async def add_override(self, override: Override) -> Override:
        """Store an override; returns once the runner has acted on it (if it starts now)."""
        stored = await self.overrides.add(override)
        self._active.append(stored)
        await self.poke()
        return stored

    async def cancel_override(self, override_id: int) -> Override | None:
        """End an override now; its devices go back to the schedule."""
        for o in self._active:
            if o.id == override_id:
                o.cancelled_at = self.clock.now()
                await self.overrides.save(o)
                await self.poke()
                return o
        return None

    # -- device tables --------------------------------------------------------------------

    async def push_tables(self, now: float, group_id: str | None = None) -> list[TablePush]:
        """Write tonight's steps into the time tables of device-mode cabinets."""
        night = night_of(now, self.tz)
        pushed = []
        for plan in self.plan.groups:
            if plan.group.mode != "device" or (group_id and plan.group.id != group_id):
                continue
            steps = self.plan.night_plan(plan, night)
            for place, place_steps in zip(plan.places, steps, strict=True):
                if place.cabinet is None:
                    continue
                result = await self.table_pusher.push(place, place_steps, night, now)
                if result.ok:
                    self._applied([place])
                pushed.append(result)
        return pushed


def _as_state(step: PlannedStep) -> PlannedStep:
    """A step as a whole state: a restored "dim 30" must also close the circuits."""
    return PlannedStep(step.at, "on" if step.lit else "off", step.level)


def _describe(places: list[SchedulePlace]) -> GroupSelector:
    """A selector naming the places, for the audit log (the targets are given resolved)."""
    cabinets = [p.key for p in places if p.cabinet is not None]
    lamps = [p.key for p in places if p.cabinet is None]
    return GroupSelector(cabinets=cabinets or None, lamps=lamps or None, all=not places)
