"""An active/standby pair: two ``streetsense run`` processes on one PostgreSQL, the
devices (``streetsense simulate``) in a third. The leader is killed with -9, or
paused past its lease and woken; the standby takes over, the old leader sends
nothing, and PostgreSQL itself refuses an audit entry of an older epoch."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from api.keys import Role
from api.leader_forwarding import FORWARDED_BY
from controller.alarm_store import UNWRITTEN_ALARMS, AlarmStore
from controller.config import load_config
from controller.control.audit import Actor, AuditEntry, AuditLog
from controller.leadership.lease import LeaderLease
from controller.runtime import Controller
from controller.state.database import StateDatabase
from controller.state.tables import audit
from controller.telemetry.embedded import stored_polls
from drivers.errors import NotLeading
from rules.alarm_model import Alarm, Condition
from simulators.field import FieldController, create_key, field_config, simulated_field
from simulators.netlink import CuttableLink
from simulators.servers import PostgresServer, free_port, fresh_postgres_database
from tests.helpers import api_client, lead_briefly, new_key, take_over
from tests.reliability.harness import caught_up, influx_points, influx_server, pause, resume, wait

pytestmark = pytest.mark.slow

#: Short, so that the tests wait seconds, not the production default's eight.
LEASE = {"enabled": True, "lease_seconds": 4.0, "renew_seconds": 1.0}
OFF = {"action": "off", "targets": {"cabinets": ["CAB-1"], "circuits": [2]}}
ON = {"action": "on", "targets": {"cabinets": ["CAB-1"], "circuits": [2]}}
#: Raised at the gauge's first reading, with a case: something for the standby to show.
HIGH_WATER = {
    "id": "high-water",
    "kind": "threshold",
    "point": "water_level",
    "select": {"device_class": "gauge"},
    "limits": [-1000.0],
    "severity": "high",
    "case": True,
}

#: Raised when the gauge falls silent (its simulator paused), with a case. Five polls
#: (0.5 s) are shorter than a batch (2 s): the rules count the batch in, or this would
#: be raised at once.
GAUGE_SILENT = {
    "id": "gauge-silent",
    "kind": "comm_loss",
    "select": {"device_class": "gauge"},
    "intervals": 5,
    "severity": "high",
    "case": True,
}

#: At least this long: the leader's lease runs out (1.75 leases).
OUTAGE = 7.0

#: One controller of the pair.
Node = FieldController


class Pair(NamedTuple):
    """The two nodes (a leading, b the standby), an engineer's key and the devices."""

    a: FieldController
    b: FieldController
    key: dict[str, str]
    devices: subprocess.Popen[str]


@contextmanager
def pair(
    tmp_path: Path, state_url: str, a_database: str | None = None, **sections: Any
) -> Iterator[Pair]:
    """The field's devices and two nodes of the field's config, a leading.

    ``a_database``: the URL a reaches PostgreSQL at instead (a link a test can cut).
    """
    rules = sections.pop("rules", [])
    config = field_config(
        tmp_path,
        free_port(),
        database={"url": state_url},
        leadership=LEASE,
        rules=[HIGH_WATER, *rules],
        **sections,
    )
    key = {"Authorization": "Bearer " + create_key(config, "Chen Gong", "engineer")}
    a_config = config
    if a_database is not None:
        a_config = tmp_path / "a-config" / config.name
        a_config.parent.mkdir()
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        doc["database"]["url"] = a_database
        a_config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    a = FieldController("a", a_config, tmp_path / "a")
    b = FieldController("b", config, tmp_path / "b")
    with simulated_field(config) as devices:
        try:
            a.start()
            a.wait_for("leader")
            b.start()
            b.wait_for("standby")
            yield Pair(a, b, key, devices)
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


