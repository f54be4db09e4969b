"""A province of city cells: three controllers, each with its own config and its own
PostgreSQL, writing telemetry into one victoria-metrics; each city's series and the
province's totals come back from the one engine, and nothing crosses between cities."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack
from copy import deepcopy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from controller.config import LoadedConfig, load_config
from controller.runtime import Controller
from drivers.readings import ReadingBatch
from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import SimulatedCity
from simulators.servers import PostgresServer, VictoriaMetrics
from tests.helpers import api_client
from tests.test_cases_e2e import case_city
from tests.test_rules_e2e import cycles

pytestmark = pytest.mark.slow

#: City, and how many cabinets it has (the same ids recur: CAB, CAB-2, ...).
CELLS = {"yangjiang": 1, "shantou": 2, "zhanjiang": 3}


def cell_config(folder: Path, city: str, cabinets: int, vm_url: str, pg_url: str) -> LoadedConfig:
    """One city's own config: its devices, its PostgreSQL, the province's store."""
    folder.mkdir()
    doc = deepcopy(case_city(folder))
    template = doc["cabinets"][0]
    doc["cabinets"] = [template] + [
        template | {"id": f"CAB-{n}", "unit": 10 + n} for n in range(2, cabinets + 1)
    ]
    doc["site"] = {"city": city}
    doc["data_dir"] = str(folder / "var")
    doc["storage"]["influxdb"] = {"url": vm_url, "database": "province", "flush_interval": 0.1}
    # victoria-metrics takes line protocol but answers no InfluxQL: the cell's own
    # charts and evidence read its embedded store (docs/scale.md).
    doc["storage"]["query_from"] = "embedded"
    doc["cases"]["db_url"] = pg_url
    # Each city's devices read differently, so a value tells which city it came from.
    doc["simulator"] = {"seed": len(city) * 7 + cabinets}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_config(path)


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """One victoria-metrics for the province, one PostgreSQL per city."""
    folder = tmp_path_factory.mktemp("province")
    with ExitStack() as stack:
        vm = VictoriaMetrics(folder / "vm")
        vm.start()
        stack.callback(vm.stop)
        urls = {}
        for city in CELLS:
            pg = PostgresServer()
            pg.start()
            stack.callback(pg.stop)
            urls[city] = pg.url
        yield vm.url, urls


class Delivered:
    """Every batch a cell's poller handed on."""

    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []

    async def on_batch(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)


async def vm_get(url: str, path: str, **params: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}{path}", params=params)
        response.raise_for_status()
        return response


async def export(vm_url: str, selector: str) -> list[dict[str, Any]]:
    """Raw samples of the matching series, as victoria-metrics exports them."""
    response = await vm_get(vm_url, "/api/v1/export", **{"match[]": selector})
    return [json.loads(line) for line in response.text.splitlines() if line]


async def instant(vm_url: str, query: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (await vm_get(vm_url, "/api/v1/query", query=query)).json()[
        "data"
    ]["result"]
    return result


@pytest.fixture
async def cells(
    province: tuple[str, dict[str, str]], tmp_path: Path
) -> AsyncIterator[dict[str, tuple[SimulatedCity, Controller, Delivered]]]:
    vm_url, pg_urls = province
    async with AsyncExitStack() as stack:
        out = {}
        for city, cabinets in CELLS.items():
            loaded = cell_config(tmp_path / city, city, cabinets, vm_url, pg_urls[city])
            sim = await stack.enter_async_context(SimulatedCity(loaded))
            controller = await stack.enter_async_context(Controller(loaded))
            await controller.open_stores()
            delivered = Delivered()
            controller.poller.subscribe(delivered.on_batch)
            out[city] = (sim, controller, delivered)
        yield out


async def test_three_cities_in_one_store_each_its_own_and_the_province_totals(
    cells: dict[str, tuple[SimulatedCity, Controller, Delivered]],
    province: tuple[str, dict[str, str]],
) -> None:
    vm_url, _ = province
    shantou_sim = cells["shantou"][0]
    for _, controller, _ in cells.values():
        await cycles(controller, 2)
    shantou_sim.inject(FaultSpec(kind=FaultKind.CIRCUIT_CUT, device="CAB-2", circuit=1))
    for _ in range(5):
        for _, controller, _ in cells.values():
            await cycles(controller, 1)
    for _, controller, _ in cells.values():
        assert controller.telemetry.influx is not None
        assert await controller.telemetry.influx.drain(10)

    # Each city's series: its own devices, every sample one its own controller read.
    read: dict[str, dict[int, float]] = {}
    for city, (_, controller, delivered) in cells.items():
        device = controller.registry.by_id["CAB"]
        voltage = [p.name for p in device.points].index("voltage_a")
        read[city] = {
            round(float(t) * 1000): float(v)
            for b in delivered.batches
            for d, p, t, v in zip(b.device, b.point, b.ts, b.value, strict=True)
            if d == device.index and p == voltage
        }
        assert len(read[city]) >= 7

    def samples_of_cab(series: list[dict[str, Any]]) -> int:
        return sum(len(s["values"]) for s in series if s["metric"]["device"] == "CAB")

    by_city: dict[str, list[dict[str, Any]]] = {}
    for _ in range(40):  # fresh rows become searchable within a second or so
        by_city = {c: await export(vm_url, f'cabinet_voltage_a{{city="{c}"}}') for c in CELLS}
        if all(samples_of_cab(by_city[c]) >= len(read[c]) for c in CELLS):
            break
        await asyncio.sleep(0.5)
    for city, (_, controller, _) in cells.items():
        series = by_city[city]
        assert {s["metric"]["city"] for s in series} == {city}
        assert sorted(s["metric"]["device"] for s in series) == sorted(
            d.id for d in controller.registry.devices if d.device_class == "cabinet"
        )
        [own] = [s for s in series if s["metric"]["device"] == "CAB"]
        assert sorted(own["timestamps"]) == sorted(read[city])
        for ts, value in zip(own["timestamps"], own["values"], strict=True):
            assert read[city][ts] == pytest.approx(value, rel=1e-6)

    # The province's totals, from the engine.
    per_city = await instant(vm_url, "count by (city) (last_over_time(cabinet_voltage_a[10m]))")
    assert {r["metric"]["city"]: int(r["value"][1]) for r in per_city} == CELLS
    [total] = await instant(vm_url, "count(last_over_time(cabinet_voltage_a[10m]))")
    assert int(total["value"][1]) == sum(CELLS.values())
    lamps = await instant(vm_url, "count by (city) (last_over_time(lamp_lamp_on[10m]))")
    assert {r["metric"]["city"]: int(r["value"][1]) for r in lamps} == {
        c: 8 * n for c, n in CELLS.items()
    }

    # Cases stay in their city's database: the cut circuit is Shantou's alone, and
    # each city's export for the provincial platform says whose it is.
    for city, (_, controller, _) in cells.items():
        cases = await controller.cases.find()
        faults = [c.fault_key for c in cases]
        assert faults == (["circuit-break|CAB-2|1"] if city == "shantou" else [])
        exported = await export_cases(controller)
        assert exported["city"] == city
        assert [c["device_id"] for c in exported["cases"]] == [c.device_id for c in cases]


async def export_cases(controller: Controller) -> dict[str, Any]:
    """The city's case export for the provincial platform, through its API."""
    async with api_client(controller) as client:
        since = datetime(2020, 1, 1, tzinfo=UTC).isoformat()
        response = await client.get("/cases/export", params={"since": since})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
