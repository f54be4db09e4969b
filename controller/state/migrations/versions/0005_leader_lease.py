"""The lease of an active/standby pair, and the epoch of the leader on every audited
command, with PostgreSQL refusing an entry from an epoch older than the lease's.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: A paused leader that wakes up after a take-over may still try to write: the database,
#: not only the node, refuses it. FOR SHARE holds the lease row until the entry commits,
#: so a take-over cannot begin between the check and the write.
FENCE_FUNCTION = """
CREATE FUNCTION audit_epoch_fence() RETURNS trigger AS $$
DECLARE current_epoch integer;
BEGIN
    IF NEW.epoch IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT epoch INTO current_epoch FROM leader_lease WHERE name = 'controller' FOR SHARE;
    IF current_epoch IS NOT NULL AND NEW.epoch < current_epoch THEN
        RAISE EXCEPTION 'fenced: epoch % is older than the lease''s epoch %',
            NEW.epoch, current_epoch USING ERRCODE = 'raise_exception';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("address", sa.String(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("audit") as audit:
        audit.add_column(sa.Column("epoch", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FENCE_FUNCTION)
        op.execute(
            "CREATE TRIGGER audit_epoch_fence BEFORE INSERT OR UPDATE ON audit "
            "FOR EACH ROW EXECUTE FUNCTION audit_epoch_fence()"
        )


def downgrade() -> None:
    raise NotImplementedError("no downgrade: restore the backup taken before the upgrade")