def shown_alike(
    a: Node, b: Node, path: str, key: dict[str, str], seen: Callable[[Any], Any] = lambda x: x
) -> Any:
    """What ``path`` answers on the leader, once the standby shows the same (within 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        on_a = httpx.get(f"{a.url}{path}", headers=key, timeout=10)
        on_b = httpx.get(f"{b.url}{path}", headers=key, timeout=10)
        assert on_b.status_code == 200, on_b.text
        if on_a.json() and seen(on_a.json()) == seen(on_b.json()):
            return on_a.json()
        assert time.monotonic() < deadline, (on_a.json(), on_b.json())
        time.sleep(0.5)


def alarm_states(alarms: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """An alarm list as a duty officer compares it (the leader's last values move on)."""
    return [(x["id"], x["rule"], x["device"], x["state"], x["severity"]) for x in alarms]


async def audit_rows(state_url: str) -> list[tuple[Any, ...]]:
    """Every audit entry: id, action, epoch, at, source, outcome."""
    engine = create_async_engine(state_url)
    c = audit.c
    columns = (c.id, c.action, c.epoch, c.at, c.source, c.outcome)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(*columns).order_by(c.id))).all()
    await engine.dispose()
    return [tuple(r) for r in rows]


@pytest.fixture
async def state_url(postgres_url: str) -> str:
    return await fresh_postgres_database(postgres_url)


