"""The SL651 check: CRC-16/MODBUS (poly A001 reflected, init FFFF), sent high byte first."""

from __future__ import annotations

from drivers.crc16 import crc16_of


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (check value of b"123456789" is 0x4B37)."""
    return crc16_of(data)
