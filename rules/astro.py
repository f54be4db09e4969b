"""Sunrise and sunset for many places at once (NOAA's solar equations, vectorized).

Accurate to about a minute between the polar circles, which is what a
lighting schedule needs. Times are Unix seconds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: The sun's centre 0.833 degrees below the horizon: refraction plus the solar radius.
_ZENITH = np.radians(90.833)

FloatArray = npt.NDArray[np.float64]


def sun_times(lat: FloatArray, lon: FloatArray, when: float) -> tuple[FloatArray, FloatArray]:
    """Sunrise and sunset of the local solar day containing ``when`` at each place.

    Where the sun does not set (polar day) sunrise is the day's start and sunset
    its end; where it does not rise, both are the solar noon.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    # The local solar date: shift UTC by 4 minutes per degree of longitude.
    local = when + lon * 240.0
    # 00:00 UTC of the calendar date that is the local solar date (NOAA counts from there).
    day_start = np.floor(local / 86400.0) * 86400.0
    dates = day_start.astype("datetime64[s]")
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype("timedelta64[D]").astype(
        np.float64
    ) + 1.0
    gamma = 2 * np.pi / 365.0 * (day_of_year - 1 + 0.5)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * np.cos(gamma)
        - 0.032077 * np.sin(gamma)
        - 0.014615 * np.cos(2 * gamma)
        - 0.040849 * np.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * np.cos(gamma)
        + 0.070257 * np.sin(gamma)
        - 0.006758 * np.cos(2 * gamma)
        + 0.000907 * np.sin(2 * gamma)
        - 0.002697 * np.cos(3 * gamma)
        + 0.00148 * np.sin(3 * gamma)
    )
    phi = np.radians(lat)
    cos_ha = np.cos(_ZENITH) / (np.cos(phi) * np.cos(decl)) - np.tan(phi) * np.tan(decl)
    ha = np.degrees(np.arccos(np.clip(cos_ha, -1.0, 1.0)))
    noon = 720.0 - 4.0 * lon - eqtime  # minutes after 00:00 UTC of that date
    return day_start + (noon - 4.0 * ha) * 60.0, day_start + (noon + 4.0 * ha) * 60.0
