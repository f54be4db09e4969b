"""The alarm bridge: sensor alarms open, join and rework cases; telemetry verifies them.

Sensor alarms whose rule says ``case: true`` become cases: one per fault
(a chattering alarm or a re-raised one joins the open case of its fault;
alarms suppressed by a cut circuit or a dead cabinet raise none). With
``auto_dispatch`` the controller accepts, files and dispatches them. When the
fault is gone for ``verify_polls`` polls, telemetry reports and verifies the
disposal and the case is closed and evaluated; a fault that comes back
during verification sends the case back to disposal as rework. The workflow
itself (stages, records, time limits) is :class:`~controller.cases.service.CaseService`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from controller.cases.db import CaseRow
from controller.cases.requests import (
    SYSTEM,
    TELEMETRY,
    CaseConflict,
    CaseError,
    NewCase,
    TransitionRequest,
)
from controller.cases.stages import CaseAction, Stage, TransitionRefused
from controller.cases.titles import case_description, case_title
from controller.state.fencing import fenced
from drivers.errors import NotLeading
from drivers.readings import ReadingBatch
from rules.alarm_model import Alarm, AlarmNotice

if TYPE_CHECKING:
    from controller.cases.service import CaseService

log = logging.getLogger(__name__)

EvidenceSource = Callable[[Alarm], Awaitable[dict[str, Any]]]


@dataclass
class LiveFaults:
    """Faults with a case rule whose alarm is active now, shared by the bridge and the
    workflow: a person cannot close a case under a live fault by mistake, and a forced
    close gets a new case at the fault's next poll."""

    active: dict[str, Alarm] = field(default_factory=dict)
    #: Faults whose case was closed by force while active: a new case at the next poll.
    reopen: set[str] = field(default_factory=set)

    def is_active(self, key: str) -> bool:
        """Whether the fault with this key has an active alarm now."""
        return key in self.active


@dataclass
class _Clearing:
    """A fault whose alarm returned: polls seen since, until verification."""

    case_id: int
    device: int
    polls: int = 0


