"""Where readings go: the embedded store, InfluxDB, the spool, the MQTT broker."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.config_base import EnvName


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InfluxConfig(_Strict):
    """InfluxDB: writes by v1 ``/write`` or v2 ``/api/v2/write``, reads by InfluxQL ``/query``.

    Secrets are never in this file: ``*_env`` keys name environment variables.
    """

    url: str = Field(default="http://127.0.0.1:8086", pattern=r"^https?://")
    api: Literal["v1", "v2"] = "v1"
    database: str = "streetsense"
    retention_policy: str = ""
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    org: str = ""
    bucket: str = ""
    token_env: EnvName | None = None
    create_database: bool = True
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    flush_interval: float = Field(default=1.0, gt=0)
    gzip: bool = True
    timeout: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _check_api(self) -> InfluxConfig:
        if self.api == "v2" and not (self.org and self.bucket):
            raise ValueError("api v2 needs org and bucket")
        return self


class EmbeddedStoreConfig(_Strict):
    """The embedded SQLite store: the default, and the demo's."""

    enabled: bool = True
    path: str = "streetsense.db"
    retention_days: float = Field(default=30.0, gt=0)


class SpoolConfig(_Strict):
    """Where undelivered data waits while a server is away."""

    path: str = "spool"
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    #: What a full spool does with a new batch: refuse it, or delete the oldest to keep it.
    when_full: Literal["refuse_new", "drop_oldest"] = "refuse_new"


class StorageConfig(_Strict):
    """Where readings go: InfluxDB when configured, the embedded store by default."""

    influxdb: InfluxConfig | None = None
    embedded: EmbeddedStoreConfig = EmbeddedStoreConfig()
    spool: SpoolConfig = SpoolConfig()
    #: Which store answers telemetry queries: the default is InfluxDB when configured.
    query_from: Literal["auto", "influxdb", "embedded"] = "auto"


class MqttTlsConfig(_Strict):
    """TLS towards the broker."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class MqttConfig(_Strict):
    """The city's MQTT broker: telemetry and state out, MQTT devices in."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    tls: MqttTlsConfig | None = None
    topic_prefix: str = Field(default="streetsense", pattern=r"^[^+#]+$")
    telemetry_qos: Literal[0, 1] = 1
    keepalive: int = Field(default=30, ge=5)
