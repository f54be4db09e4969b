"""Simulated SL651 stations with field faults: each is counted and none stops the centre."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.config import LoadedConfig
from drivers.sl651.listener import ListenerStats, StationStats
from simulators.faults import FaultKind, FaultSpec
from simulators.servers import free_port
from tests.helpers import city_with_controller
from tests.test_sl651 import station_city

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
STATION = "0012345678"


async def until(check: Callable[[], bool], seconds: float = 8.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not reached in time")


async def test_station_faults_are_counted_and_reporting_resumes_after_them(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    doc = station_city(tmp_path, free_port())
    doc["sl651_stations"][0]["report_interval"] = 0.2
    loaded = write_config(doc)
    async with city_with_controller(loaded) as (city, controller):
        await controller.start()
        listener = controller.listeners[0]
        totals: ListenerStats = listener.stats
        mine: StationStats = totals.stations[STATION]

        await until(lambda: mine.reports >= 2)  # reporting normally

        async def under(kind: FaultKind, check: Callable[[], bool], **kw: Any) -> None:
            city.inject(FaultSpec(kind=kind, device="WL-TUNNEL", **kw))
            await until(check)
            city.clear("WL-TUNNEL")
            before = mine.reports
            await until(lambda: mine.reports > before)  # and back to normal after it

        crc = totals.bad_crc
        await under(FaultKind.BAD_CRC, lambda: totals.bad_crc >= crc + 2)
        wrong = mine.wrong_password
        await under(FaultKind.WRONG_PASSWORD, lambda: mine.wrong_password >= wrong + 2)
        dup = mine.duplicates
        await under(FaultKind.DUPLICATE_RESEND, lambda: mine.duplicates >= dup + 2)
        connections = totals.connections
        await under(FaultKind.RECONNECT_STORM, lambda: totals.connections >= connections + 3)
        cut = totals.connections
        await under(FaultKind.TRUNCATED, lambda: totals.connections >= cut + 2)
        await under(
            FaultKind.CLOCK_DRIFT,
            lambda: mine.clock_drift and (mine.clock_offset_s or 0) > 800,
            offset=900.0,
        )
        await until(lambda: not mine.clock_drift)
        # Silent: no reports while it lasts.
        city.inject(FaultSpec(kind=FaultKind.DEVICE_SILENT, device="WL-TUNNEL"))
        await asyncio.sleep(0.5)
        quiet = mine.reports
        await asyncio.sleep(1.0)
        assert mine.reports == quiet
        city.clear("WL-TUNNEL")
        await until(lambda: mine.reports > quiet)
        device = controller.registry.by_id["WL-TUNNEL"]
        assert controller.poller.health[device.index].online
        assert totals.open_connections >= 1
