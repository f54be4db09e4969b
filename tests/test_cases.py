"""The case loop on SQLite and on a real PostgreSQL; statistics; webhook delivery."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from sqlalchemy.engine import make_url

from controller.cases.alarm_bridge import fault_key
from controller.cases.config import CasesConfig
from controller.cases.db import CaseRow
from controller.cases.requests import CaseError, NewCase, TransitionRequest
from controller.cases.service import CaseService
from controller.cases.stages import CaseAction, Stage, TransitionRefused, next_stage
from controller.cases.statistics import case_report, figures
from controller.cases.webhook import WebhookSender
from controller.config import parse_config
from controller.control.audit import Actor
from controller.registry import Registry
from controller.state.database import StateDatabase
from drivers.errors import Conflict, Invalid
from rules.alarm_model import Alarm, AlarmNotice, Condition
from simulators.servers import free_port, fresh_postgres_database
from tests.helpers import lead_briefly, take_over

DISPATCHER = Actor("Huang (command centre)", "k1", "dispatcher")
CREW = Actor("Liu (lighting crew)", "k2", "engineer")
CONFIG = CasesConfig.model_validate(
    {
        "routing": [
            {"category": "streetlight", "grid_prefix": "441702", "department": "江城区照明所"},
            {"department": "市城管指挥中心"},
        ],
        "webhook": {
            "url": "http://127.0.0.1:9/hook",
            "secret_env": "HOOK_SECRET",
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
        },
    }
)


def registry(tmp_path: Path) -> Registry:
    return Registry(parse_config({}, tmp_path / "config.yaml"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def service(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[CaseService, FakeClock]]:
    if request.param == "sqlite":
        url = make_url(f"sqlite+aiosqlite:///{tmp_path}/cases.db")
    else:
        url = make_url(request.getfixturevalue("postgres_url"))
    db = StateDatabase(url)
    clock = FakeClock()
    svc = CaseService(CONFIG, db, registry(tmp_path), clock=clock)
    await svc.start()
    if request.param == "postgresql":
        # One database serves the module's tests: start each from empty tables.
        from controller.state.database import Base

        assert db.engine is not None
        async with db.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(table.delete())
    yield svc, clock
    await svc.stop()


def pothole_report() -> NewCase:
    return NewCase(
        source="inspector",
        category="streetlight",
        severity="medium",
        title="路灯不亮",
        description="three poles dark on 东风路 since last night",
        component_id="DF-P017",
        grid="441702001002",
        lat=21.86,
        lon=111.98,
        address="江城区 东风路 17号杆",
        media=["https://media.example/photo/1.jpg"],
        reporter="Zhang (inspector)",
    )


def test_no_stage_can_be_skipped_and_the_reason_says_what_is_possible() -> None:
    with pytest.raises(TransitionRefused) as refused:
        next_stage(Stage.FILED, CaseAction.START_DISPOSAL)
    assert str(refused.value) == "cannot start_disposal a case that is filed (possible: dispatch)"
    with pytest.raises(TransitionRefused) as done:
        next_stage(Stage.EVALUATED, CaseAction.CLOSE)
    assert "it is finished" in str(done.value)
    assert next_stage(Stage.UNDER_VERIFICATION, CaseAction.FAIL_VERIFICATION) is Stage.IN_DISPOSAL


async def test_the_whole_loop_with_return_extension_and_rework(
    service: tuple[CaseService, FakeClock],
) -> None:
    svc, clock = service
    case = await svc.open_case(pothole_report(), DISPATCHER)
    assert case.stage == "awaiting_acceptance" and case.due_at == clock.now + 2880 * 60

    async def step(action: CaseAction, actor: Actor = DISPATCHER, **kw: Any) -> CaseRow:
        clock.now += 600
        return await svc.transition(case.id, TransitionRequest(action, **kw), actor)

    with pytest.raises(CaseError) as skip:
        await step(CaseAction.DISPATCH)
    assert isinstance(skip.value, Conflict) and "awaiting_acceptance" in skip.value.reason
    await step(CaseAction.ACCEPT)
    await step(CaseAction.FILE)
    dispatched = await step(CaseAction.DISPATCH)
    assert dispatched.department == "江城区照明所"
    with pytest.raises(CaseError) as no_note:
        await step(CaseAction.RETURN, CREW)
    assert isinstance(no_note.value, Invalid) and "needs a note" in no_note.value.reason
    await step(CaseAction.RETURN, CREW, note="cable fault: power bureau's line")
    again = await step(CaseAction.DISPATCH, department="供电局江城分局")
    assert again.department == "供电局江城分局" and again.return_count == 1
    await step(CaseAction.START_DISPOSAL, CREW, assignee="crew 3")
    due = again.due_at
    assert due is not None
    extended = await step(CaseAction.EXTEND, note="waiting for a cable joint", due_at=due + 86400)
    assert extended.extension_count == 1 and extended.due_at == due + 86400
    await step(CaseAction.REPORT_DISPOSAL, CREW, note="joint replaced")
    await step(CaseAction.START_VERIFICATION)
    with pytest.raises(CaseError) as early:
        await step(CaseAction.CLOSE)
    assert early.value.reason == "cannot close: verification has not passed"
    rework = await step(CaseAction.FAIL_VERIFICATION, note="pole 17 still dark")
    assert rework.stage == "in_disposal" and rework.rework_count == 1
    await step(CaseAction.REPORT_DISPOSAL, CREW, note="lamp replaced too")
    await step(CaseAction.START_VERIFICATION)
    await step(CaseAction.PASS_VERIFICATION, note="checked on site")
    closed = await step(CaseAction.CLOSE)
    assert closed.stage == "evaluated" and closed.evaluation == "reworked"
    history = await svc.history(case.id)
    assert [t.action for t in history] == [
        "report",
        "accept",
        "file",
        "dispatch",
        "return",
        "dispatch",
        "start_disposal",
        "extend",
        "report_disposal",
        "start_verification",
        "fail_verification",
        "report_disposal",
        "start_verification",
        "pass_verification",
        "close",
        "evaluate",
    ]
    assert history[4].actor == "Liu (lighting crew)" and history[4].note.startswith("cable fault")
    assert history[7].details == {"previous_due_at": due}


def test_closure_rates_over_due_cases() -> None:
    due_at = 1_800_000_000.0
    rows = []
    for i in range(972):
        closed_at = None
        if i < 737:
            closed_at = due_at - 60  # on time
        elif i < 911:
            closed_at = due_at + 60  # late
        rows.append(
            CaseRow(
                id=i,
                due_at=due_at,
                closed_at=closed_at,
                dispatched_at=due_at - 7200,
                disposed_at=due_at - 3600 if closed_at else None,
                rework_count=1 if i % 100 == 0 else 0,
                extension_count=1 if i % 50 == 0 else 0,
                grid="G1",
            )
        )
    report = figures(rows)
    assert (report.due, report.closed, report.closed_on_time) == (972, 911, 737)
    assert f"{report.closure_rate:.2%}" == "93.72%"
    assert f"{report.on_time_rate:.2%}" == "75.82%"
    assert report.mean_disposal_s == 3600
    assert report.extension_rate == pytest.approx(20 / 972)
    from zoneinfo import ZoneInfo

    [monthly] = case_report(rows, "month", "grid", ZoneInfo("Asia/Shanghai"))
    assert monthly.group == "G1" and monthly.figures.due == 972


class Receiver:
    """The city platform's webhook endpoint: dedups by idempotency key, checks signatures."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.bodies: dict[str, dict[str, Any]] = {}
        self.posts = 0
        self.bad_signatures = 0
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            stamp = request.headers["X-Streetsense-Timestamp"]
            mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
            if request.headers["X-Streetsense-Signature"] != "sha256=" + mac.hexdigest():
                self.bad_signatures += 1
                return Response(status_code=401)
            self.posts += 1
            key = request.headers["Idempotency-Key"]
            self.bodies.setdefault(key, json.loads(body))
            return Response(status_code=204)

        self.app = app


