"""Reading cases from the case database: one, a case's history, filtered lists, counts."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select

from controller.cases.db import CaseRow, TransitionRow
from controller.cases.requests import CaseNotFound, no_case
from controller.cases.stages import Stage
from controller.state.database import StateDatabase


class CaseReads:
    """Queries of the case database; the case service is one, with its workflow on top."""

    db: StateDatabase

    async def get(self, case_id: int) -> CaseRow:
        """One case; 404 if there is none."""
        async with self.db.session() as session:
            row = await session.get(CaseRow, case_id)
        if row is None:
            raise CaseNotFound(f"no case {case_id}", no_case(case_id))
        return row

    async def history(self, case_id: int) -> list[TransitionRow]:
        """A case's transitions, oldest first."""
        async with self.db.session() as session:
            result = await session.scalars(
                select(TransitionRow)
                .where(TransitionRow.case_id == case_id)
                .order_by(TransitionRow.id)
            )
            return list(result)

    async def find(
        self,
        stage: str | None = None,
        category: str | None = None,
        department: str | None = None,
        grid: str | None = None,
        source: str | None = None,
        overdue: bool | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
        stages: Collection[str] | None = None,
        categories: Collection[str] | None = None,
    ) -> list[CaseRow]:
        """Cases matching every given filter, newest first (``stages``/``categories``: any of)."""
        query = select(CaseRow)
        if stages is not None:
            query = query.where(CaseRow.stage.in_(list(stages)))
        if categories is not None:
            query = query.where(CaseRow.category.in_(list(categories)))
        for column, value in (
            (CaseRow.stage, stage),
            (CaseRow.category, category),
            (CaseRow.department, department),
            (CaseRow.grid, grid),
            (CaseRow.source, source),
            (CaseRow.overdue, overdue),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(CaseRow.reported_at >= since)
        if until is not None:
            query = query.where(CaseRow.reported_at < until)
        query = query.order_by(CaseRow.id.desc()).limit(limit).offset(offset)
        async with self.db.session() as session:
            return list(await session.scalars(query))

    async def open_counts(self) -> tuple[int, int]:
        """How many cases are open, and how many of them are overdue."""
        open_stages = [s.value for s in Stage if s.open]
        async with self.db.session() as session:
            rows = await session.execute(
                select(CaseRow.overdue, func.count())
                .where(CaseRow.stage.in_(open_stages))
                .group_by(CaseRow.overdue)
            )
            by_flag = {bool(flag): int(n) for flag, n in rows.all()}
        return sum(by_flag.values()), by_flag.get(True, 0)

    async def due_between(self, start: float, end: float) -> list[CaseRow]:
        """Cases whose time limit ends in ``[start, end)`` (the base of the rates)."""
        async with self.db.session() as session:
            result = await session.scalars(
                select(CaseRow).where(CaseRow.due_at >= start).where(CaseRow.due_at < end)
            )
            return list(result)
