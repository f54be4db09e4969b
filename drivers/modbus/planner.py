"""Read planning: cover a device's points with the fewest Modbus read requests.

Pure: takes the points' locations, returns the requests and where each point
lands in the concatenated response buffer. Requests never exceed the device's
size limit, never split a multi-word value, and read through gaps of at most
``max_gap`` unused registers (a gap costs bytes, a request costs a round trip).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.profile import MAX_BITS_PER_READ, Table


@dataclass(frozen=True)
class Slot:
    """A value to read: its table, first address and length in registers (or bits)."""

    table: Table
    address: int
    words: int


@dataclass(frozen=True)
class ReadRequest:
    """One Modbus read: ``count`` registers (or bits) of ``table`` from ``address``.

    ``buffer_start`` is where its answer begins in the poll's concatenated buffer.
    """

    table: Table
    address: int
    count: int
    buffer_start: int


@dataclass(frozen=True)
class ReadPlan:
    """Requests to send, and for each input slot the index of its first word in the buffer."""

    requests: tuple[ReadRequest, ...]
    slot_index: tuple[int, ...]
    buffer_size: int


_TABLE_ORDER = (Table.COIL, Table.DISCRETE_INPUT, Table.INPUT_REGISTER, Table.HOLDING_REGISTER)


def plan_reads(slots: list[Slot], max_registers: int, max_gap: int) -> ReadPlan:
    """Group ``slots`` into as few requests as the limits allow."""
    if max_registers < 2:
        raise ValueError("max_registers must be at least 2 to carry 32-bit values")
    order = sorted(
        range(len(slots)),
        key=lambda i: (_TABLE_ORDER.index(slots[i].table), slots[i].address),
    )
    requests: list[ReadRequest] = []
    slot_index = [0] * len(slots)
    buffer_size = 0
    current: tuple[Table, int, int] | None = None  # table, start, end (exclusive)
    members: list[int] = []

    def close() -> None:
        nonlocal buffer_size, current, members
        if current is None:
            return
        table, start, end = current
        requests.append(ReadRequest(table, start, end - start, buffer_size))
        for i in members:
            slot_index[i] = buffer_size + slots[i].address - start
        buffer_size += end - start
        current = None
        members = []

    for i in order:
        slot = slots[i]
        limit = MAX_BITS_PER_READ if slot.table.is_bit else max_registers
        end = slot.address + slot.words
        if current is not None:
            table, start, cur_end = current
            fits = (
                table == slot.table
                and slot.address - cur_end <= max_gap
                and max(end, cur_end) - start <= limit
            )
            if fits:
                current = (table, start, max(end, cur_end))
                members.append(i)
                continue
            close()
        current = (slot.table, slot.address, end)
        members = [i]
    close()
    return ReadPlan(tuple(requests), tuple(slot_index), buffer_size)
