"""The classes of device a city has: what rules, queries and cases select by."""

from __future__ import annotations

from typing import Literal

#: Control cabinets, single lamps, water-level gauges, and energy meters.
DeviceClass = Literal["cabinet", "lamp", "gauge", "meter"]
