"""Register images of simulated units, served to pymodbus servers.

pymodbus's server asks its datastore three things: ``async_getValues``,
``async_setValues`` and ``device_ids``. :class:`UnitStore` answers them for
all units on one port or serial line, from images that the physics models
refresh, and it plays the communication faults: a silent unit does not
answer, a slow one answers late, a garbled one answers with a broken frame.
Its request counters let tests check how many requests a poll really took.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Protocol

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException

from drivers.modbus.codec import EncodeError, decode_value, encode_value
from drivers.modbus.device_plan import SELF, block_point_address
from drivers.profile import (
    TIME_TABLE_ENTRY_WORDS,
    TIME_TABLE_UNUSED,
    DeviceProfile,
    PointSpec,
    ProfileLibrary,
    Table,
)
from simulators.faults import FaultBoard, FaultKind
from simulators.physics import SimClock

_READ_TABLES = {
    1: Table.COIL,
    2: Table.DISCRETE_INPUT,
    3: Table.HOLDING_REGISTER,
    4: Table.INPUT_REGISTER,
    23: Table.HOLDING_REGISTER,
}
_WRITE_TABLES = {
    5: Table.COIL,
    15: Table.COIL,
    6: Table.HOLDING_REGISTER,
    16: Table.HOLDING_REGISTER,
    23: Table.HOLDING_REGISTER,
}
#: pymodbus reads back what a write changed, asking with the write's function code.
_READ_BACK = {5, 6, 15, 16}
#: Real time between image refreshes while a unit is being read.
REFRESH_PERIOD = 0.2


class DeviceModel(Protocol):
    """What a physics model offers the datastore."""

    def snapshot(
        self, board: FaultBoard, now: float
    ) -> tuple[dict[str, float], list[dict[str, float]]]: ...

    def write_point(self, owner: int, point: str, value: float) -> None: ...


class SimulatedUnit:
    """One unit id: a profile's register image kept up to date from a model."""

    def __init__(
        self,
        device_id: str,
        profile: DeviceProfile,
        library: ProfileLibrary,
        model: DeviceModel,
        sub_devices: int = 0,
    ) -> None:
        self.device_id = device_id
        self.model = model
        self.layout: list[tuple[int, PointSpec, int]] = []  # owner, point, address
        for point in profile.points:
            self.layout.append((SELF, point, point.address))
        if sub_devices:
            block = profile.blocks[0]
            inner = library[block.profile]
            for slot in range(sub_devices):
                for point in inner.points:
                    address = block_point_address(profile, block.name, slot, point)
                    self.layout.append((slot, point, address))
        sizes = dict.fromkeys(Table, 0)
        for _, point, address in self.layout:
            sizes[point.table] = max(sizes[point.table], address + point.type.words)
        #: The device's own time-control table: plain memory the centre writes and reads back.
        self.time_table = range(0)
        if profile.time_table is not None:
            start = profile.time_table.base
            self.time_table = range(
                start, start + profile.time_table.entries * TIME_TABLE_ENTRY_WORDS
            )
            sizes[Table.HOLDING_REGISTER] = max(sizes[Table.HOLDING_REGISTER], self.time_table.stop)
        self.image = {table: np.zeros(size, dtype=np.uint16) for table, size in sizes.items()}
        self.image[Table.HOLDING_REGISTER][self.time_table.start : self.time_table.stop] = (
            TIME_TABLE_UNUSED
        )
        self.writable: dict[tuple[Table, int], tuple[int, PointSpec, int]] = {}
        for owner, point, address in self.layout:
            if point.access == "rw":
                for word in range(point.type.words):
                    self.writable[point.table, address + word] = (owner, point, address)
        self._refreshed_at = -1e9

    def refresh(self, board: FaultBoard, now: float, force: bool = False) -> None:
        """Recompute the image from the model (at most every REFRESH_PERIOD)."""
        real = time.monotonic()
        if not force and real - self._refreshed_at < REFRESH_PERIOD:
            return
        self._refreshed_at = real
        own, subs = self.model.snapshot(board, now)
        for owner, point, address in self.layout:
            values = own if owner == SELF else subs[owner]
            value = values.get(point.name)
            if value is None:
                continue
            try:
                words = encode_value(point, value)
            except EncodeError:
                # A value out of the type's range saturates, as a real meter's register does.
                words = [0xFFFF] * point.type.words
            self.image[point.table][address : address + len(words)] = words

    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """Registers (or bits) ``address .. address+count-1`` of a table."""
        image = self.image[table]
        if count < 1 or address + count > len(image):
            return ExcCodes.ILLEGAL_ADDRESS
        chunk: list[int] = image[address : address + count].tolist()
        if table.is_bit:
            return [bool(v) for v in chunk]
        return chunk

    def write(self, table: Table, address: int, values: list[int]) -> ExcCodes | None:
        """Write registers or coils; only points with access rw accept writes."""
        targets = []
        touches_table = False
        for i in range(len(values)):
            if table is Table.HOLDING_REGISTER and address + i in self.time_table:
                touches_table = True
                continue
            entry = self.writable.get((table, address + i))
            if entry is None:
                return ExcCodes.ILLEGAL_ADDRESS
            targets.append(entry)
        image = self.image[table]
        image[address : address + len(values)] = [int(v) & 0xFFFF for v in values]
        for owner, point, start in {(o, p.name, a): (o, p, a) for o, p, a in targets}.values():
            value = decode_value(point, image[start : start + point.type.words].tolist())
            self.model.write_point(owner, point.name, value)
        loader = getattr(self.model, "load_time_table", None)
        if touches_table and loader is not None:
            loader(image[self.time_table.start : self.time_table.stop].tolist())
        self._refreshed_at = -1e9
        return None