async def test_a_receiver_that_was_down_gets_every_transition_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    config = CONFIG.model_copy(
        update={
            "webhook": CONFIG.webhook.model_copy(update={"url": f"http://127.0.0.1:{port}/hook"})  # type: ignore[union-attr]
        }
    )
    db = StateDatabase(make_url(f"sqlite+aiosqlite:///{tmp_path}/cases.db"))
    svc = CaseService(config, db, registry(tmp_path))
    await svc.start()
    assert config.webhook is not None
    sender = WebhookSender(config.webhook, "s3cret", db)
    svc.on_transition(lambda *_: _wake(sender))
    sender.start()
    receiver = Receiver("s3cret")
    server = uvicorn.Server(uvicorn.Config(receiver.app, port=port, log_level="warning"))
    try:
        case = await svc.open_case(pothole_report(), DISPATCHER)
        for action in (CaseAction.ACCEPT, CaseAction.FILE, CaseAction.DISPATCH):
            await svc.transition(case.id, TransitionRequest(action), DISPATCHER)
        await asyncio.sleep(0.5)  # the receiver is down: every attempt fails
        assert sender.status.failures >= 2 and sender.status.delivered == 0
        assert "ConnectError" in sender.status.last_error
        serving = asyncio.create_task(server.serve())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if sender.status.delivered == 4:
                break
        await svc.transition(case.id, TransitionRequest(CaseAction.START_DISPOSAL), CREW)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if sender.status.delivered == 5:
                break
        assert receiver.bad_signatures == 0
        assert receiver.posts == 5  # each transition once: nothing sent twice
        bodies = list(receiver.bodies.values())
        assert [b["transition"]["action"] for b in bodies] == [
            "report",
            "accept",
            "file",
            "dispatch",
            "start_disposal",
        ]
        assert bodies[3]["case"]["department"] == "江城区照明所"
        assert bodies[4]["case"]["stage"] == "in_disposal"
        assert len(receiver.bodies) == 5
    finally:
        server.should_exit = True
        await sender.stop()
        await svc.stop()
        if "serving" in locals():
            await serving


