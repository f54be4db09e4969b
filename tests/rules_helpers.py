"""Building a rule engine from a small config, and feeding it readings by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.config import LoadedConfig
from controller.registry import Registry
from drivers.readings import ReadingBatch
from rules.compile import compile_rules
from rules.engine import RuleEngine, RuleEvents

T0 = 1_800_000_000.0  # a fixed moment: 2027-01-15 08:00 UTC, 16:00 in China


def site(rules: list[dict[str, Any]], levels: dict[str, float] | None = None) -> dict[str, Any]:
    """One cabinet with 4 lamps on circuits 1-2, one standalone lamp, one gauge."""
    return {
        "polling": {"cabinet_interval": 10, "lamp_interval": 10, "gauge_interval": 10},
        "links": [{"id": "l", "kind": "modbus_tcp", "host": "127.0.0.1", "port": 1502}],
        "cabinets": [
            {
                "id": "CAB",
                "link": "l",
                "unit": 1,
                "lat": 21.86,
                "lon": 111.98,
                "lamp_runs": [
                    {"circuit": 1, "count": 2, "rated_w": 100},
                    {"circuit": 2, "count": 2, "rated_w": 100},
                ],
            }
        ],
        "lamps": [
            {"id": "SLC", "link": "l", "unit": 2, "rated_w": 100, "lat": 21.86, "lon": 111.98}
        ],
        "gauges": [
            {
                "id": "WL",
                "link": "l",
                "unit": 3,
                "levels": levels or {"blue": 0.1, "yellow": 0.2, "orange": 0.3, "red": 0.4},
            }
        ],
        "rules": rules,
    }


@dataclass
class Event:
    """One event, by name."""

    rule: str
    device: str
    sub: int
    kind: int
    level: int
    ts: float
    value: float


class Bench:
    """An engine over a small site; readings given as (device, point, offset s, value)."""

    def __init__(
        self,
        write_config: Callable[[dict[str, Any]], LoadedConfig],
        rules: list[dict[str, Any]],
        **kw: Any,
    ) -> None:
        self.loaded = write_config(site(rules, **kw))
        self.registry = Registry(self.loaded)
        self.compiled = compile_rules(self.loaded.rule_site(), self.registry)
        self.engine = RuleEngine(
            self.compiled, len(self.registry), self.registry.max_points, clock=lambda: T0
        )
        # Every device of the bench was first polled at T0.
        self.engine.start_grace(np.arange(len(self.registry), dtype=np.int64), T0)

    def batch(
        self, readings: list[tuple[str, str, float, float]], bad: bool = False
    ) -> ReadingBatch:
        dev, pt, ts, val = [], [], [], []
        for device_id, point, offset, value in readings:
            device = self.registry.by_id[device_id]
            dev.append(device.index)
            pt.append([p.name for p in device.points].index(point))
            ts.append(T0 + offset)
            val.append(value)
        n = len(dev)
        return ReadingBatch(
            np.asarray(dev, np.int32),
            np.asarray(pt, np.int16),
            np.asarray(ts, np.float64),
            np.asarray(val, np.float64),
            np.full(n, 2 if bad else 0, np.uint8),
        )

    def named(self, events: RuleEvents) -> list[Event]:
        out = []
        for i in range(len(events)):
            r = int(events.rule[i])
            out.append(
                Event(
                    self.compiled.rules[r].id if r >= 0 else "?",
                    self.registry.devices[int(events.device[i])].id,
                    int(events.sub[i]),
                    int(events.kind[i]),
                    int(events.level[i]),
                    float(events.ts[i]) - T0,
                    float(events.value[i]),
                )
            )
        return out

    def feed(self, readings: list[tuple[str, str, float, float]], bad: bool = False) -> list[Event]:
        return self.named(self.engine.evaluate(self.batch(readings, bad)))

    def series(
        self, device: str, point: str, values: list[float], step: float = 10.0, start: float = 0.0
    ) -> list[Event]:
        """Feed one value per poll, each as its own batch (as the poller delivers them)."""
        events: list[Event] = []
        for i, value in enumerate(values):
            events += self.feed([(device, point, start + i * step, value)])
        return events


def lamp_poll(
    lamp: str,
    t: float,
    switch: float = 1,
    lit: float = 1,
    dim: float = 100,
    volts: float = 225,
    power: float = 103,
) -> list[tuple[str, str, float, float]]:
    """The points lamp rules read, as one poll of one lamp."""
    return [
        (lamp, "switch_cmd", t, switch),
        (lamp, "dim_cmd", t, dim),
        (lamp, "lamp_on", t, lit),
        (lamp, "dim_level", t, dim if lit else 0),
        (lamp, "voltage", t, volts),
        (lamp, "power", t, power),
    ]


def cabinet_poll(
    t: float, cmd: list[float], closed: list[float], current: list[float]
) -> list[tuple[str, str, float, float]]:
    """Circuit points of the cabinet, as one poll."""
    out = []
    for c in range(4):
        out += [
            ("CAB", f"circuit{c + 1}_cmd", t, cmd[c]),
            ("CAB", f"circuit{c + 1}_on", t, closed[c]),
            ("CAB", f"circuit{c + 1}_current", t, current[c]),
        ]
    return out
