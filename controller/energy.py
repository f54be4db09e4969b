"""Energy per cabinet over nights: metered kWh against full-power all-night burning.

A night's energy is the cabinet's energy counter at the next noon minus the
counter at this noon (local time), so a whole evening, night and dawn fall in
one day whatever the season. Full power is the rated load of the cabinet's
lamps burning from sunset to sunrise at the cabinet's place; the saving is
what dimming, part-night switching and dark lamps kept off the bill (and
what a fault that leaves lamps dark also "saves": read it beside the
lighting rate).

Only the counter's readings near the two ends are read, never the night's
every reading, so a month of a whole city stays two small reads per cabinet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import numpy as np

from controller.registry import Device, Registry
from controller.telemetry.query import TelemetryReader
from rules.astro import FloatArray, sun_times

ENERGY_POINT = "energy"
#: A night is read from noon to noon.
DAY_STARTS = time(12)
#: How far from each end a counter reading may be and still count as that end's.
EDGE_S = 2 * 3600.0


@dataclass(frozen=True)
class CabinetEnergy:
    """One cabinet's energy over some nights."""

    cabinet: str
    name: str
    #: Rated load of its lamps (kW).
    rated_kw: float
    #: The rated load burning from sunset to sunrise every night (kWh).
    full_kwh: float
    #: What its energy counter says it used (kWh); None when it cannot say, see ``note``.
    kwh: float | None
    note: str = ""

    @property
    def saving(self) -> float | None:
        """The share of full-power burning that was not used (0.42: 42 % saved)."""
        if self.kwh is None or self.full_kwh <= 0:
            return None
        return 1.0 - self.kwh / self.full_kwh


def night_hours(
    lat: FloatArray, lon: FloatArray, first: date, nights: int, tz: ZoneInfo
) -> FloatArray:
    """Hours from sunset to the next sunrise at each place, summed over ``nights``
    nights from the evening of ``first``. The sun is computed once per noon: a day's
    sunrise ends one night and its sunset starts the next."""
    days = [
        sun_times(lat, lon, datetime.combine(first + timedelta(days=k), DAY_STARTS, tz).timestamp())
        for k in range(nights + 1)
    ]
    total = np.zeros(len(lat))
    for (_, sunset), (sunrise, _) in pairwise(days):
        total += (sunrise - sunset) / 3600.0
    return total


async def cabinet_energy(
    registry: Registry, reader: TelemetryReader, tz: ZoneInfo, first: date, nights: int
) -> list[CabinetEnergy]:
    """Every cabinet's energy over ``nights`` nights from the evening of ``first``."""
    cabinets = [d for d in registry.devices if d.device_class == "cabinet"]
    if not cabinets:
        return []
    load_w: dict[int, float] = {}
    for lamp in registry.devices:
        if lamp.device_class == "lamp" and lamp.parent is not None:
            load_w[lamp.parent] = load_w.get(lamp.parent, 0.0) + (lamp.rated_w or 0.0)
    hours = night_hours(
        np.array([c.location.lat for c in cabinets], dtype=np.float64),
        np.array([c.location.lon for c in cabinets], dtype=np.float64),
        first,
        nights,
        tz,
    )
    start = datetime.combine(first, DAY_STARTS, tz).timestamp()
    end = datetime.combine(first + timedelta(days=nights), DAY_STARTS, tz).timestamp()
    out = []
    for cabinet, burning in zip(cabinets, hours.tolist(), strict=True):
        rated_kw = load_w.get(cabinet.index, 0.0) / 1000.0
        kwh, note = await _metered(reader, cabinet, start, end)
        out.append(
            CabinetEnergy(
                cabinet.id,
                cabinet.location.name,
                round(rated_kw, 3),
                round(rated_kw * burning, 2),
                None if kwh is None else round(kwh, 2),
                note,
            )
        )
    return out


async def _metered(
    reader: TelemetryReader, cabinet: Device, start: float, end: float
) -> tuple[float | None, str]:
    """The counter's rise from ``start`` to ``end``, or None and why not."""
    if ENERGY_POINT not in {p.name for p in cabinet.points}:
        return None, "no energy counter"
    # Zero is no counter reading: a terminal that has not read its meter yet says 0.
    opening = [
        s for s in await reader.raw(cabinet, ENERGY_POINT, start, start + EDGE_S, 50) if s.value
    ]
    closing = [
        s for s in await reader.raw(cabinet, ENERGY_POINT, end - EDGE_S, end, 100_000) if s.value
    ]
    if not opening or not closing:
        return None, "no counter reading near the start or the end"
    first, last = opening[0].value, closing[-1].value
    assert first is not None and last is not None
    if last < first:
        return None, "the counter went back (a meter replaced or reset)"
    return last - first, ""
