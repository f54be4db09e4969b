"""The SL651 check: CRC-16/MODBUS (poly A001 reflected, init FFFF), sent high byte first."""

from __future__ import annotations


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (check value of b"123456789" is 0x4B37)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc
