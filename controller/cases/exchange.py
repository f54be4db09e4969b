"""The case exchange record: one documented shape for the API, webhooks and the provincial export.

Field names and meanings follow the city-management case data items
(案件编号, 来源, 部件/事件 大类/小类, 部件编码, 行政区/街道/社区/网格编码, 坐标,
地址, 问题描述, 多媒体, 责任部门, and the times of each stage). The JSON
Schema in ``docs/case-exchange.schema.json`` is generated from this model
(``python -m controller.cases.exchange``); a test fails when it is stale.
"""

from __future__ import annotations

import json
import sys
from typing import Literal

from pydantic import BaseModel, Field

from controller.cases.db import CaseRow, TransitionRow

SCHEMA_ID = "https://streetsense.example/schemas/case-exchange/1.json"


class CaseRecord(BaseModel):
    """One case. Times are Unix seconds (UTC); absent times are null."""

    id: int = Field(description="case number (案件编号), unique in this controller")
    source: Literal["sensor", "inspector", "hotline", "open311"] = Field(
        description="how the case came in (案件来源)"
    )
    stage: str = Field(description="current stage of the closed loop")
    category: str = Field(
        description="category id (streetlight, control_cabinet, waterlogging, ...)"
    )
    category_kind: Literal["component", "event"] = Field(description="部件 or 事件")
    class_code: str = Field(description="main class code of the city's classification (大类)")
    subclass_code: str = Field(description="subclass code (小类)")
    severity: Literal["low", "medium", "high", "urgent"]
    title: str
    description: str = Field(description="problem description (问题描述)")
    component_id: str = Field(description="component code (部件编码): pole id or device id")
    device_id: str = Field(description="streetsense device the alarm came from, if any")
    admin_code: str = Field(description="administrative division code (行政区划代码)")
    street_code: str = Field(description="street (sub-district) code (街道编码)")
    community_code: str = Field(description="community code (社区编码)")
    grid: str = Field(description="grid cell code (单元网格编码)")
    road: str
    district: str
    lat: float = Field(description="WGS 84 latitude")
    lon: float = Field(description="WGS 84 longitude")
    address: str
    media: list[str] = Field(description="links to photos and videos (多媒体)")
    alarm_ids: list[int] = Field(description="streetsense alarms behind the case")
    department: str = Field(description="responsible department (责任部门)")
    assignee: str
    reported_at: float
    accepted_at: float | None
    filed_at: float | None
    dispatched_at: float | None
    due_at: float | None = Field(description="time limit (处置时限)")
    disposed_at: float | None
    verified_at: float | None
    closed_at: float | None
    updated_at: float
    overdue: bool
    evaluation: Literal["", "on_time", "overdue", "reworked"] = Field(
        description="assessment at closing (评价)"
    )
    rework_count: int
    extension_count: int
    return_count: int

    @classmethod
    def from_row(cls, row: CaseRow) -> CaseRecord:
        """The record of a stored case."""
        return cls.model_validate(row, from_attributes=True)


class TransitionRecord(BaseModel):
    """One step of a case."""

    id: int
    action: str
    from_stage: str
    to_stage: str
    at: float
    actor: str
    role: str
    note: str
    details: dict[str, object]

    @classmethod
    def from_row(cls, row: TransitionRow) -> TransitionRecord:
        """The record of a stored transition."""
        return cls.model_validate(row, from_attributes=True)


class CaseExport(BaseModel):
    """An export for the provincial platform: cases with their whole history."""

    schema_: str = Field(default=SCHEMA_ID, alias="$schema")
    city: str
    exported_at: float
    cases: list[CaseWithHistory]


class CaseWithHistory(CaseRecord):
    """A case and its transitions."""

    transitions: list[TransitionRecord]


CaseExport.model_rebuild()


def json_schema() -> str:
    """The exchange document's JSON Schema, as published in docs/."""
    schema = CaseExport.model_json_schema(by_alias=True)
    schema["$id"] = SCHEMA_ID
    schema["title"] = "streetsense case exchange"
    return json.dumps(schema, ensure_ascii=False, indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(json_schema())
