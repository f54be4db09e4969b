"""The asset register in the state database, with per-circuit lamp counts kept in memory.

The counts answer "how many lamps go dark if this circuit is switched off"
for the confirm rule, including poles that have no controller, and give the
lighting rate of circuits whose lamps have no controller (most of a city):
how many such lamps a circuit feeds and their rated power.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, select

from controller.assets.model import PoleAsset
from controller.state.database import StateDatabase
from controller.state.tables import pole
from controller.state.upsert import upsert
from controller.statistics import CircuitLoad

_NO_CONTROLLER = pole.c.body["controller"].as_string().is_(None)
_RATED_W = pole.c.body["rated_w"].as_float()


def _circuit_loads() -> Select[Any]:
    """Poles per circuit, and those without a controller with their rated power."""
    c = pole.c
    return (
        select(
            c.cabinet,
            c.circuit,
            func.count(),
            func.sum(case((_NO_CONTROLLER, 1), else_=0)),
            func.coalesce(func.sum(case((_NO_CONTROLLER, _RATED_W), else_=None)), 0.0),
        )
        .where(c.cabinet.is_not(None), c.circuit.is_not(None))
        .group_by(c.cabinet, c.circuit)
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


_GROUP_COLUMNS = {"road": pole.c.road, "grid": pole.c.grid, "cabinet": pole.c.cabinet}


class AssetStore:
    """Poles by id, listed by road, grid cell or cabinet."""

    def __init__(self, db: StateDatabase) -> None:
        self.db = db
        self._per_circuit: Counter[tuple[str, int]] = Counter()
        self._loads: dict[tuple[str, int], CircuitLoad] = {}
        self._owns_db = False

    async def open(self) -> None:
        """Count the poles per circuit (opening the database if nobody has)."""
        self._owns_db = not self.db.is_open
        if self._owns_db:
            await self.db.open()
        async with self.db.connected().connect() as conn:
            self._count((await conn.execute(_circuit_loads())).all())

    def _count(self, rows: Sequence[Any]) -> None:
        for cab, circuit, poles, uncontrolled, watts in rows:
            self._per_circuit[cab, circuit] = poles
            self._loads[cab, circuit] = CircuitLoad(int(uncontrolled or 0), float(watts or 0.0))

    async def close(self) -> None:
        """Close the database if :meth:`open` opened it."""
        if self._owns_db:
            await self.db.close()

    def circuit_load(self, cabinet: str, circuit: int) -> CircuitLoad:
        """The lamps without a controller on one circuit, and their rated power."""
        return self._loads.get((cabinet, circuit), CircuitLoad(0, 0.0))

    def poles_on(self, cabinet: str, circuit: int) -> int:
        """Poles fed by one circuit of a cabinet."""
        return self._per_circuit[cabinet, circuit]

    async def get(self, pole_id: str) -> PoleAsset | None:
        """One pole by id."""
        async with self.db.connected().connect() as conn:
            body = await conn.scalar(select(pole.c.body).where(pole.c.pole_id == pole_id))
        return None if body is None else PoleAsset.model_validate(body)

    async def put(self, assets: list[PoleAsset]) -> None:
        """Insert or replace poles."""
        rows = [
            {
                "pole_id": a.pole_id,
                "cabinet": a.cabinet,
                "circuit": a.circuit,
                "road": a.road,
                "grid": a.grid,
                "body": a.model_dump(mode="json"),
            }
            for a in assets
        ]
        ids = [a.pole_id for a in assets]
        async with self.db.connected().begin() as conn:
            replaced: set[tuple[str, int]] = set()
            for chunk in _chunks(ids):
                found = await conn.execute(
                    select(pole.c.cabinet, pole.c.circuit).where(
                        pole.c.pole_id.in_(chunk), pole.c.cabinet.is_not(None)
                    )
                )
                replaced.update((cab, circuit) for cab, circuit in found.all())
            for start in range(0, len(rows), _CHUNK):
                await upsert(conn, pole, rows[start : start + _CHUNK])
        touched = replaced | {
            (a.cabinet, a.circuit)
            for a in assets
            if a.cabinet is not None and a.circuit is not None
        }
        await self._recount(touched)

    async def _recount(self, circuits: set[tuple[str, int]]) -> None:
        """Count these circuits' poles again from the register."""
        rows = []
        async with self.db.connected().connect() as conn:
            for cabinet, circuit in circuits:
                statement = _circuit_loads().where(
                    pole.c.cabinet == cabinet, pole.c.circuit == circuit
                )
                rows += (await conn.execute(statement)).all()
        for key in circuits:
            self._per_circuit.pop(key, None)
            self._loads.pop(key, None)
        self._count(rows)

    async def exists(self, pole_ids: list[str]) -> set[str]:
        """Which of these pole ids are already registered."""
        found: set[str] = set()
        async with self.db.connected().connect() as conn:
            for chunk in _chunks(pole_ids):
                result = await conn.scalars(select(pole.c.pole_id).where(pole.c.pole_id.in_(chunk)))
                found.update(result.all())
        return found

    async def find(self, f: AssetFilter) -> list[PoleAsset]:
        """Poles matching the filter, by pole id."""
        statement = select(pole.c.body)
        for column, value in (("road", f.road), ("grid", f.grid), ("cabinet", f.cabinet)):
            if value is not None:
                statement = statement.where(_GROUP_COLUMNS[column] == value)
        statement = statement.order_by(pole.c.pole_id).limit(f.limit).offset(f.offset)
        async with self.db.connected().connect() as conn:
            bodies = (await conn.scalars(statement)).all()
        return [PoleAsset.model_validate(b) for b in bodies]

    async def summary(self, by: str) -> list[AssetGroup]:
        """Pole counts and rated power per road, grid cell or cabinet."""
        group = func.coalesce(_GROUP_COLUMNS[by], "")
        statement = (
            select(
                group,
                func.count(),
                func.sum(case((_NO_CONTROLLER, 0), else_=1)),
                func.coalesce(func.sum(_RATED_W), 0.0),
            )
            .group_by(group)
            .order_by(group)
        )
        async with self.db.connected().connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [AssetGroup(g, n, int(c), float(w) / 1000.0) for g, n, c, w in rows]


#: Ids per ``IN (...)`` and rows per insert: well below SQLite's parameter limit.
_CHUNK = 500


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


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
