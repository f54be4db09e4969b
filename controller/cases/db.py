"""The case tables: cases, their transitions (who, when, what, note), photos, and the
webhook outbox (each transition waits there until the city platform took it).

They live in the state database (``controller.state.database``) with every other store.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controller.state.database import Base


class CaseRow(Base):
    """One case."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    stage: Mapped[str] = mapped_column(String(32), index=True)
    category: Mapped[str] = mapped_column(String(40), index=True)
    category_kind: Mapped[str] = mapped_column(String(12))
    class_code: Mapped[str] = mapped_column(String(20), default="")
    subclass_code: Mapped[str] = mapped_column(String(20), default="")
    severity: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    component_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    device_id: Mapped[str] = mapped_column(String(64), default="")
    #: rule|device|sub for sensor cases: one open case per fault.
    fault_key: Mapped[str] = mapped_column(String(200), default="", index=True)
    admin_code: Mapped[str] = mapped_column(String(20), default="")
    street_code: Mapped[str] = mapped_column(String(20), default="")
    community_code: Mapped[str] = mapped_column(String(20), default="")
    grid: Mapped[str] = mapped_column(String(32), default="", index=True)
    road: Mapped[str] = mapped_column(String(100), default="")
    district: Mapped[str] = mapped_column(String(100), default="")
    lat: Mapped[float] = mapped_column(Float, default=0.0)
    lon: Mapped[float] = mapped_column(Float, default=0.0)
    address: Mapped[str] = mapped_column(String(300), default="")
    media: Mapped[list[Any]] = mapped_column(default=list)
    alarm_ids: Mapped[list[Any]] = mapped_column(default=list)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    department: Mapped[str] = mapped_column(String(100), default="", index=True)
    assignee: Mapped[str] = mapped_column(String(100), default="")
    reporter: Mapped[str] = mapped_column(String(100), default="")
    #: A citizen's contact details (name, email, phone, device and account ids): personal
    #: data, shown only to the command centre, never in records, exports or Open311 reads.
    contact: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict, nullable=True)
    reported_at: Mapped[float] = mapped_column(index=True)
    accepted_at: Mapped[float | None] = mapped_column(default=None)
    filed_at: Mapped[float | None] = mapped_column(default=None)
    dispatched_at: Mapped[float | None] = mapped_column(default=None)
    due_at: Mapped[float | None] = mapped_column(default=None, index=True)
    disposed_at: Mapped[float | None] = mapped_column(default=None)
    verified_at: Mapped[float | None] = mapped_column(default=None)
    closed_at: Mapped[float | None] = mapped_column(default=None)
    updated_at: Mapped[float] = mapped_column()
    overdue: Mapped[bool] = mapped_column(default=False)
    evaluation: Mapped[str] = mapped_column(String(20), default="")
    rework_count: Mapped[int] = mapped_column(default=0)
    extension_count: Mapped[int] = mapped_column(default=0)
    return_count: Mapped[int] = mapped_column(default=0)
    #: The lease epoch of the leader that last changed it (None: a controller not in a
    #: pair); stamped by the state database's sessions, fenced by PostgreSQL (0006).
    epoch: Mapped[int | None] = mapped_column(Integer, default=None)


class TransitionRow(Base):
    """One step of a case: who did what, when, with what note."""

    __tablename__ = "case_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[float] = mapped_column()
    action: Mapped[str] = mapped_column(String(32))
    from_stage: Mapped[str] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The lease epoch of the leader that wrote it (None: a controller not in a pair).
    epoch: Mapped[int | None] = mapped_column(Integer, default=None)


class PhotoRow(Base):
    """A photo attached to a case (the disposal's proof, an inspector's picture), kept in
    the case database itself so that it moves, backs up and fails over with the case."""

    __tablename__ = "case_photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[float] = mapped_column()
    actor: Mapped[str] = mapped_column(String(100))
    stage: Mapped[str] = mapped_column(String(32))
    content_type: Mapped[str] = mapped_column(String(40))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class OutboxRow(Base):
    """A transition waiting to be delivered by webhook."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column()
    attempts: Mapped[int] = mapped_column(default=0)
    next_at: Mapped[float] = mapped_column(index=True)
    delivered_at: Mapped[float | None] = mapped_column(default=None, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
