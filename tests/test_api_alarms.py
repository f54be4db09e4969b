"""Alarms and statistics through the HTTP API, with API keys and roles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from api.app import create_app
from api.keys import Role
from controller.config import LoadedConfig
from controller.state.tables import alarm
from simulators.faults import FaultKind, FaultSpec
from tests.helpers import city_with_controller, new_key, reads_with
from tests.test_rules_e2e import city_doc, cycles

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]


def city_with_keys(tmp_path: Path, write_config: WriteConfig) -> tuple[LoadedConfig, str, str]:
    """The small test city's config with its API key store, and a viewer's and an
    engineer's key in it."""
    doc = city_doc(tmp_path)
    loaded = write_config(doc)
    viewer = new_key(loaded, "Zhou (viewer)", Role.VIEWER)
    engineer = new_key(loaded, "Wang (engineer)", Role.ENGINEER)
    return loaded, viewer, engineer


async def test_alarm_actions_need_the_right_role_and_statistics_count_them(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded, viewer, engineer = city_with_keys(tmp_path, write_config)
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        app = create_app(controller, manage_controller=False)
        city.inject(FaultSpec(kind=FaultKind.CIRCUIT_CUT, device="CAB", circuit=2))
        await cycles(controller, 3)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://api",
            event_hooks={"request": [reads_with(viewer)]},
        ) as client:
            alarms = (await client.get("/alarms")).json()
            assert [(a["rule"], a["device"], a["circuit"], a["state"]) for a in alarms] == [
                ("circuit-break", "CAB", 2, "active_unacknowledged")
            ]
            url = f"/alarms/{alarms[0]['id']}/acknowledge"
            assert (await client.post(url)).status_code == 401
            wrong = await client.post(url, headers={"Authorization": "Bearer ssk_nope_nope"})
            assert wrong.status_code == 401
            forbidden = await client.post(url, headers={"Authorization": f"Bearer {viewer}"})
            assert forbidden.status_code == 403 and "viewer" in forbidden.json()["detail"]
            acked = await client.post(url, headers={"X-API-Key": engineer})
            assert acked.status_code == 200
            assert acked.json()["state"] == "active_acknowledged"
            assert acked.json()["acknowledged_by"] == "Wang (engineer)"
            again = await client.post(url, headers={"X-API-Key": engineer})
            assert again.status_code == 409
            shelve = f"/alarms/{alarms[0]['id']}/shelve"
            bad = await client.post(shelve, json={"minutes": 0}, headers={"X-API-Key": engineer})
            assert bad.status_code == 422
            ok = await client.post(shelve, json={"minutes": 30}, headers={"X-API-Key": engineer})
            assert ok.json()["state"] == "shelved"
            assert (
                await client.post("/alarms/999/acknowledge", headers={"X-API-Key": engineer})
            ).status_code == 404

            lighting = (await client.get("/statistics/lighting", params={"by": "cabinet"})).json()
            assert lighting == [{"group": "CAB", "should_be_lit": 8, "lit": 4, "rate": 0.5}]
            report = (
                await client.get("/statistics/faults", params={"period": "day", "by": "rule"})
            ).json()
            assert [(r["group"], r["raised"], r["cleared"]) for r in report["rows"]] == [
                ("circuit-break", 1, 0)
            ]
            assert report["availability"] == 1.0
            watch = (await client.get("/alarms/flood-watch")).json()
            assert watch == {"storm_areas": {}, "alarm_floods": {}}
            city.clear("CAB")
            await cycles(controller, 3)
            report = (
                await client.get("/statistics/faults", params={"period": "month", "by": "kind"})
            ).json()
            (row,) = report["rows"]
            assert row["cleared"] == 1 and 0 < row["mttr_s"] < 10


async def test_alarms_are_acknowledged_and_shelved_in_bulk_with_refusals_named(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded, viewer, engineer = city_with_keys(tmp_path, write_config)
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        app = create_app(controller, manage_controller=False)
        city.inject(FaultSpec(kind=FaultKind.CIRCUIT_CUT, device="CAB", circuit=2))
        city.inject(FaultSpec(kind=FaultKind.DOOR_OPEN, device="CAB"))
        await cycles(controller, 3)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers={"X-API-Key": engineer}
        ) as client:
            ids = [a["id"] for a in (await client.get("/alarms")).json()]
            assert len(ids) >= 2
            forbidden = await client.post(
                "/alarms/acknowledge", json={"ids": ids}, headers={"X-API-Key": viewer}
            )
            assert forbidden.status_code == 403
            assert (await client.post("/alarms/acknowledge", json={"ids": []})).status_code == 422
            done = (await client.post("/alarms/acknowledge", json={"ids": [*ids, 999]})).json()
            assert sorted(a["id"] for a in done["done"]) == sorted(ids)
            assert {a["acknowledged_by"] for a in done["done"]} == {"Wang (engineer)"}
            assert done["refused"] == [
                {
                    "id": 999,
                    "reason": "no open alarm 999",
                    "message": {"key": "refusal.alarm_not_open", "params": {"alarm": 999}},
                }
            ]
            again = (await client.post("/alarms/acknowledge", json={"ids": ids})).json()
            assert again["done"] == [] and len(again["refused"]) == len(ids)
            assert all("nothing to acknowledge" in r["reason"] for r in again["refused"])
            # The same in the catalogue's words, the state named for the console to translate.
            assert {r["message"]["key"] for r in again["refused"]} == {"refusal.alarm_acknowledged"}
            assert {r["message"]["params"]["alarm_state"] for r in again["refused"]} == {
                "active_acknowledged"
            }
            shelved = await client.post("/alarms/shelve", json={"ids": ids, "minutes": 60})
            assert {a["state"] for a in shelved.json()["done"]} == {"shelved"}
            listed = (await client.get("/alarms", params={"state": "shelved"})).json()
            assert sorted(a["id"] for a in listed) == sorted(ids)
            # Saved in the one action: the database has them acknowledged.
            async with controller.state_db.connected().connect() as conn:
                rows = (await conn.execute(select(alarm.c.id, alarm.c.acked_by))).all()
            assert all(dict(rows).get(i) == "Wang (engineer)" for i in ids)
