"""Cases through the HTTP API and the Open311 GeoReport v2 endpoints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from api.keys import ApiKeyStore, Role
from controller.cases.exchange import CaseExport, json_schema
from controller.config import LoadedConfig
from controller.runtime import Controller
from tests.helpers import api_client
from tests.test_cases_e2e import ROUTING

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]


def test_the_published_exchange_schema_is_current() -> None:
    published = Path(__file__).parent.parent / "docs" / "case-exchange.schema.json"
    assert published.read_text(encoding="utf-8") == json_schema(), (
        "docs/case-exchange.schema.json is stale: "
        "run python -m controller.cases.exchange > docs/case-exchange.schema.json"
    )


async def test_cases_and_open311_through_the_api(tmp_path: Path, write_config: WriteConfig) -> None:
    loaded = write_config(
        {"api": {"keys_path": str(tmp_path / "keys.db")}, "cases": {"routing": ROUTING}}
    )
    keys = ApiKeyStore(tmp_path / "keys.db")
    app_key = keys.create("12345 hotline app", Role.REPORTER)
    centre = {"X-API-Key": keys.create("Huang (command centre)", Role.DISPATCHER)}
    crew = {"X-API-Key": keys.create("Liu (lighting crew)", Role.ENGINEER)}
    viewer = {"X-API-Key": keys.create("Zhou", Role.VIEWER)}
    keys.close()
    async with Controller(loaded) as controller:
        await controller.open_stores()
        async with api_client(controller) as client:
            services = (await client.get("/open311/v2/services.json")).json()
            assert {s["service_code"] for s in services} == {
                "streetlight",
                "control_cabinet",
                "waterlogging",
            }
            report = {
                "service_code": "waterlogging",
                "lat": "21.8590",
                "long": "111.9840",
                "address_string": "东风路下穿隧道",
                "description": "water up to the kerb in the underpass",
                "media_url": "https://media.example/w/88.jpg",
                "first_name": "Chen",
            }
            no_key = await client.post("/open311/v2/requests.json", data=report)
            assert no_key.status_code == 403
            assert no_key.json()[0]["description"].startswith("a valid api_key")
            bad = await client.post(
                "/open311/v2/requests.json",
                data={**report, "service_code": "potholes", "api_key": app_key},
            )
            assert bad.status_code == 400 and "potholes" in bad.json()[0]["description"]
            created = await client.post(
                "/open311/v2/requests.json", data={**report, "api_key": app_key}
            )
            assert created.status_code == 201
            request_id = created.json()[0]["service_request_id"]

            [open_request] = (await client.get(f"/open311/v2/requests/{request_id}.json")).json()
            assert open_request["status"] == "open"
            assert open_request["status_notes"] == "awaiting acceptance"
            assert open_request["lat"] == 21.859 and open_request["long"] == 111.984
            assert open_request["media_url"] == "https://media.example/w/88.jpg"
            assert open_request["expected_datetime"].endswith("+08:00")

            case_url = f"/cases/{request_id}"
            assert (await client.post(f"{case_url}/accept", headers=viewer)).status_code == 403
            crew_accept = await client.post(f"{case_url}/accept", headers=crew)
            assert crew_accept.status_code == 403 and "command centre" in crew_accept.text
            skipped = await client.post(f"{case_url}/dispatch", headers=centre)
            assert skipped.status_code == 409
            assert skipped.json()["detail"] == (
                "cannot dispatch a case that is awaiting_acceptance (possible: accept, reject)"
            )
            for action in ("accept", "file", "dispatch"):
                moved = await client.post(f"{case_url}/{action}", headers=centre)
                assert moved.status_code == 200, moved.text
            assert moved.json()["department"] == "市排水管理处"
            await client.post(f"{case_url}/start_disposal", headers=crew)
            await client.post(
                f"{case_url}/report_disposal", headers=crew, json={"note": "pumps running"}
            )
            for action in ("start_verification", "pass_verification", "close"):
                assert (
                    await client.post(f"{case_url}/{action}", headers=centre)
                ).status_code == 200
            detail = (await client.get(case_url)).json()
            assert detail["stage"] == "evaluated" and detail["evaluation"] == "on_time"
            assert [t["action"] for t in detail["transitions"]][-2:] == ["close", "evaluate"]
            assert detail["transitions"][0]["actor"] == "12345 hotline app"

            [closed] = (await client.get(f"/open311/v2/requests/{request_id}.json")).json()
            assert closed["status"] == "closed"
            assert closed["agency_responsible"] == "市排水管理处"
            listed = (
                await client.get("/open311/v2/requests.json", params={"status": "closed"})
            ).json()
            assert [r["service_request_id"] for r in listed] == [request_id]

            # An inspector's report that the centre does not accept is closed for the citizen.
            inspector = await client.post(
                "/cases",
                headers=crew,
                json={
                    "source": "inspector",
                    "category": "streetlight",
                    "title": "lamp leaning",
                    "lat": 21.86,
                    "lon": 111.98,
                },
            )
            assert inspector.status_code == 201
            second = inspector.json()["id"]
            rejected = await client.post(
                f"/cases/{second}/reject", headers=centre, json={"note": "duplicate of 1"}
            )
            assert rejected.json()["stage"] == "rejected"
            [gone] = (await client.get(f"/open311/v2/requests/{second}.json")).json()
            assert (
                gone["status"] == "closed"
                and gone["status_notes"] == "not accepted: duplicate of 1"
            )

            assert (await client.get("/cases/999")).status_code == 404
            assert (await client.get("/cases/statistics")).json() == []  # nothing due yet
            later = datetime.now(tz=UTC) + timedelta(days=3)
            stats = (
                await client.get(
                    "/cases/statistics",
                    params={"by": "category", "period": "month", "end": later.isoformat()},
                )
            ).json()
            figures = {r["group"]: (r["due"], r["closed"], r["closed_on_time"]) for r in stats}
            assert figures == {"streetlight": (1, 0, 0), "waterlogging": (1, 1, 1)}
            export = await client.get("/cases/export", params={"since": "2000-01-01T00:00:00Z"})
            document = CaseExport.model_validate(export.json())
            assert [c.id for c in document.cases] == [int(request_id), second]
            assert export.json()["$schema"].endswith("case-exchange/1.json")
