"""Health counters of links and devices, as operators read them."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LinkHealth:
    """State of one link (a TCP connection or a serial line)."""

    connected: bool = False
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    requests: int = 0
    #: Failed requests by kind: timeout, garbled, exception, link_down.
    errors: Counter[str] = field(default_factory=Counter)
    consecutive_timeouts: int = 0
    last_success: float | None = None
    last_error: str = ""


@dataclass
class DeviceHealth:
    """State of one polled device, as seen from its link."""

    online: bool = False
    #: True until the first poll has had an answer or a failure.
    never_polled: bool = True
    #: When the first poll ended (answered or failed).
    first_polled: float | None = None
    #: Seconds the last poll held the link (its share of the poll cycle).
    last_latency: float = 0.0
    polls: int = 0
    consecutive_failures: int = 0
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str = ""
    errors: Counter[str] = field(default_factory=Counter)

    def record_success(self, now: float | None = None) -> None:
        """A poll of the device got every answer it asked for."""
        self.polls += 1
        self.never_polled = False
        self.online = True
        self.consecutive_failures = 0
        self.last_success = time.time() if now is None else now
        if self.first_polled is None:
            self.first_polled = self.last_success

    def record_failure(self, kind: str, message: str, offline_after: int) -> None:
        """A poll failed; the device goes offline after ``offline_after`` failures in a row."""
        self.polls += 1
        self.never_polled = False
        self.consecutive_failures += 1
        self.last_failure = time.time()
        if self.first_polled is None:
            self.first_polled = self.last_failure
        self.last_error = message
        self.errors[kind] += 1
        if self.consecutive_failures >= offline_after:
            self.online = False
