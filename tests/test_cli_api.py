"""The command line and the demo's API, run as a newcomer would run them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from simulators.servers import free_port
from tests.demo_process import SIM_TOKEN, Demo, run_demo

ROOT = Path(__file__).parent.parent


def streetsense(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def small_city(tmp_path: Path) -> Path:
    doc = {
        "links": [
            {
                "id": "dtu",
                "kind": "rtu_over_tcp",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout": 0.3,
            }
        ],
        "cabinets": [
            {"id": "CAB-9", "link": "dtu", "unit": 1, "lamp_runs": [{"circuit": 1, "count": 4}]}
        ],
        "gauges": [{"id": "WL-9", "link": "dtu", "unit": 2}],
    }
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_poll_once_prints_readings_and_health(tmp_path: Path) -> None:
    result = streetsense("poll", "--once", "--simulate", "-c", str(small_city(tmp_path)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    cabinet = next(line for line in lines if line.startswith("CAB-9 "))
    assert "online" in cabinet and "voltage_a=" in cabinet and "lamp_count=4" in cabinet
    assert sum(1 for line in lines if line.strip().startswith("CAB-9-L")) == 4
    assert any(line.startswith("WL-9 ") and "water_level=0m" in line for line in lines)
    assert "2 polls, 0 failed" in result.stdout


def test_poll_once_without_hardware_reports_offline_and_fails(tmp_path: Path) -> None:
    result = streetsense("poll", "--once", "-c", str(small_city(tmp_path)))
    assert result.returncode == 1
    assert "OFFLINE" in result.stdout and "link_down=1" in result.stdout
    assert "2 polls, 2 failed" in result.stdout


def test_check_of_missing_file_fails_with_reason(tmp_path: Path) -> None:
    result = streetsense("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml: cannot read: No such file or directory" in result.stderr


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    with run_demo(duration=120) as running:
        yield running


def test_demo_serves_the_simulated_city(demo: Demo) -> None:
    base = demo.api
    health = httpx.get(f"{base}/health").json()
    assert health["devices"] == {"cabinet": 5, "lamp": 178, "gauge": 4, "meter": 3}
    # Offline by default: no tile source, the map is drawn from the asset register.
    assert demo.get(f"{base}/map").json()["tiles"] is None
    gauges = demo.get(f"{base}/devices", params={"device_class": "gauge"}).json()
    assert {g["id"] for g in gauges} == {
        "WL-DF-UNDERPASS",
        "WL-XJ-MARKET",
        "WL-MY-BRIDGE",
        "WL-JC-CULVERT",  # an SL651 station that dials in to the centre
    }
    deadline = time.monotonic() + 30
    while True:
        culvert = demo.get(f"{base}/devices/WL-JC-CULVERT").json()
        level = {r["point"]: r for r in culvert["readings"]}["water_level"]
        if level["value"] is not None:
            break
        assert time.monotonic() < deadline, culvert
        time.sleep(0.5)
    assert culvert["health"]["online"] is True and level["unit"] == "m"
    assert {r["point"]: r for r in culvert["readings"]}["supply_voltage"]["value"] == 12.6
    cabinet = demo.get(f"{base}/devices/JC-DF-001").json()
    assert cabinet["health"]["online"] is True
    readings = {r["point"]: r for r in cabinet["readings"]}
    assert 200 < readings["voltage_a"]["value"] < 250 and readings["voltage_a"]["unit"] == "V"
    assert readings["lamp_count"]["value"] == 42
    # The cabinet's DL/T 645 meter, read through the same DTU, sees the same supply.
    # Health is recorded at the poll, readings arrive with the next batch: wait for them.
    deadline = time.monotonic() + 30
    while True:
        meter = demo.get(f"{base}/devices/DB-DF-001").json()
        metered = {r["point"]: r for r in meter["readings"]}
        if metered["voltage_a"]["value"] is not None:
            break
        assert time.monotonic() < deadline, meter
        time.sleep(0.5)
    assert meter["health"]["online"] is True and meter["device_class"] == "meter"
    assert abs(metered["voltage_a"]["value"] - readings["voltage_a"]["value"]) < 10
    assert metered["energy"]["unit"] == "kWh" and metered["energy"]["value"] >= 0
    lamp = demo.get(f"{base}/devices/JC-DF-001-L001").json()
    assert lamp["parent"] == "JC-DF-001" and lamp["online"] is True
    links = demo.get(f"{base}/links").json()
    assert {link["id"] for link in links} >= {"dtu-dongfeng", "gw-drainage"}
    assert all(link["connected"] for link in links)
    assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "streetsense"


def test_demo_api_refuses_bad_input_with_reasons(demo: Demo) -> None:
    base = demo.api
    missing = demo.get(f"{base}/devices/NOPE")
    assert missing.status_code == 404 and "NOPE" in missing.json()["detail"]
    bad = demo.get(f"{base}/devices", params={"device_class": "tram"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "device_class"]


def test_fault_injected_at_run_time_shows_in_the_controller_api(demo: Demo) -> None:
    fault = {"kind": "door_open", "device": "JC-MY-001"}
    assert httpx.post(f"{demo.control}/faults", json=fault).status_code == 401
    wrong = httpx.post(
        f"{demo.control}/faults", json=fault, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 403
    unknown = httpx.post(
        f"{demo.control}/faults",
        json={**fault, "device": "NOPE"},
        headers={"Authorization": f"Bearer {SIM_TOKEN}"},
    )
    assert unknown.status_code == 404
    placed = httpx.post(
        f"{demo.control}/faults", json=fault, headers={"Authorization": f"Bearer {SIM_TOKEN}"}
    )
    assert placed.status_code == 201 and placed.json()["active_now"] is True
    assert any(
        f["device"] == "JC-MY-001" and f["active_now"]
        for f in httpx.get(f"{demo.control}/faults").json()
    )

    def door() -> float:
        readings = demo.get(f"{demo.api}/devices/JC-MY-001").json()["readings"]
        return float(next(r["value"] for r in readings if r["point"] == "door_open"))

    deadline = time.monotonic() + 25  # one cabinet poll interval (10 s) and margin
    while door() != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert door() == 1
    cleared = httpx.delete(
        f"{demo.control}/faults/JC-MY-001?kind=door_open",
        headers={"Authorization": f"Bearer {SIM_TOKEN}"},
    )
    assert cleared.json()["removed"] == 1


def test_demo_serves_stored_telemetry_from_the_embedded_store(demo: Demo) -> None:
    def gauges() -> list[dict[str, object]]:
        rows: list[dict[str, object]] = demo.get(
            f"{demo.api}/telemetry/latest", params={"device_class": "gauge"}
        ).json()
        return rows

    deadline = time.monotonic() + 15
    while not all(g["values"] for g in gauges()) and time.monotonic() < deadline:
        time.sleep(0.5)
    latest = gauges()
    assert {g["device"] for g in latest} == {
        "WL-DF-UNDERPASS",
        "WL-XJ-MARKET",
        "WL-MY-BRIDGE",
        "WL-JC-CULVERT",
    }
    assert all("water_level" in g["values"] for g in latest)  # type: ignore[operator]
    url = f"{demo.api}/telemetry/series/JC-DF-001/voltage_a"
    raw = demo.get(url).json()
    assert raw["source"] == "embedded" and raw["unit"] == "V"
    assert raw["samples"] and all(200 < s["value"] < 250 for s in raw["samples"])
    down = demo.get(url, params={"every": 3600}).json()
    assert down["buckets"][0]["count"] >= 1
    assert down["buckets"][0]["min"] <= down["buckets"][0]["mean"] <= down["buckets"][0]["max"]
    area = demo.get(f"{demo.api}/telemetry/latest", params={"road": "漠阳路"}).json()
    assert {a["device_class"] for a in area} == {"cabinet", "lamp", "gauge", "meter"}
    (sink,) = demo.get(f"{demo.api}/telemetry/sinks").json()  # the demo keeps no InfluxDB
    assert sink["name"] == "embedded" and sink["up"] and sink["task_alive"]
    assert sink["pending_points"] == 0 and sink["refused_points"] == 0


def test_demo_telemetry_refuses_bad_ranges_with_reasons(demo: Demo) -> None:
    url = f"{demo.api}/telemetry/series/JC-DF-001/voltage_a"
    backwards = demo.get(
        url, params={"start": "2026-11-22T10:00:00Z", "end": "2026-11-22T09:00:00Z"}
    )
    assert backwards.status_code == 422 and "before" in backwards.json()["detail"]
    naive = demo.get(url, params={"start": "2026-11-22T08:00:00"})
    assert naive.status_code == 422 and "time zone" in naive.json()["detail"]
    too_fine = demo.get(url, params={"start": "2026-01-01T00:00:00Z", "every": 1})
    assert too_fine.status_code == 422 and "buckets" in too_fine.json()["detail"]
    unknown = demo.get(f"{demo.api}/telemetry/series/JC-DF-001/colour")
    assert unknown.status_code == 404 and "voltage_a" in unknown.json()["detail"]
