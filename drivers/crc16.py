"""CRC-16/MODBUS (poly A001 reflected, init FFFF), compiled: Modbus RTU and SL651 both use it.

Every answer and every station frame is checked, and a pure-Python loop took
10 µs for a 130-byte Modbus answer (a quarter of a request's budget) and
50 µs for an SL651 report.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit


def _crc_table() -> npt.NDArray[np.uint16]:
    table = np.zeros(256, dtype=np.uint16)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[byte] = crc
    return table


_CRC_TABLE = _crc_table()


@njit(cache=True, nogil=True)
def crc16_modbus(data: npt.NDArray[np.uint8], length: int) -> int:  # pragma: no cover
    """CRC-16/MODBUS of the first ``length`` bytes (as an int)."""
    crc = 0xFFFF
    for i in range(length):
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ data[i]) & 0xFF]
    return crc


def crc16_of(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (check value of b"123456789" is 0x4B37)."""
    return int(crc16_modbus(np.frombuffer(data, dtype=np.uint8), len(data)))
