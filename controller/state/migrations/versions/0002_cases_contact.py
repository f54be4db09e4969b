"""``cases.contact`` on databases created before it was added.

The release before migrations added the column by hand at start; a database
that was never opened by it lacks the column. Where it is present this does
nothing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _has_contact() -> bool:
    return "contact" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("cases")}


def upgrade() -> None:
    if not _has_contact():
        with op.batch_alter_table("cases") as batch_op:
            batch_op.add_column(sa.Column("contact", sa.JSON(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("no downgrade: restore the backup taken before the upgrade")
