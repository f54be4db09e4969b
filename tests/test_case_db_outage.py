"""PostgreSQL away for 20 s under a running controller: polling and alarms go on, health
says what waits, and the alarms raised meanwhile and their cases are written, in order,
once it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest

from controller.config import LoadedConfig
from controller.service_health import assess
from simulators.faults import FaultKind, FaultSpec
from simulators.servers import PostgresServer
from tests.helpers import city_with_controller
from tests.test_cases_e2e import case_city

pytestmark = pytest.mark.slow
WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
OUTAGE_S = 20.0


async def wait_until(check: Callable[[], Any], within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_cases_raised_while_postgresql_is_down_are_written_in_order_when_it_returns(
    tmp_path: Path, write_config: WriteConfig, postgres: PostgresServer
) -> None:
    doc = deepcopy(case_city(tmp_path))
    doc["database"] = {"url": postgres.url}
    loaded = write_config(doc)
    async with city_with_controller(loaded) as (city, controller):
        await controller.start()
        poller = controller.poller
        await wait_until(lambda: _true(poller.stats.polls > 10), 20)

        await asyncio.to_thread(postgres.halt)
        down_at = time.monotonic()
        polls, failed = poller.stats.polls, poller.stats.failed_polls
        city.inject(FaultSpec(kind=FaultKind.LAMP_BURNT_OUT, device="CAB-L003"))

        def active() -> set[str]:
            return {a.rule for a in controller.rules.manager.list() if a.active}

        await wait_until(lambda: _true("lamp-failure" in active()), 10)
        city.inject(FaultSpec(kind=FaultKind.CIRCUIT_CUT, device="CAB", circuit=2))
        await wait_until(lambda: _true("circuit-break" in active()), 10)
        # The alarms are known at once, and health says they and their cases wait.
        await wait_until(lambda: _true(controller.cases.alarms.pending_notices >= 2), 10)
        health = assess(controller)
        assert health.status == "degraded"
        assert any("alarm changes wait for the state database" in r for r in health.reasons)
        assert any("to become cases" in r for r in health.reasons)
        raised = {a.id: a.rule for a in controller.rules.manager.list() if a.active}
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        # Polling went on through the outage.
        assert poller.stats.polls > polls + 20 and poller.stats.failed_polls == failed

        await asyncio.to_thread(postgres.resume)

        async def written() -> bool:
            try:
                return len(await controller.cases.find()) >= 2
            except Exception:
                return False  # the pool's connections from before the outage

        # Within seconds, not at the next overdue check (every 30 s).
        await wait_until(written, 10)
        await wait_until(lambda: _true(controller.cases.alarms.pending_notices == 0), 10)
        cases = sorted(await controller.cases.find(), key=lambda c: c.id)
        assert [c.fault_key for c in cases] == ["lamp-failure|CAB-L003|0", "circuit-break|CAB|2"]
        assert all(c.stage == "dispatched" for c in cases)
        assert sorted(cases[0].alarm_ids + cases[1].alarm_ids) == sorted(raised)
        # The alarms themselves are in the database, as they stand now.
        await wait_until(lambda: _true(controller.rules.store.unwritten == 0), 10)
        stored = {a.id: a for a in await controller.rules.store.history(0, time.time() + 1)}
        assert {i: stored[i].rule for i in raised} == raised
        assert not any("state database" in r for r in assess(controller).reasons)


async def _true(value: bool) -> bool:
    return value
