"""An active/standby pair: two ``streetsense run`` processes on one PostgreSQL, the
devices (``streetsense simulate``) in a third. The leader is killed with -9, or
paused past its lease and woken; the standby takes over, the old leader sends
nothing, and PostgreSQL itself refuses an audit entry of an older epoch."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from controller.control.audit import Actor, AuditEntry, AuditLog
from controller.state.database import StateDatabase
from controller.state.tables import audit
from drivers.errors import NotLeading
from simulators.field import FieldController, create_key, field_config, simulated_field
from simulators.servers import free_port, fresh_postgres_database

pytestmark = pytest.mark.slow

#: Short, so that the tests wait seconds, not the production default's eight.
LEASE = {"enabled": True, "lease_seconds": 4.0, "renew_seconds": 1.0}
OFF = {"action": "off", "targets": {"cabinets": ["CAB-1"], "circuits": [2]}}
ON = {"action": "on", "targets": {"cabinets": ["CAB-1"], "circuits": [2]}}

#: One controller of the pair.
Node = FieldController


@contextmanager
def pair(
    tmp_path: Path, state_url: str
) -> Iterator[tuple[FieldController, FieldController, dict[str, str]]]:
    """The field's devices, two nodes (a leading, b the standby) and an engineer's key."""
    config = field_config(tmp_path, free_port(), database={"url": state_url}, leadership=LEASE)
    key = {"Authorization": "Bearer " + create_key(config, "Chen Gong", "engineer")}
    a = FieldController("a", config, tmp_path / "a")
    b = FieldController("b", config, tmp_path / "b")
    with simulated_field(config):
        try:
            a.start()
            a.wait_for("leader")
            b.start()
            b.wait_for("standby")
            yield a, b, key
        finally:
            a.stop()
            b.stop()


def command(node: Node, body: dict[str, Any], key: dict[str, str]) -> dict[str, Any]:
    sent = httpx.post(f"{node.url}/control/circuits", json=body, headers=key, timeout=10)
    assert sent.status_code == 202, sent.text
    done: dict[str, Any] = httpx.get(
        f"{node.url}{sent.headers['Location']}", params={"wait": 5}, headers=key, timeout=10
    ).json()
    return done


async def audit_rows(state_url: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(state_url)
    c = audit.c
    async with engine.connect() as conn:
        rows = (await conn.execute(select(c.id, c.action, c.epoch, c.at).order_by(c.id))).all()
    await engine.dispose()
    return [tuple(r) for r in rows]


@pytest.fixture
async def state_url(postgres_url: str) -> str:
    return await fresh_postgres_database(postgres_url)


def test_the_standby_takes_over_when_the_leader_is_killed(tmp_path: Path, state_url: str) -> None:
    with pair(tmp_path, state_url) as (a, b, key):
        assert a.health()["leadership"]["epoch"] == 1
        standby = b.health()["leadership"]
        assert standby["leader"] == "a" and standby["leader_url"] == a.url
        # The standby refers callers to the leader rather than answer from nothing.
        referred = httpx.get(f"{b.url}/devices/CAB-1", headers=key)
        assert referred.status_code == 503 and referred.headers["x-streetsense-leader"] == a.url
        assert "standby" in referred.json()["detail"]
        console = httpx.get(f"{b.url}/", follow_redirects=False)
        assert console.status_code == 307 and console.headers["location"] == a.url + "/"
        assert command(a, OFF, key)["status"] == "confirmed"

        assert a.proc is not None
        a.proc.kill()
        took = b.wait_for("leader")
        assert took < 25, took  # the lease (4 s) and a start; bench failover measures it
        leader = b.health()["leadership"]
        assert (leader["node"], leader["epoch"]) == ("b", 2)
        assert command(b, ON, key)["status"] == "confirmed"

        # The old leader, started again by its service manager, is the standby now.
        a.start()
        a.wait_for("standby")
        assert a.health()["leadership"]["leader"] == "b"

    rows = asyncio.run(audit_rows(state_url))
    # Each command once, each with the epoch of the node that sent it.
    assert [(r[1], r[2]) for r in rows] == [("circuit_off", 1), ("circuit_on", 2)]


def test_a_paused_leader_wakes_up_deposed_and_sends_nothing(tmp_path: Path, state_url: str) -> None:
    with pair(tmp_path, state_url) as (a, b, key):
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        b.wait_for("leader")
        took_over = time.time()
        assert command(b, OFF, key)["status"] == "confirmed"
        a.proc.send_signal(signal.SIGCONT)
        # It finds the lease taken, stops, and exits for its service manager to restart.
        assert a.proc.wait(timeout=30) == 75, a.log()
        out = (a.folder / "out.log").read_text(encoding="utf-8")
        assert "another controller of the pair took the lease" in out
        assert b.health()["leadership"]["role"] == "leader"

    rows = asyncio.run(audit_rows(state_url))
    assert [(r[1], r[2]) for r in rows] == [("circuit_off", 2)]
    assert not [r for r in rows if r[2] == 1 and r[3] >= took_over]


async def test_postgresql_refuses_an_audit_entry_of_an_older_epoch(state_url: str) -> None:
    from controller.leadership.lease import LeaderLease

    db = StateDatabase(make_url(state_url))
    await db.open()
    try:
        first = await LeaderLease(db, "a", "http://a", 0.5).try_hold()
        assert first is not None and first.epoch == 1
        log = AuditLog(db)
        log.epoch = 1
        entry = AuditEntry(0, time.time(), "api", Actor("Li", "k", "engineer"), "circuit_on",
                           None, "{}", 1, "sent")  # fmt: skip
        await log.append(entry)
        await asyncio.sleep(0.6)  # a's lease lapses; b takes it
        second = await LeaderLease(db, "b", "http://b", 5.0).try_hold()
        assert second is not None and second.epoch == 2
        late = AuditEntry(0, time.time(), "api", Actor("Li", "k", "engineer"), "circuit_off",
                          None, "{}", 1, "sent")  # fmt: skip
        with pytest.raises(NotLeading, match="epoch 1 is older than the lease's epoch 2"):
            await log.append(late)
        # Nor may a's entry be changed after the take-over.
        entry.outcome = "confirmed"
        with pytest.raises(NotLeading):
            await log.update(entry)
        log.epoch, late.epoch = 2, None
        assert await log.append(late) > entry.id
    finally:
        await db.close()
