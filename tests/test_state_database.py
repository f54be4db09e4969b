"""One state database: an upgrade from the release whose stores kept SQLite files of their
own imports each file once, into SQLite or PostgreSQL, and the controller then works on
what was imported; the old name of the database keys still reads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api.keys import ApiKeyStore, Principal, Role
from api.users import UserStore, hash_password
from controller.cases.db import CaseRow
from controller.config import LoadedConfig
from controller.control.audit import Actor, AuditEntry, AuditQuery
from controller.runtime import Controller
from controller.state.schema import head_revision
from drivers.errors import ConfigError
from simulators.servers import fresh_postgres_database
from tests.helpers import streetsense
from tests.test_case_schema import make_previous_release_database
from tests.test_cases_e2e import case_city

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
T = 1_800_000_000.0
VIEWER = Role.VIEWER

# The schemas of the release before the state database, as its stores created them.
OLD_ALARMS = """CREATE TABLE alarm ("id" INTEGER PRIMARY KEY, "rule", "kind", "device",
 "device_class", "sub", "point", "severity", "level", "level_name", "condition", "value",
 "limit", "raised_at", "last_seen", "count", "acked_at", "acked_by", "cleared_at",
 "closed_at", "shelved_until", "shelved_by", "suppressed_by", "out_of_service",
 "chattering", "grid", "road", "district", "cabinet", "circuit", "lat", "lon", "case")"""
OLD_AUDIT = """CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
 source TEXT NOT NULL, key_id TEXT NOT NULL, who TEXT NOT NULL, role TEXT NOT NULL,
 action TEXT NOT NULL, dim INTEGER, selector TEXT NOT NULL, target_count INTEGER NOT NULL,
 outcome TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', confirmed INTEGER NOT NULL
 DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, finished_at REAL,
 results TEXT NOT NULL DEFAULT '{}')"""
OLD_POLES = """CREATE TABLE pole (pole_id TEXT PRIMARY KEY, cabinet TEXT, circuit INTEGER,
 road TEXT NOT NULL, grid TEXT NOT NULL, body TEXT NOT NULL)"""
OLD_OVERRIDES = """CREATE TABLE override (id INTEGER PRIMARY KEY AUTOINCREMENT,
 selector TEXT NOT NULL, action TEXT NOT NULL, level INTEGER, starts_at REAL NOT NULL,
 expires_at REAL NOT NULL, reason TEXT NOT NULL, who TEXT NOT NULL, key_id TEXT NOT NULL,
 role TEXT NOT NULL, created_at REAL NOT NULL, cancelled_at REAL,
 applied INTEGER NOT NULL DEFAULT 0, ended INTEGER NOT NULL DEFAULT 0)"""


OLD_KEYS = [
    "CREATE TABLE api_key (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, "
    "hash TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL)",
    "CREATE TABLE app_user (username TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, "
    "hash TEXT NOT NULL, created_at REAL NOT NULL, disabled_at REAL, failures INTEGER NOT NULL "
    "DEFAULT 0, locked_until REAL)",
    "CREATE TABLE user_session (token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, "
    "csrf TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL)",
]
#: The old release's platform key, and a revoked one; a person and their open session.
PLATFORM_KEY, REVOKED_KEY = "ssk_0badcafe_platform-secret", "ssk_0ldd0ff1_gone-secret"
PASSWORD, COOKIE = "Jiang-Cheng 2026 night", "an-open-session-cookie"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_old_keys(data: Path) -> None:
    """keys.db of the old release: API keys, an account and its open session."""
    with contextlib.closing(sqlite3.connect(data / "keys.db")) as db, db:
        for ddl in OLD_KEYS:
            db.execute(ddl)
        db.executemany(
            "INSERT INTO api_key VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("0badcafe", "city platform", "viewer", sha256("platform-secret"), T, None),
                ("0ldd0ff1", "old app", "reporter", sha256("gone-secret"), T, T + 5),
            ],
        )
        db.execute(
            "INSERT INTO app_user VALUES (?, ?, ?, ?, ?, NULL, 0, NULL)",
            ("huang", "黄（防汛）", "flood_duty", hash_password(PASSWORD), T),
        )
        db.execute(
            "INSERT INTO user_session VALUES (?, ?, ?, ?, ?)",
            (sha256(COOKIE), "huang", "csrf-token", time.time(), time.time() + 3600),
        )


def old_alarm(alarm_id: int, device: str, closed: bool) -> tuple[Any, ...]:
    return (
        alarm_id, "lamp-failure", "lamp_failure", device, "lamp", 0, "current", "medium",
        1, "fault", "normal" if closed else "active_unacknowledged", 0.0, 0.05, T, T + 60, 3,
        None, None, T + 120 if closed else None, T + 120 if closed else None, None, None,
        None, 0, 0, "441702001001", "东风路", "江城区", "CAB", 1, 21.86, 111.98, 1,
    )  # fmt: skip


def pole(pole_id: str, controller: str | None) -> tuple[Any, ...]:
    body = {
        "pole_id": pole_id, "lat": 21.86, "lon": 111.98, "road": "东风路",
        "grid": "441702001001", "cabinet": "CAB", "circuit": 1, "phase": None,
        "rated_w": 150.0, "controller": controller, "install_date": None,
    }  # fmt: skip
    return (pole_id, "CAB", 1, "东风路", "441702001001", json.dumps(body, ensure_ascii=False))


def write_old_files(data: Path) -> None:
    """The four SQLite stores of the old release, with rows in them."""
    data.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[str, str, list[tuple[Any, ...]]]] = {
        "alarms.db": (OLD_ALARMS, "alarm", [old_alarm(41, "CAB-L003", False),
                                              old_alarm(40, "CAB-L001", True)]),
        "control.db": (OLD_AUDIT, "audit", [
            (1, T, "api", "k1", "Chen Gong", "engineer", "circuit_off", None,
             '{"cabinets": ["CAB"]}', 12, "confirmed", "", 12, 0, T + 3, '{"CAB/2": {}}'),
            (2, T + 10, "schedule", "schedule", "schedule", "system", "circuit_on", None,
             '{"cabinets": ["CAB"]}', 12, "confirmed", "", 12, 0, T + 13, "{}"),
        ]),
        "assets.db": (OLD_POLES, "pole", [pole("DF-P001", None), pole("DF-P002", "CAB-L001")]),
        "schedules.db": (OLD_OVERRIDES, "override", [
            (1, '{"cabinets": ["CAB"]}', "on", None, T, 4_000_000_000.0, "night market",
             "Chen Gong", "k1", "engineer", T - 5, None, 1, 0),
        ]),
    }  # fmt: skip
    for name, (ddl, table, rows) in files.items():
        with contextlib.closing(sqlite3.connect(data / name)) as db, db:
            db.execute(ddl)
            marks = ", ".join("?" * len(rows[0]))
            db.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)


@pytest.fixture(params=["sqlite", "postgresql"])
async def state_url(request: pytest.FixtureRequest) -> str | None:
    """None: the embedded default (state.db in the data folder); else a new PostgreSQL one."""
    if request.param == "sqlite":
        return None
    return await fresh_postgres_database(request.getfixturevalue("postgres_url"))


async def test_an_upgrade_imports_every_old_store_once_and_the_controller_carries_on(
    tmp_path: Path, write_config: WriteConfig, state_url: str | None
) -> None:
    doc = case_city(tmp_path)
    if state_url is not None:
        doc["database"] = {"url": state_url}
    loaded = write_config(doc)
    write_old_files(loaded.data_dir)
    write_old_keys(loaded.data_dir)
    # The case database of the old release, in its default file, with a case in it.
    await make_previous_release_database(
        f"sqlite+aiosqlite:///{loaded.data_dir}/cases.db", without_contact=False
    )

    code, out, err = await streetsense("db", "upgrade", "-c", str(loaded.path))
    assert code == 0, err
    assert f"empty -> revision {head_revision()}" in out
    imported = {line.split(":")[0] for line in out.splitlines() if line.startswith("imported ")}
    assert imported == {
        f"imported {loaded.data_dir / name}"
        for name in ("alarms.db", "control.db", "assets.db", "schedules.db", "cases.db", "keys.db")
    }
    assert "2 alarm" in out and "2 audit" in out and "1 cases" in out

    # Again: at the head, and nothing is imported twice.
    code, out, err = await streetsense("db", "upgrade", "-c", str(loaded.path))
    assert code == 0, err
    assert "nothing to do" in out and "imported" not in out

    async with Controller(loaded) as controller:
        await controller.open_stores()
        # The open alarm is open again and its id is not reused.
        [open_alarm] = controller.rules.manager.list()
        assert (open_alarm.id, open_alarm.device, open_alarm.case) == (41, "CAB-L003", True)
        assert await controller.rules.store.next_id() == 42
        history = await controller.rules.store.history(T - 1, T + 1000)
        assert sorted(a.id for a in history) == [40, 41]
        # The audit log reads as before, and a new entry follows the imported ids.
        entries = await controller.audit.query(AuditQuery(target="CAB/2"))
        assert [(e.id, e.actor.name, e.action) for e in entries] == [
            (1, "Chen Gong", "circuit_off")
        ]
        entry = AuditEntry(
            0, T + 20, "api", Actor("Li", "k2", "engineer"), "circuit_on", None, "{}", 1, "sent"
        )
        assert await controller.audit.append(entry) == 3
        # The register counts the imported poles: one has no controller of its own.
        assert controller.assets.poles_on("CAB", 1) == 2
        assert controller.assets.circuit_load("CAB", 1) == (1, 150.0)
        assert (await controller.assets.get("DF-P002")).controller == "CAB-L001"  # type: ignore[union-attr]
        # The override still holds, already applied: a restart does not send it again.
        [override] = await controller.overrides.unfinished()
        assert (override.reason, override.applied, override.ended) == ("night market", True, False)
        # The old case, and its id sequence carries on after it.
        case: CaseRow = await controller.cases.get(7)
        assert (case.title, case.stage) == ("路灯不亮", "filed")
        # The platform's key still admits it, the revoked one still does not; the officer
        # logs in with her password, and the session she had open is still open.
        keys = ApiKeyStore(controller.state_db)
        assert await keys.verify(PLATFORM_KEY) == Principal("0badcafe", "city platform", VIEWER)
        assert await keys.verify(REVOKED_KEY) is None
        users = UserStore(controller.state_db)
        assert (await users.login("huang", PASSWORD)).session is not None
        session = await users.session(COOKIE)
        assert session is not None and session.principal.role is Role.FLOOD_DUTY


async def test_a_controller_imports_at_start_without_a_manual_upgrade(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(case_city(tmp_path))
    write_old_files(loaded.data_dir)
    async with Controller(loaded) as controller:
        await controller.open_stores()
        assert [a.id for a in controller.rules.manager.list()] == [41]
    # The files stay where they were; the next start does not import them again.
    assert (loaded.data_dir / "alarms.db").is_file()
    async with Controller(loaded) as controller:
        await controller.open_stores()
        assert len(await controller.rules.store.history(T - 1, T + 1000)) == 2
        assert len(await controller.audit.query(AuditQuery())) == 2


def test_the_old_name_of_the_database_url_still_reads_and_both_at_once_are_refused(
    write_config: WriteConfig,
) -> None:
    url = "postgresql+psycopg://streetsense@db.example/streetsense"
    loaded = write_config({"cases": {"db_url": url, "password_env": "SS_DB_PASSWORD"}})
    assert (loaded.config.database.url, loaded.config.database.password_env) == (
        url,
        "SS_DB_PASSWORD",
    )
    with pytest.raises(ConfigError) as refused:
        write_config({"cases": {"db_url": url}, "database": {"url": url}})
    assert "cases.db_url and database are both set" in str(refused.value)
    assert "keep database only" in str(refused.value)