def test_the_standby_takes_over_when_the_leader_is_killed(tmp_path: Path, state_url: str) -> None:
    with pair(tmp_path, state_url) as (a, b, key, _):
        assert a.health()["leadership"]["epoch"] == 1
        standby = b.health()["leadership"]
        assert standby["leader"] == "a" and standby["leader_url"] == a.url
        # What only the leader knows, and every change, the standby passes to the leader.
        detail = httpx.get(f"{b.url}/devices/CAB-1", headers=key)
        assert detail.status_code == 200, detail.text
        assert detail.headers["x-streetsense-forwarded-from"] == a.url
        assert detail.json()["id"] == "CAB-1" and detail.json()["health"]["online"], detail.text
        # The leader is asked for the path as sent: an escaped "?" stays part of the id.
        odd = httpx.get(f"{b.url}/devices/CAB-1%3Fx", headers=key)
        assert odd.status_code == 404, odd.text
        assert odd.json()["message"]["params"] == {"device": "CAB-1?x"}
        # Its embedded store holds only what it polled while it led: the leader draws it.
        chart = httpx.get(f"{b.url}/telemetry/series/WL-1/water_level", headers=key)
        assert chart.status_code == 200 and chart.json()["samples"], chart.text
        assert chart.headers["x-streetsense-forwarded-from"] == a.url
        # The live events stream through from the leader.
        with httpx.stream("GET", f"{b.url}/events", headers=key, timeout=10) as events:
            assert events.headers["x-streetsense-forwarded-from"] == a.url
            assert next(events.iter_lines()) == "retry: 2000"
        # A call forwarded once is not passed round again, and a login is the leader's.
        again = httpx.get(f"{b.url}/devices/CAB-1", headers={**key, FORWARDED_BY: "a"})
        assert again.status_code == 503 and again.headers["x-streetsense-leader"] == a.url
        assert "standby" in again.json()["detail"]
        login = httpx.post(f"{b.url}/session", json={"username": "x", "password": "y" * 10})
        assert login.status_code == 503, login.text
        console = httpx.get(f"{b.url}/", follow_redirects=False)
        assert console.status_code == 307 and console.headers["location"] == a.url + "/"
        # A command sent to the standby: the leader sends it, under the caller's name.
        sent = httpx.post(f"{b.url}/control/circuits", json=OFF, headers=key, timeout=10)
        assert sent.status_code == 202, sent.text
        done = httpx.get(
            f"{a.url}{sent.headers['Location']}", params={"wait": 5}, headers=key, timeout=10
        ).json()
        assert done["status"] == "confirmed" and done["by"] == "Chen Gong", done

        # What is in the shared database, the standby answers itself.
        alarms = shown_alike(a, b, "/alarms", key, alarm_states)
        assert [(x["rule"], x["device"]) for x in alarms] == [("high-water", "WL-1")]
        ids = {"ids": [alarms[0]["id"]]}
        acknowledge = httpx.post(f"{b.url}/alarms/acknowledge", json=ids, headers=key)
        assert acknowledge.status_code == 200, acknowledge.text
        assert [x["state"] for x in acknowledge.json()["done"]] == ["active_acknowledged"]
        alarms = shown_alike(a, b, "/alarms", key, alarm_states)
        assert alarms[0]["state"] == "active_acknowledged"
        cases = shown_alike(a, b, "/cases", key)
        assert [c["device_id"] for c in cases] == ["WL-1"]
        assert alarms[0]["id"] in cases[0]["alarm_ids"]
        assert shown_alike(a, b, f"/cases/{cases[0]['id']}", key)["transitions"]
        supervisor = {"Authorization": "Bearer " + create_key(a.config, "Wang", "dispatcher")}
        audited = shown_alike(a, b, "/audit", supervisor)
        assert [e["action"] for e in audited] == ["circuit_off"]
        older = httpx.get(f"{b.url}/commands/{done['id']}", headers=key)
        assert older.status_code == 200 and older.json()["action"] == "circuit_off"
        assert b.health()["leadership"]["alarms_read_at"] is not None
        faults = shown_alike(a, b, "/statistics/faults", key, lambda r: r["rows"])
        assert sum(row["raised"] for row in faults["rows"]) == 1, faults
        # The field's cabinet is switched centrally: no table pushed, on either node.
        tables = httpx.get(f"{b.url}/schedules/device-tables", headers=key)
        assert tables.status_code == 200 and tables.json() == [], tables.text

        assert a.proc is not None
        a.proc.kill()
        a.proc.wait()
        # Until its lease runs out the dead leader still holds it: the standby cannot pass
        # a call on and says so.
        unreachable = httpx.get(f"{b.url}/devices/CAB-1", headers=key)
        assert unreachable.status_code == 503, unreachable.text
        assert unreachable.headers["retry-after"] == "2"
        took = b.wait_for("leader")
        assert took < 25, took  # the lease (4 s) and a start; bench failover measures it
        leader = b.health()["leadership"]
        assert (leader["node"], leader["epoch"]) == ("b", 2)
        assert command(b, ON, key)["status"] == "confirmed"
        # The new leader carries on the alarm and its case: neither is raised twice.
        carried = httpx.get(f"{b.url}/alarms", headers=key).json()
        assert [x["id"] for x in carried] == [alarms[0]["id"]]
        metrics = httpx.get(f"{b.url}/metrics", headers=key).text
        assert 'streetsense_writes_fenced_total{kind="alarm",node="b"} 0.0' in metrics
        assert [c["id"] for c in httpx.get(f"{b.url}/cases", headers=key).json()] == [
            cases[0]["id"]
        ]

        # The old leader, started again by its service manager, is the standby now.
        a.start()
        a.wait_for("standby")
        assert a.health()["leadership"]["leader"] == "b"

    rows = asyncio.run(audit_rows(state_url))
    # Each command once, each with the epoch of the node that sent it.
    assert [(r[1], r[2]) for r in rows] == [("circuit_off", 1), ("circuit_on", 2)]


