"""Case titles that name the fault in words a dispatcher reads (Chinese first).

A title built from the alarm's raw fields ("threshold level 1") reads the same
for a supply loss and for leakage; these words come from the rule's kind and
the point it watches.
"""

from __future__ import annotations

from rules.alarm_model import SENSOR_FAULT, Alarm

#: Words for a fault by the kind of rule that found it.
_KIND_WORDS: dict[str, str] = {
    "circuit_break": "线路中断",
    "contactor": "接触器不动作",
    "comm_loss": "通信中断",
    "lamp_failure": "灯具故障",
    "lamp_power": "灯具功率异常",
    "lamp_cycling": "灯具频繁开关",
    "day_burning": "白天亮灯",
    "stuck": "读数卡滞",
    "rate_of_change": "水位快速上涨",
    SENSOR_FAULT: "传感器故障",
}

#: Words for a threshold alarm by the point it watches.
_POINT_WORDS: dict[str, str] = {
    "mains_present": "停电",
    "leakage_current": "漏电",
    "door_open": "箱门打开",
    "power_factor": "功率因数低",
    "water_level": "积水",
}

_FLOOD_COLOURS = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}


def _voltage_words(alarm: Alarm) -> str | None:
    if not alarm.point.startswith("voltage_"):
        return None
    phase = alarm.point.removeprefix("voltage_").upper()
    # Which way the limit was crossed, from the alarm itself rather than the rule's id.
    low = alarm.value is not None and alarm.limit is not None and alarm.value < alarm.limit
    return f"{phase}相{'欠压' if low else '过压'}"


def fault_words(alarm: Alarm) -> str:
    """What is wrong, in words: 停电, 漏电 1级, 线路中断 回路2, 积水 红色预警 ..."""
    if alarm.kind in _KIND_WORDS:
        words = _KIND_WORDS[alarm.kind]
        if alarm.kind in ("circuit_break", "contactor") and alarm.circuit is not None:
            words += f" 回路{alarm.circuit}"
        return words
    words = _POINT_WORDS.get(alarm.point) or _voltage_words(alarm) or alarm.rule
    if alarm.point == "water_level" and alarm.level_name in _FLOOD_COLOURS:
        return f"{words} {_FLOOD_COLOURS[alarm.level_name]}预警"
    if alarm.point == "leakage_current":
        return f"{words} {alarm.level}级"
    return words


def case_title(category_name: str, alarm: Alarm) -> str:
    """A case's title: its category, the device and the fault in words."""
    return f"{category_name} {alarm.device}: {fault_words(alarm)}".strip()
