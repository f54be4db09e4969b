"""Modbus: links (TCP, RTU over TCP, RTU serial), the register codec, read planning, the wire."""
