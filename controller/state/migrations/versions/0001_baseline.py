"""The case schema as the last release before migrations created it.

A database made by that release (tables, no ``alembic_version``) is stamped
at this revision, not run through it.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("category_kind", sa.String(length=12), nullable=False),
        sa.Column("class_code", sa.String(length=20), nullable=False),
        sa.Column("subclass_code", sa.String(length=20), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("component_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("fault_key", sa.String(length=200), nullable=False),
        sa.Column("admin_code", sa.String(length=20), nullable=False),
        sa.Column("street_code", sa.String(length=20), nullable=False),
        sa.Column("community_code", sa.String(length=20), nullable=False),
        sa.Column("grid", sa.String(length=32), nullable=False),
        sa.Column("road", sa.String(length=100), nullable=False),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("media", sa.JSON(), nullable=False),
        sa.Column("alarm_ids", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("department", sa.String(length=100), nullable=False),
        sa.Column("assignee", sa.String(length=100), nullable=False),
        sa.Column("reporter", sa.String(length=100), nullable=False),
        sa.Column("contact", sa.JSON(), nullable=True),
        sa.Column("reported_at", sa.Double(), nullable=False),
        sa.Column("accepted_at", sa.Double(), nullable=True),
        sa.Column("filed_at", sa.Double(), nullable=True),
        sa.Column("dispatched_at", sa.Double(), nullable=True),
        sa.Column("due_at", sa.Double(), nullable=True),
        sa.Column("disposed_at", sa.Double(), nullable=True),
        sa.Column("verified_at", sa.Double(), nullable=True),
        sa.Column("closed_at", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("overdue", sa.Boolean(), nullable=False),
        sa.Column("evaluation", sa.String(length=20), nullable=False),
        sa.Column("rework_count", sa.Integer(), nullable=False),
        sa.Column("extension_count", sa.Integer(), nullable=False),
        sa.Column("return_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cases_category"), ["category"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_component_id"), ["component_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_department"), ["department"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_due_at"), ["due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_fault_key"), ["fault_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_grid"), ["grid"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_reported_at"), ["reported_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_stage"), ["stage"], unique=False)

    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_outbox_delivered_at"), ["delivered_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_webhook_outbox_next_at"), ["next_at"], unique=False)

    op.create_table(
        "case_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("content_type", sa.String(length=40), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("case_photos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_photos_case_id"), ["case_id"], unique=False)

    op.create_table(
        "case_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_stage", sa.String(length=32), nullable=False),
        sa.Column("to_stage", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("case_transitions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_transitions_case_id"), ["case_id"], unique=False)


def downgrade() -> None:
    raise NotImplementedError("no downgrade: restore the backup taken before the upgrade")
