"""Commands from the centre to a station (M4: query / response), and their queue.

A station is reachable only while it is online: right after one of its
reports, if the centre confirms with ESC instead of EOT, it stays online for
about ten minutes and sends link keep-alives (2F) [STD 6.3.2.4]. So commands
are queued per station, the next report is confirmed with ESC, and the queue
is sent one command at a time: a downlink frame (serial 0, ENQ) and the
station's answer, an uplink of the same function. A command with no answer
is sent again twice, as the side that starts an exchange does [STD 6.3.2.3].
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import tzinfo
from enum import IntEnum, StrEnum

from drivers.sl651 import frame as fr
from drivers.sl651.body import Report, encode_time, encode_time_step, encode_value
from drivers.sl651.encoding import HEX, Encoding

#: How long a station stays online after an ESC confirm or a keep-alive [STD 6.3.2.4].
ONLINE_WINDOW_S = 600.0
#: How long the centre waits for the station's answer before sending again.
ANSWER_TIMEOUT_S = 20.0
RESENDS = 2
#: A station clock further off than this is flagged, and set twice when set [STD 4A].
CLOCK_DRIFT_LIMIT_S = 300.0


class Downlink(IntEnum):
    """The centre's commands the controller sends (function codes, App. B)."""

    QUERY_REALTIME = 0x37
    QUERY_PERIOD = 0x38
    WRITE_SETTINGS = 0x42
    READ_SETTINGS = 0x43
    SET_CLOCK = 0x4A


#: The runtime-parameter commands (App. D.4 table): written with 42H, read with 43H.
SETTINGS_COMMANDS = frozenset({Downlink.WRITE_SETTINGS, Downlink.READ_SETTINGS})


#: The usual data definition byte of the elements a period query asks for
#: (App. C Table C.1): the station answers in its own, this only names the element.
DEFINITIONS = {
    0x1A: 0x19,
    0x1F: 0x19,
    0x20: 0x19,
    0x21: 0x19,
    0x22: 0x19,
    0x23: 0x19,
    0x24: 0x19,
    0x26: 0x19,
    0x38: 0x12,
    **{element: 0x23 for element in range(0x39, 0x44)},
}


@dataclass(frozen=True)
class PeriodQuery:
    """38H: one element's values from ``start`` to ``end`` (whole local hours) every
    ``step_s`` seconds; the station answers like an evenly-timed report (31H)."""

    start: float
    end: float
    step_s: int
    element: int

    def items(self, tz: tzinfo) -> bytes:
        """The query's items (HEX): start and end YYMMDDHH, the time step, the element."""
        span = encode_time(self.start, tz)[:4] + encode_time(self.end, tz)[:4]
        return (
            span + encode_time_step(self.step_s) + bytes([self.element, DEFINITIONS[self.element]])
        )


@dataclass(frozen=True)
class SettingItem:
    """One runtime parameter in a 42H/43H command: its identifier, data definition
    byte and, for a write, the value to set."""

    id: int
    definition: int
    value: float | None = None

    def item(self) -> bytes:
        """The item as sent: identifier and definition, then the value of a write."""
        head = bytes([self.id, self.definition])
        return (
            head
            if self.value is None
            else head + encode_value(self.id, self.definition, self.value)
        )


class DownlinkState(StrEnum):
    """Where a command is: waiting for the station, sent, answered or failed."""

    QUEUED = "pending_delivery"
    SENT = "sent"
    ANSWERED = "answered"
    FAILED = "failed"


@dataclass(eq=False)
class DownlinkCommand:
    """One command for one station and what came of it."""

    station: str
    function: Downlink
    queued_at: float
    #: The queue gives up on a command the station never came online for.
    expires_at: float
    state: DownlinkState = DownlinkState.QUEUED
    sends: int = 0
    sent_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    answer: Report | None = None
    #: What a period query (38H) asks for.
    period: PeriodQuery | None = None
    #: The runtime parameters a 43H reads or a 42H writes.
    settings: tuple[SettingItem, ...] = ()
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def finish(self, state: DownlinkState, at: float, reason: str = "") -> None:
        """End the command (once)."""
        if self.done.is_set():
            return
        self.state = state
        self.finished_at = at
        self.reason = reason
        self.done.set()


def downlink_frame(
    command: DownlinkCommand,
    centre: int,
    password: int,
    now: float,
    tz: tzinfo,
    encoding: Encoding = HEX,
) -> bytes:
    """The frame that carries a command: serial 0 (the centre starts it), the send
    time (for 4A the station's new clock), then the function's own items, ENQ."""
    body = encoding.head(0, now, tz)
    if command.function is Downlink.SET_CLOCK:
        body += encoding.station_item(command.station)
    elif command.function in SETTINGS_COMMANDS:
        if not command.settings or encoding is not HEX:
            raise ValueError("a settings command needs its settings, and a HEX listener")
        body += encoding.station_item(command.station)
        body += b"".join(item.item() for item in command.settings)
    elif command.function is Downlink.QUERY_PERIOD:
        if command.period is None or encoding is not HEX:
            raise ValueError("a period query needs its period, and a HEX listener")
        body += command.period.items(tz)
    return encoding.build(command.station, centre, password, command.function, body, fr.End.ENQ)
