"""Bounds on what the API takes, so odd input is a 4xx with a reason, never a 5xx.

Ids fit a 64-bit database integer, offsets a sane page, dates the years a city
controller deals with, numbers are finite.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Annotated

from fastapi import Path, Query

from api.errors import refused

#: The largest id SQLite and PostgreSQL store (signed 64 bits).
MAX_ID = 2**63 - 1
FIRST_YEAR, LAST_YEAR = 2000, 2100

RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")]


def row_id(text: str) -> int | None:
    """A decimal id in ASCII digits that fits the database, else None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def check_day(day: date | None, name: str) -> None:
    """422 unless the day lies in the years the controller deals with."""
    if day is not None and not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise refused(
            422,
            f"{name} must lie in {FIRST_YEAR}..{LAST_YEAR}",
            "refusal.year_range",
            field=name,
            first=FIRST_YEAR,
            last=LAST_YEAR,
        )


def check_time(moment: datetime | None, name: str) -> None:
    """422 unless the time lies in the years the controller deals with."""
    if moment is not None:
        check_day(moment.date(), name)


def check_finite(value: float | None, name: str) -> None:
    """422 for NaN or infinity."""
    if value is not None and not math.isfinite(value):
        raise refused(422, f"{name} must be a finite number", "refusal.not_finite", field=name)


def check_span(
    start: datetime | None,
    end: datetime | None,
    names: tuple[str, str] = ("start", "end"),
    *,
    ordered: bool = True,
) -> None:
    """422 unless both ends of a span carry a time zone and, if ``ordered``, start comes
    first: a time without a zone means a different moment in each city."""
    if any(t is not None and t.tzinfo is None for t in (start, end)):
        raise refused(
            422,
            f"{names[0]} and {names[1]} need a time zone (for example 2026-11-22T08:00:00+08:00)",
            "refusal.time_zone",
        )
    if ordered and start is not None and end is not None and start >= end:
        raise refused(422, f"{names[0]} must be before {names[1]}", "refusal.start_before_end")
