"""Operating the controller: /health that tells the truth, /metrics scraped by a real
Prometheus, JSON logs, the systemd unit, and API docs that work without internet."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.keys import Role
from api.serve import uvicorn_server
from controller.config import LoadedConfig, LoggingConfig
from controller.logs import configure_logging
from controller.runtime import Controller
from controller.startup import listen_socket
from simulators.fleet import SimulatedCity
from simulators.servers import Prometheus, free_port
from tests.helpers import api_client, new_key

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
ROOT = Path(__file__).parent.parent


def small_city(tmp_path: Path, dead_link: bool = False) -> dict[str, Any]:
    links: list[dict[str, Any]] = [
        {"id": "dtu-1", "kind": "rtu_over_tcp", "host": "127.0.0.1", "port": free_port()},
    ]
    gauges = [{"id": "WL-1", "link": "dtu-1", "unit": 2}]
    if dead_link:
        links.append(
            {"id": "dtu-dead", "kind": "modbus_tcp", "host": "127.0.0.1", "port": free_port()}
        )
        gauges.append({"id": "WL-DEAD", "link": "dtu-dead", "unit": 1})
    for link in links:
        link["timeout"] = 0.2
    return {
        "polling": {
            "cabinet_interval": 0.2,
            "gauge_interval": 0.2,
            "lamp_interval": 0.2,
            "batch_interval": 0.1,
        },
        "links": links,
        "cabinets": [
            {"id": "CAB-1", "link": "dtu-1", "unit": 1, "lamp_runs": [{"circuit": 1, "count": 2}]}
        ],
        "gauges": gauges,
        "rules": [{"id": "comm", "kind": "comm_loss", "intervals": 5}],
    }


async def wait_for(check: Callable[[], Any], within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_health_is_ok_degraded_with_reasons_and_failing_with_503(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(small_city(tmp_path, dead_link=True))
    field = write_config(small_city(tmp_path))  # what the simulator serves: no dead DTU
    field.config.links[0] = loaded.config.links[0]
    city = SimulatedCity(field)
    await city.start()
    controller = Controller(loaded)
    try:
        async with api_client(controller) as client:
            stopped = await client.get("/health")
            assert stopped.status_code == 503 and stopped.json()["status"] == "failing"
            await controller.start()

            async def degraded() -> bool:
                body = (await client.get("/health")).json()
                return body["status"] == "degraded" and len(body["reasons"]) >= 2

            await wait_for(degraded)
            body = (await client.get("/health")).json()
            assert "links down: dtu-dead" in body["reasons"]
            assert any(r.startswith("1 devices offline: WL-DEAD") for r in body["reasons"])
            assert (await client.get("/health")).status_code == 200

            await city.stop()  # every device goes silent: data is not flowing

            async def failing() -> bool:
                return (await client.get("/health")).status_code == 503

            await wait_for(failing)
            body = (await client.get("/health")).json()
            assert body["status"] == "failing"
            assert any("no device has answered" in r for r in body["reasons"]), body
            # And what else is wrong, as when degraded.
            assert any("devices offline" in r for r in body["reasons"][1:]), body
    finally:
        await controller.stop()
        await city.stop()


@asynccontextmanager
async def served(controller: Controller) -> AsyncIterator[str]:
    """The controller's API on a real port in this process."""
    port = free_port()
    sock = listen_socket("127.0.0.1", port)
    server = uvicorn_server(create_app(controller, manage_controller=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_prometheus_scrapes_the_running_controller(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(small_city(tmp_path))
    viewer = new_key(loaded, "prometheus", Role.VIEWER)
    reporter = new_key(loaded, "hotline app", Role.REPORTER)
    async with SimulatedCity(loaded), Controller(loaded) as controller:
        await controller.start()
        async with served(controller) as target, httpx.AsyncClient() as http:
            base = f"http://{target}"
            assert (await http.get(f"{base}/metrics")).status_code == 401
            denied = await http.get(f"{base}/metrics", headers={"X-API-Key": reporter})
            assert denied.status_code == 403
            text = (await http.get(f"{base}/metrics", headers={"X-API-Key": viewer})).text
            for family in (
                "streetsense_polls_total",
                "streetsense_polls_failed_total",
                "streetsense_link_up",
                "streetsense_poll_cycle_seconds",
                "streetsense_readings_total",
                "streetsense_sink_sent_points_total",
                "streetsense_sink_pending_points",
                "streetsense_sink_spool_full",
                "streetsense_sink_task_alive",
                "streetsense_rule_pass_seconds",
                "streetsense_batch_to_alarm_seconds_bucket",
                "streetsense_reading_to_alarm_seconds_count",
                "streetsense_alarms_open",
                "streetsense_case_feed_backlog",
                "streetsense_cases_open",
                "streetsense_cases_overdue",
                "streetsense_commands_total",
                "streetsense_schedule_steps_total",
                "streetsense_health",
            ):
                assert re.search(rf"^{family}[{{ ]", text, re.M), family

            prometheus = Prometheus(tmp_path / "prometheus", target, viewer)
            await asyncio.to_thread(prometheus.start)
            try:

                async def query(q: str) -> list[dict[str, Any]]:
                    r = await http.get(f"{prometheus.url}/api/v1/query", params={"query": q})
                    if r.status_code == 503:
                        return []  # Prometheus is still starting (slow on a busy machine)
                    result: list[dict[str, Any]] = r.json()["data"]["result"]
                    return result

                async def scraped() -> bool:
                    return bool(await query('streetsense_polls_total{link="dtu-1"}'))

                await wait_for(scraped, within=30)
                polls = await query("streetsense_polls_total")
                assert {(s["metric"]["link"], s["metric"]["device_class"]) for s in polls} == {
                    ("dtu-1", "cabinet"),
                    ("dtu-1", "gauge"),
                }
                assert all(float(s["value"][1]) > 0 for s in polls)
                [up] = await query('up{job="streetsense"}')
                assert up["value"][1] == "1"
                [ok] = await query('streetsense_health{status="ok"}')
                assert ok["value"][1] == "1"
            finally:
                await asyncio.to_thread(prometheus.stop)


def test_json_logs_carry_the_device_and_link_and_say_offline_once(
    tmp_path: Path,
    write_config: WriteConfig,
    capfd: pytest.CaptureFixture[str],
) -> None:
    loaded = write_config(small_city(tmp_path, dead_link=True))

    async def poll_a_while() -> None:
        field = write_config(small_city(tmp_path))
        field.config.links[0] = loaded.config.links[0]
        async with SimulatedCity(field), Controller(loaded) as controller:
            for _ in range(6):
                await controller.poller.poll_all_once()

    configure_logging(LoggingConfig(format="json", level="INFO"))
    try:
        asyncio.run(poll_a_while())
    finally:
        configure_logging(LoggingConfig(level="WARNING"))
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    offline = [line for line in lines if "offline" in line["message"]]
    assert len(offline) == 1, offline  # six failed polls, one line
    [line] = offline
    assert line["device"] == "WL-DEAD" and line["link"] == "dtu-dead"
    assert line["level"] == "WARNING" and line["logger"] == "controller.poller"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", line["time"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = ROOT / "deploy" / "streetsense.service"
    text = unit.read_text(encoding="utf-8")
    for setting in (
        "User=streetsense",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/streetsense",
        "EnvironmentFile=",
        "ExecStart=/opt/streetsense/venv/bin/streetsense run",
    ):
        assert setting in text, setting
    # verify wants the ExecStart binary to exist: point it at a stand-in of the same path.
    copy = tmp_path / "streetsense.service"
    copy.write_text(text.replace("/opt/streetsense/venv/bin/streetsense", "/bin/true"))
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True
    )
    problems = [
        line
        for line in checked.stderr.splitlines()
        if str(copy) in line or "streetsense.service" in line
    ]
    assert problems == [], checked.stderr


async def test_the_api_docs_load_nothing_from_the_internet(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(small_city(tmp_path))
    async with Controller(loaded) as controller, api_client(controller) as client:
        for page in ("/docs", "/redoc"):
            html = (await client.get(page)).text
            sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            assert sources, page
            for source in sources:
                assert source.startswith("/"), (page, source)
                asset = await client.get(source)
                assert asset.status_code == 200 and len(asset.content) > 1000, source
            assert "cdn" not in html.lower() and "googleapis" not in html


async def test_a_hung_influxdb_does_not_delay_the_start_and_readings_wait_in_the_spool(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    done = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()  # accepts the connection, then says nothing: a hung influxd
        writer.close()

    hung = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    doc = small_city(tmp_path)
    doc["storage"] = {
        "influxdb": {"url": f"http://127.0.0.1:{port}", "timeout": 10, "flush_interval": 0.2}
    }
    loaded = write_config(doc)
    try:
        async with SimulatedCity(loaded), Controller(loaded) as controller:
            started = asyncio.get_running_loop().time()
            await controller.start()
            assert asyncio.get_running_loop().time() - started < 3.0  # not the 10 s timeout
            influx = controller.telemetry.influx
            assert influx is not None

            async def waiting() -> bool:
                assert influx is not None
                return influx.pending > 0

            await wait_for(waiting)
            assert influx.stats.delivered == 0
    finally:
        done.set()
        hung.close()
        await hung.wait_closed()
