"""The closed loop a case goes through, as a table of allowed actions.

受理 accept / 不予受理 reject → 立案 file → 派遣 dispatch → 处置 dispose →
反馈 report → 核查 verify → 结案 close → 评价 evaluate; with 退回 return (wrong
department: dispatched again), 延期 extend (a new due time) and 返工 rework (a
failed verification sends it back to disposal). No stage is skipped: an action
that does not fit the stage is refused with the reason.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Where a case is."""

    AWAITING_ACCEPTANCE = "awaiting_acceptance"
    REJECTED = "rejected"
    ACCEPTED = "accepted"
    FILED = "filed"
    DISPATCHED = "dispatched"
    RETURNED = "returned"
    IN_DISPOSAL = "in_disposal"
    DISPOSAL_REPORTED = "disposal_reported"
    UNDER_VERIFICATION = "under_verification"
    CLOSED = "closed"
    EVALUATED = "evaluated"

    @property
    def open(self) -> bool:
        """Whether work is still to be done."""
        return self not in (Stage.REJECTED, Stage.CLOSED, Stage.EVALUATED)


class CaseAction(StrEnum):
    """What a person (or the controller) does to a case."""

    ACCEPT = "accept"
    REJECT = "reject"
    FILE = "file"
    DISPATCH = "dispatch"
    RETURN = "return"
    START_DISPOSAL = "start_disposal"
    REPORT_DISPOSAL = "report_disposal"
    START_VERIFICATION = "start_verification"
    PASS_VERIFICATION = "pass_verification"
    FAIL_VERIFICATION = "fail_verification"
    CLOSE = "close"
    EVALUATE = "evaluate"
    EXTEND = "extend"


_T = CaseAction
_S = Stage
TRANSITIONS: dict[tuple[Stage, CaseAction], Stage] = {
    (_S.AWAITING_ACCEPTANCE, _T.ACCEPT): _S.ACCEPTED,
    (_S.AWAITING_ACCEPTANCE, _T.REJECT): _S.REJECTED,
    (_S.ACCEPTED, _T.FILE): _S.FILED,
    (_S.FILED, _T.DISPATCH): _S.DISPATCHED,
    (_S.RETURNED, _T.DISPATCH): _S.DISPATCHED,
    (_S.DISPATCHED, _T.RETURN): _S.RETURNED,
    (_S.DISPATCHED, _T.START_DISPOSAL): _S.IN_DISPOSAL,
    (_S.IN_DISPOSAL, _T.REPORT_DISPOSAL): _S.DISPOSAL_REPORTED,
    (_S.DISPOSAL_REPORTED, _T.START_VERIFICATION): _S.UNDER_VERIFICATION,
    (_S.UNDER_VERIFICATION, _T.PASS_VERIFICATION): _S.UNDER_VERIFICATION,
    (_S.UNDER_VERIFICATION, _T.FAIL_VERIFICATION): _S.IN_DISPOSAL,
    (_S.UNDER_VERIFICATION, _T.CLOSE): _S.CLOSED,
    (_S.CLOSED, _T.EVALUATE): _S.EVALUATED,
    # An extension changes the due time, not the stage.
    (_S.DISPATCHED, _T.EXTEND): _S.DISPATCHED,
    (_S.IN_DISPOSAL, _T.EXTEND): _S.IN_DISPOSAL,
}


class TransitionRefused(ValueError):
    """An action that does not fit the case's stage."""

    def __init__(self, reason: str, stage: Stage, action: CaseAction) -> None:
        super().__init__(reason)
        self.stage = stage
        self.action = action


def next_stage(stage: Stage, action: CaseAction) -> Stage:
    """The stage ``action`` leads to from ``stage``; TransitionRefused with the reason if none."""
    target = TRANSITIONS.get((stage, action))
    if target is None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is stage)
        raise TransitionRefused(
            f"cannot {action.value} a case that is {stage.value}"
            + (f" (possible: {', '.join(allowed)})" if allowed else " (it is finished)"),
            stage,
            action,
        )
    return target
