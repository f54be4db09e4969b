"""Load generator for ``bench sl651``: many SL651 stations dialling in, in their own process.

``python -m bench.sl651_load --port P --stations N --window S`` connects N
stations (addresses 0000000001...), prints ``connected``, waits for a line on
stdin, then has every station send one timed report at a random moment in
the next S seconds and wait for its confirm (resending twice, as RTUs do).
It prints one JSON line: confirmed, resent, failed, and the seconds from the
first report to the last confirm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from zoneinfo import ZoneInfo

from simulators.sl651_station import Sl651Station

TZ = ZoneInfo("Asia/Shanghai")
PASSWORD = 0x1234


def station_address(k: int) -> str:
    """The address of station ``k`` (1-based), as 10 digits."""
    return f"{k:010d}"


async def _main(port: int, stations: int, window: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    fleet = [Sl651Station(station_address(k), PASSWORD, 1, TZ) for k in range(1, stations + 1)]
    # Connect in waves: a listen backlog is finite, as a real centre's is.
    for start in range(0, stations, 200):
        await asyncio.gather(*(s.connect("127.0.0.1", port) for s in fleet[start : start + 200]))
    print("connected", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    began = time.perf_counter()
    confirmed = resent = failed = 0

    async def report(station: Sl651Station) -> None:
        nonlocal confirmed, resent, failed
        await asyncio.sleep(rng.uniform(0, window))
        before = len(station.confirms)
        answer = await station.send(station.report(time.time(), rng.uniform(0, 0.5)), wait=5.0)
        if answer is None:
            failed += 1
        else:
            confirmed += 1
            resent += len(station.confirms) - before - 1

    await asyncio.gather(*(report(s) for s in fleet))
    elapsed = time.perf_counter() - began
    for station in fleet:
        await station.close()
    return {"confirmed": confirmed, "resent": resent, "failed": failed, "seconds": elapsed}


def main() -> None:
    """Parse the arguments, run the stations, print the summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stations", type=int, required=True)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = asyncio.run(_main(args.port, args.stations, args.window, args.seed))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
