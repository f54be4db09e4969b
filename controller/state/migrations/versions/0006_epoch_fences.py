"""The epoch of the leader on each alarm, case and case transition, with PostgreSQL
refusing a write of an older epoch than the lease's, as it does for the audit log (0005).

A leader cut off from the database keeps judging, and its alarms and the cases
they raise wait to be written. If the standby has led meanwhile, the two have
raised the same faults under alarm ids that may collide: what waited must not
land over the new leader's.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FENCED = ("alarm", "cases", "case_transitions")


def upgrade() -> None:
    for table in FENCED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("epoch", sa.Integer(), nullable=True))
        if op.get_bind().dialect.name == "postgresql":
            # The function of 0005 reads only NEW.epoch: one fence for every table.
            op.execute(
                f"CREATE TRIGGER {table}_epoch_fence BEFORE INSERT OR UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_epoch_fence()"
            )


def downgrade() -> None:
    raise NotImplementedError("no downgrade: restore the backup taken before the upgrade")
