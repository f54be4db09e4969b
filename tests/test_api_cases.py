"""Cases through the HTTP API and the Open311 GeoReport v2 endpoints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from api.keys import Role
from controller.assets.model import PoleAsset
from controller.cases.exchange import CaseExport, json_schema
from controller.config import LoadedConfig
from controller.runtime import Controller
from tests.helpers import api_client, new_key
from tests.test_cases_e2e import ROUTING

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]


def test_the_published_exchange_schema_is_current() -> None:
    published = Path(__file__).parent.parent / "docs" / "case-exchange.schema.json"
    assert published.read_text(encoding="utf-8") == json_schema(), (
        "docs/case-exchange.schema.json is stale: "
        "run python -m controller.cases.exchange > docs/case-exchange.schema.json"
    )


async def test_cases_and_open311_through_the_api(tmp_path: Path, write_config: WriteConfig) -> None:
    loaded = write_config({"cases": {"routing": ROUTING}})
    app_key = new_key(loaded, "12345 hotline app", Role.REPORTER)
    centre = {"X-API-Key": new_key(loaded, "Huang (command centre)", Role.DISPATCHER)}
    crew = {"X-API-Key": new_key(loaded, "Liu (lighting crew)", Role.ENGINEER)}
    viewer = {"X-API-Key": new_key(loaded, "Zhou", Role.VIEWER)}
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


def xml_items(text: str, root: str, item: str) -> list[dict[str, str]]:
    """GeoReport XML read with the standard library: one mapping per item element."""
    tree = ElementTree.fromstring(text)
    assert tree.tag == root
    return [{child.tag: child.text or "" for child in node} for node in tree.findall(item)]


async def test_open311_walk_in_both_formats_with_every_filter(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config({"cases": {"routing": ROUTING}})
    app_key = new_key(loaded, "12345 hotline app", Role.REPORTER)
    centre = {"X-API-Key": new_key(loaded, "Huang (command centre)", Role.DISPATCHER)}
    viewer = {"X-API-Key": new_key(loaded, "Zhou", Role.VIEWER)}
    base = "/open311/v2"
    async with Controller(loaded) as controller:
        await controller.open_stores()
        await controller.assets.put(
            [PoleAsset(pole_id="DF-0042", lat=21.8601, lon=111.9812, rated_w=120, road="东风路")]
        )
        async with api_client(controller) as client:
            # Services and their definitions, JSON and XML with the spec's element names.
            services = xml_items(
                (await client.get(f"{base}/services.xml")).text, "services", "service"
            )
            assert {s["service_code"] for s in services} == {
                "streetlight",
                "control_cabinet",
                "waterlogging",
            }
            assert {"service_name", "metadata", "type", "keywords", "group"} <= services[0].keys()
            definition = (await client.get(f"{base}/services/streetlight.json")).json()
            assert definition == {"service_code": "streetlight", "attributes": []}
            xml = ElementTree.fromstring(
                (await client.get(f"{base}/services/streetlight.xml")).text
            )
            assert xml.tag == "service_definition" and xml.findtext("service_code") == "streetlight"
            missing = await client.get(f"{base}/services/potholes.xml")
            assert missing.status_code == 404
            assert xml_items(missing.text, "errors", "error")[0]["code"] == "404"

            # A report by form with api_key in the query and a pole number for the position;
            # one in JSON with api_key in the body and contact details.
            by_pole = await client.post(
                f"{base}/requests.json",
                params={"api_key": app_key, "jurisdiction_id": "streetsense"},
                data={
                    "service_code": "streetlight",
                    "address_id": "DF-0042",
                    "description": "lamp out",
                },
            )
            assert by_pole.status_code == 201, by_pole.text
            pole_case = by_pole.json()[0]["service_request_id"]
            with_contact = await client.post(
                f"{base}/requests.xml",
                json={
                    "api_key": app_key,
                    "service_code": "waterlogging",
                    "address_string": "东风路下穿隧道",
                    "first_name": "Chen",
                    "phone": "13800000000",
                    "email": "chen@example.cn",
                    "account_id": "acc-7",
                },
            )
            assert with_contact.status_code == 201
            [receipt] = xml_items(with_contact.text, "service_requests", "request")
            water_case, account = receipt["service_request_id"], receipt["account_id"]
            assert account == "acc-7"

            [placed] = (await client.get(f"{base}/requests/{pole_case}.json")).json()
            assert (placed["lat"], placed["long"]) == (21.8601, 111.9812)  # from the register
            [unplaced] = (await client.get(f"{base}/requests/{water_case}.json")).json()
            assert unplaced["lat"] is None and unplaced["long"] is None  # not 0.0
            # Contact data: never in GeoReport reads or records, only for the centre.
            assert "13800000000" not in str(unplaced)
            assert (await client.get(f"/cases/{water_case}", headers=viewer)).json()[
                "contact"
            ] is None
            shown = (await client.get(f"/cases/{water_case}", headers=centre)).json()["contact"]
            assert shown["phone"] == "13800000000" and shown["name"] == "Chen"
            listed = (await client.get("/cases", headers=viewer)).text
            assert "13800000000" not in listed and "chen@example.cn" not in listed

            # Filters: comma lists, status in the query, the 90-day window, jurisdiction.
            both = await client.get(
                f"{base}/requests.json", params={"service_code": "streetlight,waterlogging"}
            )
            assert {r["service_request_id"] for r in both.json()} == {pole_case, water_case}
            ids = await client.get(
                f"{base}/requests.xml", params={"service_request_id": f"{pole_case},{water_case}"}
            )
            assert len(xml_items(ids.text, "service_requests", "request")) == 2
            await client.post(f"/cases/{pole_case}/reject", headers=centre, json={"note": "dup"})
            closed = (await client.get(f"{base}/requests.json", params={"status": "closed"})).json()
            assert [r["service_request_id"] for r in closed] == [pole_case]
            opened = (await client.get(f"{base}/requests.json", params={"status": "open"})).json()
            assert [r["service_request_id"] for r in opened] == [water_case]
            assert (
                await client.get(f"{base}/requests.json", params={"status": "lost"})
            ).status_code == 400
            long_ago = datetime.now(UTC) - timedelta(days=200)
            old = await client.get(
                f"{base}/requests.json",
                params={
                    "start_date": long_ago.isoformat(),
                    "end_date": (long_ago + timedelta(days=1)).isoformat(),
                },
            )
            assert old.json() == []
            for path in (
                "services.json",
                "requests.json",
                f"requests/{pole_case}.json",
                "services/streetlight.json",
            ):
                elsewhere = await client.get(
                    f"{base}/{path}", params={"jurisdiction_id": "guangzhou"}
                )
                assert elsewhere.status_code == 404, path
                assert "jurisdiction" in elsewhere.json()[0]["description"]

            # FastAPI's own refusals on these paths come in GeoReport's shape too.
            anonymous = await client.get(f"{base}/requests.xml", headers={"X-Anonymous": "1"})
            assert anonymous.status_code == 401
            assert xml_items(anonymous.text, "errors", "error")[0]["code"] == "401"
            huge = await client.get(f"{base}/requests.json", params={"limit": 10**6})
            assert huge.status_code == 400 and huge.json()[0]["code"] == 400
