"""Alarm inhibition: what silences an alarm whose cause is already known.

An offline device (comm loss) silences its own alarms and those of the lamps
reached through it; a cut circuit silences the lamps it feeds; a rule may
name rules whose alarms on the same device it inhibits. Inhibited alarms are
still evaluated and recorded, only marked suppressed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TypeVar

from rules.alarm_model import Alarm
from rules.config import RuleConfig
from rules.site import Site

_Key = TypeVar("_Key", bound=Hashable)


class Inhibition:
    """The inhibiting conditions now in force, and the question "what suppresses this alarm?"."""

    def __init__(self, rules: list[RuleConfig], site: Site) -> None:
        self.site = site
        #: Devices whose alarms are inhibited, and by what (comm loss, cut circuit).
        self.offline: set[str] = set()
        self.cut: set[tuple[str, int]] = set()
        #: rule id -> rules whose alarms on the same device it inhibits.
        self.inhibits = {r.id: set(r.inhibits) for r in rules if r.inhibits}

    def seed(self, alarm: Alarm) -> None:
        """Take up the inhibition an open alarm loaded at start implies."""
        if alarm.kind == "comm_loss" and alarm.active:
            self.offline.add(alarm.device)
        if alarm.kind == "circuit_break" and alarm.active:
            self.cut.add((alarm.device, alarm.sub))

    def set_offline(self, device_index: int, on: bool) -> list[str]:
        """Mark a device offline or back; returns the devices whose alarms to recompute."""
        device = self.site.devices[device_index]
        _toggle(self.offline, device.id, on)
        return [device.id, *(lamp.id for lamp in self.site.lamps_of(device_index))]

    def set_cut(self, cabinet_index: int, circuit: int, on: bool) -> list[str]:
        """Mark a cabinet's circuit cut or restored; returns the lamps it feeds."""
        cabinet = self.site.devices[cabinet_index]
        _toggle(self.cut, (cabinet.id, circuit), on)
        return [lamp.id for lamp in self.site.lamps_of(cabinet_index) if lamp.circuit == circuit]

    def inhibits_others(self, rule_id: str) -> bool:
        """Whether alarms of this rule inhibit other rules' alarms on their device."""
        return rule_id in self.inhibits

    def inhibitor(
        self, device_index: int, kind: str, rule_id: str, open_on_device: Iterable[Alarm]
    ) -> str | None:
        """What suppresses an alarm of ``kind``/``rule_id`` on this device, or None."""
        device = self.site.devices[device_index]
        if kind == "comm_loss":
            return None
        owner = self.site.devices[device.parent].id if device.parent is not None else None
        if device.id in self.offline:
            return f"comm_loss:{device.id}"
        if owner is not None and owner in self.offline:
            return f"comm_loss:{owner}"
        if owner is not None and device.circuit is not None and (owner, device.circuit) in self.cut:
            return f"circuit_break:{owner}/{device.circuit}"
        for other in open_on_device:
            if other.active and rule_id in self.inhibits.get(other.rule, ()):
                return f"{other.rule}:{device.id}"
        return None


def _toggle(table: set[_Key], key: _Key, on: bool) -> None:
    if on:
        table.add(key)
    else:
        table.discard(key)
