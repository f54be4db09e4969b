"""Insert-or-update by primary key, in the dialect of the state database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def upsert(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (each with every column): new keys inserted, existing ones replaced."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    keys = {c.name for c in table.primary_key.columns}
    replace = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    await conn.execute(
        statement.on_conflict_do_update(index_elements=list(keys), set_=replace), rows
    )
