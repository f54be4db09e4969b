"""Case statistics: closure rate, on-time closure rate, disposal time, rework and extension.

The rates are over the cases *due* in a period (their time limit ends in it),
as city-management assessments count them: closure rate = closed / due,
on-time closure rate = closed by their due time / due. 972 due cases of which
911 were closed and 737 closed on time give 93.72 % and 75.82 %.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from controller.cases.db import CaseRow
from controller.statistics import Period, period_start

CaseGroupBy = Literal["city", "grid", "category", "department", "source"]


@dataclass(frozen=True)
class CaseFigures:
    """The figures of one group of due cases."""

    due: int
    closed: int
    closed_on_time: int
    reworked: int
    extended: int
    disposal_seconds: list[float]

    @property
    def closure_rate(self) -> float | None:
        """Closed / due."""
        return self.closed / self.due if self.due else None

    @property
    def on_time_rate(self) -> float | None:
        """Closed by the due time / due."""
        return self.closed_on_time / self.due if self.due else None

    @property
    def rework_rate(self) -> float | None:
        """Cases that failed a verification / closed."""
        return self.reworked / self.closed if self.closed else None

    @property
    def extension_rate(self) -> float | None:
        """Cases given more time / due."""
        return self.extended / self.due if self.due else None

    @property
    def mean_disposal_s(self) -> float | None:
        """Mean time from dispatch to disposal reported."""
        return (
            sum(self.disposal_seconds) / len(self.disposal_seconds)
            if self.disposal_seconds
            else None
        )


@dataclass(frozen=True)
class CaseReportRow:
    """One period and group."""

    period_start: datetime
    group: str
    figures: CaseFigures


def figures(rows: list[CaseRow]) -> CaseFigures:
    """Figures over cases already chosen as due."""
    closed = [r for r in rows if r.closed_at is not None]
    return CaseFigures(
        due=len(rows),
        closed=len(closed),
        closed_on_time=sum(1 for r in closed if _on_time(r)),
        reworked=sum(1 for r in rows if r.rework_count > 0),
        extended=sum(1 for r in rows if r.extension_count > 0),
        disposal_seconds=[
            r.disposed_at - r.dispatched_at
            for r in rows
            if r.disposed_at is not None and r.dispatched_at is not None
        ],
    )


def _on_time(row: CaseRow) -> bool:
    return row.closed_at is not None and row.due_at is not None and row.closed_at <= row.due_at


def _group_of(row: CaseRow, by: CaseGroupBy) -> str:
    return "all" if by == "city" else (getattr(row, by) or "(none)")


def case_report(
    rows: list[CaseRow], period: Period, by: CaseGroupBy, tz: ZoneInfo
) -> list[CaseReportRow]:
    """Due cases per period (of their due time, in the city's time zone) and group."""
    buckets: dict[tuple[datetime, str], list[CaseRow]] = defaultdict(list)
    for row in rows:
        if row.due_at is None:
            continue
        start = period_start(datetime.fromtimestamp(row.due_at, tz), period)
        buckets[start, _group_of(row, by)].append(row)
    return [
        CaseReportRow(start, group, figures(members))
        for (start, group), members in sorted(buckets.items())
    ]