def test_a_paused_leader_wakes_up_deposed_and_sends_nothing(tmp_path: Path, state_url: str) -> None:
    with pair(tmp_path, state_url) as (a, b, key, _):
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


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def test_a_switching_time_during_the_take_over_is_switched_once(
    tmp_path: Path, state_url: str
) -> None:
    # The switching time: a second far enough ahead for the pair to start.
    switch = int(time.time()) + 25
    local = ZoneInfo("Asia/Shanghai")  # the field's site time zone
    clock = [datetime.fromtimestamp(t, local).strftime("%H:%M:%S") for t in (switch - 1800, switch)]
    schedules = {
        "programs": [
            {
                "id": "night",
                "steps": [{"at": clock[0], "action": "on"}, {"at": clock[1], "action": "off"}],
            }
        ],
        "calendars": [{"id": "every-day", "default": "night"}],
        "groups": [{"id": "cab-1", "calendar": "every-day", "targets": {"cabinets": ["CAB-1"]}}],
    }
    with pair(tmp_path, state_url, schedules=schedules) as (a, b, _key, _):
        assert a.proc is not None
        # The leader stops answering just before the switching time; the standby takes
        # over after it, and the old leader wakes with the step due on its own clock.
        assert time.time() < switch - 2, "the pair took too long to start"
        sleep_until(switch - 2)
        a.proc.send_signal(signal.SIGSTOP)
        b.wait_for("leader")
        sleep_until(switch + 1)
        a.proc.send_signal(signal.SIGCONT)
        assert a.proc.wait(timeout=30) == 75, a.log()
        deadline = time.monotonic() + 15
        while not [r for r in asyncio.run(audit_rows(state_url)) if r[2] == 2 and r[5] != "sent"]:
            assert time.monotonic() < deadline, "the new leader's step did not end"
            time.sleep(0.5)

    steps = [r for r in asyncio.run(audit_rows(state_url)) if r[4] == "schedule:cab-1"]
    # On at the first start (the state the schedule wanted then: circuits on, lamps at
    # full), off once: by the new leader, as the last due step at its election; nothing
    # from the woken old leader.
    assert [(r[1], r[2], r[5]) for r in steps] == [
        ("circuit_on", 1, "confirmed"),
        ("lamp_dim", 1, "confirmed"),
        ("circuit_off", 2, "confirmed"),
    ], steps
    assert steps[-1][3] >= switch


def test_the_old_leaders_spool_is_delivered_once_it_stands_by(
    tmp_path: Path, state_url: str
) -> None:
    with influx_server(tmp_path / "influx") as influxd:
        sink = {"influxdb": {"url": influxd.url, "database": "field", "timeout": 2}}
        with pair(tmp_path, state_url, storage=sink) as (a, b, key, _):
            wait(lambda: delivered(a, key), 30, "the leader's first points in InfluxDB")
            # InfluxDB hangs: the leader's sends time out and its points wait in its spool,
            # which a kill -9 leaves on its disk.
            pause(influxd)
            time.sleep(5)
            assert a.proc is not None
            killed_at = time.time()
            a.kill()
            b.wait_for("leader")
            resume(influxd)
            # Started again by its service manager, it stands by and delivers its spool.
            a.start()
            a.wait_for("standby")
            wait(lambda: delivered(a, key), 30, "the old leader's spool delivered")
            assert a.health()["status"] == "ok", a.health()
            # InfluxDB is the pair's: the standby draws a gauge's chart as the leader does.
            window = {"start": utc_iso(killed_at - 60), "end": utc_iso(killed_at - 2.2)}
            chart = shown_alike(
                b, a, "/telemetry/series/WL-1/water_level?" + urlencode(window), key
            )
            assert chart["source"] == "influxdb" and len(chart["samples"]) > 10
            latest = httpx.get(f"{a.url}/telemetry/latest", params={"device": "WL-1"}, headers=key)
            assert latest.status_code == 200 and latest.json()[0]["values"], latest.text
        stored = influx_points(influxd)

    assert len(stored) == len(set(stored)), "a point stored twice"
    # Polled up to its last flush before the kill: in the old leader's own store.
    cutoff = round((killed_at - 2.0 - 0.2) * 1000)
    before = {p for p in stored_polls(a.store) if p[1] < cutoff}
    assert len(before) > 50
    missing = before - set(stored)
    assert not missing, f"{len(missing)} of {len(before)} points never reached InfluxDB"


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def delivered(node: Node, key: dict[str, str]) -> bool:
    """Its InfluxDB sink took points and nothing waits in its spool."""
    sinks = httpx.get(f"{node.url}/telemetry/sinks", headers=key, timeout=10)
    assert sinks.status_code == 200, sinks.text
    return caught_up(next(s for s in sinks.json() if s["name"] == "influxdb"))


