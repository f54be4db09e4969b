"""Which program a night runs: a calendar's rules in order, first match wins."""

from __future__ import annotations

import calendar as _cal
from datetime import date

from controller.schedules.config import WEEKDAYS, Calendar, CalendarRule


def _nth_weekday_matches(rule: CalendarRule, night: date) -> bool:
    spec = rule.nth_weekday
    assert spec is not None
    if WEEKDAYS[night.weekday()] != spec.weekday:
        return False
    if spec.n == -1:
        days_in_month = _cal.monthrange(night.year, night.month)[1]
        return night.day + 7 > days_in_month
    return (night.day - 1) // 7 + 1 == spec.n


def rule_matches(rule: CalendarRule, night: date) -> bool:
    """Whether every condition of ``rule`` holds for the night starting on ``night``."""
    if rule.weekdays is not None and WEEKDAYS[night.weekday()] not in rule.weekdays:
        return False
    if rule.nth_weekday is not None and not _nth_weekday_matches(rule, night):
        return False
    if rule.months is not None and night.month not in rule.months:
        return False
    if rule.dates is not None and night not in rule.dates:
        return False
    if rule.date_ranges is not None and not any(
        r.start <= night <= r.end for r in rule.date_ranges
    ):
        return False
    return rule.yearly is None or night.strftime("%m-%d") in rule.yearly


def program_for(calendar: Calendar, night: date) -> str:
    """The program id the calendar gives the night starting on ``night``."""
    for rule in calendar.rules:
        if rule_matches(rule, night):
            return rule.program
    return calendar.default
