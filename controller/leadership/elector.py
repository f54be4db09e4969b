"""Which node of a pair leads: the lease kept, lost and taken over.

The leader renews every ``renew_seconds``; the standby tries as often and takes
the lease once it has lapsed. A node counts itself the leader only until its
last successful renewal plus the lease, less a second for clocks that run at
different rates: after a pause (SIGSTOP, a stalled VM) it knows at once that
it may no longer send, before it has even reached the database. A leader that
cannot reach the database keeps polling and spooling (nobody can take over
meanwhile) but sends nothing once its lease has run out; the standby, seeing
the database again, gives it one lease to renew before taking over, so an
outage of the database alone does not switch leaders. One that finds
another node holding the lease is deposed and stops, like client-go's leader
election, so that its service manager starts it again as the standby.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from controller.leadership.lease import LeaderLease, LeaseState

log = logging.getLogger(__name__)

#: Taken off the lease for clocks that run at slightly different rates.
CLOCK_MARGIN = 1.0


class LeaderElector:
    """Keeps or seeks the lease; calls back when this node is elected or deposed."""

    def __init__(
        self,
        lease: LeaderLease,
        renew_seconds: float,
        on_elected: Callable[[], Coroutine[Any, Any, None]],
        on_deposed: Callable[[], Awaitable[None]],
        on_epoch: Callable[[int], None],
    ) -> None:
        self.lease = lease
        self.renew_seconds = renew_seconds
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._on_epoch = on_epoch
        self.leading = False
        self.epoch: int | None = None
        #: When this node took the lease (database clock).
        self.since: float | None = None
        #: The lease as last seen while another node held it.
        self.other: LeaseState | None = None
        #: Whether the last try reached the database.
        self.reachable = False
        self.elections = 0
        self._valid_until = 0.0
        #: Set while the database is out of sight; a standby then waits, once it is back,
        #: until :attr:`_patient_until` before it takes a lapsed lease.
        self._unseen = False
        self._patient_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._duties: asyncio.Task[None] | None = None

    def holds(self) -> bool:
        """Whether this node may act on devices now: it leads and its lease has not run out."""
        return self.leading and time.monotonic() < self._valid_until

    async def start(self) -> None:
        """Try once now (a node that finds the lease free leads at once), then keep trying."""
        await self._try()
        self._task = asyncio.create_task(self._run(), name="leader-elector")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.renew_seconds)
            await self._try()

    async def _try(self) -> None:
        asked_at = time.monotonic()
        # While the database was away the leader could not renew either: its lease has
        # lapsed through no fault of its own. A standby seeing the database again gives it
        # one lease to renew before taking over, so an outage does not switch leaders.
        patient = not self.leading and (self._unseen or asked_at < self._patient_until)
        try:
            held = None if patient else await self.lease.try_hold()
            other = None if held is not None else await self.lease.current()
        except (SQLAlchemyError, OSError) as exc:
            if self.reachable:
                log.warning("the lease cannot be renewed (state database away): %s", exc)
            self.reachable = False
            self._unseen = True
            return
        self.reachable = True
        if self._unseen:
            self._unseen = False
            if not self.leading:
                self._patient_until = asked_at + self.lease.seconds
                log.warning(
                    "the state database is back: the leader has %.0f s to renew its lease "
                    "before this node takes over",
                    self.lease.seconds,
                )
        if held is None:
            self.other = other
            if self.leading:
                log.error(
                    "deposed: %s holds the lease (epoch %s); this node stops sending",
                    other.holder if other else "another node",
                    other.epoch if other else "?",
                )
                self.leading = False
                await self._on_deposed()
            return
        self.other = None
        self._valid_until = asked_at + self.lease.seconds - CLOCK_MARGIN
        if held.epoch != self.epoch:
            self.epoch = held.epoch
            self.since = held.since
            self._on_epoch(held.epoch)
        if not self.leading:
            self.leading = True
            self.elections += 1
            log.warning("elected: %s leads, epoch %d", self.lease.node, held.epoch)
            # Its duties start beside the renewals: a slow start must not lose the lease.
            self._duties = asyncio.create_task(self._on_elected(), name="duties")

    async def stop(self) -> None:
        """Stop trying; a leader gives the lease up so the other node need not wait it out."""
        for task in (self._task, self._duties):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._duties = None
        if self.leading:
            self.leading = False
            try:
                await self.lease.release()
            except (SQLAlchemyError, OSError):
                log.warning("could not give up the lease: the other node waits it out")