class UnitStore:
    """All units behind one server (a port or a serial line): pymodbus's datastore."""

    def __init__(self, units: dict[int, SimulatedUnit], board: FaultBoard, clock: SimClock) -> None:
        self.units = units
        self.board = board
        self.clock = clock
        #: Requests received, by (unit id, function code).
        self.requests: Counter[tuple[int, int]] = Counter()
        self._garble_next: set[int] = set()

    def device_ids(self) -> list[int]:
        """Unit ids present."""
        return sorted(self.units)

    async def _unit_for(self, unit_id: int, func_code: int) -> SimulatedUnit:
        self.requests[unit_id, func_code] += 1
        unit = self.units.get(unit_id)
        now = self.clock.now()
        if unit is None or self.board.find(unit.device_id, FaultKind.DEVICE_SILENT, now):
            # pymodbus sends nothing for an unknown id when ignore_missing_devices is set:
            # exactly what a dead device on a bus looks like.
            raise NoSuchIdException(f"unit {unit_id} does not answer")
        slow = self.board.find(unit.device_id, FaultKind.SLOW, now)
        if slow is not None:
            await asyncio.sleep(slow.delay)
        if self.board.find(unit.device_id, FaultKind.GARBLED, now):
            self._garble_next.add(unit_id)
        return unit

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        """Answer a read."""
        if func_code in _READ_BACK:
            # Part of the write request already counted and delayed in async_setValues.
            unit = self.units[device_id]
            return unit.read(_WRITE_TABLES[func_code], address, count)
        unit = await self._unit_for(device_id, func_code)
        table = _READ_TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        unit.refresh(self.board, self.clock.now())
        return unit.read(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        """Apply a write."""
        unit = await self._unit_for(device_id, func_code)
        table = _WRITE_TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if not isinstance(values, list):
            values = [values]
        return unit.write(table, address, [int(v) for v in values])

    def corrupt_outgoing(self, sending: bool, data: bytes, rtu: bool) -> bytes:
        """pymodbus trace hook: break the frame of a unit with the garbled fault."""
        if not sending or len(data) < 4:
            return data
        unit_id = data[0] if rtu else data[6] if len(data) > 6 else -1
        if unit_id not in self._garble_next:
            return data
        self._garble_next.discard(unit_id)
        broken = bytearray(data)
        if rtu:
            broken[-1] ^= 0xFF  # bad CRC
        else:
            broken[6] ^= 0xFF  # wrong unit id in the MBAP header: the client must reject it
        return bytes(broken)

    def request_total(self, unit_id: int | None = None) -> int:
        """Requests received in all, or by one unit."""
        return sum(n for (u, _), n in self.requests.items() if unit_id is None or u == unit_id)
