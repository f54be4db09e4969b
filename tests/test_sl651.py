"""SL651-2014: real frames from public sources decoded, the centre's listener end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.config import LoadedConfig
from controller.registry import Registry
from controller.runtime import Controller
from drivers.sl651 import frame as fr
from drivers.sl651.body import parse_report
from drivers.sl651.crc import crc16
from drivers.sl651.listener import StationKey
from rules.compile import compile_rules
from simulators.faults import RainEvent, Scenario
from simulators.fleet import SimulatedCity
from simulators.servers import free_port
from simulators.sl651_station import Sl651Station

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
TZ = ZoneInfo("Asia/Shanghai")


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# protocols.md section 1.14: frames from public sources, CRC-verified there.
S1 = hexbytes("7E7E 01 0012345678 1234 2F 0008 02 0003 591011155111 03 6BCA")
S1B = hexbytes("7E7E00987654321012342F0008027E0822101110074703C3AE")
S2 = hexbytes(
    "7E7E 01 0012345678 1234 30 002B 02 0003 591011154947 F1F1 0012345678 48 "
    "F0F0 5910111549 20 19 000005 26 19 000005 39 23 00000127 38 12 1115 03 20FA"
)
S2_CONFIRM = hexbytes("7E7E 0012345678 01 1234 30 8008 02 0003 591011154947 1B 75D4")
S3 = hexbytes(
    "7E7E 05 0011223344 03E8 32 002B 02 0034 170718110016 F1F1 0011223344 48 "
    "F0F0 1707181100 20 19 000040 26 19 000040 39 23 00010490 38 12 1099 03 A421"
)
S3_CONFIRM = hexbytes("7E7E 0011223344 05 03E8 32 8008 02 0034 170718110016 1B E5D4")
S7 = hexbytes(
    "7E7E011000000006000031004E022F7E221205110019F1F1100000000648F0F0221205100504180000053923"
    + "00028960" * 12
    + "035B94"
)
C5_SHORT = hexbytes(
    "7E7E0100123456781234320021020004230601100000F1F1001234567848F0F023060110003923FF000345"
    "381212600366D2"
)
C5_STRICT = hexbytes(
    "7E7E0100123456781234320022020004230601100000F1F1001234567848F0F02306011000392BFF00000345"
    "38121260031D57"
)


def local(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


def test_the_check_is_crc16_modbus() -> None:
    assert crc16(b"123456789") == 0x4B37


def test_real_reports_decode_to_their_published_values() -> None:
    f = fr.parse(S3)
    assert (f.uplink, f.centre, f.station, f.password, f.function) == (
        True,
        5,
        "0011223344",
        0x03E8,
        0x32,
    )
    report = parse_report(f.function, f.body, TZ)
    assert report.serial == 0x34 and report.sent_at == local("2017-07-18T11:00:16")
    assert (report.station, report.station_type) == ("0011223344", 0x48)
    values = {o.element: o.value for o in report.observations}
    assert values == {0x20: 4.0, 0x26: 4.0, 0x39: 10.49, 0x38: 10.99}
    assert {o.at for o in report.observations} == {local("2017-07-18T11:00")}

    test = parse_report(0x30, fr.parse(S2).body, TZ)
    assert {o.element: o.value for o in test.observations}[0x39] == 0.127


def test_the_keep_alive_carries_only_serial_and_send_time() -> None:
    f = fr.parse(S1)
    assert (f.function, f.station, f.password, f.end) == (0x2F, "0012345678", 0x1234, fr.End.ETX)
    keep_alive = parse_report(f.function, f.body, TZ)
    assert keep_alive.serial == 3 and keep_alive.observations == []
    assert keep_alive.sent_at == local("2059-10-11T15:51:11")


def test_a_uniform_report_spreads_its_values_over_the_time_step() -> None:
    report = parse_report(0x31, fr.parse(S7).body, TZ)
    assert [o.value for o in report.observations] == [28.96] * 12
    first = local("2022-12-05T10:05")
    assert [o.at for o in report.observations] == [first + 300 * k for k in range(12)]


def test_negative_levels_read_the_same_in_both_encodings() -> None:
    for raw in (C5_SHORT, C5_STRICT):
        report = parse_report(0x32, fr.parse(raw).body, TZ)
        assert {o.element: o.value for o in report.observations} == {0x39: -0.345, 0x38: 12.6}


def test_confirms_match_the_published_ones() -> None:
    assert fr.confirm(fr.parse(S2), keep_online=True) == S2_CONFIRM
    assert fr.confirm(fr.parse(S3), keep_online=True) == S3_CONFIRM
    eot = fr.parse(fr.confirm(fr.parse(S3)))
    assert (eot.uplink, eot.end, eot.body) == (False, fr.End.EOT, fr.parse(S3).body[:8])


def test_the_stream_is_split_by_length_not_by_scanning_for_7e7e() -> None:
    # S1B's serial is 7E08: a 7E7E scanner would cut it. Then garbage, a torn frame,
    # and a frame cut in half by the TCP stream.
    torn = S2[:-3] + b"\x00\x00\x00"
    buffer = bytearray(b"\x00\x01" + S1B + torn + S3 + S7[:30])
    frames, problems = fr.split(buffer)
    assert [f.function for f in frames] == [0x2F, 0x32]
    assert frames[0].body[:2] == b"\x7e\x08"
    assert [p.kind for p in problems] == ["bad_start", "bad_crc"]
    assert bytes(buffer) == S7[:30]  # waits for the rest
    buffer += S7[30:]
    frames, problems = fr.split(buffer)
    assert [f.function for f in frames] == [0x31] and problems == [] and not buffer


def station_city(tmp_path: Path, port: int) -> dict[str, Any]:
    return {
        "listeners": [
            {"id": "sl651-centre", "protocol": "sl651", "host": "127.0.0.1", "port": port}
        ],
        "sl651_stations": [
            {
                "id": "WL-TUNNEL",
                "listener": "sl651-centre",
                "station": "0012345678",
                "password": "1234",
                "district": "江城区",
                "levels": {"blue": 0.15, "yellow": 0.25, "orange": 0.35, "red": 0.5},
            }
        ],
        "rules": [
            {
                "id": "flood-level",
                "kind": "threshold",
                "point": "water_level",
                "select": {"device_class": "gauge"},
                "levels_from_device": True,
            }
        ],
        "polling": {"batch_interval": 0.1},
        "storage": {"embedded": {"path": str(tmp_path / "e.db")}},
    }


def test_a_station_is_lost_after_its_report_intervals_plus_the_minute_of_its_clock(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    # A station reporting every 5 minutes stamps readings to the minute: judged on the
    # poll interval (10 s) or on the bare report interval, a healthy one would be lost.
    doc = station_city(tmp_path, 15026)
    doc["sl651_stations"][0]["report_interval"] = 300
    doc["rules"].append({"id": "comm-loss", "kind": "comm_loss", "intervals": 3})
    loaded = write_config(doc)
    registry = Registry(loaded)
    compiled = compile_rules(loaded.rule_site(), registry)
    station = registry.by_id["WL-TUNNEL"].index
    # Plus the batch its readings wait in before the rules see them.
    batch = loaded.config.polling.batch_interval
    assert compiled.comm_limit[station] == 3 * 300 + 60 + batch


async def test_a_station_dialling_in_is_confirmed_stored_and_raises_red_water(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    port = free_port()
    loaded = write_config(station_city(tmp_path, port))
    async with Controller(loaded) as controller:
        await controller.start()
        listener = controller.listeners[0]
        station = Sl651Station("0012345678", 0x1234, 1, TZ)
        await station.connect("127.0.0.1", port)
        try:
            now = time.time()
            confirm = await station.send(station.report(now, 0.62))
            assert confirm is not None and confirm.end is fr.End.EOT and not confirm.uplink
            assert confirm.body[:2] == station.serial.to_bytes(2, "big")  # serial echoed

            async def alarmed() -> bool:
                return any(
                    a.rule == "flood-level" and a.active for a in controller.rules.manager.list()
                )

            for _ in range(50):
                if await alarmed():
                    break
                await asyncio.sleep(0.1)
            [alarm] = [a for a in controller.rules.manager.list() if a.active]
            assert (alarm.device, alarm.level_name, alarm.severity) == (
                "WL-TUNNEL",
                "red",
                "urgent",
            )
            device = controller.registry.by_id["WL-TUNNEL"]
            names = [p.name for p in device.points]
            level = controller.latest.value[device.index, names.index("water_level")]
            assert level == pytest.approx(0.62)
            assert controller.poller.health[device.index].online

            # A resend of the same report (the confirm was lost) is confirmed, stored once.
            frame = station.report(now + 60, 0.63)
            assert await station.send(frame) is not None
            assert await station.send(frame) is not None
            stats = listener.stats.stations["0012345678"]
            assert (stats.reports, stats.duplicates) == (2, 1)

            # Frames the centre must not answer: a wrong password, a bad CRC, a stranger.
            intruder = Sl651Station("0012345678", 0x9999, 1, TZ)
            intruder._reader, intruder._writer = station._reader, station._writer
            assert await intruder.send(intruder.report(now + 120, 0.1), wait=0.3, resends=0) is None
            garbled = bytearray(station.report(now + 180, 0.1))
            garbled[-1] ^= 0xFF
            assert await station.send(bytes(garbled), wait=0.3, resends=0) is None
            stranger = Sl651Station("0099999999", 0x1234, 1, TZ)
            stranger._reader, stranger._writer = station._reader, station._writer
            assert await stranger.send(stranger.report(now, 0.1), wait=0.3, resends=0) is None
            assert (listener.stats.wrong_password, listener.stats.bad_crc) == (1, 1)
            assert listener.stats.unknown_station == 1
            # ... and the connection still works after them.
            assert await station.send(station.report(now + 240, 0.2)) is not None
        finally:
            await station.close()


async def test_a_storm_reported_by_simulated_stations_becomes_an_urgent_flood_case(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = station_city(tmp_path, free_port())
    doc["sl651_stations"][0]["report_interval"] = 0.2
    doc["rules"][0]["case"] = True
    doc["cases"] = {"routing": [{"category": "waterlogging", "department": "市排水管理处"}]}
    loaded = write_config(doc)
    rain = Scenario(rain=[RainEvent(start=0, rise=1.0, peak_m=0.6, hold=1e6, recede=10)])
    async with SimulatedCity(loaded, rain) as city, Controller(loaded) as controller:
        await controller.start()
        city.clock.advance(5)  # the water is up
        for _ in range(100):
            cases = await controller.cases.find()
            if cases and cases[0].stage == "dispatched" and cases[0].severity == "urgent":
                break
            await asyncio.sleep(0.1)
        [case] = cases
        assert (case.category, case.device_id, case.severity) == (
            "waterlogging",
            "WL-TUNNEL",
            "urgent",
        )
        assert case.department == "市排水管理处" and case.title.endswith("积水 红色预警")
        station = city.stations[0][0]
        assert station.confirms and all(c.end is fr.End.EOT for c in station.confirms)


def test_an_hourly_report_gives_twelve_five_minute_readings_and_status_bits(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    from controller.registry import Registry
    from controller.station_reports import StationReports
    from drivers.sl651.body import encode_time

    observed = datetime(2026, 7, 1, 10, 0, tzinfo=TZ).timestamp()
    rain = bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xFF])  # 0.1 mm each; FF: no data
    levels = b"".join(v.to_bytes(2, "big") for v in [*range(120, 131), 0xFFFF])  # 0.01 m
    status = (1 << 0 | 1 << 2 | 1 << 7).to_bytes(4, "big")  # mains out, level alarm, door shut
    body = (
        (7).to_bytes(2, "big")
        + encode_time(observed + 20, TZ)
        + bytes.fromhex("F1F1 0012345678 48 F0F0")
        + encode_time(observed, TZ, seconds=False)
        + b"\xf4\x60"
        + rain
        + b"\xf5\xc0"
        + levels
        + b"\x45\x20"
        + status
    )
    report = parse_report(0x34, body, TZ)
    drp = [o for o in report.observations if o.element == 0xF4]
    drz = [o for o in report.observations if o.element == 0xF5]
    # The hour that ends at the observation time: 09:05, 09:10, ... 10:00.
    assert [o.at for o in drp] == [observed - 3300 + 300 * k for k in range(12)]
    assert [o.value for o in drp[:3]] == pytest.approx([0.0, 0.1, 0.2])
    assert drp[-1].value is None and drz[-1].value is None
    assert drz[0].value == pytest.approx(1.20) and drz[10].value == pytest.approx(1.30)

    registry = Registry(write_config(station_city(tmp_path, free_port())))
    [(device, _, _)] = registry.sl651_stations["sl651-centre"]
    batch = StationReports(registry, None).batch(  # type: ignore[arg-type]
        StationKey(device, "0012345678", 0x1234), report
    )
    names = [p.name for p in registry.devices[device].points]
    got = {
        (names[p], t): v
        for p, t, v in zip(
            batch.point.tolist(), batch.ts.tolist(), batch.value.tolist(), strict=True
        )
    }
    assert got["mains_lost", observed] == 1 and got["battery_low", observed] == 0
    assert got["level_alarm", observed] == 1 and got["door_closed", observed] == 1
    assert got["status_word", observed] == 0x85
    assert got["level_5min", observed - 3300] == pytest.approx(1.20)
    assert sum(1 for (name, _) in got if name == "rain_5min") == 12
    assert np.isnan(got["rain_5min", observed])  # "no data" is a bad reading


# protocols.md 1.14 C3/C4: ASCII frames built to the standard's text (no real one found).
C3 = (
    b"\x01"
    + b"0100123456781234320040"
    + b"\x02"
    + b"0003230601100000ST 0012345678 H TT 2306011000 Z 12.345 VT 12.60 "
    + b"\x03"
    + b"A55A"
)
C4 = b"\x01" + b"0012345678011234328010" + b"\x02" + b"0003230601100005" + b"\x1b" + b"1DB9"


def test_an_ascii_report_decodes_and_is_confirmed_byte_exact() -> None:
    from drivers.sl651.ascii import confirm_ascii, parse_ascii_report, split_ascii

    buffer = bytearray(b"junk" + C3 + C3[:40])
    frames, problems = split_ascii(buffer)
    assert [p.kind for p in problems] == ["bad_start"] and bytes(buffer) == C3[:40]
    [frame] = frames
    assert (frame.uplink, frame.centre, frame.station, frame.password, frame.function) == (
        True,
        1,
        "0012345678",
        0x1234,
        0x32,
    )
    report = parse_ascii_report(frame.function, frame.body, TZ)
    assert report.serial == 3 and report.station == "0012345678"
    assert report.station_type == ord("H")
    observed = datetime(2023, 6, 1, 10, 0, tzinfo=TZ).timestamp()
    assert [(o.element, o.at, o.value) for o in report.observations] == [
        (0x39, observed, 12.345),
        (0x38, observed, 12.60),
    ]
    # The confirm of the notes (sent 5 s later, ESC: keep online) is C4 byte for byte.
    sent = datetime(2023, 6, 1, 10, 0, 5, tzinfo=TZ).timestamp()
    from drivers.sl651.ascii import ascii_head, build_ascii

    rebuilt = build_ascii("0012345678", 1, 0x1234, 0x32, ascii_head(3, sent, TZ), fr.End.ESC)
    assert rebuilt == C4
    assert confirm_ascii(frame, keep_online=False)[-5] == fr.End.EOT
    garbled = bytearray(C3[:-1] + b"B")
    frames, problems = split_ascii(garbled)
    assert frames == [] and [p.kind for p in problems] == ["bad_crc"]


async def test_an_ascii_listener_confirms_and_stores_a_station_report(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    port = free_port()
    doc = station_city(tmp_path, port)
    doc["listeners"][0]["encoding"] = "ascii"
    # C3 was sent in 2023: a clock that far off would get a set-clock queued and the
    # confirm would be ESC; the plain confirm is what this test checks.
    doc["listeners"][0]["auto_set_clock"] = False
    loaded = write_config(doc)
    async with Controller(loaded) as controller:
        await controller.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(C3)
            answer = await asyncio.wait_for(reader.read(100), 3)
            assert answer[0] == 0x01 and answer[24:40] == b"0003230601100000"
            assert answer[40] == fr.End.EOT
            device = controller.registry.by_id["WL-TUNNEL"]
            names = [p.name for p in device.points]
            for _ in range(30):
                await controller.poller.flush()
                level = controller.latest.value[device.index, names.index("water_level")]
                if level == level:  # not NaN
                    break
                await asyncio.sleep(0.1)
            assert level == pytest.approx(12.345)
        finally:
            writer.close()
