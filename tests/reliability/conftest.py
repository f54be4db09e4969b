"""Servers for the reliability suite, each on its own port and folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.servers import Influxd, Mosquitto
from tests.reliability.harness import influx_server


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    """A real influxd 1.6.7."""
    with influx_server(tmp_path / "influx") as server:
        yield server


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto with persistence (QoS 1 sessions survive its restart)."""
    server = Mosquitto(tmp_path / "mqtt", every_packet=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
