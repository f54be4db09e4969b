"""Hostile input gets a 4xx with a reason, never a 500: the ten causes a black-box
pass found (schemathesis, hand-made bodies), each as a regression case."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.config import LoadedConfig
from controller.runtime import Controller
from tests.helpers import api_client, role_headers
from tests.test_operations import small_city

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
HUGE = "99999999999999999999"


@pytest.fixture
def keys(tmp_path: Path, write_config: WriteConfig) -> dict[str, dict[str, str]]:
    """A key of every role, in the state database of the small city the tests run."""
    return role_headers(write_config(small_city(tmp_path)))


async def test_odd_ids_dates_and_numbers_are_refused_with_a_reason(
    tmp_path: Path, write_config: WriteConfig, keys: dict[str, dict[str, str]]
) -> None:
    loaded = write_config(small_city(tmp_path))
    async with Controller(loaded) as controller, api_client(controller) as client:
        await controller.open_stores()
        for path in (f"/cases/{HUGE}", f"/commands/{HUGE}"):
            assert (await client.get(path)).status_code == 422, path
        assert (await client.get("/cases", params={"offset": HUGE})).status_code == 422
        assert (await client.get("/devices", params={"offset": HUGE})).status_code == 422
        for odd in ("²", HUGE, "0"):
            got = await client.get(f"/open311/v2/requests/{odd}.json")
            assert got.status_code == 404, odd
        series = "/telemetry/series/CAB-1/voltage_a"
        for params in ({"every": "inf"}, {"every": "nan"}, {"end": "0001-01-01T00:00:00Z"}):
            got = await client.get(series, params=params)
            assert got.status_code == 422, (params, got.text)
        assert (
            await client.get("/reports/month", params={"date": "9999-12-31"})
        ).status_code == 422


async def test_bodies_that_would_break_the_parser_or_the_store_are_refused(
    tmp_path: Path, write_config: WriteConfig, keys: dict[str, dict[str, str]]
) -> None:
    loaded = write_config(small_city(tmp_path))
    async with Controller(loaded) as controller, api_client(controller) as client:
        await controller.open_stores()
        dispatcher = keys["dispatcher"]

        async def post(path: str, body: bytes, headers: dict[str, str]) -> int:
            sent = await client.post(
                path, content=body, headers={"Content-Type": "application/json", **headers}
            )
            assert "Traceback" not in sent.text
            return sent.status_code

        good = (
            b'{"source": "inspector", "category": "streetlight", "title": "t", '
            b'"lat": 21.8, "lon": 111.9}'
        )
        assert await post("/cases", good, dispatcher) in (200, 201)  # the baseline goes in
        nan = good.replace(b"21.8", b"NaN")
        assert await post("/cases", nan, dispatcher) == 422
        surrogate = good.replace(b'"t"', b'"\\ud800"')
        assert await post("/cases", surrogate, dispatcher) == 422
        deep = b"[" * 1000 + b"]" * 1000
        # Before the key check, in GeoReport's error shape (400) on its paths.
        assert await post("/open311/v2/requests.json", deep, {}) == 400
        assert (
            await post(
                "/assets/import",
                b'{"type": "FeatureCollection", "x": ' + deep + b"}",
                keys["engineer"],
            )
            == 422
        )
        long_lat = good.replace(b"21.8", b"2" + b"1" * 400)
        assert await post("/cases", long_lat, dispatcher) == 422
        big = b'{"a": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        assert await post("/cases", big, dispatcher) == 413

        for data, kind in (
            (b"pole_id,road\n\x81\x30\xff\xff,x\n", "text/csv"),  # neither UTF-8 nor GB18030
            (b'pole_id,road\nP1,"' + b"x" * 131_073 + b'"\n', "text/csv"),  # over the cell limit
            (
                b'{"type": "FeatureCollection", "features": [' + b"1" * 4300 + b"]}",
                "application/geo+json",
            ),
        ):
            sent = await client.post(
                "/assets/import", content=data, headers={"Content-Type": kind, **keys["engineer"]}
            )
            assert sent.status_code == 422, (kind, sent.status_code, sent.text[:200])


async def test_a_large_import_does_not_stall_the_event_loop(
    tmp_path: Path, write_config: WriteConfig, keys: dict[str, dict[str, str]]
) -> None:
    loaded = write_config(small_city(tmp_path))
    rows = "".join(f"P{i:06d},东风路,21.8,111.9,150\n" for i in range(150_000))
    data = ("pole_id,road,lat,lon,rated_w\n" + rows).encode()
    async with Controller(loaded) as controller, api_client(controller) as client:
        await controller.open_stores()
        headers = {"Content-Type": "text/csv", **keys["engineer"]}
        importing = asyncio.create_task(
            client.post("/assets/import", content=data, headers=headers, params={"dry_run": True})
        )
        await asyncio.sleep(0.05)
        worst = 0.0
        while not importing.done():
            started = time.perf_counter()
            await client.get("/health")
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.01)
        answer = await importing
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["rejected_total"] == 0
        # Parsing these rows takes about 5 s of CPU: on the event loop it would stall every
        # other request that long. Off it, /health shares the GIL with the parser thread.
        assert worst < 1.0, worst