async def _wake(sender: WebhookSender) -> None:
    sender.wake()


def lamp_alarm(alarm_id: int, suppressed_by: str | None = None) -> Alarm:
    return Alarm(
        id=alarm_id,
        rule="lamp-failure",
        kind="lamp_failure",
        device="DF-L017",
        device_class="lamp",
        sub=0,
        point="",
        severity="medium",
        level=1,
        level_name="active",
        condition=Condition.ACTIVE_UNACK,
        value=0.0,
        limit=None,
        raised_at=1_800_000_000.0,
        last_seen=1_800_000_000.0,
        grid="441702001002",
        case=True,
        suppressed_by=suppressed_by,
    )


async def test_a_chattering_fault_is_one_case_and_a_suppressed_alarm_none(
    service: tuple[CaseService, FakeClock],
) -> None:
    svc, _ = service
    for k in range(4):  # raised, returned, raised again, ... as a loose contact does
        alarm = lamp_alarm(100 + k)
        await svc.alarms.on_alarm(AlarmNotice(alarm, "raised"))
        await svc.alarms.on_alarm(AlarmNotice(alarm, "returned"))
    [case] = await svc.find()
    assert case.alarm_ids == [100, 101, 102, 103]
    assert case.stage == "dispatched" and case.department == "江城区照明所"
    await svc.alarms.on_alarm(
        AlarmNotice(lamp_alarm(200, suppressed_by="circuit_break:CAB/1"), "raised")
    )
    assert len(await svc.find()) == 1


async def test_with_no_routing_rule_an_alarm_case_waits_filed_for_a_dispatcher(
    tmp_path: Path,
) -> None:
    # The shipped default: auto_dispatch on, no routing. The case must not be lost
    # to the missing department; a dispatcher picks one on the board.
    db = StateDatabase(make_url(f"sqlite+aiosqlite:///{tmp_path}/cases.db"))
    svc = CaseService(CasesConfig(), db, registry(tmp_path))
    await svc.start()
    await svc.alarms.on_alarm(AlarmNotice(lamp_alarm(9), "raised"))
    [case] = await svc.find()
    assert case.stage == "filed" and case.department == ""
    assert svc.alarms.pending_notices == 0
    row = await svc.transition(
        case.id, TransitionRequest(CaseAction.DISPATCH, department="江城区照明所"), DISPATCHER
    )
    assert row.stage == "dispatched"
    await svc.stop()


async def test_an_active_fault_left_without_a_case_at_stop_gets_one_at_restart(
    tmp_path: Path,
) -> None:
    # The controller stopped while the case database was away: the alarm is stored,
    # its notice was only in memory. The next start opens the case, once.
    db = StateDatabase(make_url(f"sqlite+aiosqlite:///{tmp_path}/cases.db"))
    config = CONFIG.model_copy(update={"webhook": None})
    for _ in range(2):  # two restarts: still one case
        svc = CaseService(config, db, registry(tmp_path))
        await svc.start()
        alarm = lamp_alarm(11)
        await svc.alarms.resume_verification({fault_key(alarm): alarm})
        [case] = await svc.find()
        assert case.alarm_ids == [11] and case.stage == "dispatched"
        await svc.stop()
    # A suppressed alarm (its circuit is cut) is not a case of its own.
    svc = CaseService(config, db, registry(tmp_path))
    await svc.start()
    dark = replace(lamp_alarm(12, suppressed_by="circuit_break:CAB/1"), device="DF-L018")
    await svc.alarms.resume_verification({fault_key(dark): dark})
    assert len(await svc.find()) == 1
    await svc.stop()


async def test_an_alarm_while_the_database_is_away_becomes_a_case_later(tmp_path: Path) -> None:
    db = StateDatabase(make_url(f"sqlite+aiosqlite:///{tmp_path}/cases.db"))
    svc = CaseService(CONFIG.model_copy(update={"webhook": None}), db, registry(tmp_path))
    await svc.start()
    await db.close()  # the database goes away
    await svc.alarms.on_alarm(AlarmNotice(lamp_alarm(7), "raised"))
    await svc.alarms.on_alarm(AlarmNotice(lamp_alarm(7), "returned"))
    assert svc.alarms.pending_notices == 2
    await db.open()
    assert await svc.alarms.retry_pending() == 2
    [case] = await svc.find()
    assert case.alarm_ids == [7] and case.stage == "dispatched"
    await svc.stop()


