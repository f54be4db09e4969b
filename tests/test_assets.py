"""Lamp and pole assets: create, update, list, bulk import with a report of rejected rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api.keys import Role
from controller.catalogue import catalogue
from controller.config import LoadedConfig
from controller.control.audit import Actor
from controller.control.dispatcher import CommandRefused, CommandRequest
from controller.control.selector import GroupSelector
from controller.control.writes import Action
from controller.runtime import Controller
from tests.helpers import api_client, new_key, sqlite_state
from tests.test_control import control_city

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]

HEADER = "pole_id,lat,lon,lamp_type,rated_w,install_date,controller,cabinet,circuit,phase,road,grid"
SURVEY_CSV = f"""{HEADER}
XJ-0001,21.8531,111.9705,LED,150,2021-05-01,CAB-C-L001,CAB-C,1,A,新江路,G1
XJ-0002,21.8532,111.9706,LED,150,2021-05-01,,CAB-C,1,B,新江路,G1
XJ-0003,91.0,111.9707,LED,150,,,CAB-C,1,C,新江路,G1
XJ-0004,21.8534,111.9708,HPS,250,2019-13-01,,CAB-C,1,A,新江路,G1
XJ-0005,21.8535,111.9709,LED,150,,,CAB-X,1,A,新江路,G1
XJ-0002,21.8536,111.9710,LED,150,,,CAB-C,1,B,新江路,G1
XJ-0007,21.8537,111.9711,LED,150,,CAB-A-L001,CAB-C,1,C,新江路,G1
XJ-0008,21.8538,111.9712,LED,150,,,CAB-C,7,A,新江路,G1

