"""The alarm lifecycle in the ISA-18.2 style: rule events become alarms, operators act on them.

The model is in ``rules.alarm_model``, inhibition in ``rules.inhibition``,
flood detection in ``rules.alarm_floods``; this module carries an alarm from
raised through acknowledged, returned and cleared, and persists what changed.

There is one open alarm per (rule, device, sub): a repeat updates its
last-seen time and count. A higher level of a threshold alarm returns it to
unacknowledged and notifies again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from drivers.errors import PeopleMessage
from rules import kernels as K
from rules.alarm_floods import AlarmFloodDetector
from rules.alarm_model import (
    SENSOR_FAULT,
    Alarm,
    AlarmBatch,
    AlarmError,
    AlarmNotice,
    AlarmRefused,
    AlarmStorage,
    Condition,
    NoticeHandler,
)
from rules.config import LEVEL_NAMES, AlarmsConfig, RuleConfig, Severity, ThresholdRule
from rules.engine import RuleEvents
from rules.inhibition import Inhibition
from rules.site import Site

log = logging.getLogger(__name__)

#: Flood levels blue, yellow, orange, red map to these severities unless a rule says otherwise.
_LEVEL_SEVERITY: tuple[Severity, ...] = ("low", "medium", "high", "urgent")


def _finite_or_none(x: float) -> float | None:
    return None if x != x else x


class AlarmManager:
    """Turns rule events into alarms and carries them through their lifecycle."""

    def __init__(
        self,
        rules: list[RuleConfig],
        registry: Site,
        cfg: AlarmsConfig,
        store: AlarmStorage,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.registry = registry
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.open: dict[tuple[str, str, int], Alarm] = {}
        self.by_id: dict[int, Alarm] = {}
        self._next_id = 1
        self._handlers: list[NoticeHandler] = []
        self._flood_detector = AlarmFloodDetector(cfg)
        self._dirty: dict[int, Alarm] = {}
        self.inhibition = Inhibition(rules, registry)
        #: Keys of open alarms per device: inhibition looks at one device, never at all alarms.
        self._open_by_device: dict[str, set[tuple[str, str, int]]] = {}

    def subscribe(self, handler: NoticeHandler) -> Callable[[], None]:
        """Call ``handler`` with every announced transition; returns its unsubscribe."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler)

    async def start(self) -> list[Alarm]:
        """Load open alarms; returns them so the engine's state can be seeded."""
        loaded = await self.store.open()
        self._next_id = await self.store.next_id()
        self._forget()
        for alarm in loaded:
            self._track(alarm)
            self.inhibition.seed(alarm)
        return loaded

    @property
    def floods(self) -> dict[str, float]:
        """Areas in alarm flood now -> time of the new alarm that last kept them there."""
        return self._flood_detector.floods

    def _describe(self, rule: RuleConfig | None, kind: str, level: int) -> tuple[str, str]:
        if rule is not None and isinstance(rule, ThresholdRule):
            if rule.levels_from_device and 1 <= level <= 4:
                name = LEVEL_NAMES[level - 1]
            else:
                name = f"level {level}"
            severity: Severity = rule.severity
            if rule.level_severity and level <= len(rule.level_severity):
                severity = rule.level_severity[level - 1]
            elif rule.levels_from_device:
                severity = _LEVEL_SEVERITY[min(level, 4) - 1]
            return name, severity
        return ("active" if level else "normal"), (rule.severity if rule else "medium")

    def _open_on(self, device_id: str) -> Iterator[Alarm]:
        return (self.open[key] for key in self._open_by_device.get(device_id, ()))

    def _inhibitor(self, device_index: int, kind: str, rule_id: str) -> str | None:
        device_id = self.registry.devices[device_index].id
        return self.inhibition.inhibitor(device_index, kind, rule_id, self._open_on(device_id))

    async def apply(self, events: RuleEvents) -> list[AlarmNotice]:
        """Apply rule events in time order; announce what should be announced."""
        notices: list[AlarmNotice] = []
        for i in range(len(events)):
            r = int(events.rule[i])
            if (
                r >= 0
                and self.inhibition.inhibits_others(self.rules[r].id)
                and int(events.kind[i]) == K.EV_RULE
            ):
                inhibitor_device = self.registry.devices[int(events.device[i])].id
            else:
                inhibitor_device = None
            notice = self._apply_one(
                int(events.rule[i]),
                int(events.device[i]),
                int(events.sub[i]),
                int(events.kind[i]),
                int(events.level[i]),
                float(events.ts[i]),
                float(events.value[i]),
                float(events.limit[i]),
            )
            if notice is not None:
                notices.append(notice)
            if inhibitor_device is not None:
                self._resuppress([inhibitor_device])
        await self._flush(notices)
        return notices

    def _apply_one(
        self,
        r: int,
        d: int,
        sub: int,
        ev_kind: int,
        level: int,
        ts: float,
        value: float,
        limit: float,
    ) -> AlarmNotice | None:
        rule = self.rules[r] if r >= 0 else None
        device = self.registry.devices[d]
        kind = SENSOR_FAULT if ev_kind == K.EV_SENSOR else (rule.kind if rule else "unknown")
        rule_id = SENSOR_FAULT if ev_kind == K.EV_SENSOR else (rule.id if rule else "unknown")
        key = (rule_id, device.id, sub)
        alarm = self.open.get(key)
        clean = _finite_or_none
        if kind == "comm_loss":
            # An offline cabinet also silences the lamps reached through it.
            self._resuppress(self.inhibition.set_offline(d, level > 0))
        if kind == "circuit_break":
            self._resuppress(self.inhibition.set_cut(d, sub, level > 0))
        if level > 0:
            name, severity = self._describe(rule, kind, level)
            if alarm is None:
                alarm = self._new_alarm(
                    rule,
                    rule_id,
                    kind,
                    device.index,
                    sub,
                    level,
                    name,
                    severity,
                    ts,
                    clean(value),
                    clean(limit),
                )
                return self._note(alarm, "raised", ts)
            alarm.last_seen = ts
            alarm.value, alarm.limit = clean(value), clean(limit)
            escalated = level > alarm.level
            alarm.level, alarm.level_name, alarm.severity = level, name, severity
            if not alarm.active:
                alarm.count += 1
                alarm.condition = Condition.ACTIVE_UNACK
                alarm.cleared_at = None
                return self._note(alarm, "raised", ts)
            if escalated:
                alarm.condition = Condition.ACTIVE_UNACK
                return self._note(alarm, "escalated", ts)
            self._dirty[alarm.id] = alarm
            return None
        if alarm is None or not alarm.active:
            return None
        alarm.last_seen = ts
        alarm.value = clean(value)
        alarm.cleared_at = ts
        alarm.level = 0
        if alarm.condition is Condition.ACTIVE_ACK:
            alarm.condition = Condition.NORMAL
            self._close(alarm, ts)
            return self._note(alarm, "cleared", ts)
        alarm.condition = Condition.RETURNED_UNACK
        return self._note(alarm, "returned", ts)

    def _resuppress(self, device_ids: list[str]) -> None:
        """Recompute which open alarms of these devices are suppressed."""
        for device_id in device_ids:
            for key in list(self._open_by_device.get(device_id, ())):
                self._update_suppression(self.open[key])

    def _update_suppression(self, alarm: Alarm) -> None:
        device = self.registry.by_id.get(alarm.device)
        if device is not None:
            suppressed = self._inhibitor(device.index, alarm.kind, alarm.rule)
            if suppressed != alarm.suppressed_by:
                alarm.suppressed_by = suppressed
                self._dirty[alarm.id] = alarm

    def _new_alarm(
        self,
        rule: RuleConfig | None,
        rule_id: str,
        kind: str,
        d: int,
        sub: int,
        level: int,
        name: str,
        severity: str,
        ts: float,
        value: float | None,
        limit: float | None,
    ) -> Alarm:
        device = self.registry.devices[d]
        loc = device.location
        point = ""
        if kind in ("threshold", "rate_of_change", "stuck", SENSOR_FAULT) and sub < len(
            device.points
        ):
            point = device.points[sub].name
        parent = self.registry.devices[device.parent].id if device.parent is not None else ""
        alarm = Alarm(
            id=self._next_id,
            rule=rule_id,
            kind=kind,
            device=device.id,
            device_class=device.device_class,
            sub=sub,
            point=point,
            severity=severity,
            level=level,
            level_name=name,
            condition=Condition.ACTIVE_UNACK,
            value=value,
            limit=limit,
            raised_at=ts,
            last_seen=ts,
            grid=loc.grid,
            road=loc.road,
            district=loc.district,
            cabinet=device.id if device.device_class == "cabinet" else parent,
            circuit=sub if kind in ("circuit_break", "contactor") else device.circuit,
            lat=loc.lat,
            lon=loc.lon,
            case=bool(rule.case) if rule else False,
            suppressed_by=self._inhibitor(d, kind, rule_id),
        )
        self._next_id += 1
        self._track(alarm)
        self._flood_detector.count_new(alarm, ts)
        return alarm

    def _note(self, alarm: Alarm, transition: str, ts: float) -> AlarmNotice | None:
        if transition in ("raised", "returned", "cleared"):
            # Chattering is flapping between alarm and normal; escalation is not a flap.
            alarm.transitions.append(ts)
        alarm.transitions = [t for t in alarm.transitions if ts - t <= self.cfg.chatter_window]
        alarm.chattering = len(alarm.transitions) >= self.cfg.chatter_transitions
        self._dirty[alarm.id] = alarm
        if not alarm.notifies_at(self.clock()):
            return None
        if alarm.chattering and transition in ("raised", "returned"):
            return None  # a chattering alarm is flagged once, not announced at every flap
        return AlarmNotice(alarm, transition)

    def mirror(self, alarms: list[Alarm]) -> None:
        """Show these open alarms instead of the ones known (a standby shows its leader's)."""
        self._forget()
        for alarm in alarms:
            self._track(alarm)

    def _forget(self) -> None:
        self.open.clear()
        self.by_id.clear()
        self._open_by_device.clear()

    def _track(self, alarm: Alarm) -> None:
        self.open[alarm.key] = alarm
        self.by_id[alarm.id] = alarm
        self._open_by_device.setdefault(alarm.device, set()).add(alarm.key)

    def _close(self, alarm: Alarm, ts: float) -> None:
        alarm.closed_at = ts
        self.open.pop(alarm.key, None)
        self._open_by_device.get(alarm.device, set()).discard(alarm.key)

    async def _flush(self, notices: list[AlarmNotice]) -> None:
        dirty, self._dirty = list(self._dirty.values()), {}
        await self.store.save(dirty)
        for notice in notices:
            for handler in self._handlers:
                try:
                    await handler(notice)
                except Exception:
                    log.exception("alarm notice handler %r failed", handler)

    def _get(self, alarm_id: int) -> Alarm:
        alarm = self.by_id.get(alarm_id)
        if alarm is None or alarm.closed_at is not None:
            raise KeyError(alarm_id)
        return alarm

    def _acknowledge(self, alarm_id: int, who: str) -> Alarm:
        alarm = self._get(alarm_id)
        now = self.clock()
        if alarm.condition is Condition.ACTIVE_UNACK:
            alarm.condition = Condition.ACTIVE_ACK
        elif alarm.condition is Condition.RETURNED_UNACK:
            alarm.condition = Condition.NORMAL
            self._close(alarm, now)
        else:
            raise AlarmError(
                f"alarm {alarm_id} is {alarm.condition.value}: nothing to acknowledge",
                PeopleMessage(
                    "refusal.alarm_acknowledged",
                    {"alarm": alarm_id, "alarm_state": alarm.condition.value},
                ),
            )
        alarm.acked_at, alarm.acked_by = now, who
        self._dirty[alarm.id] = alarm
        return alarm

    def _shelve(self, alarm_id: int, who: str, minutes: float) -> Alarm:
        alarm = self._get(alarm_id)
        alarm.shelved_until = self.clock() + minutes * 60.0
        alarm.shelved_by = who
        self._dirty[alarm.id] = alarm
        return alarm

    async def acknowledge(self, alarm_id: int, who: str) -> Alarm:
        """Acknowledge: active alarms stay active; returned ones close."""
        alarm = self._acknowledge(alarm_id, who)
        await self._flush([AlarmNotice(alarm, "acknowledged")])
        return alarm

    async def shelve(self, alarm_id: int, who: str, minutes: float) -> Alarm:
        """Shelve for ``minutes``: still evaluated and recorded, not announced."""
        alarm = self._shelve(alarm_id, who, minutes)
        await self._flush([AlarmNotice(alarm, "shelved")])
        return alarm

    async def acknowledge_many(self, alarm_ids: list[int], who: str) -> AlarmBatch:
        """Acknowledge several alarms in one save (a duty officer's bulk action); each one
        that cannot be acknowledged is refused with its reason, the others go ahead."""
        return await self._batch(alarm_ids, lambda i: self._acknowledge(i, who), "acknowledged")

    async def shelve_many(self, alarm_ids: list[int], who: str, minutes: float) -> AlarmBatch:
        """Shelve several alarms for ``minutes`` in one save."""
        return await self._batch(alarm_ids, lambda i: self._shelve(i, who, minutes), "shelved")

    async def _batch(
        self, alarm_ids: list[int], change: Callable[[int], Alarm], transition: str
    ) -> AlarmBatch:
        batch = AlarmBatch()
        for alarm_id in dict.fromkeys(alarm_ids):  # each once, in the order given
            try:
                batch.done.append(change(alarm_id))
            except KeyError:
                gone = PeopleMessage("refusal.alarm_not_open", {"alarm": alarm_id})
                batch.refused.append(AlarmRefused(alarm_id, f"no open alarm {alarm_id}", gone))
            except AlarmError as error:
                assert error.message is not None  # every alarm refusal is worded
                batch.refused.append(AlarmRefused(alarm_id, error.reason, error.message))
        await self._flush([AlarmNotice(a, transition) for a in batch.done])
        return batch

    async def unshelve(self, alarm_id: int, who: str) -> Alarm:
        """End shelving now."""
        alarm = self._get(alarm_id)
        if alarm.shelved_until is None:
            raise AlarmError(
                f"alarm {alarm_id} is not shelved",
                PeopleMessage("refusal.alarm_not_shelved", {"alarm": alarm_id}),
            )
        alarm.shelved_until, alarm.shelved_by = None, who
        self._dirty[alarm.id] = alarm
        await self._flush([AlarmNotice(alarm, "unshelved")])
        return alarm

    async def set_out_of_service(self, alarm_id: int, who: str, on: bool) -> Alarm:
        """Take an alarm out of service (maintenance) or return it."""
        alarm = self._get(alarm_id)
        alarm.out_of_service = on
        alarm.shelved_by = who if on else alarm.shelved_by
        self._dirty[alarm.id] = alarm
        await self._flush([AlarmNotice(alarm, "out_of_service" if on else "in_service")])
        return alarm

    def list(self) -> list[Alarm]:
        """Open alarms, newest first."""
        return sorted(self.open.values(), key=lambda a: a.raised_at, reverse=True)

    def state_of(self, alarm: Alarm) -> str:
        """``alarm``'s state now, by this manager's clock."""
        return alarm.state_at(self.clock())

    async def close(self) -> None:
        """Save what changed and close the store."""
        await self._flush([])
        await self.store.close()
