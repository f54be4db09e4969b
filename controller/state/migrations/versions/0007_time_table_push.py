"""The last push of each device-mode cabinet's time table, kept in the state database
so that the standby of a pair, and a new leader, show it (it was in the leader's memory).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "time_table_push",
        sa.Column("cabinet", sa.String(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("night", sa.String(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("cabinet"),
    )


def downgrade() -> None:
    raise NotImplementedError("no downgrade: restore the backup taken before the upgrade")
