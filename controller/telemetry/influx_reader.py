"""Telemetry queries answered by InfluxDB through InfluxQL (works on 1.x, 2.x and 3.x)."""

from __future__ import annotations

from controller.registry import Device
from controller.telemetry.influx import InfluxQLClient, quote_ident, quote_string
from controller.telemetry.query import Bucket, LatestReading, Sample


class InfluxReader:
    """Raw, downsampled and latest readings from the schema in docs/telemetry.md."""

    name = "influxdb"

    def __init__(self, client: InfluxQLClient) -> None:
        self.client = client

    @staticmethod
    def _where(device: Device, start: float, end: float) -> str:
        return (
            f'WHERE "device" = {quote_string(device.id)} '
            f"AND time >= {int(start * 1000)}ms AND time < {int(end * 1000)}ms"
        )

    async def raw(
        self, device: Device, point: str, start: float, end: float, limit: int
    ) -> list[Sample]:
        """Readings of one point in ``[start, end)``, oldest first."""
        q = (
            f'SELECT {quote_ident(point)}, "quality" FROM {quote_ident(device.device_class)} '
            f"{self._where(device, start, end)} ORDER BY time ASC LIMIT {int(limit)}"
        )
        out = []
        for series in await self.client.query(q):
            for ts, value, quality in series["values"]:
                if value is not None:
                    out.append(Sample(ts / 1000.0, value, int(quality or 0)))
        return out

    async def downsampled(
        self, device: Device, point: str, start: float, end: float, every: float
    ) -> list[Bucket]:
        """Mean, min, max and count per interval."""
        field = quote_ident(point)
        q = (
            f"SELECT mean({field}), min({field}), max({field}), count({field}) "
            f"FROM {quote_ident(device.device_class)} {self._where(device, start, end)} "
            f"GROUP BY time({max(int(every * 1000), 1)}ms) fill(none)"
        )
        out = []
        for series in await self.client.query(q):
            for ts, mean, lo, hi, count in series["values"]:
                out.append(Bucket(ts / 1000.0, mean, lo, hi, int(count)))
        return out

    async def latest(self, devices: list[Device]) -> list[LatestReading]:
        """Newest value of every point of each device (one query per device class)."""
        out: list[LatestReading] = []
        by_class: dict[str, dict[str, Device]] = {}
        for d in devices:
            by_class.setdefault(d.device_class, {})[d.id] = d
        for device_class, members in by_class.items():
            q = (
                f"SELECT * FROM {quote_ident(device_class)} "
                'GROUP BY "device" ORDER BY time DESC LIMIT 1'
            )
            for series in await self.client.query(q):
                device_id = series.get("tags", {}).get("device")
                device = members.get(device_id)
                if device is None:
                    continue
                columns = series["columns"]
                row = series["values"][0]
                names = {p.name for p in device.points}
                for column, value in zip(columns, row, strict=True):
                    if column in names:
                        out.append(LatestReading(device.id, column, row[0] / 1000.0, value))
        return out
