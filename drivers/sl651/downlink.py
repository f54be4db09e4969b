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
from drivers.sl651.body import Report
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
    SET_CLOCK = 0x4A


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
    return encoding.build(command.station, centre, password, command.function, body, fr.End.ENQ)
