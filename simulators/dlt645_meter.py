"""Simulated DL/T 645-2007 meters: they answer reads (11H) as a real one does.

A meter knows the data identifiers of its profile, and the profile's blocks
unless it is one of the meters that refuse blocks; any other identifier gets
the abnormal reply "no requested data". An answer longer than the meter's
frame limit goes in follow-up frames (D5, read with 12H). Faults: silent, a
broken checksum, answers prefixed with FE as some meters send them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.dlt645 import codec
from drivers.dlt645.profile import Dlt645Profile

#: Abnormal reply error byte: bit 1, no requested data.
NO_DATA = b"\x02"


@dataclass
class SimulatedMeter:
    """One meter: its address, its profile, where its values come from, its faults."""

    address: str
    profile: Dlt645Profile
    #: Current values by point name (a cabinet's supply, for a cabinet meter).
    values: Callable[[], dict[str, float]]
    #: The meter's id in the configuration (faults are placed by device id).
    device_id: str = ""
    silent: bool = False
    bad_checksum: bool = False
    fe_prefix: bool = False
    blocks: bool = True
    #: Data bytes per answer frame before the rest goes in follow-up frames.
    frame_limit: int = 200
    requests: int = 0
    _rest: dict[str, list[bytes]] = field(default_factory=dict)

    def answer(self, request: codec.Dlt645Frame) -> bytes | None:
        """The reply frame to a request, or None when the meter stays silent."""
        self.requests += 1
        if self.silent:
            return None
        di_raw = request.data[:4]
        di = di_raw[::-1].hex().upper()
        function = request.control & 0x1F
        if function == codec.READ:
            value = self._value(di)
            if value is None:
                return self._send(0xC0 | function, NO_DATA)
            parts = [
                value[i : i + self.frame_limit] for i in range(0, len(value), self.frame_limit)
            ]
            self._rest[di] = parts[1:]
            more = 0x20 if len(parts) > 1 else 0
            return self._send(0x80 | more | function, di_raw + parts[0])
        if function == codec.READ_FOLLOW_UP and self._rest.get(di):
            seq = request.data[4:5]
            part = self._rest[di].pop(0)
            more = 0x20 if self._rest[di] else 0
            return self._send(0x80 | more | function, di_raw + part + seq)
        return self._send(0xC0 | function, NO_DATA)

    def _value(self, di: str) -> bytes | None:
        now = self.values()
        points = {p.di: p for p in self.profile.points}
        members = [points[di]] if di in points else []
        if not members and self.blocks:
            by_name = {p.name: p for p in self.profile.points}
            for block in self.profile.blocks:
                if block.di == di:
                    members = [by_name[name] for name in block.points]
        if not members:
            return None
        return b"".join(
            codec.encode_value(now.get(p.name, 0.0), p.size, p.decimals, p.signed) for p in members
        )

    def _send(self, control: int, data: bytes) -> bytes:
        frame = codec.build(self.address, control, data, preamble=False)
        if self.bad_checksum:
            frame = frame[:-2] + bytes([(frame[-2] + 1) & 0xFF]) + frame[-1:]
        return (b"\xfe\xfe" if self.fe_prefix else b"") + frame


def take_meter_frame(
    buffer: bytes, meters: dict[str, SimulatedMeter]
) -> tuple[int, bytes | None] | None:
    """The next whole DL/T 645 request in ``buffer``: (bytes used, answer or None).

    None while the frame is incomplete. A broken frame is dropped whole, and a
    request for a meter not on the line gets no answer, as on a real bus.
    """
    size = codec.frame_length(buffer)
    if size is None or len(buffer) < size:
        return None
    try:
        request = codec.parse(buffer[:size])
    except codec.FrameError:
        return len(buffer), None
    meter = meters.get(request.address)
    return size, meter.answer(request) if meter is not None else None
