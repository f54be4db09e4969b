"""Alembic's environment: migrations run on the connection the caller hands in.

``controller.state.schema`` opens the database (SQLite or PostgreSQL, async
drivers) and runs Alembic inside ``run_sync``; there is no alembic.ini.
"""

from __future__ import annotations

from alembic import context

# Imported for their tables: the metadata holds every table of the state database.
from controller.state.database import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place: batch mode rebuilds the table.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
