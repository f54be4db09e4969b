"""``streetsense db backup`` beside a working controller, ``restore`` with it stopped, and the
data folder lock that keeps a second controller (or a restore) off a running one."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml

from api.keys import ApiKeyStore, Role
from controller.config import LoadedConfig
from controller.data_lock import DataDirLock
from controller.runtime import Controller
from controller.state.legacy import opened_state
from simulators.faults import FaultKind, FaultSpec
from simulators.servers import free_port
from tests.helpers import ROOT, city_with_controller, new_key, on_own_loop, streetsense
from tests.test_cases_e2e import case_city
from tests.test_rules_e2e import cycles

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]


def readings(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (n,) = conn.execute("SELECT count(*) FROM reading").fetchone()
    return int(n)


def key_names(loaded: LoadedConfig) -> set[str]:
    async def names() -> set[str]:
        async with opened_state(loaded) as db:
            return {k.name for k in await ApiKeyStore(db).list() if k.revoked_at is None}

    return on_own_loop(names)


def revoke_named(loaded: LoadedConfig, name: str) -> None:
    async def revoke() -> None:
        async with opened_state(loaded) as db:
            assert await ApiKeyStore(db).revoke_named(name) == 1

    on_own_loop(revoke)


async def test_a_backup_taken_while_running_restores_exactly_what_it_held(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(case_city(tmp_path))
    config = str(loaded.path)
    backup_dir = tmp_path / "backup"
    embedded = loaded.data_path(loaded.config.storage.embedded.path)
    new_key(loaded, "city platform", Role.VIEWER)
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        city.inject(FaultSpec(kind=FaultKind.LAMP_BURNT_OUT, device="CAB-L003"))
        await cycles(controller, 4)
        [case] = await controller.cases.find()
        alarms = {(a.rule, a.device) for a in controller.rules.manager.list() if a.active}
        assert ("lamp-failure", "CAB-L003") in alarms
        await controller.telemetry.stop()  # what it holds is written; polling goes on below
        held = readings(embedded)

        code, out, err = await streetsense("db", "backup", "-c", config, str(backup_dir))
        assert code == 0, err
        manifest = json.loads((backup_dir / "manifest.json").read_text(encoding="utf-8"))
        names = {s["name"] for s in manifest["stores"]}
        assert names == {"state", "telemetry"}
        assert f"{len(manifest['stores'])} databases backed up to {backup_dir}" in out

        # Life goes on after the backup: the lamp is mended, a key is revoked.
        city.clear("CAB-L003")
        await cycles(controller, 6)
    revoke_named(loaded, "city platform")
    assert (await _case_stage(loaded, case.id)) != case.stage

    # A backup folder already holding one is refused: nothing is overwritten.
    code, _, err = await streetsense("db", "backup", "-c", config, str(backup_dir))
    assert code == 1 and "is not empty" in err

    # While a controller holds the data folder, restore refuses and names it.
    lock = DataDirLock(loaded.data_dir)
    lock.acquire()
    try:
        code, _, err = await streetsense("db", "restore", "-c", config, str(backup_dir))
    finally:
        lock.release()
    assert code == 1 and "is running" in err and "stop it before restoring" in err

    code, out, err = await streetsense("db", "restore", "-c", config, str(backup_dir))
    assert code == 0, err
    assert readings(embedded) == held
    assert "city platform" in key_names(loaded)
    assert (await _case_stage(loaded, case.id)) == case.stage
    async with Controller(loaded) as restored:
        await restored.open_stores()
        assert {(a.rule, a.device) for a in restored.rules.manager.list() if a.active} == alarms


async def _case_stage(loaded: LoadedConfig, case_id: int) -> str:
    async with Controller(loaded) as controller:
        await controller.open_stores()
        return (await controller.cases.get(case_id)).stage


async def test_a_changed_backup_is_refused_before_anything_is_written(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(case_city(tmp_path))
    config = str(loaded.path)
    new_key(loaded, "before", Role.VIEWER)
    code, _, err = await streetsense("db", "backup", "-c", config, str(tmp_path / "b"))
    assert code == 0, err
    new_key(loaded, "after", Role.VIEWER)
    copy = tmp_path / "b" / "state.db"
    copy.write_bytes(copy.read_bytes() + b"\0")
    code, _, err = await streetsense("db", "restore", "-c", config, str(tmp_path / "b"))
    assert code == 1 and "changed since the backup" in err
    assert key_names(loaded) == {"before", "after"}
    code, _, err = await streetsense("db", "restore", "-c", config, str(tmp_path / "nothing"))
    assert code == 1 and "not a streetsense backup" in err


def test_a_second_controller_on_the_same_data_folder_is_refused(tmp_path: Path) -> None:
    doc = deepcopy(case_city(tmp_path))
    doc["links"] = []
    doc["cabinets"] = []
    doc["gauges"] = []
    doc["rules"] = []
    doc["api"] = {"port": free_port()}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    first = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "run", "-c", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if line.startswith("API on http://"):
                break
        second = subprocess.run(
            [sys.executable, "-m", "api.cli", "run", "-c", str(config), "--port", str(free_port())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 3
        assert f"is in use by another controller (pid {first.pid})" in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=30)
