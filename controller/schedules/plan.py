"""The schedule as a plan: which step each place wants at any time (pure given the time).

Groups are resolved to places once, each night's steps are computed once per
group (sun times differ across a city) and cached; the runner asks this plan
what is due, and the API asks it what tonight looks like.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from controller.control.targets import UnknownTarget
from controller.registry import Registry
from controller.schedules.calendar import program_for
from controller.schedules.config import Calendar, Program, ScheduleGroup, SchedulesConfig
from controller.schedules.places import SchedulePlace, resolve_places
from controller.schedules.timeline import PlannedStep, night_of, plan_night
from drivers.errors import ConfigError

#: How far ahead the runner looks for its next step (two nights always hold one).
LOOKAHEAD_NIGHTS = 2


@dataclass
class GroupPlan:
    """A schedule group with its calendar and resolved places."""

    group: ScheduleGroup
    calendar: Calendar
    places: list[SchedulePlace]


class SchedulePlan:
    """The configured groups, their places and their nights' steps."""

    def __init__(
        self, registry: Registry, config: SchedulesConfig, tz: ZoneInfo, config_file: str
    ) -> None:
        self.registry = registry
        self.config = config
        self.tz = tz
        self.programs: dict[str, Program] = {p.id: p for p in config.programs}
        self.groups = resolve_groups(registry, config, config_file)
        self._plans: dict[tuple[str, date], list[list[PlannedStep]]] = {}

    def central(self) -> Iterator[GroupPlan]:
        """The groups the centre switches step by step (not by device table)."""
        return (plan for plan in self.groups if plan.group.mode == "central")

    def lamps_of(self, places: list[SchedulePlace]) -> list[int]:
        """Device indices of every lamp a list of places switches."""
        lamps = {i for p in places for i in (*p.lamps, *p.standalone)}
        for place in places:
            if place.cabinet is not None:
                lamps.update(d.index for d in self.registry.lamps_of(place.cabinet))
        return sorted(lamps)

    def scheduled_lamps(self) -> list[int]:
        """Every lamp some schedule group switches, centrally or by device table."""
        return self.lamps_of([p for plan in self.groups for p in plan.places])

    def program_of(self, plan: GroupPlan, night: date) -> Program:
        """The program a group runs on a night."""
        return self.programs[program_for(plan.calendar, night)]

    def night_plan(self, plan: GroupPlan, night: date) -> list[list[PlannedStep]]:
        """Each place's steps on a night (cached)."""
        key = (plan.group.id, night)
        if key not in self._plans:
            self._plans[key] = plan_night(
                self.program_of(plan, night),
                night,
                [p.lat for p in plan.places],
                [p.lon for p in plan.places],
                self.tz,
            )
        return self._plans[key]

    def desired(self, plan: GroupPlan, place: int, at: float) -> PlannedStep | None:
        """The last step at or before ``at`` for a place (None: nothing planned yet)."""
        night = night_of(at, self.tz)
        last: PlannedStep | None = None
        for n in (night - timedelta(days=1), night):
            for step in self.night_plan(plan, n)[place]:
                if step.at <= at:
                    last = step
        return last

    def steps_in(self, plan: GroupPlan, start: float, end: float) -> dict[int, PlannedStep]:
        """Per place, the last step in ``(start, end]``."""
        found: dict[int, PlannedStep] = {}
        first = night_of(start, self.tz) - timedelta(days=1)
        last = night_of(end, self.tz)
        night = first
        while night <= last:
            for place, steps in enumerate(self.night_plan(plan, night)):
                for step in steps:
                    if start < step.at <= end:
                        found[place] = step
            night += timedelta(days=1)
        return found

    def next_step_after(self, at: float) -> float | None:
        """Time of the first step of a centrally run group after ``at``."""
        best: float | None = None
        night = night_of(at, self.tz)
        for plan in self.central():
            for k in range(LOOKAHEAD_NIGHTS + 1):
                for steps in self.night_plan(plan, night + timedelta(days=k)):
                    for step in steps:
                        if step.at > at and (best is None or step.at < best):
                            best = step.at
        return best

    def next_plan_time(self, at: float) -> float:
        """The next daily planning time (device tables are pushed then)."""
        clock = time.fromisoformat(self.config.plan_at)
        local = datetime.fromtimestamp(at, self.tz)
        candidate = datetime.combine(local.date(), clock, tzinfo=self.tz)
        if candidate.timestamp() <= at:
            candidate = datetime.combine(local.date() + timedelta(days=1), clock, tzinfo=self.tz)
        return candidate.timestamp()

    def forget_before(self, now: float) -> None:
        """Drop cached nights older than the day before yesterday."""
        oldest = night_of(now, self.tz) - timedelta(days=2)
        self._plans = {k: v for k, v in self._plans.items() if k[1] >= oldest}


def resolve_groups(
    registry: Registry, config: SchedulesConfig, config_file: str
) -> list[GroupPlan]:
    """Each group with its calendar and places; a ConfigError names a group that does not fit."""
    calendars = {c.id: c for c in config.calendars}
    groups: list[GroupPlan] = []
    for i, g in enumerate(config.groups):
        try:
            places = resolve_places(registry, g.targets)
        except UnknownTarget as exc:
            raise ConfigError(
                config_file, f"schedules.groups[{i}] ({g.id}).targets", str(exc)
            ) from exc
        groups.append(GroupPlan(g, calendars[g.calendar], places))
    owner: dict[str, str] = {}
    for i, plan in enumerate(groups):
        for place in plan.places:
            if place.key in owner:
                # Two groups would fight over the device, each step undoing the other's.
                raise ConfigError(
                    config_file,
                    f"schedules.groups[{i}] ({plan.group.id}).targets",
                    f"{place.key} is already in group {owner[place.key]}",
                )
            owner[place.key] = plan.group.id
    return groups
