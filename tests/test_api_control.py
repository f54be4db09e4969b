"""Remote control through the HTTP API: roles, confirm, rate limit, commands and the audit log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.keys import Role
from controller.config import LoadedConfig
from controller.runtime import Controller
from simulators.fleet import SimulatedCity
from tests.helpers import api_client, city_with_controller, new_key
from tests.test_control import control_city

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]


async def test_control_api_checks_roles_confirms_and_audits_every_command(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = control_city(tmp_path)
    doc["control"]["rate_limit"] = {"commands_per_minute": 1, "burst": 3}
    loaded = write_config(doc)
    viewer = {"X-API-Key": new_key(loaded, "Zhou", Role.VIEWER)}
    dispatcher = {"X-API-Key": new_key(loaded, "Li (dispatch)", Role.DISPATCHER)}
    engineer = {"Authorization": "Bearer " + new_key(loaded, "Chen Gong", Role.ENGINEER)}
    off_road = {"action": "off", "targets": {"road": "东风路"}}
    async with city_with_controller(loaded) as (city, controller):
        await controller.open_stores()
        async with api_client(controller) as client:
            assert (await client.post("/control/circuits", json=off_road)).status_code == 401
            for who, role in ((viewer, "viewer"), (dispatcher, "dispatcher")):
                denied = await client.post("/control/circuits", json=off_road, headers=who)
                assert denied.status_code == 403
                assert "needs engineer or admin" in denied.json()["detail"]
                words = denied.json()["message"]
                assert words == {"key": "refusal.role_may_not", "params": {"role": role}}
            bad = await client.post(
                "/control/lamps",
                json={"action": "dim", "targets": {"lamps": ["RS-1"]}},
                headers=engineer,
            )
            assert bad.status_code == 422 and "level is required" in bad.text
            # Of a type the console words in the reader's language.
            assert [i["type"] for i in bad.json()["detail"]] == ["level_for_dim"]
            empty = await client.post(
                "/control/lamps", json={"action": "on", "targets": {}}, headers=engineer
            )
            assert empty.status_code == 422 and "all: true" in empty.text
            assert [i["type"] for i in empty.json()["detail"]] == ["group_empty"]

            unconfirmed = await client.post("/control/circuits", json=off_road, headers=engineer)
            assert unconfirmed.status_code == 428
            assert "12 lamps" in unconfirmed.json()["detail"]
            words = unconfirmed.json()["message"]
            assert words["key"] == "refusal.confirm_lamps_off" and words["params"]["lamps"] == 12
            assert city.cabinets["CAB-A"].circuit_cmd == [True] * 4

            sent = await client.post(
                "/control/circuits", json={**off_road, "confirm": True}, headers=engineer
            )
            assert sent.status_code == 202
            assert sent.headers["Location"] == f"/commands/{sent.json()['id']}"
            assert sent.json()["status"] in ("pending", "sent")
            done = (await client.get(sent.headers["Location"], params={"wait": 5})).json()
            assert done["status"] == "confirmed"
            assert {r["target"] for r in done["results"]} == {"CAB-A/circuit1", "CAB-B/circuit1"}
            assert city.cabinets["CAB-B"].circuit_cmd == [False, True, True, True]

            dim = await client.post(
                "/control/lamps",
                json={"action": "dim", "level": 40, "targets": {"lamps": ["RS-1"]}},
                headers=engineer,
            )
            assert dim.status_code == 202
            assert (await client.get(f"/commands/{dim.json()['id']}", params={"wait": 5})).json()[
                "status"
            ] == "confirmed"
            assert city.lamps["RS-1"].dim_cmd == 40

            # A burst of 3 from this key (the 428 counted); the refusals by role were other keys.
            limited = await client.post(
                "/control/circuits",
                json={"action": "on", "targets": {"all": True}},
                headers=engineer,
            )
            assert limited.status_code == 429
            assert int(limited.headers["Retry-After"]) > 0
            assert limited.json()["message"] == {
                "key": "refusal.command_rate",
                "params": {"seconds": int(limited.headers["Retry-After"])},
            }

            audit = (await client.get("/audit")).json()
            assert [(a["outcome"], a["by"], a["role"]) for a in audit] == [
                ("refused", "Chen Gong", "engineer"),  # rate limited
                ("confirmed", "Chen Gong", "engineer"),  # dim RS-1
                ("confirmed", "Chen Gong", "engineer"),  # road off, confirmed
                ("refused", "Chen Gong", "engineer"),  # needs confirm
                ("refused", "Li (dispatch)", "dispatcher"),
                ("refused", "Zhou", "viewer"),
            ]
            assert "rate limit" in audit[0]["reason"]
            assert audit[2]["action"] == "circuit_off" and audit[2]["targets"] == "road=东风路"
            assert audit[2]["results"]["CAB-A/circuit1"] == {"status": "confirmed"}
            by_target = (await client.get("/audit", params={"target": "RS-1"})).json()
            assert [a["action"] for a in by_target] == ["lamp_dim"]
            # LIKE wildcards in a filter are literal: no target contains them.
            for wildcard in ("%", "_", "RS_1", "\\"):
                found = (await client.get("/audit", params={"target": wildcard})).json()
                assert found == [], wildcard
            missing = await client.get("/commands/999")
            assert missing.status_code == 404
            assert missing.json()["message"] == {
                "key": "refusal.no_command",
                "params": {"command": 999},
            }


async def test_the_map_shows_a_confirmed_switch_at_once_not_at_the_next_poll(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = control_city(tmp_path)
    loaded = write_config(doc)
    engineer = {"X-API-Key": new_key(loaded, "Chen Gong", Role.ENGINEER)}
    async with SimulatedCity(loaded), Controller(loaded) as controller:
        await controller.open_stores()
        await controller.poller.push(await controller.poller.poll_all_once())
        await controller.poller.flush()
        async with api_client(controller) as client:

            def states(body: dict[str, Any]) -> dict[str, str]:
                return {d["id"]: d["state"] for d in body["devices"]}

            before = states((await client.get("/map", headers=engineer)).json())
            assert before["CAB-C"] == "on" and before["CAB-C-L001"] == "on"
            # The poller is not running: only the command's own read-back can move the map.
            off = {"action": "off", "targets": {"cabinets": ["CAB-C"]}, "confirm": True}
            sent = await client.post("/control/circuits", json=off, headers=engineer)
            done = await client.get(sent.headers["Location"], params={"wait": 5}, headers=engineer)
            assert done.json()["status"] == "confirmed"
            after = states((await client.get("/map", headers=engineer)).json())
            assert after["CAB-C"] == "off"
            assert {after[f"CAB-C-L00{n}"] for n in range(1, 10)} == {"off"}
            assert after["CAB-A"] == "on"  # the others as they were