def cabinet_alarm(alarm_id: int, rule: str, point: str, level: int, level_name: str) -> Alarm:
    alarm = lamp_alarm(alarm_id)
    alarm.rule, alarm.kind, alarm.point = rule, "threshold", point
    alarm.device, alarm.device_class, alarm.severity = "JC-XJ-002", "cabinet", "urgent"
    alarm.level, alarm.level_name = level, level_name
    return alarm


async def test_case_titles_name_the_fault_in_words(
    service: tuple[CaseService, FakeClock],
) -> None:
    svc, _ = service
    supply = cabinet_alarm(300, "supply-loss", "mains_present", 1, "level 1")
    leak = cabinet_alarm(301, "leakage", "leakage_current", 1, "level 1")
    leak.sub = 1  # another fault of the same cabinet: its own case
    await svc.alarms.on_alarm(AlarmNotice(supply, "raised"))
    await svc.alarms.on_alarm(AlarmNotice(leak, "raised"))
    titles = sorted(case.title for case in await svc.find())
    assert len(titles) == 2 and titles[0] != titles[1]
    assert any(t.endswith("JC-XJ-002: 停电") for t in titles), titles
    assert any(t.endswith("JC-XJ-002: 漏电 1级") for t in titles), titles
    assert not any("threshold" in t for t in titles)


def gauge_alarm(alarm_id: int, severity: str, level: int, level_name: str) -> Alarm:
    alarm = lamp_alarm(alarm_id)
    alarm.rule, alarm.kind, alarm.point = "flood-level", "threshold", "water_level"
    alarm.device, alarm.device_class = "WL-XJ-MARKET", "gauge"
    alarm.severity, alarm.level, alarm.level_name = severity, level, level_name
    return alarm


async def test_a_case_escalated_to_red_water_gets_the_urgent_time_limit(
    service: tuple[CaseService, FakeClock],
) -> None:
    svc, clock = service
    opened = clock.now
    alarm = gauge_alarm(400, "medium", 1, "blue")
    await svc.alarms.on_alarm(AlarmNotice(alarm, "raised"))
    [case] = await svc.find()
    assert case.due_at == opened + 120 * 60
    assert case.title.endswith("积水 蓝色预警")
    # What happened, in the words of the city's record (and its platform).
    reading = f"，读数 {alarm.value:g}" if alarm.value is not None else ""
    limit = f"，限值 {alarm.limit:g}" if alarm.limit is not None else ""
    assert case.description == f"积水 蓝色预警：WL-XJ-MARKET{reading}{limit}"
    clock.now += 10 * 60  # the water rises to red ten minutes later
    alarm.severity, alarm.level, alarm.level_name = "urgent", 4, "red"
    await svc.alarms.on_alarm(AlarmNotice(alarm, "escalated"))
    [case] = await svc.find()
    assert case.severity == "urgent"
    assert case.due_at == clock.now + 30 * 60  # from the escalation: earlier than 2 h
    assert case.title.endswith("积水 红色预警")
    history = await svc.history(case.id)
    assert history[-1].action == "escalate" and history[-1].details["previous"]["severity"] == (
        "medium"
    )
    assert history[-1].note == "升级为紧急：积水 红色预警"


async def test_a_leader_that_no_longer_leads_raises_no_case_and_postgresql_says_why(
    tmp_path: Path, postgres_url: str
) -> None:
    """A leader cut off from the database judged on while the standby took over: the
    notices that waited, once they reach the database, are refused there (the new
    leader raises its own cases for those faults), dropped and counted, not retried."""
    db = StateDatabase(make_url(await fresh_postgres_database(postgres_url)))
    await db.open()
    svc = CaseService(CONFIG.model_copy(update={"webhook": None}), db, registry(tmp_path))
    try:
        await lead_briefly(db)
        await svc.start()
        await svc.alarms.on_alarm(AlarmNotice(lamp_alarm(7), "raised"))
        [case] = await svc.find()
        assert case.stage == "dispatched"
        await take_over(db)

        # A new fault, and the first one raised again (a repeat is noted on its case).
        darker = replace(lamp_alarm(8), device="DF-L018")
        await svc.alarms.on_alarm(AlarmNotice(darker, "raised"))
        await svc.alarms.on_alarm(AlarmNotice(lamp_alarm(9), "raised"))
        assert (svc.alarms.pending_notices, svc.alarms.fenced) == (0, 2)
        [unchanged] = await svc.find()
        assert (unchanged.id, unchanged.stage, unchanged.alarm_ids) == (case.id, "dispatched", [7])
        assert unchanged.updated_at == case.updated_at
    finally:
        await svc.stop()
        await db.close()