def test_both_nodes_ride_out_a_postgresql_outage_and_the_leader_stays(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    with pair(tmp_path, postgres.url, rules=[GAUGE_SILENT]) as (a, b, key, devices):
        shown_alike(a, b, "/alarms", key, alarm_states)
        postgres.halt()
        halted_at = time.monotonic()
        time.sleep(LEASE["lease_seconds"] + 0.5)
        # The leader polls on and judges; with its lease run out it sends nothing.
        during = a.health()
        assert during["online"] == during["poll_targets"] > 0, during
        assert not during["leadership"]["database_reachable"]
        assert any("the lease has run out" in r for r in during["reasons"]), during
        assert b.health()["status"] == "degraded"
        # The gauge falls silent meanwhile: the leader raises the alarm and its case,
        # which wait for the database.
        devices.send_signal(signal.SIGSTOP)
        try:
            wait(lambda: "gauge-silent" in rules_shown(a, key), 10, "the silent gauge's alarm")
        finally:
            devices.send_signal(signal.SIGCONT)
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - halted_at)))
        postgres.resume()
        # The standby gives the leader a lease to renew; it does, and keeps leading.
        deadline = time.monotonic() + 2 * LEASE["lease_seconds"]
        while time.monotonic() < deadline:
            assert a.proc is not None and b.proc is not None
            assert a.proc.poll() is None and b.proc.poll() is None, (a.log(), b.log())
            time.sleep(0.5)
        leader, standby = a.health(), b.health()
        assert leader["leadership"]["role"] == "leader", leader
        assert leader["status"] == "ok", leader
        assert standby["leadership"]["role"] == "standby", standby
        assert standby["leadership"]["leader"] == "a" and standby["status"] == "ok", standby
        assert command(a, OFF, key)["status"] == "confirmed"
        # What was raised meanwhile is in the database, as the leader has it, in order.
        alarms = sorted(shown_alike(a, b, "/alarms", key, alarm_states), key=lambda x: x["id"])
        assert [(x["rule"], x["device"]) for x in alarms] == [
            ("high-water", "WL-1"),
            ("gauge-silent", "WL-1"),
        ], alarms
        cases = sorted(shown_alike(a, b, "/cases", key), key=lambda c: c["id"])
        assert [[alarm["id"]] for alarm in alarms] == [c["alarm_ids"] for c in cases], cases


def test_a_leader_cut_off_from_postgresql_is_taken_over_and_what_it_judged_is_refused(
    tmp_path: Path, state_url: str
) -> None:
    """A partition: a loses PostgreSQL, b does not and takes over. Both judge the gauge
    falling silent; a's alarm, under an id b has used too, waits for the database. When
    the link is back, PostgreSQL refuses it, and a steps down."""
    url = make_url(state_url)
    link = CuttableLink(int(url.port or 5432))
    through_link = url.set(port=link.port).render_as_string(hide_password=False)
    try:
        with pair(tmp_path, state_url, through_link, rules=[GAUGE_SILENT]) as (a, b, key, devices):
            shown_alike(a, b, "/alarms", key, alarm_states)
            link.cut()
            b.wait_for("leader")
            devices.send_signal(signal.SIGSTOP)
            try:
                wait(lambda: "gauge-silent" in rules_shown(b, key), 10, "b's silent-gauge alarm")
                wait(lambda: "alarms wait for the state" in everything_logged(a), 10, "a's alarm")
            finally:
                devices.send_signal(signal.SIGCONT)
            # With its devices answering again, a's health says what waits.
            wait(lambda: waiting_alarms(a), 10, "a's health naming its unwritten alarms")
            link.restore()
            assert a.proc is not None and a.proc.wait(timeout=30) == 75, a.log()
            assert "alarms judged here were not written" in everything_logged(a), a.log()
            alarms = sorted(httpx.get(f"{b.url}/alarms", headers=key).json(), key=lambda x: x["id"])
            assert [(x["rule"], x["device"]) for x in alarms] == [
                ("high-water", "WL-1"),
                ("gauge-silent", "WL-1"),
            ], alarms
            cases = sorted(httpx.get(f"{b.url}/cases", headers=key).json(), key=lambda c: c["id"])
            assert [[alarm["id"]] for alarm in alarms] == [c["alarm_ids"] for c in cases], cases
    finally:
        link.close()
    # Nothing in the audit log from a after b began.
    rows = asyncio.run(audit_rows(state_url))
    began = min((r[3] for r in rows if r[2] == 2), default=None)
    assert not [r for r in rows if r[2] == 1 and began is not None and r[3] >= began], rows


