"""Energy per cabinet: the counter's rise noon to noon against its lamps burning at full
power from sunset to sunrise; read through the API from the embedded store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.config import LoadedConfig
from controller.runtime import Controller
from drivers.readings import ReadingBatch
from simulators.servers import free_port
from tests.helpers import api_client

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
TZ = ZoneInfo("Asia/Shanghai")
YANGJIANG = {"lat": 21.86, "lon": 111.98}


def energy_city(tmp_path: Path) -> dict[str, Any]:
    link = {"id": "dtu", "kind": "rtu_over_tcp", "host": "127.0.0.1", "port": free_port()}
    return {
        "site": {"timezone": "Asia/Shanghai"},
        "links": [link],
        "cabinets": [
            # 10 lamps of 150 W: 1.5 kW at full power.
            {
                "id": "CAB-A",
                "link": "dtu",
                "unit": 1,
                **YANGJIANG,
                "lamp_runs": [
                    {"circuit": 1, "count": 6, "rated_w": 150},
                    {"circuit": 2, "count": 4, "rated_w": 150},
                ],
            },
            {
                "id": "CAB-B",
                "link": "dtu",
                "unit": 2,
                **YANGJIANG,
                "profile": "sl-cabinet-4c-switching",
            },
            {
                "id": "CAB-C",
                "link": "dtu",
                "unit": 3,
                **YANGJIANG,
                "lamp_runs": [{"circuit": 1, "count": 2, "rated_w": 100}],
            },
            {
                "id": "CAB-D",
                "link": "dtu",
                "unit": 4,
                **YANGJIANG,
                "lamp_runs": [{"circuit": 1, "count": 2, "rated_w": 100}],
            },
        ],
        "storage": {"embedded": {"path": str(tmp_path / "e.db")}},
    }


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


async def test_energy_per_cabinet_for_a_night_and_a_month_against_full_power(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(energy_city(tmp_path))
    async with Controller(loaded) as controller:
        await controller.open_stores()
        registry = controller.registry
        readings = [
            # CAB-A: 900 kWh on 1 November, 1000 at noon on the 30th, 1012.5 the next noon.
            ("CAB-A", "2026-11-01T12:20", 900.0),
            ("CAB-A", "2026-11-30T12:10", 1000.0),
            ("CAB-A", "2026-11-30T23:00", 1007.0),
            ("CAB-A", "2026-12-01T11:50", 1012.5),
            # CAB-C's counter went back (a meter replaced overnight).
            ("CAB-C", "2026-11-30T12:10", 500.0),
            ("CAB-C", "2026-12-01T11:50", 3.0),
        ]
        rows = [
            (
                registry.by_id[d].index,
                [p.name for p in registry.by_id[d].points].index("energy"),
                at(t),
                v,
            )
            for d, t, v in readings
        ]
        batch = ReadingBatch(
            np.array([r[0] for r in rows], np.int32),
            np.array([r[1] for r in rows], np.int16),
            np.array([r[2] for r in rows], np.float64),
            np.array([r[3] for r in rows], np.float64),
            np.zeros(len(rows), np.uint8),
        )
        await controller.telemetry.on_batch(batch)
        assert controller.telemetry.store_sink is not None
        assert await controller.telemetry.store_sink.delivery.drain(5)
        async with api_client(controller) as client:
            night = await client.get(
                "/statistics/energy", params={"period": "night", "date": "2026-11-30"}
            )
            assert night.status_code == 200, night.text
            report = night.json()
            by = {c["cabinet"]: c for c in report["cabinets"]}
            a = by["CAB-A"]
            assert (a["rated_kw"], a["kwh"]) == (1.5, 12.5)
            # Late November in Yangjiang: sunset about 17:50, sunrise about 06:50.
            assert 1.5 * 12.7 < a["full_kwh"] < 1.5 * 13.3, a
            assert a["saving_pct"] == pytest.approx(100 * (1 - 12.5 / a["full_kwh"]), abs=0.1)
            assert (by["CAB-B"]["kwh"], by["CAB-B"]["note"]) == (None, "no energy counter")
            assert by["CAB-C"]["kwh"] is None and "went back" in by["CAB-C"]["note"]
            assert by["CAB-D"]["kwh"] is None and "no counter reading" in by["CAB-D"]["note"]
            # The city's saving compares only what was metered with its own full power.
            assert (report["total_kwh"], report["total_full_kwh"]) == (12.5, a["full_kwh"])
            assert report["saving_pct"] == a["saving_pct"]

            month = (
                await client.get(
                    "/statistics/energy", params={"period": "month", "date": "2026-11-15"}
                )
            ).json()
            assert (month["first_night"], month["nights"]) == ("2026-11-01", 30)
            a = next(c for c in month["cabinets"] if c["cabinet"] == "CAB-A")
            assert a["kwh"] == 112.5
            assert 30 * 1.5 * 12.4 < a["full_kwh"] < 30 * 1.5 * 13.3

            future = await client.get(
                "/statistics/energy", params={"period": "night", "date": "2099-01-01"}
            )
            assert future.status_code == 422 and "has ended yet" in future.text
            bad = await client.get("/statistics/energy", params={"period": "year"})
            assert bad.status_code == 422
