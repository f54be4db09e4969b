"""Cases end to end: a fault in the simulator becomes one dispatched case, closed by telemetry."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest

from controller.cases.db import CaseRow
from controller.cases.requests import CaseError, TransitionRequest
from controller.cases.stages import CaseAction
from controller.config import LoadedConfig
from controller.control.audit import Actor
from controller.runtime import Controller
from drivers.errors import Conflict, Invalid
from simulators.faults import FaultKind, FaultSpec, RainEvent, Scenario
from simulators.fleet import SimulatedCity
from tests.helpers import city_with_controller
from tests.test_rules_e2e import city_doc, cycles

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]

ROUTING = [
    {"category": "waterlogging", "department": "市排水管理处"},
    {"grid_prefix": "4417", "department": "江城区城市照明所"},
    {"department": "市城管指挥中心"},
]


def case_city(tmp_path: Path) -> dict[str, Any]:
    doc = deepcopy(city_doc(tmp_path))
    for rule in doc["rules"]:
        if rule["id"] in ("lamp-failure", "circuit-break", "flood-level"):
            rule["case"] = True
    doc["cabinets"][0]["grid"] = "441702001001"
    doc["cabinets"][0]["admin_code"] = "441702"
    doc["cabinets"][0]["street_code"] = "441702001"
    doc["gauges"][0]["grid"] = "441702001001"
    doc["cases"] = {"routing": ROUTING, "verify_polls": 3}
    return doc


async def cases_of(controller: Controller) -> list[CaseRow]:
    return list(reversed(await controller.cases.find()))


async def test_a_burnt_lamp_becomes_one_dispatched_case_closed_on_time_by_telemetry(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(case_city(tmp_path))
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        await cycles(controller, 2)
        assert await cases_of(controller) == []
        city.inject(FaultSpec(kind=FaultKind.LAMP_BURNT_OUT, device="CAB-L003"))
        await cycles(controller, 4)
        [case] = await cases_of(controller)
        assert (case.source, case.category, case.device_id) == ("sensor", "streetlight", "CAB-L003")
        assert case.stage == "dispatched"
        assert case.department == "江城区城市照明所"  # the grid's row of the routing table
        assert case.grid == "441702001001" and case.class_code and case.subclass_code
        assert (case.admin_code, case.street_code) == ("441702", "441702001")  # from the cabinet
        assert case.evidence["alarm"]["rule"] == "lamp-failure"
        assert case.evidence["readings"]["lamp_on"]["value"] == 0
        assert case.due_at is not None and case.due_at - case.reported_at == 2880 * 60
        history = await controller.cases.history(case.id)
        assert [(t.action, t.to_stage, t.actor) for t in history] == [
            ("report", "awaiting_acceptance", "streetsense"),
            ("accept", "accepted", "streetsense"),
            ("file", "filed", "streetsense"),
            ("dispatch", "dispatched", "streetsense"),
        ]
        # More polls with the lamp still dark: still one case.
        await cycles(controller, 3)
        assert len(await cases_of(controller)) == 1

        city.clear("CAB-L003")  # the crew replaced the lamp
        await cycles(controller, 6)
        [case] = await cases_of(controller)
        assert case.stage == "evaluated" and case.evaluation == "on_time"
        assert case.closed_at is not None and case.verified_at is not None
        history = await controller.cases.history(case.id)
        assert [t.action for t in history[4:]] == [
            "start_disposal",
            "report_disposal",
            "start_verification",
            "pass_verification",
            "close",
            "evaluate",
        ]
        assert {t.actor for t in history[4:9]} == {"telemetry"}
        assert "fault gone for 3 polls" in history[4].note


async def test_a_cut_circuit_feeding_many_lamps_is_one_case(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(case_city(tmp_path))
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        await cycles(controller, 2)
        city.inject(FaultSpec(kind=FaultKind.CIRCUIT_CUT, device="CAB", circuit=1))
        await cycles(controller, 5)
        cases = await cases_of(controller)
        assert [(c.category, c.device_id, c.fault_key) for c in cases] == [
            ("control_cabinet", "CAB", "circuit-break|CAB|1")
        ]


async def test_red_water_is_an_urgent_waterlogging_case_with_30_minutes(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(case_city(tmp_path))
    rain = Scenario(rain=[RainEvent(start=0, rise=1.0, peak_m=0.6, hold=1e6, recede=10)])
    async with SimulatedCity(loaded, rain) as city, Controller(loaded) as controller:
        await controller.open_stores()
        city.clock.advance(5)
        await cycles(controller, 6)
        cases = await cases_of(controller)
        [case] = [c for c in cases if c.category == "waterlogging"]
        assert case.severity == "urgent" and case.department == "市排水管理处"
        assert case.category_kind == "event"
        assert case.due_at is not None and case.due_at - case.reported_at == 30 * 60
        assert not case.overdue
        # 31 minutes later nobody has closed it: overdue, and the history says so.
        controller.cases.clock = lambda: case.reported_at + 31 * 60
        assert await controller.cases.flag_overdue() == [case.id]
        late = await controller.cases.get(case.id)
        assert late.overdue
        history = await controller.cases.history(case.id)
        assert history[-1].action == "overdue" and history[-1].note == "已超过处置时限"
        assert await controller.cases.flag_overdue() == []  # flagged once


async def test_a_restart_between_the_repair_and_the_verification_loses_nothing(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(case_city(tmp_path))
    async with SimulatedCity(loaded) as city:
        async with Controller(loaded) as first:
            await first.open_stores()
            await cycles(first, 2)
            city.inject(FaultSpec(kind=FaultKind.LAMP_BURNT_OUT, device="CAB-L005"))
            await cycles(first, 4)
            city.clear("CAB-L005")
            await cycles(first, 2)  # the alarm returned; not yet enough polls to verify
            [case] = await cases_of(first)
            assert case.stage == "dispatched"
        async with Controller(loaded) as second:
            await second.open_stores()
            await cycles(second, 4)
            [case] = await cases_of(second)
            assert case.stage == "evaluated" and case.evaluation == "on_time"


async def test_a_case_cannot_be_closed_by_hand_under_a_live_fault_and_a_forced_close_reopens(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(case_city(tmp_path))
    crew = Actor("Liu (lighting crew)", "k2", "engineer")
    centre = Actor("Huang (command centre)", "k1", "dispatcher")
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        await cycles(controller, 2)
        city.inject(FaultSpec(kind=FaultKind.LAMP_BURNT_OUT, device="CAB-L003"))
        await cycles(controller, 4)
        [case] = await cases_of(controller)
        svc = controller.cases
        for action in ("start_disposal", "report_disposal"):
            await svc.transition(case.id, TransitionRequest(CaseAction(action)), crew)
        await svc.transition(case.id, TransitionRequest(CaseAction.START_VERIFICATION), centre)
        with pytest.raises(CaseError) as refused:
            await svc.transition(case.id, TransitionRequest(CaseAction.PASS_VERIFICATION), centre)
        assert isinstance(refused.value, Conflict)
        assert "still active" in refused.value.reason and "force" in refused.value.reason
        with pytest.raises(CaseError) as no_note:
            await svc.transition(
                case.id, TransitionRequest(CaseAction.PASS_VERIFICATION, force=True), centre
            )
        assert isinstance(no_note.value, Invalid)
        note = "lamp replaced; controller fault logged separately"
        for action in (CaseAction.PASS_VERIFICATION, CaseAction.CLOSE):
            await svc.transition(case.id, TransitionRequest(action, note, force=True), centre)
        closed = await svc.get(case.id)
        assert closed.stage == "evaluated"
        history = await svc.history(case.id)
        assert [t.details.get("forced") for t in history if t.action == "close"] == [True]
        # The lamp is still dark: the next poll that sees it opens a new case.
        await cycles(controller, 1)
        cases = await cases_of(controller)
        assert [(c.id == case.id, c.device_id, c.stage) for c in cases] == [
            (True, "CAB-L003", "evaluated"),
            (False, "CAB-L003", "dispatched"),
        ]
