"""The case service: the workflow of cases (受理 to 评价), their records and time limits.

Cases come from people (``open_case``) and from sensor alarms, through the
alarm bridge (:class:`~controller.cases.alarm_bridge.AlarmCaseBridge`, at
``CaseService.alarms``), which opens, joins and verifies them by telemetry.

Every transition is a row (who, when, note) and, with a webhook, an outbox
row written in the same database transaction, so no transition is lost
between the database and the city platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.cases.alarm_bridge import AlarmCaseBridge, EvidenceSource, LiveFaults
from controller.cases.config import CasesConfig
from controller.cases.db import CaseRow, OutboxRow, TransitionRow
from controller.cases.exchange import CaseRecord
from controller.cases.photos import CasePhotos
from controller.cases.reads import CaseReads
from controller.cases.requests import (
    SYSTEM,
    TELEMETRY,
    CaseConflict,
    CaseInvalid,
    CaseNotFound,
    NewCase,
    TransitionRequest,
    no_case,
)
from controller.cases.routing import CaseRouting
from controller.cases.stages import CaseAction, Stage, TransitionRefused, next_stage
from controller.cases.titles import OVERDUE_NOTE, case_title, escalation_note, fault_words
from controller.control.audit import Actor
from controller.registry import Registry
from controller.state.database import StateDatabase
from drivers.errors import PeopleMessage
from drivers.tasks import BackgroundTasks
from rules.alarm_model import Alarm, severity_rank

log = logging.getLogger(__name__)

#: How often alarm notices that waited for the database are tried again.
PENDING_RETRY_SECONDS = 2.0


#: Actions a person may not take on a sensor case while its fault is still active
#: without ``force``: each would end the case and leave the live fault without one.
ENDING_ACTIONS = frozenset({CaseAction.PASS_VERIFICATION, CaseAction.CLOSE, CaseAction.REJECT})


TransitionHook = Callable[[CaseRow, TransitionRow], Awaitable[None]]


class CaseService(CaseReads):
    """Opens, moves and verifies cases (and reads them: :class:`CaseReads`)."""

    def __init__(
        self,
        config: CasesConfig,
        db: StateDatabase,
        registry: Registry,
        evidence: EvidenceSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.db = db
        self._owns_db = False
        self.registry = registry
        self.clock = clock
        self.categories = {c.id: c for c in config.categories}
        self.routing = CaseRouting(config)
        self.faults = LiveFaults()
        #: Where alarms and polls come in (``on_alarm``, ``on_batch``).
        self.alarms = AlarmCaseBridge(self, self.faults, evidence)
        self.photos = CasePhotos(db, clock)
        self._hooks: list[TransitionHook] = []
        self._tasks = BackgroundTasks()
        self._lock = asyncio.Lock()

    def on_transition(self, hook: TransitionHook) -> None:
        """Call ``hook`` after every committed transition (the webhook sender wakes on it)."""
        self._hooks.append(hook)

    async def start(self) -> None:
        """Start the overdue watch, opening the database if nobody has (a service on its
        own; in the controller the state database is opened before any store)."""
        self._owns_db = not self.db.is_open
        if self._owns_db:
            await self.db.open()
        self._tasks.start(self._overdue_loop(), "cases:overdue")
        self._tasks.start(self._pending_loop(), "cases:pending")

    async def stop(self) -> None:
        """Stop the overdue watch (and close the database if :meth:`start` opened it)."""
        await self._tasks.stop()
        if self._owns_db:
            await self.db.close()

    # -- opening ---------------------------------------------------------------------------

    async def open_case(self, new: NewCase, actor: Actor) -> CaseRow:
        """Record a reported case, awaiting acceptance."""
        if new.category not in self.categories:
            raise CaseInvalid(
                f"unknown category {new.category!r} (known: {', '.join(self.categories)})",
                PeopleMessage("refusal.unknown_category", {"category": new.category}),
            )
        category = self.categories[new.category]
        now = self.clock()
        row = CaseRow(
            source=new.source,
            stage=Stage.AWAITING_ACCEPTANCE.value,
            category=category.id,
            category_kind=category.kind,
            class_code=category.code,
            subclass_code=category.subcode,
            severity=new.severity,
            title=new.title,
            description=new.description,
            component_id=new.component_id,
            device_id=new.device_id,
            fault_key=new.fault_key,
            admin_code=new.admin_code,
            street_code=new.street_code,
            community_code=new.community_code,
            grid=new.grid,
            road=new.road,
            district=new.district,
            lat=new.lat,
            lon=new.lon,
            address=new.address,
            media=list(new.media),
            alarm_ids=list(new.alarm_ids),
            evidence=new.evidence,
            department=new.department,
            reporter=new.reporter,
            contact=new.contact,
            reported_at=now,
            due_at=now + self.routing.time_limit(category.id, new.severity),
            updated_at=now,
        )
        async with self._lock, self.db.session() as session:
            session.add(row)
            await session.flush()
            transition = await self._record(session, row, "report", "", actor, new.description, {})
            await session.commit()
        await self._announce(row, transition)
        return row

    async def note_repeat(self, case_id: int, alarm: Alarm) -> None:
        """A repeat of a fault joins its open case; a worse one escalates it."""
        escalation = None
        async with self._lock, self.db.session() as session:
            current = await session.get(CaseRow, case_id)
            assert current is not None
            if alarm.id not in current.alarm_ids:
                current.alarm_ids = [*current.alarm_ids, alarm.id]
            now = self.clock()
            if severity_rank(alarm.severity) > severity_rank(current.severity):
                escalation = await self._escalate(session, current, alarm, now)
            current.updated_at = now
            await session.commit()
        if escalation is not None:
            await self._announce(*escalation)

    async def _escalate(
        self, session: AsyncSession, row: CaseRow, alarm: Alarm, now: float
    ) -> tuple[CaseRow, TransitionRow]:
        """The fault got worse (blue water became red): the case takes the new
        severity, its time limit counted from now unless the old one ends sooner,
        and a title that says what it is now."""
        before = {"severity": row.severity, "due_at": row.due_at, "title": row.title}
        row.severity = alarm.severity
        due = now + self.routing.time_limit(row.category, alarm.severity)
        if row.due_at is None or due < row.due_at:
            row.due_at = due
        category = self.routing.category_for(alarm.device_class, alarm.kind)
        row.title = case_title(category.name, alarm)
        note = escalation_note(alarm)
        transition = await self._record(
            session, row, "escalate", row.stage, TELEMETRY, note, {"previous": before}
        )
        return row, transition

    # -- moving ------------------------------------------------------------------------------

    async def transition(self, case_id: int, request: TransitionRequest, actor: Actor) -> CaseRow:
        """Apply one action; 409 with the reason when it does not fit the case."""
        return await self.transitions(case_id, [request], actor)

    async def transitions(
        self, case_id: int, requests: list[TransitionRequest], actor: Actor
    ) -> CaseRow:
        """Apply actions in turn, in one database transaction (all or none: the
        controller's accept, file and dispatch of a sensor case); 409 as for one."""
        async with self._lock, self.db.session() as session:
            row = await session.get(CaseRow, case_id)
            if row is None:
                raise CaseNotFound(f"no case {case_id}", no_case(case_id))
            recorded: list[TransitionRow] = []
            for request in requests:
                recorded += await self._apply_action(session, row, request, actor)
            await session.commit()
        after = Stage(row.stage)
        if after in (Stage.EVALUATED, Stage.REJECTED) and self.faults.is_active(row.fault_key):
            self.faults.reopen.add(row.fault_key)
        for t in recorded:
            await self._announce(row, t)
        return row

    async def _apply_action(
        self, session: AsyncSession, row: CaseRow, request: TransitionRequest, actor: Actor
    ) -> list[TransitionRow]:
        before = Stage(row.stage)
        try:
            after = next_stage(before, request.action)
        except TransitionRefused as exc:
            words = PeopleMessage(
                "refusal.case_stage", {"stage": exc.stage.value, "action": exc.action.value}
            )
            raise CaseConflict(str(exc), words) from exc
        self._refuse_under_live_fault(row, request, actor)
        details = self._apply(row, request)
        if request.force and request.action in ENDING_ACTIONS:
            details["forced"] = True
        row.stage = after.value
        row.updated_at = self.clock()
        recorded = [
            await self._record(
                session, row, request.action.value, before.value, actor, request.note, details
            )
        ]
        if after is Stage.CLOSED:
            # Evaluation follows from the record: on time, overdue or reworked.
            row.evaluation = _evaluation(row)
            row.stage = Stage.EVALUATED.value
            recorded.append(
                await self._record(
                    session,
                    row,
                    CaseAction.EVALUATE.value,
                    Stage.CLOSED.value,
                    SYSTEM,
                    row.evaluation,
                    {"evaluation": row.evaluation},
                )
            )
        return recorded

    def _refuse_under_live_fault(
        self, row: CaseRow, request: TransitionRequest, actor: Actor
    ) -> None:
        if (
            request.action not in ENDING_ACTIONS
            or actor.role == "system"
            or not row.fault_key
            or not self.faults.is_active(row.fault_key)
        ):
            return
        alarm = self.faults.active[row.fault_key]
        if not request.force:
            raise CaseConflict(
                f"the fault is still active ({fault_words(alarm)} on {alarm.device}): "
                "wait for it to clear, or give force with a note saying why; "
                "a forced close opens a new case at the next poll that still sees it",
                PeopleMessage(
                    "refusal.fault_active",
                    {
                        "device": alarm.device,
                        "fault": fault_words(alarm, "zh"),
                        "fault_en": fault_words(alarm, "en"),
                    },
                ),
            )
        if not request.note:
            raise CaseInvalid(
                f"a forced {request.action.value} needs a note saying why",
                PeopleMessage("refusal.note_required", {"action": request.action.value}),
            )

    def _apply(self, row: CaseRow, request: TransitionRequest) -> dict[str, Any]:
        now = self.clock()
        action = request.action
        details: dict[str, Any] = {}
        if action in (CaseAction.REJECT, CaseAction.RETURN, CaseAction.EXTEND) and not request.note:
            raise CaseInvalid(
                f"{action.value} needs a note saying why",
                PeopleMessage("refusal.note_required", {"action": action.value}),
            )
        if action is CaseAction.ACCEPT:
            row.accepted_at = now
        elif action is CaseAction.FILE:
            row.filed_at = now
        elif action is CaseAction.DISPATCH:
            department = request.department or self.routing.department_for(
                row.category, row.grid, row.department
            )
            if not department:
                raise CaseInvalid(
                    "no department: give one, or add a routing rule",
                    PeopleMessage("refusal.no_department"),
                )
            row.department = department
            row.dispatched_at = now
            details["department"] = department
        elif action is CaseAction.RETURN:
            row.return_count += 1
            details["from_department"] = row.department
        elif action is CaseAction.REPORT_DISPOSAL:
            row.disposed_at = now
        elif action is CaseAction.PASS_VERIFICATION:
            row.verified_at = now
        elif action is CaseAction.FAIL_VERIFICATION:
            row.rework_count += 1
            row.verified_at = None
        elif action is CaseAction.CLOSE:
            if row.verified_at is None:
                raise CaseConflict(
                    "cannot close: verification has not passed",
                    PeopleMessage("refusal.close_unverified"),
                )
            row.closed_at = now
        elif action is CaseAction.EXTEND:
            if request.due_at is None or row.due_at is None or request.due_at <= row.due_at:
                raise CaseInvalid(
                    "extend needs due_at later than the current due time",
                    PeopleMessage("refusal.extend_not_later"),
                )
            details["previous_due_at"] = row.due_at
            row.due_at = request.due_at
            row.extension_count += 1
            if row.due_at > now:
                row.overdue = False
        if request.assignee is not None:
            row.assignee = request.assignee
            details["assignee"] = request.assignee
        return details

    async def _record(
        self,
        session: AsyncSession,
        row: CaseRow,
        action: str,
        before: str,
        actor: Actor,
        note: str,
        details: dict[str, Any],
    ) -> TransitionRow:
        transition = TransitionRow(
            case_id=row.id,
            at=self.clock(),
            action=action,
            from_stage=before,
            to_stage=row.stage,
            actor=actor.name,
            role=actor.role,
            note=note,
            details=details,
        )
        session.add(transition)
        await session.flush()  # gives the transition its id, which keys its delivery
        if self.config.webhook is not None:
            # Written in the same transaction as the transition: nothing lost between them.
            session.add(_outbox_row(row, transition, self.clock()))
        return transition

    async def _announce(self, row: CaseRow, transition: TransitionRow) -> None:
        for hook in self._hooks:
            try:
                await hook(row, transition)
            except Exception:
                log.exception("case transition hook %r failed", hook)

    # -- time limits -------------------------------------------------------------------------

    async def flag_overdue(self) -> list[int]:
        """Mark open cases past their due time; returns their ids."""
        now = self.clock()
        flagged = []
        async with self._lock, self.db.session() as session:
            rows = list(
                await session.scalars(
                    select(CaseRow)
                    .where(CaseRow.due_at < now)
                    .where(CaseRow.overdue.is_(False))
                    .where(CaseRow.stage.in_([s.value for s in Stage if s.open]))
                )
            )
            transitions = []
            for row in rows:
                row.overdue = True
                row.updated_at = now
                transition = await self._record(
                    session, row, "overdue", row.stage, SYSTEM, OVERDUE_NOTE, {}
                )
                transitions.append((row, transition))
                flagged.append(row.id)
            await session.commit()
        for row, transition in transitions:
            await self._announce(row, transition)
        return flagged

    async def _pending_loop(self) -> None:
        # Not with the overdue check (every 30 s): an urgent flood case raised while
        # PostgreSQL restarted should reach the dispatchers as soon as it is back.
        while True:
            await asyncio.sleep(PENDING_RETRY_SECONDS)
            if not self.alarms.pending_notices:
                continue
            # Still away: the first failure was logged, health counts what waits.
            with contextlib.suppress(Exception):
                await self.alarms.retry_pending()

    async def _overdue_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.overdue_check_interval)
            try:
                await self.flag_overdue()
            except Exception:
                log.exception(
                    "case housekeeping failed; trying again in %.0f s",
                    self.config.overdue_check_interval,
                )


def _evaluation(row: CaseRow) -> str:
    if row.rework_count:
        return "reworked"
    if row.due_at is not None and row.closed_at is not None and row.closed_at > row.due_at:
        return "overdue"
    return "on_time"


def _outbox_row(row: CaseRow, transition: TransitionRow, now: float) -> OutboxRow:
    key = f"streetsense-case-{row.id}-transition-{transition.id}"
    return OutboxRow(
        idempotency_key=key,
        body={
            "event": "case.transition",
            "idempotency_key": key,
            "transition": {
                "action": transition.action,
                "from_stage": transition.from_stage,
                "to_stage": transition.to_stage,
                "at": transition.at,
                "actor": transition.actor,
                "role": transition.role,
                "note": transition.note,
                "details": transition.details,
            },
            "case": CaseRecord.from_row(row).model_dump(),
        },
        next_at=now,
    )
