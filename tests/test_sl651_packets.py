"""SL651 M3: a long report in packets, a lost packet asked for by NAK, one confirm."""

from __future__ import annotations

import asyncio
import time
from zoneinfo import ZoneInfo

import pytest

from drivers.sl651 import frame as fr
from drivers.sl651.body import Report, encode_time
from drivers.sl651.listener import Sl651Listener, StationKey
from simulators.servers import free_port

TZ = ZoneInfo("Asia/Shanghai")
STATION = "0012345678"


def uniform_report_body(first: float, values: list[float]) -> bytes:
    """A 31H body: serial, send time, station, first time, a 5-minute step, 39H values."""
    body = (9).to_bytes(2, "big") + encode_time(first + 3600, TZ)
    body += b"\xf1\xf1" + bytes.fromhex(STATION) + b"\x48"
    body += b"\xf0\xf0" + encode_time(first, TZ, seconds=False)
    body += b"\x04\x18\x00\x00\x05" + b"\x39\x23"
    for v in values:
        body += bytes.fromhex(f"{round(v * 1000):08d}")
    return body


def packet(body: bytes, total: int, seq: int, end: fr.End) -> bytes:
    return fr.build(STATION, 1, 0x1234, 0x31, body, end, uplink=True, packet=(total, seq))


async def read_frames(reader: asyncio.StreamReader, n: int) -> list[fr.Frame]:
    buffer, frames = bytearray(), list[fr.Frame]()
    while len(frames) < n:
        buffer += await asyncio.wait_for(reader.read(4096), 3)
        more, problems = fr.split(buffer)
        assert problems == []
        frames += more
    return frames


async def test_a_report_in_three_packets_with_one_lost_is_asked_for_and_joined() -> None:
    reports: list[Report] = []

    async def collect(key: StationKey, report: Report) -> None:
        reports.append(report)

    port = free_port()
    listener = Sl651Listener(
        "centre", "127.0.0.1", port, [StationKey(0, STATION, 0x1234)], TZ, collect
    )
    await listener.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        first = time.time() // 300 * 300 - 3600
        levels = [0.1 + 0.01 * k for k in range(12)]
        body = uniform_report_body(first, levels)
        parts = [body[:30], body[30:45], body[45:]]
        writer.write(packet(parts[0], 3, 1, fr.End.ETB))
        garbled = bytearray(packet(parts[1], 3, 2, fr.End.ETB))
        garbled[-1] ^= 0xFF  # packet 2 arrives with a bad CRC: dropped and counted
        writer.write(bytes(garbled))
        writer.write(packet(parts[2], 3, 3, fr.End.ETX))
        [nak] = await read_frames(reader, 1)
        assert (nak.function, nak.end, nak.packet, nak.uplink) == (0x31, fr.End.NAK, (3, 2), False)
        assert reports == [] and listener.stats.bad_crc == 1

        writer.write(packet(parts[1], 3, 2, fr.End.ETX))  # sent again, ending ETX
        [confirm] = await read_frames(reader, 1)
        assert (confirm.end, confirm.packet) == (fr.End.EOT, (3, 3))
        assert confirm.body[:2] == (9).to_bytes(2, "big")  # packet 1's serial echoed
        for _ in range(30):
            if reports:
                break
            await asyncio.sleep(0.05)
        [report] = reports
        assert [o.value for o in report.observations] == pytest.approx(levels)
        assert [o.at for o in report.observations] == [first + 300 * k for k in range(12)]
    finally:
        writer.close()
        await listener.stop()
