"""SL651 downlink: commands queued for a sleeping station go out after an ESC confirm."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from api.keys import Role
from controller.config import LoadedConfig
from controller.runtime import Controller
from drivers.sl651 import frame as fr
from drivers.sl651 import listener as listener_module
from drivers.sl651.body import Report, encode_report, parse_report
from drivers.sl651.downlink import Downlink, DownlinkState
from drivers.sl651.listener import Sl651Listener, StationKey
from simulators.servers import free_port
from simulators.sl651_station import Sl651Station
from tests.helpers import api_client, new_key
from tests.test_sl651 import station_city

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]

TZ = ZoneInfo("Asia/Shanghai")
STATION = "0012345678"


async def started_listener(port: int, reports: list[Report]) -> Sl651Listener:
    async def collect(key: StationKey, report: Report) -> None:
        reports.append(report)

    listener = Sl651Listener(
        "centre", "127.0.0.1", port, [StationKey(0, STATION, 0x1234)], TZ, collect
    )
    await listener.start()
    return listener


def api_station_city(tmp_path: Path, write_config: WriteConfig) -> tuple[int, LoadedConfig]:
    """The one-station city for the API: its listener port and config."""
    port = free_port()
    return port, write_config(station_city(tmp_path, port))


async def _until_ended(client: Any, url: str, headers: dict[str, str]) -> dict[str, Any]:
    """A command once the station answered it or it failed (or after 5 s)."""
    for _ in range(50):
        command: dict[str, Any] = (await client.get(url, headers=headers)).json()
        if command["status"] in ("answered", "failed"):
            break
        await asyncio.sleep(0.1)
    return command


async def test_commands_wait_for_the_station_and_go_out_after_an_esc_confirm() -> None:
    port, reports = free_port(), list[Report]()
    listener = await started_listener(port, reports)
    station = Sl651Station(STATION, 0x1234, 1, TZ, clock_offset=900.0)  # 15 min fast
    try:
        set_clock = listener.queue(STATION, Downlink.SET_CLOCK, expire_after=60)
        query = listener.queue(STATION, Downlink.QUERY_REALTIME, expire_after=60)
        assert [c.state for c in listener.pending(STATION)] == [DownlinkState.QUEUED] * 2

        await station.connect("127.0.0.1", port)
        confirm = await station.send(station.report(station.clock(), 0.31))
        # Something is queued: the confirm keeps the station online.
        assert confirm is not None and confirm.end is fr.End.ESC
        stats = listener.stats.stations[STATION]
        assert stats.clock_drift and stats.clock_offset_s == pytest.approx(900, abs=5)

        online = asyncio.create_task(station.stay_online(5.0, keep_alive=0.5))
        await asyncio.wait_for(set_clock.done.wait(), 5)
        await asyncio.wait_for(query.done.wait(), 5)
        assert (set_clock.state, query.state) == (DownlinkState.ANSWERED, DownlinkState.ANSWERED)
        # The station's clock now follows the centre's.
        assert abs(station.clock_offset) < 5 and set_clock.sends == 1
        sent = station.commands
        assert [(c.function, c.end, c.uplink) for c in sent] == [
            (0x4A, fr.End.ENQ, False),
            (0x37, fr.End.ENQ, False),
        ]
        assert sent[0].body[:2] == b"\x00\x00"  # a centre-started exchange has serial 0
        assert sent[0].body[8:15] == b"\xf1\xf1" + bytes.fromhex(STATION)
        # The answer to the query is real-time data, handed on as readings.
        assert query.answer is not None
        assert [o.value for o in query.answer.observations if o.element == 0x39] == [0.31]
        assert len(reports) == 2  # the timed report and the query's answer
        await online

        # Nothing queued any more: the next report is confirmed with EOT, clock in step.
        confirm = await station.send(station.report(station.clock(), 0.2))
        assert confirm is not None and confirm.end is fr.End.EOT
        assert not stats.clock_drift and abs(stats.clock_offset_s or 99) < 5
        assert (stats.commands_sent, stats.commands_answered) == (2, 2)
    finally:
        await station.close()
        await listener.stop()


async def test_a_command_for_a_station_that_never_calls_expires() -> None:
    listener = await started_listener(free_port(), [])
    try:
        command = listener.queue(STATION, Downlink.QUERY_REALTIME, expire_after=0.2)
        await asyncio.wait_for(command.done.wait(), 3)
        assert command.state is DownlinkState.FAILED and "expired" in command.reason
        assert listener.pending(STATION) == []
        with pytest.raises(KeyError):
            listener.queue("0099999999", Downlink.QUERY_REALTIME, expire_after=1)
    finally:
        await listener.stop()


async def test_a_station_that_does_not_answer_is_asked_three_times_then_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener_module, "ANSWER_TIMEOUT_S", 0.2)
    port = free_port()
    listener = await started_listener(port, [])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        command = listener.queue(STATION, Downlink.QUERY_REALTIME, expire_after=60)
        body = encode_report(1, time.time(), STATION, 0x48, time.time(), [(0x39, 0x23, 0.1)], TZ)
        writer.write(fr.build(STATION, 1, 0x1234, 0x32, body, fr.End.ETX, uplink=True))
        await asyncio.wait_for(command.done.wait(), 5)
        assert command.state is DownlinkState.FAILED and command.sends == 3
        assert "no answer after 3 sends" in command.reason
        received, frames = bytearray(), list[fr.Frame]()
        while len(frames) < 4:
            received += await asyncio.wait_for(reader.read(4096), 2)
            more, problems = fr.split(received)
            assert problems == []
            frames += more
        assert [(f.function, f.end) for f in frames] == [(0x32, fr.End.ESC)] + [
            (0x37, fr.End.ENQ)
        ] * 3
        assert parse_report(0x37, frames[1].body, TZ).serial == 0
    finally:
        writer.close()
        await listener.stop()


async def test_people_queue_station_commands_through_the_api_and_the_audit_log_keeps_them(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    port, loaded = api_station_city(tmp_path, write_config)
    viewer = {"X-API-Key": new_key(loaded, "Zhou", Role.VIEWER)}
    duty = {"X-API-Key": new_key(loaded, "Huang (flood duty)", Role.FLOOD_DUTY)}
    engineer = {"X-API-Key": new_key(loaded, "Chen Gong", Role.ENGINEER)}
    station = Sl651Station(STATION, 0x1234, 1, TZ, clock_offset=-600.0)
    async with Controller(loaded) as controller:
        await controller.start()
        async with api_client(controller) as client:
            url = "/stations/WL-TUNNEL/commands"
            assert (await client.get("/stations", headers={"X-Anonymous": "1"})).status_code == 401
            [before] = (await client.get("/stations", headers=viewer)).json()
            assert (before["connected"], before["last_report"]) == (False, None)

            refused = await client.post(url, json={"command": "query"}, headers=viewer)
            assert refused.status_code == 403
            refused = await client.post(url, json={"command": "set_clock"}, headers=duty)
            assert refused.status_code == 403 and "set_clock" in refused.json()["detail"]
            bad = await client.post(url, json={"command": "reboot"}, headers=engineer)
            assert bad.status_code == 422
            nowhere = await client.post(
                "/stations/NO-SUCH/commands", json={"command": "query"}, headers=engineer
            )
            assert nowhere.status_code == 404

            query = await client.post(url, json={"command": "query"}, headers=duty)
            clock = await client.post(url, json={"command": "set_clock"}, headers=engineer)
            assert (query.status_code, clock.status_code) == (202, 202)
            assert query.json()["status"] == "pending_delivery"
            assert clock.headers["Location"] == f"{url}/{clock.json()['id']}"

            # The station calls: its report is confirmed with ESC and the commands go out.
            await station.connect("127.0.0.1", port)
            try:
                confirm = await station.send(station.report(station.clock(), 0.27))
                assert confirm is not None and confirm.end is fr.End.ESC
                [now] = (await client.get("/stations", headers=viewer)).json()
                assert now["connected"] and now["clock_drift"]
                assert now["clock_offset_s"] == pytest.approx(-600, abs=5)
                online = asyncio.create_task(station.stay_online(3.0, keep_alive=1.0))
                for _ in range(50):
                    done = (await client.get(url, headers=viewer)).json()
                    if all(c["status"] in ("answered", "failed") for c in done):
                        break
                    await asyncio.sleep(0.1)
                await online
            finally:
                await station.close()
            answered = (await client.get(f"{url}/{query.json()['id']}", headers=viewer)).json()
            assert answered["status"] == "answered"
            assert answered["readings"]["water_level"] == pytest.approx(0.27)
            assert abs(station.clock_offset) < 5

            audit = (await client.get("/audit")).json()  # as the test's admin
            rows = {(r["action"], r["by"], r["outcome"]) for r in audit}
            assert ("sl651_query", "Huang (flood duty)", "confirmed") in rows
            assert ("sl651_set_clock", "Chen Gong", "confirmed") in rows
            assert ("sl651_set_clock", "Huang (flood duty)", "refused") in rows
            assert ("sl651_query", "Zhou", "refused") in rows


async def test_a_period_query_fetches_what_a_station_stored_into_history_not_into_alarms(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    port, loaded = api_station_city(tmp_path, write_config)
    duty = {"X-API-Key": new_key(loaded, "Huang (flood duty)", Role.FLOOD_DUTY)}
    # The station kept levels while the centre could not hear it: last night's red water.
    hour = (int(time.time()) // 3600 - 6) * 3600
    station = Sl651Station(STATION, 0x1234, 1, TZ)
    for k, level in ((0, 0.12), (1, 0.58), (3, 0.31)):  # nothing stored for hour 2
        station.remember(hour + k * 3600, level)
    start = datetime.fromtimestamp(hour, TZ)
    url = "/stations/WL-TUNNEL/commands"
    async with Controller(loaded) as controller:
        await controller.start()
        async with api_client(controller) as client:
            ask = {"command": "query_period", "point": "water_level", "step_minutes": 60}
            for wrong, reason in (
                ({"point": "status_word"}, "cannot be queried by period"),
                ({"start": (start + timedelta(minutes=5)).isoformat()}, "whole hour"),
                ({"start": start.replace(tzinfo=None).isoformat()}, "time zone"),
                ({"end": start.isoformat()}, "after start"),
                ({"start": None}, "needs point, start and end"),
            ):
                body = {**ask, "start": start.isoformat()}
                body["end"] = (start + timedelta(hours=3)).isoformat()
                refused = await client.post(url, json={**body, **wrong}, headers=duty)
                assert refused.status_code == 422 and reason in refused.text, refused.text
            body = {**ask, "start": start.isoformat()}
            body["end"] = (start + timedelta(hours=3)).isoformat()
            sent = await client.post(url, json=body, headers=duty)
            assert sent.status_code == 202 and sent.json()["status"] == "pending_delivery"

            await station.connect("127.0.0.1", port)
            try:
                confirm = await station.send(station.report(station.clock(), 0.05))
                assert confirm is not None and confirm.end is fr.End.ESC
                online = asyncio.create_task(station.stay_online(2.0, keep_alive=0.5))
                answered = await _until_ended(client, f"{url}/{sent.json()['id']}", duty)
                await online
            finally:
                await station.close()
            assert answered["status"] == "answered", answered
            [query] = [c for c in station.commands if c.function == 0x38]
            # Start and end YYMMDDHH, a one-hour step, the water level with its definition.
            assert query.body[8:12] == bytes.fromhex(start.strftime("%y%m%d%H"))
            assert query.body[16:23] == bytes.fromhex("0418000100" + "3923")
            values = [(v["at"], v["value"]) for v in answered["values"]]
            assert answered["point"] == "water_level"
            assert [v for _, v in values] == [0.12, 0.58, None, 0.31]
            assert datetime.fromisoformat(values[1][0]).timestamp() == hour + 3600
            span = {"start": start.isoformat(), "end": (start + timedelta(hours=4)).isoformat()}
            for _ in range(50):  # stored within a batch interval or two
                series = await client.get(
                    "/telemetry/series/WL-TUNNEL/water_level", params=span, headers=duty
                )
                stored = [s["value"] for s in series.json()["samples"]]
                if stored:
                    break
                await asyncio.sleep(0.1)
            assert [v for v in stored if v is not None] == [0.12, 0.58, 0.31]
            # Old red water is history: no alarm, and the map keeps today's 5 cm.
            assert (await client.get("/alarms", headers=duty)).json() == []
            [latest] = (
                await client.get("/telemetry/latest", params={"device": "WL-TUNNEL"}, headers=duty)
            ).json()
            assert latest["values"]["water_level"] == pytest.approx(0.05)


async def test_engineers_read_and_write_a_stations_runtime_settings(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    port, loaded = api_station_city(tmp_path, write_config)
    duty = {"X-API-Key": new_key(loaded, "Huang (flood duty)", Role.FLOOD_DUTY)}
    engineer = {"X-API-Key": new_key(loaded, "Chen Gong", Role.ENGINEER)}
    station = Sl651Station(STATION, 0x1234, 1, TZ)
    url = "/stations/WL-TUNNEL/commands"
    write = {"report_interval_h": 2, "level_base_1": -1.25, "add_report_level_1": 0.25}
    async with Controller(loaded) as controller:
        await controller.start()
        async with api_client(controller) as client:
            for body, reason in (
                ({"command": "read_settings", "settings": ["baud_rate"]}, "no setting 'baud_rate'"),
                ({"command": "write_settings", "values": {"report_interval_h": 100}}, "at most 99"),
                ({"command": "write_settings", "values": {"sampling_interval_s": -5}}, "negative"),
                (
                    {"command": "write_settings", "values": {"add_report_level_1": 0.251}},
                    "decimals",
                ),
                ({"command": "write_settings"}, "needs values"),
                ({"command": "query", "settings": ["report_interval_h"]}, "read_settings only"),
            ):
                refused = await client.post(url, json=body, headers=engineer)
                assert refused.status_code == 422 and reason in refused.text, refused.text
            refused = await client.post(
                url, json={"command": "write_settings", "values": write}, headers=duty
            )
            assert refused.status_code == 403
            read = await client.post(url, json={"command": "read_settings"}, headers=duty)
            wrote = await client.post(
                url, json={"command": "write_settings", "values": write}, headers=engineer
            )
            assert (read.status_code, wrote.status_code) == (202, 202)
            assert wrote.json()["settings"] == write  # what is to be set, while it waits

            await station.connect("127.0.0.1", port)
            try:
                confirm = await station.send(station.report(station.clock(), 0.05))
                assert confirm is not None and confirm.end is fr.End.ESC
                online = asyncio.create_task(station.stay_online(3.0, keep_alive=1.0))
                read_out = await _until_ended(client, f"{url}/{read.json()['id']}", duty)
                wrote_out = await _until_ended(client, f"{url}/{wrote.json()['id']}", duty)
                await online
            finally:
                await station.close()
            assert read_out["status"] == "answered", read_out
            assert read_out["settings"] == {
                "report_interval_h": 1,
                "add_report_interval_min": 5,
                "rain_day_start_h": 8,
                "sampling_interval_s": 300,
                "level_storage_interval_min": 5,
                "rain_add_threshold_mm": 2,
                "level_base_1": 0.0,
                "level_correction_1": 0.0,
                "add_report_level_1": 0.3,
            }
            assert wrote_out["status"] == "answered", wrote_out
            assert wrote_out["settings"] == write  # the station's echo
            # The station now has them, as the standard's 42H sets them.
            assert (station.settings[0x20], station.settings[0x28]) == (2, -1.25)
            [read_frame, write_frame] = station.commands
            assert (read_frame.function, write_frame.function) == (0x43, 0x42)
            assert read_frame.body[8:15] == b"\xf1\xf1" + bytes.fromhex(STATION)
            assert read_frame.body[15:17] == bytes.fromhex("2008")  # 20H, N(2) in 1 byte
            # 28H water-level base N(7,3): 4 bytes, negative as FF then the digits.
            assert bytes.fromhex("2823ff001250") in write_frame.body
            # A reading of 20H is a setting, not rain today: nothing went to the map.
            [latest] = (
                await client.get("/telemetry/latest", params={"device": "WL-TUNNEL"}, headers=duty)
            ).json()
            assert latest["values"]["rain_today"] == 0.0

            audit = (await client.get("/audit")).json()  # as the test's admin
            [written] = [
                r for r in audit if r["action"] == "sl651_write_settings" and r["by"] == "Chen Gong"
            ]
            assert (written["by"], written["outcome"]) == ("Chen Gong", "confirmed")
            assert written["results"]["WL-TUNNEL"]["settings"] == write
            rows = {(r["action"], r["by"], r["outcome"]) for r in audit}
            assert ("sl651_read_settings", "Huang (flood duty)", "confirmed") in rows
            assert ("sl651_write_settings", "Huang (flood duty)", "refused") in rows


async def test_a_station_whose_clock_drifts_gets_it_set_by_the_controller(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    port, loaded = api_station_city(tmp_path, write_config)
    station = Sl651Station(STATION, 0x1234, 1, TZ, clock_offset=-1200.0)  # 20 min slow
    async with Controller(loaded) as controller:
        await controller.start()
        await station.connect("127.0.0.1", port)
        try:
            confirm = await station.send(station.report(station.clock(), 0.1))
            # The drift is seen in this report: the set-clock waits, so ESC keeps it online.
            assert confirm is not None and confirm.end is fr.End.ESC
            await station.stay_online(1.5, keep_alive=0.5)
            confirm = await station.send(station.report(station.clock(), 0.1))
            assert confirm is not None and confirm.end is fr.End.EOT
        finally:
            await station.close()
        assert abs(station.clock_offset) < 5
        assert [c.function for c in station.commands] == [0x4A]
        [command] = controller.station_commands.recent("WL-TUNNEL")
        assert (command.actor.name, command.source) == ("streetsense", "clock-drift")
        await asyncio.wait_for(command.downlink.done.wait(), 2)
        for _ in range(20):  # the audit row is updated just after the answer
            row = await controller.audit.get(command.id)
            if row is not None and row.outcome == "confirmed":
                break
            await asyncio.sleep(0.05)
        assert row is not None and row.action == "sl651_set_clock"
        assert (row.actor.name, row.outcome) == ("streetsense", "confirmed")


async def test_a_drift_is_only_flagged_where_the_listener_does_not_set_clocks(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    port = free_port()
    doc = station_city(tmp_path, port)
    doc["listeners"][0]["auto_set_clock"] = False
    loaded = write_config(doc)
    station = Sl651Station(STATION, 0x1234, 1, TZ, clock_offset=-1200.0)
    async with Controller(loaded) as controller:
        await controller.start()
        await station.connect("127.0.0.1", port)
        try:
            confirm = await station.send(station.report(station.clock(), 0.1))
        finally:
            await station.close()
        assert confirm is not None and confirm.end is fr.End.EOT
        listener, _ = controller.station_commands.station("WL-TUNNEL")
        assert listener.stats.stations[STATION].clock_drift
        assert controller.station_commands.recent() == []
