"""The asset register in SQLite, with per-circuit lamp counts kept in memory.

The counts answer "how many lamps go dark if this circuit is switched off"
for the confirm rule, including poles that have no controller, and give the
lighting rate of circuits whose lamps have no controller (most of a city):
how many such lamps a circuit feeds and their rated power.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.assets.model import PoleAsset
from controller.sqlite_worker import SqliteWorker
from controller.statistics import CircuitLoad

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS pole (
        pole_id TEXT PRIMARY KEY,
        cabinet TEXT,
        circuit INTEGER,
        road TEXT NOT NULL,
        grid TEXT NOT NULL,
        body TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS pole_road ON pole (road)",
    "CREATE INDEX IF NOT EXISTS pole_grid ON pole (grid)",
    "CREATE INDEX IF NOT EXISTS pole_cabinet ON pole (cabinet, circuit)",
]
#: Poles per circuit, and those without a controller with their rated power.
_CIRCUIT_LOADS = (
    "SELECT cabinet, circuit, count(*), "
    "sum(json_extract(body, '$.controller') IS NULL), "
    "total(CASE WHEN json_extract(body, '$.controller') IS NULL "
    "THEN json_extract(body, '$.rated_w') END) "
    "FROM pole WHERE cabinet IS NOT NULL AND circuit IS NOT NULL"
)


@dataclass(frozen=True)
class AssetFilter:
    """Which poles to list; every given key must match."""

    road: str | None = None
    grid: str | None = None
    cabinet: str | None = None
    limit: int = 1000
    offset: int = 0


@dataclass(frozen=True)
class AssetGroup:
    """Poles of one road, grid cell or cabinet."""

    group: str
    poles: int
    with_controller: int
    rated_kw: float


_GROUP_COLUMNS = {"road": "road", "grid": "grid", "cabinet": "cabinet"}


class AssetStore:
    """Poles by id, listed by road, grid cell or cabinet."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteWorker(path, _SCHEMA, "assets-db")
        self._per_circuit: Counter[tuple[str, int]] = Counter()
        self._loads: dict[tuple[str, int], CircuitLoad] = {}

    async def open(self) -> None:
        """Open the register and count the poles per circuit."""
        await self._db.open()
        rows = await self._db.run(
            lambda db: db.execute(_CIRCUIT_LOADS + " GROUP BY cabinet, circuit").fetchall()
        )
        self._count(rows)

    def _count(self, rows: list[tuple[Any, ...]]) -> None:
        for cab, circuit, poles, uncontrolled, watts in rows:
            self._per_circuit[cab, circuit] = poles
            self._loads[cab, circuit] = CircuitLoad(int(uncontrolled or 0), float(watts or 0.0))

    def circuit_load(self, cabinet: str, circuit: int) -> CircuitLoad:
        """The lamps without a controller on one circuit, and their rated power."""
        return self._loads.get((cabinet, circuit), CircuitLoad(0, 0.0))

    async def close(self) -> None:
        """Close the register."""
        await self._db.close()

    def poles_on(self, cabinet: str, circuit: int) -> int:
        """Poles fed by one circuit of a cabinet."""
        return self._per_circuit[cabinet, circuit]

    async def get(self, pole_id: str) -> PoleAsset | None:
        """One pole by id."""
        row = await self._db.run(
            lambda db: db.execute("SELECT body FROM pole WHERE pole_id = ?", (pole_id,)).fetchone()
        )
        return None if row is None else PoleAsset.model_validate_json(row[0])

    async def put(self, assets: list[PoleAsset]) -> None:
        """Insert or replace poles."""
        rows = [
            (a.pole_id, a.cabinet, a.circuit, a.road, a.grid, a.model_dump_json()) for a in assets
        ]

        def write(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            ids = [(a.pole_id,) for a in assets]
            old = []
            for (pole_id,) in ids:
                found = db.execute(
                    "SELECT cabinet, circuit FROM pole WHERE pole_id = ? AND cabinet IS NOT NULL",
                    (pole_id,),
                ).fetchone()
                if found is not None:
                    old.append(found)
            db.executemany("INSERT OR REPLACE INTO pole VALUES (?, ?, ?, ?, ?, ?)", rows)
            return old

        replaced = await self._db.run(write)
        touched = set(replaced) | {
            (a.cabinet, a.circuit)
            for a in assets
            if a.cabinet is not None and a.circuit is not None
        }
        await self._recount(touched)

    async def _recount(self, circuits: set[tuple[str, int]]) -> None:
        """Count these circuits' poles again from the register."""

        def count(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = []
            for cabinet, circuit in circuits:
                row = db.execute(
                    _CIRCUIT_LOADS + " AND cabinet = ? AND circuit = ?", (cabinet, circuit)
                ).fetchone()
                rows.append((cabinet, circuit, *row[2:]) if row[0] is not None else None)
            return [r for r in rows if r is not None]

        for key in circuits:
            self._per_circuit.pop(key, None)
            self._loads.pop(key, None)
        self._count(await self._db.run(count))

    async def exists(self, pole_ids: list[str]) -> set[str]:
        """Which of these pole ids are already registered."""

        def find(db: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(pole_ids), 500):
                chunk = pole_ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in db.execute(
                        f"SELECT pole_id FROM pole WHERE pole_id IN ({marks})", chunk
                    )
                )
            return found

        return await self._db.run(find)

    async def find(self, f: AssetFilter) -> list[PoleAsset]:
        """Poles matching the filter, by pole id."""
        where, args = [], []
        for column, value in (("road", f.road), ("grid", f.grid), ("cabinet", f.cabinet)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT body FROM pole"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY pole_id LIMIT ? OFFSET ?"
        rows = await self._db.run(lambda db: db.execute(sql, [*args, f.limit, f.offset]).fetchall())
        return [PoleAsset.model_validate_json(r[0]) for r in rows]

    async def summary(self, by: str) -> list[AssetGroup]:
        """Pole counts and rated power per road, grid cell or cabinet."""
        column = _GROUP_COLUMNS[by]
        rows = await self._db.run(
            lambda db: db.execute(
                f"SELECT coalesce({column}, ''), count(*), "
                "sum(json_extract(body, '$.controller') IS NOT NULL), "
                "sum(json_extract(body, '$.rated_w')) "
                f"FROM pole GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        return [AssetGroup(g, n, int(c), float(w) / 1000.0) for g, n, c, w in rows]


def dump_geojson(assets: list[PoleAsset]) -> dict[str, Any]:
    """Poles as a GeoJSON FeatureCollection (the import format, for a round trip)."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [a.lon, a.lat]},
                "properties": json.loads(a.model_dump_json(exclude={"lat", "lon"})),
            }
            for a in assets
        ],
    }
