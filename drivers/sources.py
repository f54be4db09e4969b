"""Push sources: protocols whose devices deliver readings themselves.

A pull protocol is read by the poller on its own schedule (Modbus, DL/T 645).
A push protocol is started with a sink and calls it whenever its devices
report (a station that dials in, a device that publishes). Every source
produces :class:`~drivers.readings.ReadingBatch` and records the health of
its own devices, so the poller, the sinks and the rules never learn which
protocol a reading came by.

A protocol package registers itself once, when imported::

    register_push_protocol(PushProtocol("toy", ToySourceConfig, ToySource))

and a site then lists ``sources: [{id: ..., protocol: toy, ...}]`` and devices
``source_devices: [{id: ..., source: ..., profile: ...}]``. The config names
its protocol packages under ``protocol_packages`` so that they are imported
(and register) before the config is checked. docs/protocols.md is the recipe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from drivers.health import DeviceHealth
from drivers.readings import ReadingBatch

#: Where a push source hands its readings (the poller's next batch).
BatchSink = Callable[[ReadingBatch], Awaitable[None]]


class SourceConfig(BaseModel):
    """The keys every push source has; a protocol's own config model extends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    protocol: str


@dataclass(frozen=True)
class SourceDevice:
    """One device a push source serves, with the numbers its readings must carry."""

    #: The ``device`` column of its readings.
    index: int
    id: str
    #: Point names in order: a point's position is the ``point`` column of its readings.
    points: tuple[str, ...]
    #: Shared with the controller's health view: the source records every report.
    health: DeviceHealth


class PushSource(Protocol):
    """A running source of one protocol: started with a sink, stopped at shutdown."""

    @property
    def id(self) -> str: ...

    async def start(self, deliver: BatchSink) -> None:
        """Open what the devices report to; readings go to ``deliver`` from now on."""
        ...

    async def stop(self) -> None:
        """Stop listening; every reading already received has been delivered."""
        ...


#: Builds a source from its validated config and the devices the site gives it.
SourceFactory = Callable[[SourceConfig, Sequence[SourceDevice]], PushSource]


@dataclass(frozen=True)
class PushProtocol:
    """A push protocol as it registers: its name, its config model and its factory."""

    name: str
    config: type[SourceConfig]
    build: SourceFactory


_PUSH_PROTOCOLS: dict[str, PushProtocol] = {}


def register_push_protocol(protocol: PushProtocol) -> None:
    """Make ``protocol`` available to configs (``sources[].protocol``)."""
    known = _PUSH_PROTOCOLS.get(protocol.name)
    if known is not None and known != protocol:
        raise ValueError(f"push protocol {protocol.name!r} is registered twice")
    _PUSH_PROTOCOLS[protocol.name] = protocol


def push_protocol(name: str) -> PushProtocol | None:
    """The registered protocol of that name, if any."""
    return _PUSH_PROTOCOLS.get(name)


def push_protocol_names() -> list[str]:
    """Names of every registered push protocol."""
    return sorted(_PUSH_PROTOCOLS)
