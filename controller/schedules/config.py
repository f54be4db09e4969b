"""The ``schedules:`` section of config.yaml: programs, calendars and which group runs which.

In the spirit of TALQ's control programs and calendars: a *program* is one
night's switching and dimming steps; a *calendar* picks the program for each
night by ordered rules (first match wins) over a default; a *group* of
cabinets and lamps follows a calendar, either run centrally or pushed into
the devices' own time-control tables.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.control.selector import GroupSelector

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: HH:MM, or HH:MM:SS where a step must fall within a minute (a device's own time
#: table holds whole minutes: it switches at the minute's start).
CLOCK_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$"
ClockTime = Annotated[str, Field(pattern=CLOCK_PATTERN, description="HH:MM or HH:MM:SS local")]
ScheduleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AstroTime(_Strict):
    """Sunset or sunrise at the cabinet's own place, plus an offset."""

    event: Literal["sunset", "sunrise"]
    offset_minutes: float = Field(default=0.0, ge=-180, le=180)


class ProgramStep(_Strict):
    """One switching or dimming step of a night.

    A fixed time from 12:00 belongs to the evening, before 12:00 to the next
    morning; sunset is the evening's, sunrise the next morning's.
    """

    at: ClockTime | AstroTime
    action: Literal["on", "off", "dim"]
    #: Dim level for on (default 100) and dim (required).
    level: int | None = Field(default=None, ge=1, le=100)
    #: Dim gradually from the level before, reaching ``level`` this many minutes later.
    ramp_minutes: float = Field(default=0.0, ge=0, le=240)

    @field_validator("at", mode="before")
    @classmethod
    def _time_form(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            # YAML 1.1 reads an unquoted 23:00 as the base-60 integer 1380.
            return f"{value // 60:02d}:{value % 60:02d}"
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 3600:
            raise ValueError(
                f"{value} is not a time: YAML reads an unquoted HH:MM:SS as a number; "
                'put it in quotes ("18:30:45")'
            )
        if isinstance(value, str) and not re.fullmatch(CLOCK_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a time: give HH:MM (00:00 to 23:59) or HH:MM:SS "
                "or {event: sunset|sunrise, offset_minutes: N}"
            )
        return value

    @field_validator("action", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        # YAML 1.1 reads a bare on/off as true/false; "action: on" means the word.
        if value is True:
            return "on"
        if value is False:
            return "off"
        return value

    @model_validator(mode="after")
    def _check(self) -> ProgramStep:
        if self.action == "dim" and self.level is None:
            raise ValueError("a dim step needs level")
        if self.action == "off" and self.level is not None:
            raise ValueError("an off step takes no level")
        if self.ramp_minutes and self.action != "dim":
            raise ValueError("only dim steps ramp")
        return self


class Program(_Strict):
    """A night's steps (a TALQ control program)."""

    id: ScheduleId
    #: What people call it (全夜灯, 半夜灯); the console shows the id when it is empty.
    name: str = Field(default="", max_length=64)
    description: str = ""
    steps: list[ProgramStep] = Field(min_length=1)


class NthWeekday(_Strict):
    """The Nth (1-5) or last (-1) given weekday of the month."""

    n: Literal[1, 2, 3, 4, 5, -1]
    weekday: Weekday


class DateRange(_Strict):
    """Both ends included."""

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end < self.start:
            raise ValueError("end is before start")
        return self


class CalendarRule(_Strict):
    """Nights this rule picks ``program`` for; every given condition must hold."""

    program: ScheduleId
    description: str = ""
    weekdays: list[Weekday] | None = None
    nth_weekday: NthWeekday | None = None
    months: list[Annotated[int, Field(ge=1, le=12)]] | None = None
    dates: list[date] | None = None
    date_ranges: list[DateRange] | None = None
    #: Every year on these days, "MM-DD" (National Day: "10-01").
    yearly: (
        list[Annotated[str, Field(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")]] | None
    ) = None

    @model_validator(mode="after")
    def _some_condition(self) -> CalendarRule:
        conditions = (
            self.weekdays,
            self.nth_weekday,
            self.months,
            self.dates,
            self.date_ranges,
            self.yearly,
        )
        if all(c is None for c in conditions):
            raise ValueError(
                "give at least one of weekdays, nth_weekday, months, dates, date_ranges, yearly"
            )
        return self


class Calendar(_Strict):
    """Ordered rules over a default program (a TALQ calendar)."""

    id: ScheduleId
    default: ScheduleId
    rules: list[CalendarRule] = []


class ScheduleGroup(_Strict):
    """A group of cabinets and lamps following one calendar."""

    id: ScheduleId
    #: What people call it (城区主干道); the console shows the id when it is empty.
    name: str = Field(default="", max_length=64)
    calendar: ScheduleId
    targets: GroupSelector
    #: central: the controller sends each step; device: it writes the night's steps
    #: into the cabinets' own time-control tables, and they switch by their clocks.
    mode: Literal["central", "device"] = "central"


class SchedulesConfig(_Strict):
    """Programs, calendars and groups."""

    programs: list[Program] = []
    calendars: list[Calendar] = []
    groups: list[ScheduleGroup] = []
    #: Local time at which tonight is planned and device tables are pushed.
    plan_at: ClockTime = "12:00"
    #: Manual overrides (SQLite), relative to config.yaml.
    db_path: str = "schedules.db"
