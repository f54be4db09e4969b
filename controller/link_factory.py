"""Build link objects from their configuration."""

from __future__ import annotations

from controller.device_config import LinkConfig
from drivers.modbus.links import (
    LinkTiming,
    ModbusLink,
    ModbusRtuOverTcpLink,
    ModbusRtuSerialLink,
    ModbusTcpLink,
)


def timing_of(cfg: LinkConfig) -> LinkTiming:
    """The timing policy a link config asks for."""
    return LinkTiming(
        timeout=cfg.timeout,
        retries=cfg.retries,
        turnaround=cfg.turnaround_ms / 1000.0,
        backoff_initial=cfg.backoff_initial,
        backoff_max=cfg.backoff_max,
    )


def build_link(cfg: LinkConfig) -> ModbusLink:
    """A link of the configured kind (not yet connected)."""
    timing = timing_of(cfg)
    if cfg.kind == "rtu_serial":
        assert isinstance(cfg.port, str)
        return ModbusRtuSerialLink(
            cfg.id,
            cfg.port,
            timing,
            baudrate=cfg.baudrate,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            bytesize=cfg.bytesize,
        )
    assert cfg.host is not None and isinstance(cfg.port, int)
    if cfg.kind == "rtu_over_tcp":
        return ModbusRtuOverTcpLink(cfg.id, cfg.host, cfg.port, timing)
    return ModbusTcpLink(cfg.id, cfg.host, cfg.port, timing)