def everything_logged(node: Node) -> str:
    """All ``node`` wrote to stderr (``log()`` is its end)."""
    return (node.folder / "err.log").read_text(encoding="utf-8", errors="replace")


def waiting_alarms(node: Node) -> bool:
    """Whether ``node``'s health says alarm changes wait for the state database."""
    return any("alarm changes wait" in r for r in node.health().get("reasons", []))


def rules_shown(node: Node, key: dict[str, str]) -> set[str]:
    """The rules of the alarms ``node`` shows."""
    return {x["rule"] for x in httpx.get(f"{node.url}/alarms", headers=key, timeout=5).json()}


async def test_a_standby_seeing_the_database_again_lets_the_leader_renew_first(
    postgres: PostgresServer,
) -> None:
    from controller.leadership.elector import LeaderElector

    nodes: list[tuple[StateDatabase, LeaderElector]] = []
    deposed: list[str] = []
    for name, renew in (("a", 1.0), ("b", 0.1)):
        db = StateDatabase(make_url(postgres.url))
        await db.open()

        async def elected() -> None:
            pass

        async def lost(name: str = name) -> None:
            deposed.append(name)

        elector = LeaderElector(LeaderLease(db, name, f"http://{name}", 2.0), renew,
                                elected, lost, lambda epoch: None)  # fmt: skip
        await elector.start()
        nodes.append((db, elector))
    (_, a), (_, b) = nodes
    try:
        assert a.leading and not b.leading
        await asyncio.to_thread(postgres.halt)
        await asyncio.sleep(3.0)  # past a's lease
        assert not a.holds()
        await asyncio.to_thread(postgres.resume)
        # b, trying ten times a second, would take the lapsed lease before a's next
        # renewal; it waits a lease instead, and a renews.
        await asyncio.sleep(3.0)
        assert a.leading and a.holds() and not b.leading, (a.reachable, b.reachable)
        assert deposed == [] and b.other is not None and b.other.holder == "a"
    finally:
        for db, elector in nodes:
            await elector.stop()
            await db.close()


async def test_postgresql_refuses_an_audit_entry_of_an_older_epoch(state_url: str) -> None:
    db = StateDatabase(make_url(state_url))
    await db.open()
    try:
        assert await lead_briefly(db) == 1
        log = AuditLog(db)
        entry = AuditEntry(0, time.time(), "api", Actor("Li", "k", "engineer"), "circuit_on",
                           None, "{}", 1, "sent")  # fmt: skip
        await log.append(entry)
        assert await take_over(db) == 2
        late = AuditEntry(0, time.time(), "api", Actor("Li", "k", "engineer"), "circuit_off",
                          None, "{}", 1, "sent")  # fmt: skip
        with pytest.raises(NotLeading, match="epoch 1 is older than the lease's epoch 2"):
            await log.append(late)
        # Nor may a's entry be changed after the take-over.
        entry.outcome = "confirmed"
        with pytest.raises(NotLeading):
            await log.update(entry)
        db.epoch, late.epoch = 2, None
        assert await log.append(late) > entry.id
    finally:
        await db.close()


