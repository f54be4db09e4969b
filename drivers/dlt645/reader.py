"""Reading a meter's data identifiers over a line it may share with Modbus units."""

from __future__ import annotations

from drivers.dlt645 import codec
from drivers.dlt645.framer import framer_for
from drivers.errors import LinkError, LinkGarbled
from drivers.modbus.links import ModbusLink
from drivers.priority_lock import Priority

#: Follow-up frames (12H) a meter may chain before the answer is taken as broken.
MAX_FOLLOW_UPS = 16


class MeterRefused(LinkError):
    """The meter answered with an abnormal reply (D1H): it is there, but will not say."""

    kind = "exception"

    def __init__(self, address: str, di: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(
            f"meter {address} refused DI {di}: {', '.join(errors) or 'no reason given'}"
        )


async def read_di(
    link: ModbusLink,
    address: str,
    di: str,
    retries: int | None = None,
    priority: Priority = Priority.POLL,
) -> bytes:
    """The value bytes of one data identifier, follow-up frames (D5) joined.

    Raises :class:`MeterRefused` for an abnormal reply, :class:`LinkGarbled` for
    an answer that does not fit the request, and the link's own errors.
    """
    framer = framer_for(address)
    request = bytes([codec.READ]) + codec.di_bytes(di)
    answer = await link.exchange(0, request, retries, priority, framer)
    frame = codec.Dlt645Frame(address, answer[0], answer[1:])
    value = _value(link, frame, di)
    seq = 0
    while frame.follow_up:
        seq += 1
        if seq > MAX_FOLLOW_UPS:
            raise LinkGarbled(f"meter {address}: DI {di} still has follow-ups after {seq - 1}")
        follow = bytes([codec.READ_FOLLOW_UP]) + codec.di_bytes(di) + bytes([seq])
        answer = await link.exchange(0, follow, retries, priority, framer)
        frame = codec.Dlt645Frame(address, answer[0], answer[1:])
        # A follow-up's data ends with its sequence number.
        value += _value(link, frame, di)[:-1]
    return value


def _value(link: ModbusLink, frame: codec.Dlt645Frame, di: str) -> bytes:
    if frame.abnormal:
        error = MeterRefused(frame.address, di, frame.errors())
        link.health.errors[error.kind] += 1
        raise error
    try:
        return codec.reply_value(frame, di)
    except codec.FrameError as exc:
        link.health.errors["garbled"] += 1
        raise LinkGarbled(f"meter {frame.address}: {exc}") from exc