class AlarmCaseBridge:
    """Turns alarm notices and poll batches into case actions on a :class:`CaseService`."""

    def __init__(
        self, cases: CaseService, faults: LiveFaults, evidence: EvidenceSource | None
    ) -> None:
        self.cases = cases
        self.faults = faults
        self.evidence = evidence
        self._clearing: dict[str, _Clearing] = {}
        self._retry: collections.deque[AlarmNotice] = collections.deque()
        self._retrying = asyncio.Lock()
        #: Notices the database refused because another node has led since.
        self.fenced = 0

    async def on_alarm(self, notice: AlarmNotice) -> None:
        """Alarm subscriber: open, join or start verifying sensor cases.

        If the database cannot be reached (a PostgreSQL restart), the notice is
        kept and tried again within seconds, in order, so no case is lost.
        """
        if self._retry:
            self._retry.append(notice)
            return
        try:
            await self._settle(notice)
        except CaseError:
            raise
        except Exception:
            log.exception("case for alarm %d not recorded; will retry", notice.alarm.id)
            self._retry.append(notice)

    async def retry_pending(self) -> int:
        """Try the alarm notices that could not be recorded; returns how many went through."""
        async with self._retrying:  # one at a time, or a notice could be recorded twice
            return await self._retry_in_order()

    async def _retry_in_order(self) -> int:
        done = 0
        while self._retry:
            try:
                await self._settle(self._retry[0])
            except CaseError as exc:
                log.warning("alarm %d makes no case: %s", self._retry[0].alarm.id, exc.reason)
            self._retry.popleft()
            done += 1
        return done

    async def _settle(self, notice: AlarmNotice) -> None:
        """Record what the notice means for cases; refused for good if another node of the
        pair has led since (the fence of migration 0006): that node judges the fault."""
        try:
            with fenced():
                await self._on_alarm(notice)
        except NotLeading as exc:
            self.fenced += 1
            log.error("alarm %d makes no case here: %s", notice.alarm.id, exc)

    @property
    def pending_notices(self) -> int:
        """Alarm notices waiting for the database."""
        return len(self._retry)

    async def _on_alarm(self, notice: AlarmNotice) -> None:
        alarm = notice.alarm
        if not alarm.case or not self.cases.config.enabled:
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
        async with self.cases.db.session() as session:
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
        self.faults.active[key] = alarm
        self.faults.reopen.discard(key)
        existing = await self._open_case_of(key)
        if existing is not None:
            await self._join(existing, alarm)
            return
        device = self.cases.registry.by_id.get(alarm.device)
        category = self.cases.routing.category_for(alarm.device_class, alarm.kind)
        evidence = await self.evidence(alarm) if self.evidence is not None else {}
        name = device.location.name if device is not None else ""
        new = NewCase(
            source="sensor",
            category=category.id,
            severity=alarm.severity,
            title=case_title(category.name, alarm),
            description=case_description(alarm, name),
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
        row = await self.cases.open_case(new, SYSTEM)
        if self.cases.config.auto_dispatch:
            actions = [CaseAction.ACCEPT, CaseAction.FILE]
            if self.cases.routing.department_for(row.category, row.grid, row.department):
                actions.append(CaseAction.DISPATCH)
            else:
                # Filed, it waits on the board for a dispatcher to choose: raising here
                # would lose the rest of this alarm's handling for a gap in routing.
                log.warning(
                    "case %d (%s) is filed but not dispatched: no routing rule gives a department",
                    row.id,
                    row.category,
                )
            # One transaction: a storm's hundreds of cases cost a third of the round trips.
            await self.cases.transitions(row.id, [TransitionRequest(a) for a in actions], SYSTEM)

    async def _join(self, row: CaseRow, alarm: Alarm) -> None:
        """A repeat of a fault with an open case: note it there, and if the case was
        awaiting verification, the fault is back: rework."""
        await self.cases.note_repeat(row.id, alarm)
        if row.stage in (Stage.DISPOSAL_REPORTED.value, Stage.UNDER_VERIFICATION.value):
            note = f"telemetry: the fault is back ({alarm.kind} {alarm.level_name})"
            if row.stage == Stage.DISPOSAL_REPORTED.value:
                row = await self.cases.transition(
                    row.id, TransitionRequest(CaseAction.START_VERIFICATION, note), TELEMETRY
                )
            await self.cases.transition(
                row.id, TransitionRequest(CaseAction.FAIL_VERIFICATION, note), TELEMETRY
            )

    async def _fault_gone(self, key: str, alarm: Alarm) -> None:
        self.faults.active.pop(key, None)
        self.faults.reopen.discard(key)
        existing = await self._open_case_of(key)
        device = self.cases.registry.by_id.get(alarm.device)
        if existing is None or device is None:
            return
        self._clearing[key] = _Clearing(existing.id, device.index)

    async def resume_verification(self, active_faults: dict[str, Alarm]) -> int:
        """After a restart: open sensor cases whose fault is no longer active start
        counting polls again (the count itself is not kept), and an active fault with
        no open case gets one (its notice was still waiting when the controller
        stopped: the case database away, or the stop's grace ran out). Returns how
        many cases resumed verification.

        ``active_faults`` maps each active fault's key to its alarm.
        """
        self.faults.active.update(active_faults)
        async with self.cases.db.session() as session:
            with_case = set(
                await session.scalars(
                    select(CaseRow.fault_key).where(
                        CaseRow.stage.in_([s.value for s in Stage if s.open])
                    )
                )
            )
        if self.cases.config.enabled:
            for key, alarm in active_faults.items():
                if key not in with_case and not alarm.suppressed_by:
                    log.warning("alarm %d had no case at restart: opening it now", alarm.id)
                    await self._fault_active(key, alarm)
        open_stages = [
            Stage.DISPATCHED.value,
            Stage.IN_DISPOSAL.value,
            Stage.DISPOSAL_REPORTED.value,
            Stage.UNDER_VERIFICATION.value,
        ]
        async with self.cases.db.session() as session:
            rows = list(
                await session.scalars(
                    select(CaseRow)
                    .where(CaseRow.source == "sensor")
                    .where(CaseRow.stage.in_(open_stages))
                )
            )
        resumed = 0
        for row in rows:
            device = self.cases.registry.by_id.get(row.device_id)
            if row.fault_key in active_faults or device is None:
                continue
            self._clearing[row.fault_key] = _Clearing(row.id, device.index)
            resumed += 1
        return resumed

    async def on_batch(self, batch: ReadingBatch) -> None:
        """Poller subscriber: count polls of devices whose fault is gone; verify after
        enough; a fault whose case was closed by force gets a new case at its next poll."""
        if self.faults.reopen and len(batch):
            await self._reopen_forced(batch)
        if not self._clearing or not len(batch):
            return
        seen = set(batch.device.tolist())
        done = []
        for key, clearing in self._clearing.items():
            if clearing.device in seen:
                clearing.polls += 1
                if clearing.polls >= self.cases.config.verify_polls:
                    done.append((key, clearing))
        for key, clearing in done:
            self._clearing.pop(key, None)
            try:
                await self.verify_by_telemetry(clearing.case_id)
            except (CaseError, TransitionRefused) as exc:
                log.info("case %d not verified by telemetry: %s", clearing.case_id, exc)

    async def _reopen_forced(self, batch: ReadingBatch) -> None:
        polled = set(batch.device.tolist())
        for key in list(self.faults.reopen):
            alarm = self.faults.active.get(key)
            device = self.cases.registry.by_id.get(alarm.device) if alarm is not None else None
            if alarm is None or device is None:
                self.faults.reopen.discard(key)
            elif device.index in polled:
                self.faults.reopen.discard(key)
                await self._fault_active(key, alarm)

    async def verify_by_telemetry(self, case_id: int) -> CaseRow:
        """The fault has been gone for enough polls: carry the case through to closed."""
        row = await self.cases.get(case_id)
        note = f"telemetry: fault gone for {self.cases.config.verify_polls} polls"
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
            row = await self.cases.transition(row.id, TransitionRequest(action, note), TELEMETRY)
        return row


def fault_key(alarm: Alarm) -> str:
    """What makes two alarms the same fault, for one case per fault: rule, device, sub."""
    return f"{alarm.rule}|{alarm.device}|{alarm.sub}"
