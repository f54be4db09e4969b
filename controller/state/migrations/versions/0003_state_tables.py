"""The stores that kept SQLite files of their own move into the state database:
alarms, the audit log, overrides, the asset register, and the record of
which of their old files have been imported (``controller.state.legacy``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarm",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("device_class", sa.String(), nullable=False),
        sa.Column("sub", sa.Integer(), nullable=False),
        sa.Column("point", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("level_name", sa.String(), nullable=False),
        sa.Column("condition", sa.String(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("limit", sa.Float(), nullable=True),
        sa.Column("raised_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("acked_at", sa.Float(), nullable=True),
        sa.Column("acked_by", sa.String(), nullable=True),
        sa.Column("cleared_at", sa.Float(), nullable=True),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("shelved_until", sa.Float(), nullable=True),
        sa.Column("shelved_by", sa.String(), nullable=True),
        sa.Column("suppressed_by", sa.String(), nullable=True),
        sa.Column("out_of_service", sa.Boolean(), nullable=False),
        sa.Column("chattering", sa.Boolean(), nullable=False),
        sa.Column("grid", sa.String(), nullable=False),
        sa.Column("road", sa.String(), nullable=False),
        sa.Column("district", sa.String(), nullable=False),
        sa.Column("cabinet", sa.String(), nullable=False),
        sa.Column("circuit", sa.Integer(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("case", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("alarm_open", "alarm", ["closed_at"])
    op.create_index("alarm_raised", "alarm", ["raised_at"])

    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("who", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=True),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("target_count", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("confirmed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("results", sa.Text(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("audit_at", "audit", ["at"])

    op.create_table(
        "override",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("who", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("cancelled_at", sa.Float(), nullable=True),
        sa.Column("applied", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("ended", sa.Boolean(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )

    op.create_table(
        "pole",
        sa.Column("pole_id", sa.String(), nullable=False),
        sa.Column("cabinet", sa.String(), nullable=True),
        sa.Column("circuit", sa.Integer(), nullable=True),
        sa.Column("road", sa.String(), nullable=False),
        sa.Column("grid", sa.String(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("pole_id"),
    )
    op.create_index("pole_road", "pole", ["road"])
    op.create_index("pole_grid", "pole", ["grid"])
    op.create_index("pole_cabinet", "pole", ["cabinet", "circuit"])

    op.create_table(
        "legacy_import",
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("store", sa.String(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )


def downgrade() -> None:
    raise NotImplementedError("no downgrade: restore the backup taken before the upgrade")
