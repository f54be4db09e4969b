"""Generate the config of a whole simulated city (for benchmarks and load tests).

Shaped on Yangjiang: 659 cabinets each reached by its own 4G DTU (RTU over TCP),
3,500 single-lamp controllers spread over the cabinets' concentrators, and
water-level gauges on Modbus TCP gateways at the drainage stations.
"""

from __future__ import annotations

import random
from typing import Any

YANGJIANG_CABINETS = 659
YANGJIANG_SINGLE_LAMP_CONTROLLERS = 3500
SHANTOU_GAUGES = 57
#: Gauges are spread over these districts, a gateway's gauges in one (storm mode is per district).
DISTRICTS = ("江城区", "阳东区", "阳西县", "阳春市")


def spread(total: int, buckets: int, rng: random.Random, cap: int) -> list[int]:
    """``total`` items over ``buckets``, uneven like real streets, none over ``cap``."""
    weights = [rng.uniform(0.2, 1.8) for _ in range(buckets)]
    scale = total / sum(weights)
    counts = [min(cap, int(w * scale)) for w in weights]
    i = 0
    while sum(counts) < total:
        if counts[i % buckets] < cap:
            counts[i % buckets] += 1
        i += 1
    return counts


def generate_city(
    cabinets: int = YANGJIANG_CABINETS,
    lamps: int = YANGJIANG_SINGLE_LAMP_CONTROLLERS,
    gauges: int = SHANTOU_GAUGES,
    base_port: int = 20000,
    cabinets_per_link: int = 1,
    gauges_per_gateway: int = 10,
    timeout: float = 2.0,
    seed: int = 1,
    meters: bool = False,
    sl651_stations: int = 0,
) -> dict[str, Any]:
    """A config mapping for a city of the given size on loopback ports from ``base_port``;
    with ``meters``, each cabinet has a DL/T 645 meter on its line, as many cities wire it;
    ``sl651_stations`` of the ``gauges`` are SL651 stations dialling in to one listener
    (on the port after the links')."""
    rng = random.Random(seed)
    links: list[dict[str, Any]] = []
    cabinet_docs: list[dict[str, Any]] = []
    lamp_counts = spread(lamps, cabinets, rng, cap=64) if cabinets else []
    port = base_port
    for i in range(cabinets):
        if i % cabinets_per_link == 0:
            links.append(
                {
                    "id": f"dtu-{i // cabinets_per_link:04d}",
                    "kind": "rtu_over_tcp",
                    "host": "127.0.0.1",
                    "port": port,
                    "timeout": timeout,
                }
            )
            port += 1
        count = lamp_counts[i]
        runs = []
        for circuit in (1, 2):
            share = count // 2 + (count % 2 if circuit == 1 else 0)
            if share:
                runs.append({"circuit": circuit, "count": share, "rated_w": 150})
        # 12 digits: district, street (a hundred per district), cell (forty per street).
        grid = f"4417{2 + i // 4000:02d}{(i // 40) % 100 + 1:03d}{i % 40 + 1:03d}"
        cabinet_docs.append(
            {
                "id": f"CAB-{i + 1:04d}",
                "link": links[-1]["id"],
                "unit": i % cabinets_per_link + 1,
                "lat": 21.80 + rng.uniform(0, 0.12),
                "lon": 111.90 + rng.uniform(0, 0.15),
                "grid": grid,
                "road": f"road-{i // 12:03d}",
                "district": "江城区",
                "lamp_runs": runs,
            }
        )
    gauge_docs: list[dict[str, Any]] = []
    modbus_gauges = gauges - min(sl651_stations, gauges)
    for g in range(modbus_gauges):
        if g % gauges_per_gateway == 0:
            links.append(
                {
                    "id": f"gw-{g // gauges_per_gateway:02d}",
                    "kind": "modbus_tcp",
                    "host": "127.0.0.1",
                    "port": port,
                    "timeout": timeout,
                }
            )
            port += 1
        gauge_docs.append(
            {
                "id": f"WL-{g + 1:03d}",
                "link": links[-1]["id"],
                "unit": g % gauges_per_gateway + 1,
                "profile": "wl-radar" if g % 2 else "wl-pressure",
                "district": DISTRICTS[g // gauges_per_gateway % len(DISTRICTS)],
                "levels": {"blue": 0.1, "yellow": 0.2, "orange": 0.3, "red": 0.4},
            }
        )
    doc: dict[str, Any] = {
        "site": {"city": "generated"},
        "links": links,
        "cabinets": cabinet_docs,
        "gauges": gauge_docs,
    }
    if modbus_gauges < gauges:
        doc["listeners"] = [
            {"id": "sl651-centre", "protocol": "sl651", "host": "127.0.0.1", "port": port}
        ]
        doc["sl651_stations"] = [
            {
                "id": f"WL-S{s + 1:03d}",
                "listener": "sl651-centre",
                "station": f"00441{s + 1:05d}",
                "password": "1234",
                "report_interval": 60,
                "district": DISTRICTS[s % len(DISTRICTS)],
                "levels": {"blue": 0.1, "yellow": 0.2, "orange": 0.3, "red": 0.4},
            }
            for s in range(gauges - modbus_gauges)
        ]
    if meters:
        doc["meters"] = [
            {
                "id": f"MTR-{i + 1:04d}",
                "link": c["link"],
                "address": f"{i + 1:012d}",
                "cabinet": c["id"],
            }
            for i, c in enumerate(cabinet_docs)
        ]
    return doc
