"""The case service: cases from alarms and reports, their closed loop, verification by telemetry.

Sensor alarms whose rule says ``case: true`` become cases: one per fault
(a chattering alarm or a re-raised one joins the open case of its fault;
alarms suppressed by a cut circuit or a dead cabinet raise none). With
``auto_dispatch`` the controller accepts, files and dispatches them to the
department the routing table names. When the fault is gone for
``verify_polls`` polls, telemetry reports and verifies the disposal and the
case is closed and evaluated; a fault that comes back during verification
sends the case back to disposal as rework.

Every transition is a row (who, when, note) and, with a webhook, an outbox
row written in the same database transaction, so no transition is lost
between the database and the city platform.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.cases.config import CasesConfig
from controller.cases.db import CaseDatabase, CaseRow, OutboxRow, TransitionRow
from controller.cases.exchange import CaseRecord
from controller.cases.reads import CaseReads
from controller.cases.requests import (
    CaseConflict,
    CaseError,
    CaseInvalid,
    CaseNotFound,
    NewCase,
    TransitionRequest,
)
from controller.cases.routing import CaseRouting
from controller.cases.stages import CaseAction, Stage, TransitionRefused, next_stage
from controller.cases.titles import case_title, fault_words
from controller.control.audit import Actor
from controller.registry import Registry
from drivers.readings import ReadingBatch
from drivers.tasks import BackgroundTasks
from rules.alarm_model import Alarm, AlarmNotice, severity_rank

log = logging.getLogger(__name__)

SYSTEM = Actor("streetsense", "", "system")
TELEMETRY = Actor("telemetry", "", "system")


#: Actions a person may not take on a sensor case while its fault is still active
#: without ``force``: each would end the case and leave the live fault without one.
ENDING_ACTIONS = frozenset({CaseAction.PASS_VERIFICATION, CaseAction.CLOSE, CaseAction.REJECT})


TransitionHook = Callable[[CaseRow, TransitionRow], Awaitable[None]]
EvidenceSource = Callable[[Alarm], Awaitable[dict[str, Any]]]


@dataclass
class _Clearing:
    """A fault whose alarm returned: polls seen since, until verification."""

    case_id: int
    device: int
    polls: int = 0


class CaseService(CaseReads):
    """Opens, moves and verifies cases (and reads them: :class:`CaseReads`)."""

    def __init__(
        self,
        config: CasesConfig,
        db: CaseDatabase,
        registry: Registry,
        evidence: EvidenceSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.db = db
        self.registry = registry
        self.evidence = evidence
        self.clock = clock
        self.categories = {c.id: c for c in config.categories}
        self.routing = CaseRouting(config)
        self._clearing: dict[str, _Clearing] = {}
        # The active alarm of each fault with a case rule, so a person cannot close
        # a case under a live fault by mistake, and a forced close gets a new case.
        self._active: dict[str, Alarm] = {}
        self._reopen: set[str] = set()
        self._retry: collections.deque[AlarmNotice] = collections.deque()
        self._hooks: list[TransitionHook] = []
        self._tasks = BackgroundTasks()
        self._lock = asyncio.Lock()

    def on_transition(self, hook: TransitionHook) -> None:
        """Call ``hook`` after every committed transition (the webhook sender wakes on it)."""
        self._hooks.append(hook)

    async def start(self) -> None:
        """Open the database and start the overdue watch."""
        await self.db.open()
        self._tasks.start(self._overdue_loop(), "cases:overdue")

    async def stop(self) -> None:
        """Stop the overdue watch and close the database."""
        await self._tasks.stop()
        await self.db.close()

    # -- opening ---------------------------------------------------------------------------

    async def open_case(self, new: NewCase, actor: Actor) -> CaseRow:
        """Record a reported case, awaiting acceptance."""
        if new.category not in self.categories:
            raise CaseInvalid(
                f"unknown category {new.category!r} (known: {', '.join(self.categories)})"
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

    async def on_alarm(self, notice: AlarmNotice) -> None:
        """Alarm subscriber: open, join or start verifying sensor cases.

        If the database cannot be reached (a PostgreSQL restart), the notice is
        kept and tried again with the overdue check, in order, so no case is lost.
        """
        if self._retry:
            self._retry.append(notice)
            return
        try:
            await self._on_alarm(notice)
        except CaseError:
            raise
        except Exception:
            log.exception("case for alarm %d not recorded; will retry", notice.alarm.id)
            self._retry.append(notice)

    async def retry_pending(self) -> int:
        """Try the alarm notices that could not be recorded; returns how many went through."""
        done = 0
        while self._retry:
            try:
                await self._on_alarm(self._retry[0])
            except CaseError as exc:
                log.warning("alarm %d makes no case: %s", self._retry[0].alarm.id, exc.reason)
            self._retry.popleft()
            done += 1
        return done

    @property
    def pending_notices(self) -> int:
        """Alarm notices waiting for the database."""
        return len(self._retry)

    async def _on_alarm(self, notice: AlarmNotice) -> None:
        alarm = notice.alarm
        if not alarm.case or not self.config.enabled:
            return
        key = fault_key(alarm)
        if notice.transition in ("raised", "escalated"):
            # Checked now, not when the alarm was raised: the batch that raised a lamp
            # alarm may also have found the cut circuit that explains it.
            if alarm.suppressed_by:
                return
            await self._fault_active(key, alarm)
        elif notice.transition in ("returned", "cleared"):
            await self._fault_gone(key, alarm)

    async def _open_case_of(self, key: str) -> CaseRow | None:
        async with self.db.session() as session:
            result = await session.scalars(
                select(CaseRow)
                .where(CaseRow.fault_key == key)
                .where(CaseRow.stage.not_in([s.value for s in Stage if not s.open]))
                .order_by(CaseRow.id.desc())
                .limit(1)
            )
            return result.first()

    async def _fault_active(self, key: str, alarm: Alarm) -> None:
        self._clearing.pop(key, None)
        self._active[key] = alarm
        self._reopen.discard(key)
        existing = await self._open_case_of(key)
        if existing is not None:
            await self._join(existing, alarm)
            return
        device = self.registry.by_id.get(alarm.device)
        category = self.routing.category_for(alarm.device_class, alarm.kind)
        evidence = await self.evidence(alarm) if self.evidence is not None else {}
        name = device.location.name if device is not None else ""
        new = NewCase(
            source="sensor",
            category=category.id,
            severity=alarm.severity,
            title=case_title(category.name, alarm),
            description=_describe_alarm(alarm, name),
            component_id=(getattr(device.location, "pole", "") if device else "") or alarm.device,
            device_id=alarm.device,
            fault_key=key,
            grid=alarm.grid,
            road=alarm.road,
            district=alarm.district,
            lat=alarm.lat,
            lon=alarm.lon,
            address=" ".join(p for p in (alarm.district, alarm.road, name) if p),
            alarm_ids=[alarm.id],
            evidence=evidence,
            department=device.location.department if device is not None else "",
            admin_code=device.location.admin_code if device is not None else "",
            street_code=device.location.street_code if device is not None else "",
            community_code=device.location.community_code if device is not None else "",
        )
        row = await self.open_case(new, SYSTEM)
        if self.config.auto_dispatch:
            for action in (CaseAction.ACCEPT, CaseAction.FILE, CaseAction.DISPATCH):
                row = await self.transition(row.id, TransitionRequest(action), SYSTEM)

    async def _join(self, row: CaseRow, alarm: Alarm) -> None:
        """A repeat of a fault with an open case: note it there, and if the case was
        awaiting verification, the fault is back: rework."""
        escalation = None
        async with self._lock, self.db.session() as session:
            current = await session.get(CaseRow, row.id)
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
        if row.stage in (Stage.DISPOSAL_REPORTED.value, Stage.UNDER_VERIFICATION.value):
            note = f"telemetry: the fault is back ({alarm.kind} {alarm.level_name})"
            if row.stage == Stage.DISPOSAL_REPORTED.value:
                row = await self.transition(
                    row.id, TransitionRequest(CaseAction.START_VERIFICATION, note), TELEMETRY
                )
            await self.transition(
                row.id, TransitionRequest(CaseAction.FAIL_VERIFICATION, note), TELEMETRY
            )

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
        note = f"escalated to {alarm.severity}: {fault_words(alarm)}"
        transition = await self._record(
            session, row, "escalate", row.stage, TELEMETRY, note, {"previous": before}
        )
        return row, transition

    async def _fault_gone(self, key: str, alarm: Alarm) -> None:
        self._active.pop(key, None)
        self._reopen.discard(key)
        existing = await self._open_case_of(key)
        device = self.registry.by_id.get(alarm.device)
        if existing is None or device is None:
            return
        self._clearing[key] = _Clearing(existing.id, device.index)

    async def resume_verification(self, active_faults: dict[str, Alarm]) -> int:
        """After a restart: open sensor cases whose fault is no longer active start
        counting polls again (the count itself is not kept). Returns how many.

        ``active_faults`` maps each active fault's key to its alarm.
        """
        self._active.update(active_faults)
        open_stages = [
            Stage.DISPATCHED.value,
            Stage.IN_DISPOSAL.value,
            Stage.DISPOSAL_REPORTED.value,
            Stage.UNDER_VERIFICATION.value,
        ]
        async with self.db.session() as session:
            rows = list(
                await session.scalars(
                    select(CaseRow)
                    .where(CaseRow.source == "sensor")
                    .where(CaseRow.stage.in_(open_stages))
                )
            )
        resumed = 0
        for row in rows:
            device = self.registry.by_id.get(row.device_id)
            if row.fault_key in active_faults or device is None:
                continue
            self._clearing[row.fault_key] = _Clearing(row.id, device.index)
            resumed += 1
        return resumed

    def fault_is_active(self, key: str) -> bool:
        """Whether the fault with this key has an active alarm now."""
        return key in self._active

    async def on_batch(self, batch: ReadingBatch) -> None:
        """Poller subscriber: count polls of devices whose fault is gone; verify after
        enough; a fault whose case was closed by force gets a new case at its next poll."""
        if self._reopen and len(batch):
            await self._reopen_forced(batch)
        if not self._clearing or not len(batch):
            return
        seen = set(batch.device.tolist())
        done = []
        for key, clearing in self._clearing.items():
            if clearing.device in seen:
                clearing.polls += 1
                if clearing.polls >= self.config.verify_polls:
                    done.append((key, clearing))
        for key, clearing in done:
            self._clearing.pop(key, None)
            try:
                await self.verify_by_telemetry(clearing.case_id)
            except (CaseError, TransitionRefused) as exc:
                log.info("case %d not verified by telemetry: %s", clearing.case_id, exc)

    async def _reopen_forced(self, batch: ReadingBatch) -> None:
        polled = set(batch.device.tolist())
        for key in list(self._reopen):
            alarm = self._active.get(key)
            device = self.registry.by_id.get(alarm.device) if alarm is not None else None
            if alarm is None or device is None:
                self._reopen.discard(key)
            elif device.index in polled:
                self._reopen.discard(key)
                await self._fault_active(key, alarm)

    async def verify_by_telemetry(self, case_id: int) -> CaseRow:
        """The fault has been gone for enough polls: carry the case through to closed."""
        row = await self.get(case_id)
        note = f"telemetry: fault gone for {self.config.verify_polls} polls"
        path = {
            Stage.DISPATCHED.value: [CaseAction.START_DISPOSAL, CaseAction.REPORT_DISPOSAL],
            Stage.IN_DISPOSAL.value: [CaseAction.REPORT_DISPOSAL],
            Stage.DISPOSAL_REPORTED.value: [],
            Stage.UNDER_VERIFICATION.value: [],
        }.get(row.stage)
        if path is None:
            raise CaseConflict(f"case {case_id} is {row.stage}: a person has to move it first")
        if row.stage != Stage.UNDER_VERIFICATION.value:
            path.append(CaseAction.START_VERIFICATION)
        path += [CaseAction.PASS_VERIFICATION, CaseAction.CLOSE]
        for action in path:
            row = await self.transition(row.id, TransitionRequest(action, note), TELEMETRY)
        return row

    # -- moving ------------------------------------------------------------------------------

    async def transition(self, case_id: int, request: TransitionRequest, actor: Actor) -> CaseRow:
        """Apply one action; 409 with the reason when it does not fit the case."""
        async with self._lock, self.db.session() as session:
            row = await session.get(CaseRow, case_id)
            if row is None:
                raise CaseNotFound(f"no case {case_id}")
            before = Stage(row.stage)
            try:
                after = next_stage(before, request.action)
            except TransitionRefused as exc:
                raise CaseConflict(str(exc)) from exc
            self._refuse_under_live_fault(row, request, actor)
            details = self._apply(row, request)
            if request.force and request.action in ENDING_ACTIONS:
                details["forced"] = True
            row.stage = after.value
            row.updated_at = self.clock()
            transition = await self._record(
                session, row, request.action.value, before.value, actor, request.note, details
            )
            extra: list[TransitionRow] = []
            if after is Stage.CLOSED:
                # Evaluation follows from the record: on time, overdue or reworked.
                row.evaluation = _evaluation(row)
                row.stage = Stage.EVALUATED.value
                extra.append(
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
            await session.commit()
        if after in (Stage.CLOSED, Stage.REJECTED) and self.fault_is_active(row.fault_key):
            self._reopen.add(row.fault_key)
        for t in (transition, *extra):
            await self._announce(row, t)
        return row

    def _refuse_under_live_fault(
        self, row: CaseRow, request: TransitionRequest, actor: Actor
    ) -> None:
        if (
            request.action not in ENDING_ACTIONS
            or actor.role == "system"
            or not row.fault_key
            or not self.fault_is_active(row.fault_key)
        ):
            return
        alarm = self._active[row.fault_key]
        if not request.force:
            raise CaseConflict(
                f"the fault is still active ({fault_words(alarm)} on {alarm.device}): "
                "wait for it to clear, or give force with a note saying why; "
                "a forced close opens a new case at the next poll that still sees it",
            )
        if not request.note:
            raise CaseInvalid(f"a forced {request.action.value} needs a note saying why")

    def _apply(self, row: CaseRow, request: TransitionRequest) -> dict[str, Any]:
        now = self.clock()
        action = request.action
        details: dict[str, Any] = {}
        if action in (CaseAction.REJECT, CaseAction.RETURN, CaseAction.EXTEND) and not request.note:
            raise CaseInvalid(f"{action.value} needs a note saying why")
        if action is CaseAction.ACCEPT:
            row.accepted_at = now
        elif action is CaseAction.FILE:
            row.filed_at = now
        elif action is CaseAction.DISPATCH:
            department = request.department or self.routing.department_for(
                row.category, row.grid, row.department
            )
            if not department:
                raise CaseInvalid("no department: give one, or add a routing rule")
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
                raise CaseConflict("cannot close: verification has not passed")
            row.closed_at = now
        elif action is CaseAction.EXTEND:
            if request.due_at is None or row.due_at is None or request.due_at <= row.due_at:
                raise CaseInvalid("extend needs due_at later than the current due time")
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
                    session, row, "overdue", row.stage, SYSTEM, "time limit passed", {}
                )
                transitions.append((row, transition))
                flagged.append(row.id)
            await session.commit()
        for row, transition in transitions:
            await self._announce(row, transition)
        return flagged

    async def _overdue_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.overdue_check_interval)
            try:
                await self.retry_pending()
                await self.flag_overdue()
            except Exception:
                log.exception(
                    "case housekeeping failed; trying again in %.0f s",
                    self.config.overdue_check_interval,
                )


def fault_key(alarm: Alarm) -> str:
    """What makes two alarms the same fault, for one case per fault: rule, device, sub."""
    return f"{alarm.rule}|{alarm.device}|{alarm.sub}"


def _evaluation(row: CaseRow) -> str:
    if row.rework_count:
        return "reworked"
    if row.due_at is not None and row.closed_at is not None and row.closed_at > row.due_at:
        return "overdue"
    return "on_time"


def _describe_alarm(alarm: Alarm, name: str) -> str:
    where = f"{alarm.device}" + (f" ({name})" if name else "")
    value = "" if alarm.value is None else f": reads {alarm.value:g}"
    limit = "" if alarm.limit is None else f", limit {alarm.limit:g}"
    return f"{alarm.kind} {alarm.level_name} at {where}{value}{limit}"


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