def gauge_alarm(alarm_id: int, rule: str, raised_at: float) -> Alarm:
    return Alarm(id=alarm_id, rule=rule, kind="comm_loss", device="WL-1", device_class="gauge",
                 sub=0, point="", severity="high", level=1, level_name="active",
                 condition=Condition.ACTIVE_UNACK, value=None, limit=None, raised_at=raised_at,
                 last_seen=raised_at, case=True)  # fmt: skip


async def test_postgresql_refuses_alarms_judged_under_an_older_epoch(
    state_url: str, tmp_path: Path
) -> None:
    """A leader cut off from the database judged on; the standby took over and raised the
    same fault. What the old leader kept waiting must not land over the new leader's."""
    db = StateDatabase(make_url(state_url))
    await db.open()
    b_db = StateDatabase(make_url(state_url))  # each node has its own
    await b_db.open()
    try:
        assert await lead_briefly(db) == 1
        a = AlarmStore(db, tmp_path / "a" / UNWRITTEN_ALARMS)
        first = gauge_alarm(1, "gauge-silent", time.time())
        await a.save([first])
        # b takes over and raises its own alarm 2.
        b_db.epoch = await take_over(b_db)
        assert b_db.epoch == 2
        b = AlarmStore(b_db, tmp_path / "b" / UNWRITTEN_ALARMS)
        await b.save([gauge_alarm(2, "gauge-silent-b", time.time())])

        # a's waiting changes reach the database: a new alarm under the same id, and
        # its first alarm acknowledged. Both refused, dropped, counted.
        first.acked_at, first.acked_by = time.time(), "Li"
        await a.save([gauge_alarm(2, "gauge-silent", time.time()), first])
        assert (a.unwritten, a.fenced) == (0, 2)
        shown = {x.id: (x.rule, x.acked_by) for x in await b.read_open()}
        assert shown == {1: ("gauge-silent", None), 2: ("gauge-silent-b", None)}

        # Nor what a left in its data folder when it stopped, at its next start.
        spill = tmp_path / "a" / UNWRITTEN_ALARMS
        late = asdict(gauge_alarm(3, "gauge-silent", time.time()))
        spill.parent.mkdir()
        spill.write_text(json.dumps({"epoch": 1, "alarms": [late]}), encoding="utf-8")
        restarted = AlarmStore(db, spill)
        assert sorted(x.id for x in await restarted.open()) == [1, 2]
        assert restarted.fenced == 1 and not spill.exists()
    finally:
        await b_db.close()
        await db.close()


async def test_a_case_written_on_a_node_another_has_taken_over_from_is_a_503_in_words(
    tmp_path: Path, state_url: str
) -> None:
    """A dispatcher's call reaching a node after a take-over it has not noticed yet (its
    epoch is older than the lease's): nothing is written, and the refusal says why."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": state_url}}), encoding="utf-8")
    loaded = load_config(path)
    dispatcher = {"X-API-Key": new_key(loaded, "Huang", Role.DISPATCHER)}
    case = {"source": "inspector", "category": "streetlight", "title": "路灯不亮",
            "lat": 21.86, "lon": 111.98}  # fmt: skip
    async with Controller(loaded) as controller, api_client(controller) as client:
        await lead_briefly(controller.state_db)
        assert (await client.post("/cases", json=case, headers=dispatcher)).status_code == 201
        await take_over(controller.state_db)

        refused = await client.post("/cases", json=case, headers=dispatcher)
        assert refused.status_code == 503, refused.text
        assert refused.json()["message"]["key"] == "refusal.not_leading"
        assert "epoch 1 is older than the lease's epoch 2" in refused.json()["detail"]
        assert len((await client.get("/cases")).json()) == 1
