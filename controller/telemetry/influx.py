"""InfluxDB: line-protocol writers (v1 ``/write``, v2 through influxdb-client) and InfluxQL reads.

Writes are idempotent (same series and time overwrite), so a payload sent
again after an unclear failure never doubles a reading. Reads use InfluxQL
over ``/query``, which InfluxDB 1.x, 2.x and 3.x all answer.
"""

from __future__ import annotations

import gzip
import logging
from typing import Any, cast

import httpx

from controller.telemetry.delivery import DeliveryError, RejectedPayload

log = logging.getLogger(__name__)


class InfluxV1Writer:
    """``POST /write?db=..&precision=ms`` with optional basic credentials and gzip."""

    def __init__(
        self,
        url: str,
        database: str,
        retention_policy: str = "",
        username: str | None = None,
        password: str | None = None,
        use_gzip: bool = True,
        timeout: float = 10.0,
        create_database: bool = False,
    ) -> None:
        self.name = f"influxdb v1 {url}/{database}"
        #: Created before the first write, in the delivery's own task: a slow or hung
        #: server never holds up the controller's start.
        self._database_missing = create_database
        self.url = url.rstrip("/")
        self.database = database
        self.params = {"db": database, "precision": "ms"}
        if retention_policy:
            self.params["rp"] = retention_policy
        self.auth = (username, password or "") if username else None
        self.use_gzip = use_gzip
        self._client = httpx.AsyncClient(timeout=timeout, auth=self.auth)

    async def send(self, payload: bytes) -> None:
        """Write one payload of line protocol (creating the database first if asked to)."""
        if self._database_missing:
            await self.create_database()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        body = payload
        if self.use_gzip:
            body = gzip.compress(payload, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            response = await self._client.post(
                f"{self.url}/write", params=self.params, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        _check_write_response(response)

    async def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists); a DeliveryError when it fails,
        so the payload waiting for it is spooled and the delivery tries again."""
        try:
            response = await self._client.post(
                f"{self.url}/query", params={"q": f'CREATE DATABASE "{_ident(self.database)}"'}
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise DeliveryError(f"cannot create database: {type(exc).__name__}: {exc}") from exc
        self._database_missing = False

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


def _check_write_response(response: httpx.Response) -> None:
    if response.status_code in (200, 204):
        return
    text = response.text[:300]
    if response.status_code in (400, 413, 422):
        # Malformed or too large: sending it again would fail again.
        raise RejectedPayload(f"HTTP {response.status_code}: {text}")
    raise DeliveryError(f"HTTP {response.status_code}: {text}")


class InfluxV2Writer:
    """``/api/v2/write`` through influxdb-client's async API (InfluxDB 2.x/3.x, compatibles)."""

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str | None,
        use_gzip: bool = True,
        timeout: float = 10.0,
    ) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self.name = f"influxdb v2 {url}/{bucket}"
        self.bucket = bucket
        self.org = org
        self._client = InfluxDBClientAsync(
            url=url,
            token=token or "",
            org=org,
            enable_gzip=use_gzip,
            timeout=int(timeout * 1000),
        )
        self._write_api = self._client.write_api()

    async def send(self, payload: bytes) -> None:
        """Write one payload of line protocol."""
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            await self._write_api.write(
                bucket=self.bucket,
                org=self.org,
                record=payload,
                # The library annotates the enum class but its members are plain strings.
                write_precision=cast(WritePrecision, WritePrecision.MS),
            )
        except ApiException as exc:
            if exc.status in (400, 413, 422):
                raise RejectedPayload(f"HTTP {exc.status}: {exc.body}") from exc
            raise DeliveryError(f"HTTP {exc.status}: {exc.reason}") from exc
        except Exception as exc:  # aiohttp's connection errors have no common base here
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()  # type: ignore[no-untyped-call]


def _ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return f'"{_ident(name)}"'


def quote_string(text: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxQLError(Exception):
    """The server answered a query with an error."""


class InfluxQLClient:
    """Runs InfluxQL over ``/query`` and returns the series it answers."""

    def __init__(
        self,
        url: str,
        database: str,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Token {token}"} if token else None
        auth = (username, password or "") if username else None
        self.url = url.rstrip("/")
        self.database = database
        self._client = httpx.AsyncClient(timeout=timeout, auth=auth, headers=headers)

    async def query(self, q: str) -> list[dict[str, Any]]:
        """Series of the first statement's result: ``name``, ``tags``, ``columns``, ``values``."""
        try:
            response = await self._client.post(
                f"{self.url}/query", data={"db": self.database, "q": q, "epoch": "ms"}
            )
        except httpx.HTTPError as exc:
            raise InfluxQLError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise InfluxQLError(f"HTTP {response.status_code}: {response.text[:300]}")
        body = response.json()
        results = body.get("results") or [{}]
        first = results[0]
        if "error" in first:
            raise InfluxQLError(first["error"])
        series: list[dict[str, Any]] = first.get("series", [])
        return series

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
