"""Private by default: every read needs a key of a reading role, checked over the whole
OpenAPI document; public views only where the config opens them; tickets for the live
events; failed keys throttled and counted."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.config import LoadedConfig
from controller.runtime import Controller
from drivers.errors import ConfigError
from tests.helpers import api_client, role_headers
from tests.test_operations import served, small_city

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
ANON = {"X-Anonymous": "1"}
#: Reads open to anyone: liveness for load balancers, the console's page, API docs.
OPEN = {"/health", "/", "/docs", "/redoc"}
#: Reads for the command centre only (and admin).
SUPERVISED = {"/links", "/audit", "/cases/export", "/cases/webhook"}
#: Reads for admins only: people's accounts.
ADMINS = {"/users"}
SAMPLE = {"device_id": "CAB-1", "point": "voltage_a", "period": "day", "group": "g"}


def reads(spec: dict[str, Any]) -> list[str]:
    paths = []
    for path, operations in spec["paths"].items():
        if "get" in operations:
            paths.append(re.sub(r"\{(\w+)\}", lambda m: SAMPLE.get(m[1], "1"), path))
    return paths


async def test_every_read_needs_a_reading_role_and_supervised_ones_the_centre(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(small_city(tmp_path))
    key = role_headers(loaded)
    async with Controller(loaded) as controller, api_client(controller) as client:
        await controller.open_stores()
        spec = (await client.get("/openapi.json", headers=ANON)).json()
        paths = reads(spec)
        assert len(paths) > 30
        assert {"/docs", "/redoc", "/"} <= OPEN
        for path in paths:
            if path in OPEN or path == "/events":
                continue
            anonymous = await client.get(path, headers=ANON)
            assert anonymous.status_code == 401, (path, anonymous.status_code)
            reporter = await client.get(path, headers=key["reporter"])
            # A reporter may see who it is, and nothing else.
            assert reporter.status_code == (200 if path == "/whoami" else 403), path
            viewer = await client.get(path, headers=key["viewer"])
            if path in ADMINS:
                for role in ("viewer", "engineer", "dispatcher", "flood_duty"):
                    refused = await client.get(path, headers=key[role])
                    assert refused.status_code == 403, (path, role)
                assert (await client.get(path, headers=key["admin"])).status_code == 200
            elif path in SUPERVISED:
                assert viewer.status_code == 403, path
                dispatcher = await client.get(path, headers=key["dispatcher"])
                assert dispatcher.status_code not in (401, 403), path
            else:
                assert viewer.status_code not in (401, 403), (path, viewer.status_code)
            assert viewer.status_code < 500, (path, viewer.text)
        assert (await client.get("/health", headers=ANON)).status_code in (200, 503)


async def test_a_config_opens_named_views_and_nothing_else(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = small_city(tmp_path)
    doc["api"] = {"public": ["map", "devices"]}
    loaded = write_config(doc)
    async with Controller(loaded) as controller, api_client(controller) as client:
        assert (await client.get("/map", headers=ANON)).status_code == 200
        assert (await client.get("/devices", headers=ANON)).status_code == 200
        for private in ("/alarms", "/cases", "/links", "/audit", "/commands"):
            assert (await client.get(private, headers=ANON)).status_code == 401, private
    doc["api"]["public"] = ["audit"]  # never to be opened
    with pytest.raises(ConfigError, match=r"api\.public"):
        write_config(doc)


async def test_live_events_open_with_a_ticket_and_a_failing_address_is_throttled(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(small_city(tmp_path))
    key = role_headers(loaded)
    async with Controller(loaded) as controller, api_client(controller) as client:
        assert (await client.get("/events", headers=ANON)).status_code == 401
        issued = await client.post("/session/ticket", headers=key["viewer"])
        assert issued.status_code == 200
        ticket = issued.json()["ticket"]
        assert (
            await client.get("/alarms", params={"ticket": ticket}, headers=ANON)
        ).status_code == 200
        async with served(controller) as target, httpx.AsyncClient() as http:
            # A real server: the stream opens at once and stays open.
            own = await http.post(f"http://{target}/session/ticket", headers=key["viewer"])
            url = f"http://{target}/events"
            params = {"ticket": own.json()["ticket"]}
            async with http.stream("GET", url, params=params) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
        forged = ticket[:-1] + ("0" if ticket[-1] != "0" else "1")
        assert (
            await client.get("/events", params={"ticket": forged}, headers=ANON)
        ).status_code == 401
        assert (await client.post("/session/ticket", headers=key["reporter"])).status_code == 403
        metrics = (await client.get("/metrics", headers=key["viewer"])).text
        assert re.search(r"^streetsense_auth_failures_total 1\.0$", metrics, re.M), metrics

        # Nine more wrong keys from this address, then it is refused for a while.
        for _ in range(9):
            wrong = await client.get("/alarms", headers={"X-API-Key": "ssk_abcd1234_guess"})
            assert wrong.status_code == 401
        refused = await client.get("/alarms", headers={"X-API-Key": "ssk_abcd1234_guess"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        # A colleague behind the same address with a valid key is not locked out.
        assert (await client.get("/alarms", headers=key["viewer"])).status_code == 200
