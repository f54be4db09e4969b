"""The state database's schema under Alembic: an empty database, one made by the last
release before migrations (and one older still), an upgrade refused until asked for,
and a database from a newer release refused with what to do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from controller.cases.config import CasesConfig
from controller.cases.requests import NewCase
from controller.cases.service import CaseService
from controller.config import LoadedConfig, parse_config
from controller.control.audit import Actor
from controller.registry import Registry
from controller.state.database import Base, StateDatabase
from controller.state.schema import SchemaError, head_revision
from simulators.servers import fresh_postgres_database
from tests.helpers import streetsense

CASE_TABLES = ("cases", "case_transitions", "case_photos", "webhook_outbox")
WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
CLERK = Actor("Chen (command centre)", "k1", "dispatcher")


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/cases.db"
    return await fresh_postgres_database(request.getfixturevalue("postgres_url"))


async def columns_and_revision(url: str) -> tuple[set[str], str | None]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        columns = await conn.run_sync(
            lambda c: {col["name"] for col in inspect(c).get_columns("cases")}
        )
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    await engine.dispose()
    return columns, revision


async def make_previous_release_database(url: str, without_contact: bool) -> None:
    """Tables as the release before migrations made them (no alembic_version), with a
    case in them; ``without_contact``: as releases before the contact column made them."""
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        # That release had the case tables only.
        case_tables = [Base.metadata.tables[name] for name in CASE_TABLES]
        await conn.run_sync(lambda c: Base.metadata.create_all(c, tables=case_tables))
        if without_contact:
            await conn.execute(text("ALTER TABLE cases DROP COLUMN contact"))
        # Nor had it the epochs of a pair (0006).
        for table in ("cases", "case_transitions"):
            await conn.execute(text(f"ALTER TABLE {table} DROP COLUMN epoch"))
        await conn.execute(
            text(
                "INSERT INTO cases (id, source, stage, category, category_kind, class_code, "
                "subclass_code, severity, title, description, component_id, device_id, "
                "fault_key, admin_code, street_code, community_code, grid, road, district, "
                "lat, lon, address, media, alarm_ids, evidence, department, assignee, "
                "reporter, reported_at, updated_at, overdue, evaluation, rework_count, "
                "extension_count, return_count) VALUES (7, 'inspector', 'filed', "
                "'streetlight', 'component', '01', '0110', 'medium', '路灯不亮', 'dark', "
                "'DF-P017', '', '', '', '', '', '441702001002', '东风路', '江城区', 21.86, "
                "111.98, '', '[]', '[]', '{}', '', '', 'Zhang', 1800000000, 1800000000, "
                "false, '', 0, 0, 0)"
            )
        )
    await engine.dispose()


async def test_an_empty_database_gets_the_whole_schema_at_the_head_revision(
    empty_url: str, tmp_path: Path
) -> None:
    db = StateDatabase(make_url(empty_url))
    before, after = await db.open()
    await db.close()
    assert (before.current, before.has_tables) == (None, False)
    assert after.current == head_revision()
    columns, revision = await columns_and_revision(empty_url)
    assert revision == head_revision() and "contact" in columns
    # Opened again: nothing to do.
    again = StateDatabase(make_url(empty_url), migrate_on_start=False)
    before, after = await again.open()
    await again.close()
    assert before.current == after.current == head_revision()


@pytest.mark.parametrize("without_contact", [False, True])
async def test_a_database_of_the_release_before_migrations_is_stamped_and_upgraded(
    empty_url: str, tmp_path: Path, without_contact: bool
) -> None:
    await make_previous_release_database(empty_url, without_contact)
    # Asked not to migrate at start, the controller refuses and says what to run.
    held = StateDatabase(make_url(empty_url), migrate_on_start=False)
    with pytest.raises(SchemaError, match="streetsense db upgrade"):
        await held.open()
    db = StateDatabase(make_url(empty_url))
    before, after = await db.open()
    assert (before.current, before.has_tables) == (None, True)
    assert after.current == head_revision()
    service = CaseService(CasesConfig(), db, Registry(parse_config({}, tmp_path / "c.yaml")))
    old = await service.get(7)
    assert (old.title, old.stage, old.contact) == ("路灯不亮", "filed", None)
    new = await service.open_case(
        NewCase(
            source="inspector",
            category="streetlight",
            severity="low",
            title="灯杆倾斜",
            reporter="Li",
            contact={"phone": "13800000000"},
        ),
        CLERK,
    )
    assert (await service.get(new.id)).contact == {"phone": "13800000000"}
    await db.close()
    columns, revision = await columns_and_revision(empty_url)
    assert revision == head_revision() and "contact" in columns


async def test_a_database_from_a_newer_release_is_refused_with_what_to_do(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/var/cases.db"
    db = StateDatabase(make_url(url))
    await db.open()
    assert db.engine is not None
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    await db.close()
    with pytest.raises(SchemaError, match=r"0099.*does not know.*restore the backup"):
        await StateDatabase(make_url(url)).open()

    loaded = write_config({"cases": {"db_url": "sqlite+aiosqlite:///cases.db"}})
    code, _, err = await streetsense("db", "upgrade", "-c", str(loaded.path))
    assert code == 1
    assert "0099" in err and "there is no downgrade" in err


async def test_db_upgrade_on_the_command_line_reports_what_it_did(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config({"cases": {"db_url": "sqlite+aiosqlite:///cases.db"}})
    loaded.data_dir.mkdir(parents=True, exist_ok=True)
    await make_previous_release_database(
        f"sqlite+aiosqlite:///{loaded.data_dir}/cases.db", without_contact=True
    )
    code, out, err = await streetsense("db", "upgrade", "-c", str(loaded.path))
    assert code == 0, err
    assert f"from before migrations -> revision {head_revision()}" in out
    code, out, err = await streetsense("db", "upgrade", "-c", str(loaded.path))
    assert code == 0 and "nothing to do" in out
