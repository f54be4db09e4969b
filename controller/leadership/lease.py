"""The lease row: who leads, since when, until when, and the fencing epoch.

One row in ``leader_lease``. Taking or renewing it is one conditional UPDATE, so
two nodes trying at once cannot both win. Expiry is in the database's clock:
the nodes' own clocks need not agree. The epoch grows by one whenever the
lease changes hands (or its holder lets it lapse and takes it again): every
audited command carries it, and PostgreSQL refuses an entry whose epoch is
older than the lease's (migration 0005).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Float, and_, case, cast, extract, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from controller.state.database import StateDatabase
from controller.state.tables import leader_lease

#: The one lease of a controller pair.
LEASE_NAME = "controller"


@dataclass(frozen=True)
class LeaseState:
    """The lease as the database has it."""

    holder: str
    epoch: int
    #: When this holder took it (database clock, Unix seconds).
    since: float
    expires_at: float
    #: The holder's API address, for callers of the other node.
    address: str


class LeaderLease:
    """Take, renew, read and give up the pair's lease for one node."""

    def __init__(self, db: StateDatabase, node: str, address: str, seconds: float) -> None:
        self.db = db
        self.node = node
        self.address = address
        self.seconds = seconds

    async def try_hold(self) -> LeaseState | None:
        """Take the lease if it is free or lapsed, or renew it if this node holds it;
        the lease as held, or None when another node holds it."""
        async with self.db.connected().begin() as conn:
            await self._ensure_row(conn)
            now = await _database_now(conn)
            c = leader_lease.c
            renewing = and_(c.holder == self.node, c.expires_at > now)
            statement = (
                leader_lease.update()
                .where(c.name == LEASE_NAME, or_(renewing, c.expires_at <= now))
                .values(
                    holder=self.node,
                    address=self.address,
                    expires_at=now + self.seconds,
                    epoch=case((renewing, c.epoch), else_=c.epoch + 1),
                    since=case((renewing, c.since), else_=now),
                )
                .returning(c.holder, c.epoch, c.since, c.expires_at, c.address)
            )
            row = (await conn.execute(statement)).first()
        return None if row is None else LeaseState(*row)

    async def current(self) -> LeaseState | None:
        """The lease as it stands (None before anyone has held it)."""
        c = leader_lease.c
        statement = select(c.holder, c.epoch, c.since, c.expires_at, c.address).where(
            c.name == LEASE_NAME, c.holder != ""
        )
        async with self.db.connected().connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else LeaseState(*row)

    async def release(self) -> bool:
        """Let the lease lapse now if this node holds it (a planned stop: the other node
        takes over at its next try instead of after the lease)."""
        c = leader_lease.c
        statement = (
            leader_lease.update()
            .where(c.name == LEASE_NAME, c.holder == self.node)
            .values(expires_at=0.0)
        )
        async with self.db.connected().begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def _ensure_row(self, conn: AsyncConnection) -> None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(leader_lease).values(
            name=LEASE_NAME, holder="", epoch=0, since=0.0, expires_at=0.0, address=""
        )
        await conn.execute(statement.on_conflict_do_nothing(index_elements=["name"]))


async def _database_now(conn: AsyncConnection) -> float:
    """The database server's clock, in Unix seconds."""
    if conn.dialect.name == "postgresql":
        now = extract("epoch", func.clock_timestamp())
        return float(await conn.scalar(select(cast(now, Float))) or 0.0)
    return float(await conn.scalar(text("SELECT (julianday('now') - 2440587.5) * 86400.0")) or 0.0)
