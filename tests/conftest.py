"""Shared fixtures: free loopback ports, configs written to temp folders, leak checks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.config import LoadedConfig, load_config
from simulators.servers import Influxd, PostgresServer


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], LoadedConfig]:
    """Write a config mapping to a temp config.yaml and load it."""

    def write(doc: dict[str, Any]) -> LoadedConfig:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        return load_config(path)

    return write


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    """A real influxd (Debian's 1.6.7) on its own port and temp data folder."""
    server = Influxd(tmp_path / "influx")
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (as pymodbus's own suite does)."""
    yield
    current = asyncio.current_task()
    deadline = asyncio.get_running_loop().time() + 2.0
    while True:
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not leaked or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    if leaked:
        for task in leaked:
            task.cancel()
        pytest.fail(f"test leaked {len(leaked)} task(s): {[t.get_name() for t in leaked]}")


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own, for tests that halt and resume it."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL: STREETSENSE_TEST_POSTGRES_URL if given, else a throwaway cluster."""
    given = os.environ.get("STREETSENSE_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    server = PostgresServer()
    server.start()
    yield server.url
    server.stop()
