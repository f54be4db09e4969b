"""Pull sources: protocols the poller reads on its own schedule (Modbus, DL/T 645).

The poller owns the when (intervals, back-off, priorities, health); a pull
reader owns the how: given a link and a target, it sends that protocol's
requests and decodes the answers into a :class:`~drivers.readings.ReadingBatch`.
A protocol package registers its reader for the plan type its profiles
compile to, once, when the package is imported::

    register_pull_reader(MeterPlan, MeterReader())

so the poller never learns which protocol a target speaks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from drivers.errors import LinkError
from drivers.priority_lock import Priority
from drivers.readings import ReadingBatch

if TYPE_CHECKING:
    # The link a pull reader talks over. One type today: a DL/T 645 meter shares the
    # RS-485 line (or DTU) of Modbus units through the same link and its framers. Only
    # named for the type checker, so that this neutral module imports no protocol.
    from drivers.modbus.links import ModbusLink as PullLink


class PullTarget(Protocol):
    """What a reader needs of a poll target (the controller's ``PollTarget`` is one)."""

    @property
    def unit(self) -> int:
        """The unit number on its link (Modbus)."""
        ...

    @property
    def address(self) -> str:
        """The device address on its link (a DL/T 645 meter's 12 BCD digits)."""
        ...

    @property
    def plan(self) -> object:
        """The compiled read plan; its type selects the reader."""
        ...

    @property
    def field_device(self) -> npt.NDArray[np.int32]:
        """Device index of every decoded field."""
        ...

    @property
    def feeds(self) -> int:
        """A device whose missing points this target's readings fill (-1: none)."""
        ...

    @property
    def feed_point(self) -> npt.NDArray[np.int16] | None:
        """Per point, the fed device's point that takes a copy (-1: none)."""
        ...


@dataclass
class PullRead:
    """What one read of one target produced."""

    batch: ReadingBatch
    #: Requests that got an answer, and all requests sent.
    answered: int
    requests: int
    #: When the answers were in (the readings' time).
    ts: float
    error: LinkError | None = None


class PullReader(Protocol):
    """Reads one target of one protocol."""

    async def read(
        self,
        link: PullLink,
        target: PullTarget,
        retries: int | None,
        priority: Priority,
        clock: Callable[[], float],
    ) -> PullRead:
        """Send the target's planned requests; ``retries`` None means the link's own."""
        ...


_READERS: dict[type, PullReader] = {}


def register_pull_reader(plan_type: type, reader: PullReader) -> None:
    """Make ``reader`` the one for targets whose plan is a ``plan_type``."""
    _READERS[plan_type] = reader


def reader_for(plan: object) -> PullReader:
    """The reader registered for this plan's type."""
    reader = _READERS.get(type(plan))
    if reader is None:
        raise LookupError(f"no pull reader registered for {type(plan).__name__}")
    return reader


#: A timeout means the device is gone for now, and the rest of its requests would each
#: cost the same timeout on a shared bus; a frame still garbled after its retry means a
#: bad line or device, and the rest of the poll would garble too. Either ends the read.
ENDS_READ = ("timeout", "link_down", "garbled")