DF-0001,21.8585,111.9822,LED,100,,,CAB-A,2,A,东风路辅道,G2
"""


def geojson(n: int, start: int) -> bytes:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [111.97 + i * 1e-4, 21.85]},
            "properties": {
                "pole_id": f"XJ-1{i:03d}",
                "rated_w": 120,
                "cabinet": "CAB-C",
                "circuit": 1,
                "road": "新江路",
                "grid": "G1",
            },
        }
        for i in range(start, start + n)
    ]
    features.append({"type": "Feature", "geometry": {"type": "LineString"}, "properties": {}})
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


async def test_bulk_import_reports_each_rejected_row_and_keeps_the_good_ones(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = control_city(tmp_path)
    loaded = write_config(doc)
    engineer = {"X-API-Key": new_key(loaded, "Chen Gong", Role.ENGINEER)}
    viewer = {"X-API-Key": new_key(loaded, "Zhou", Role.VIEWER)}
    async with Controller(loaded) as controller:
        await controller.open_stores()
        async with api_client(controller) as client:
            csv_headers = {**engineer, "Content-Type": "text/csv"}
            body = SURVEY_CSV.encode("utf-8-sig")  # as Excel saves it
            assert (
                await client.post(
                    "/assets/import", content=body, headers={**viewer, "Content-Type": "text/csv"}
                )
            ).status_code == 403
            dry = (
                await client.post(
                    "/assets/import", content=body, headers=csv_headers, params={"dry_run": True}
                )
            ).json()
            assert dry["accepted"] == 3 and dry["dry_run"]
            assert (await client.get("/assets")).json() == []

            report = (await client.post("/assets/import", content=body, headers=csv_headers)).json()
            assert report["accepted"] == 3 and report["created"] == 3
            rejected = {(r["row"], r["pole_id"]): r["reason"] for r in report["rejected"]}
            assert set(rejected) == {
                (4, "XJ-0003"),
                (5, "XJ-0004"),
                (6, "XJ-0005"),
                (7, "XJ-0002"),
                (8, "XJ-0007"),
                (9, "XJ-0008"),
            }
            assert rejected[4, "XJ-0003"].startswith("lat:")
            assert rejected[5, "XJ-0004"].startswith("install_date:")
            assert rejected[6, "XJ-0005"] == "cabinet: no cabinet 'CAB-X'"
            assert rejected[7, "XJ-0002"] == "pole_id: repeats an earlier row"
            assert "behind cabinet CAB-A, not CAB-C" in rejected[8, "XJ-0007"]
            assert rejected[9, "XJ-0008"] == "circuit: 7, but cabinet CAB-C has 4"
            # The same reasons in the catalogue's words, for the console to show in Chinese.
            worded = {(r["row"], r["pole_id"]): r["message"] for r in report["rejected"]}
            assert worded[4, "XJ-0003"] == {"key": "reject.invalid_columns",
                                            "params": {"columns": "lat"}}  # fmt: skip
            assert worded[6, "XJ-0005"] == {"key": "reject.no_cabinet",
                                            "params": {"cabinet": "CAB-X"}}  # fmt: skip
            assert worded[7, "XJ-0002"]["key"] == "reject.repeated_pole"
            assert worded[8, "XJ-0007"]["params"]["behind"] == "CAB-A"
            assert worded[9, "XJ-0008"]["params"] == {"circuit": 7, "cabinet": "CAB-C",
                                                      "circuits": 4}  # fmt: skip
            words = catalogue()
            for message in worded.values():
                assert message["key"] in words.entries, message
                zh = words.text(message["key"], "zh", **message["params"])
                assert "{" not in zh and zh != message["key"], zh
            beyond = worded[9, "XJ-0008"]
            shown = words.text(beyond["key"], "zh", **beyond["params"])
            assert shown == "回路 7，但控制柜 CAB-C 只有 4 个回路"

            poles = (await client.get("/assets", params={"road": "新江路"})).json()
            assert [p["pole_id"] for p in poles] == ["XJ-0001", "XJ-0002"]
            assert poles[0]["controller"] == "CAB-C-L001" and poles[1]["controller"] is None

            geo = await client.post(
                "/assets/import",
                content=geojson(20, 0),
                headers={**engineer, "Content-Type": "application/geo+json"},
            )
            assert geo.json()["accepted"] == 20
            assert geo.json()["rejected"] == [
                {
                    "row": 21,
                    "pole_id": "",
                    "reason": "geometry must be a Point [lon, lat]",
                    "message": {"key": "reject.not_point", "params": {}},
                }
            ]
            summary = (await client.get("/assets/summary", params={"by": "grid"})).json()
            assert summary == [
                {"group": "G1", "poles": 22, "with_controller": 1, "rated_kw": 2.7},
                {"group": "G2", "poles": 1, "with_controller": 0, "rated_kw": 0.1},
            ]
            exported = (await client.get("/assets/geojson", params={"grid": "G2"})).json()
            assert exported["features"][0]["geometry"]["coordinates"] == [111.9822, 21.8585]

            pole = (await client.get("/assets/XJ-0002")).json()
            pole["lamp_type"] = "LED-retrofit"
            pole["rated_w"] = 90
            updated = await client.put("/assets/XJ-0002", json=pole, headers=engineer)
            assert updated.status_code == 200
            assert (await client.get("/assets/XJ-0002")).json()["rated_w"] == 90
            dup = await client.post("/assets", json=pole, headers=engineer)
            assert dup.status_code == 409
            assert dup.json()["message"] == {
                "key": "refusal.pole_exists",
                "params": {"pole": "XJ-0002"},
            }
            wrong = {**pole, "pole_id": "NEW-1", "cabinet": "RS-1"}
            bad = await client.post("/assets", json=wrong, headers=engineer)
            assert bad.status_code == 422 and "no cabinet 'RS-1'" in bad.json()["detail"]
            missing = await client.get("/assets/NOPE")
            assert missing.status_code == 404
            assert missing.json()["message"] == {
                "key": "refusal.no_pole",
                "params": {"pole": "NOPE"},
            }
            # A file of another kind, or one whose header lacks pole_id, is refused as a whole
            # in the catalogue's words.
            for kind, body, status, key in (
                ("text/plain", b"pole_id\nX-1\n", 415, "refusal.import_kind"),
                ("text/csv", b"name,lat\nX,21.8\n", 422, "refusal.import_header"),
                ("text/csv", b"\xff\xfe\xfa", 422, "refusal.import_encoding"),
            ):
                whole = await client.post(
                    "/assets/import", content=body, headers={**engineer, "Content-Type": kind}
                )
                assert whole.status_code == status, whole.text
                assert whole.json()["message"]["key"] == key

        # 22 poles hang on CAB-C circuit 1, though only 6 have controllers: over the limit of 10.
        with pytest.raises(CommandRefused) as refused:
            await controller.commands.submit(
                CommandRequest(Action.CIRCUIT_OFF, GroupSelector(cabinets=["CAB-C"], circuits=[1])),
                Actor("Chen Gong", "k", "engineer"),
            )
        assert "puts out 22 lamps" in refused.value.reason


async def test_lamps_without_controllers_count_in_the_lighting_rate_by_circuit_current(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    import numpy as np

    from controller.assets.model import PoleAsset
    from controller.assets.store import AssetStore
    from controller.latest import LatestValues
    from controller.registry import Registry
    from controller.statistics import lighting_rates
    from drivers.readings import ReadingBatch

    # Most of a city: a cabinet whose lamps have no controller, only poles in the register.
    loaded = write_config(
        {
            "links": [{"id": "l", "kind": "modbus_tcp", "host": "127.0.0.1", "port": 1502}],
            "cabinets": [{"id": "CAB-P", "link": "l", "unit": 1, "road": "人民路", "grid": "G7"}],
        }
    )
    registry = Registry(loaded)
    assets = AssetStore(sqlite_state(tmp_path / "state.db"))
    await assets.open()
    try:
        pole = {"lat": 21.85, "lon": 111.97, "cabinet": "CAB-P", "rated_w": 150.0}
        await assets.put(
            [PoleAsset(pole_id=f"RM-{i:03d}", circuit=1, **pole) for i in range(10)]
            + [PoleAsset(pole_id=f"RM-{i:03d}", circuit=2, **pole) for i in range(10, 15)]
            + [PoleAsset(pole_id=f"RM-{i:03d}", circuit=3, **pole) for i in range(15, 19)]
        )
        assert assets.circuit_load("CAB-P", 1) == (10, 1500.0)
        cabinet = registry.by_id["CAB-P"]
        names = [p.name for p in cabinet.points]
        one_lamp_amps = 150.0 / (230.0 * 0.95)
        readings = {
            "voltage_a": 230.0,
            "circuit1_cmd": 1.0,  # on, contactor closed, 8 of 10 lamps' current
            "circuit1_on": 1.0,
            "circuit1_current": 8 * one_lamp_amps,
            "circuit2_cmd": 1.0,  # on, but the contactor did not close: all 5 dark
            "circuit2_on": 0.0,
            "circuit2_current": 0.0,
            "circuit3_cmd": 0.0,  # switched off by schedule: not expected lit
            "circuit3_on": 0.0,
        }
        latest = LatestValues(len(registry), registry.max_points)
        latest.update(
            ReadingBatch(
                np.full(len(readings), cabinet.index, np.int32),
                np.asarray([names.index(k) for k in readings], np.int16),
                np.full(len(readings), 1.8e9),
                np.asarray(list(readings.values())),
                np.zeros(len(readings), np.uint8),
            )
        )
        [city] = lighting_rates(registry, latest, "city", assets.circuit_load)
        assert (city.should_be_lit, city.lit) == (15, 8)
        [road] = lighting_rates(registry, latest, "road", assets.circuit_load)
        assert road.group == "人民路"
        assert lighting_rates(registry, latest, "city") == []  # without the register: none

        # A pole that gets a controller leaves the circuit's count of uncontrolled lamps.
        await assets.put([PoleAsset(pole_id="RM-000", circuit=1, controller="SLC-9", **pole)])
        assert assets.circuit_load("CAB-P", 1) == (9, 1350.0)
        assert assets.poles_on("CAB-P", 1) == 10
    finally:
        await assets.close()
