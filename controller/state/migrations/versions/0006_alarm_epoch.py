"""The epoch of the leader that judged each alarm, with PostgreSQL refusing a write of an
older epoch than the lease's, as it does for the audit log (0005).

A leader cut off from the database keeps judging, and its alarms wait to be
written. If the standby has led meanwhile, the two have raised the same faults
under ids that may collide: the waiting alarms must not land over the new
leader's.

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


def upgrade() -> None:
    with op.batch_alter_table("alarm") as alarm:
        alarm.add_column(sa.Column("epoch", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # The function of 0005 reads only NEW.epoch: one fence for both tables.
        op.execute(
            "CREATE TRIGGER alarm_epoch_fence BEFORE INSERT OR UPDATE ON alarm "
            "FOR EACH ROW EXECUTE FUNCTION audit_epoch_fence()"
        )


def downgrade() -> None:
    raise NotImplementedError("no downgrade: restore the backup taken before the upgrade")
