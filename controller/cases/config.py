"""The ``cases:`` section of config.yaml: categories, time limits, routing, delivery.

A city's component and event classification (部件/事件 class codes) and its
department responsibilities are its own, so they are configuration: which
alarm becomes which category of case, how long each category and severity
may take, and which department a grid cell's cases of a category go to.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.device_class import DeviceClass

EnvName = str
Severity = Literal["low", "medium", "high", "urgent"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseCategory(_Strict):
    """A kind of case: a component (部件: a lamp, a cabinet) or an event (事件: waterlogging)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    #: component (部件) or event (事件), as the city-management classification splits them.
    kind: Literal["component", "event"]
    #: Class and subclass codes of the city's classification standard.
    code: str = ""
    subcode: str = ""
    #: Alarms of devices of this class (and, if given, of these rule kinds) become this category.
    device_class: DeviceClass | None = None
    rule_kinds: list[str] | None = None


class TimeLimit(_Strict):
    """How long a case may take from filing to closing; the most specific match wins."""

    category: str | None = None
    severity: Severity | None = None
    minutes: float = Field(gt=0)


class RoutingRule(_Strict):
    """Which department a case goes to; first match wins."""

    category: str | None = None
    #: Grid cell codes starting with this (a district's cells share a prefix).
    grid_prefix: str | None = None
    department: str = Field(min_length=1)


class WebhookConfig(_Strict):
    """Where every case transition is delivered (HMAC-signed JSON)."""

    url: str = Field(pattern=r"^https?://")
    #: Environment variable holding the HMAC secret (never in this file).
    secret_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout: float = Field(default=10.0, gt=0)
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=300.0, gt=0)


class CasesConfig(_Strict):
    """Cases into the city-management workflow."""

    enabled: bool = True
    #: Sensor cases are accepted, filed and dispatched without a person in between.
    auto_dispatch: bool = True
    #: Polls with the fault gone after which telemetry verifies a case.
    verify_polls: int = Field(default=3, ge=1)
    #: How often overdue cases are looked for (seconds).
    overdue_check_interval: float = Field(default=30.0, gt=0)
    #: Readings around an alarm kept as the case's evidence (minutes before it).
    evidence_minutes: float = Field(default=15.0, ge=0)
    categories: list[CaseCategory] = [
        CaseCategory(
            id="streetlight",
            name="路灯",
            kind="component",
            code="01",
            subcode="0110",
            device_class="lamp",
        ),
        CaseCategory(
            id="control_cabinet",
            name="路灯控制箱",
            kind="component",
            code="01",
            subcode="0111",
            device_class="cabinet",
        ),
        CaseCategory(
            id="waterlogging",
            name="道路积水",
            kind="event",
            code="04",
            subcode="0401",
            device_class="gauge",
        ),
    ]
    time_limits: list[TimeLimit] = [
        TimeLimit(category="waterlogging", severity="urgent", minutes=30),
        TimeLimit(category="waterlogging", minutes=120),
        TimeLimit(severity="urgent", minutes=240),
        TimeLimit(minutes=2880),
    ]
    routing: list[RoutingRule] = []
    webhook: WebhookConfig | None = None
    #: Open311 GeoReport v2: the jurisdiction this endpoint answers for.
    jurisdiction_id: str = "streetsense"

    @model_validator(mode="after")
    def _references(self) -> CasesConfig:
        ids = [c.id for c in self.categories]
        if len(set(ids)) != len(ids):
            raise ValueError("category ids must be unique")
        named = [t.category for t in self.time_limits] + [r.category for r in self.routing]
        for category in named:
            if category is not None and category not in ids:
                raise ValueError(f"unknown category {category!r} (known: {', '.join(ids)})")
        return self
