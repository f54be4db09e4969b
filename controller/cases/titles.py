"""Case titles that name the fault in words a dispatcher reads, from the one catalogue.

A title built from the alarm's raw fields ("threshold level 1") reads the same
for a supply loss and for leakage; these words come from the rule's kind and
the point it watches, in the catalogue the console and the reports use
(``kind.*``, ``fault.*``, ``level.*``), so a fault has one name everywhere.
Titles are written in Chinese: they are the city's record and go to its
platform.
"""

from __future__ import annotations

from controller.catalogue import Lang, catalogue
from rules.alarm_model import SENSOR_FAULT, Alarm

#: Kinds of rule named by their kind; the other (threshold) alarms by the point they watch.
_NAMED_KINDS = frozenset(
    {
        "circuit_break",
        "contactor",
        "comm_loss",
        "lamp_failure",
        "lamp_power",
        "lamp_cycling",
        "day_burning",
        "stuck",
        "rate_of_change",
        SENSOR_FAULT,
    }
)
_FLOOD_BANDS = frozenset({"blue", "yellow", "orange", "red"})
#: The note of a case found past its time limit.
OVERDUE_NOTE = "已超过处置时限"


def _voltage_words(alarm: Alarm, lang: Lang) -> str | None:
    if not alarm.point.startswith("voltage_"):
        return None
    phase = alarm.point.removeprefix("voltage_").upper()
    # Which way the limit was crossed, from the alarm itself rather than the rule's id.
    low = alarm.value is not None and alarm.limit is not None and alarm.value < alarm.limit
    return catalogue().text("fault.voltage_low" if low else "fault.voltage_high", lang, phase=phase)


def fault_words(alarm: Alarm, lang: Lang = "zh") -> str:
    """What is wrong, in words: 停电, 漏电 1级, 线路中断 回路2, 积水 红色预警 ..."""
    words = catalogue()
    if alarm.kind in _NAMED_KINDS:
        fault = words.text(f"kind.{alarm.kind}", lang)
        if alarm.kind in ("circuit_break", "contactor") and alarm.circuit is not None:
            fault = words.text("fault.on_circuit", lang, fault=fault, n=alarm.circuit)
        return fault
    point_key = f"fault.point.{alarm.point}"
    fault = (
        (words.text(point_key, lang) if point_key in words.entries else None)
        or _voltage_words(alarm, lang)
        or alarm.rule
    )
    if alarm.point == "water_level" and alarm.level_name in _FLOOD_BANDS:
        colour = words.text(f"level.{alarm.level_name}", lang)
        return words.text("fault.flood", lang, fault=fault, colour=colour)
    if alarm.point == "leakage_current":
        return words.text("fault.numbered", lang, fault=fault, n=alarm.level)
    return fault


def case_title(category_name: str, alarm: Alarm) -> str:
    """A case's title: its category, the device and the fault in words."""
    return f"{category_name} {alarm.device}: {fault_words(alarm)}".strip()


def case_description(alarm: Alarm, name: str) -> str:
    """What a sensor case says happened: the fault, where, and the reading against its limit."""
    words = catalogue()
    where = alarm.device + (f"（{name}）" if name else "")
    text = words.text("case.alarm_at", "zh", fault=fault_words(alarm), where=where)
    if alarm.value is not None:
        text += words.text("case.reading", "zh", value=f"{alarm.value:g}")
    if alarm.limit is not None:
        text += words.text("case.limit", "zh", limit=f"{alarm.limit:g}")
    return text


def escalation_note(alarm: Alarm) -> str:
    """The note of a case's escalation: its new severity and the fault now."""
    severity = catalogue().term("severity", alarm.severity, "zh")
    return catalogue().text("case.escalated", "zh", severity=severity, fault=fault_words(alarm))
