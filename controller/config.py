"""config.yaml: the installed site (links, cabinets, lamps, gauges) and how to poll it.

Profiles say what a device type is; this file says which devices are installed
where. Loading validates everything, including references between the two
(a cabinet's link must exist, its profile must be a cabinet profile, unit ids
must not collide on a link), and a mistake names the file, the key and why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from controller.cases.config import CasesConfig
from controller.config_base import EnvName
from controller.config_checks import check_references
from controller.control.config import ControlConfig
from controller.device_config import (
    CabinetConfig,
    GaugeConfig,
    LinkConfig,
    ListenerConfig,
    MeterConfig,
    MqttDeviceConfig,
    Sl651StationConfig,
    SourceDeviceConfig,
    SourceEntry,
    StandaloneLampConfig,
)
from controller.schedules.config import SchedulesConfig
from controller.storage_config import MqttConfig, StorageConfig
from drivers.errors import ConfigError, invalid_file
from drivers.profile import ProfileLibrary
from drivers.sources import PushProtocol, SourceConfig
from rules.compile import RuleSite
from rules.config import AlarmsConfig, FloodWatchConfig, RuleConfig

#: The folder holding the streetsense packages: shipped resources resolve from here.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = "STREETSENSE_DATA_DIR"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PollingConfig(_Strict):
    """Poll intervals by device class and the dead-device policy."""

    cabinet_interval: float = Field(default=60.0, gt=0)
    lamp_interval: float = Field(default=60.0, gt=0)
    gauge_interval: float = Field(default=10.0, gt=0)
    #: Energy meters: a DL/T 645 read costs ~0.3 s on a 2400-baud bus, and energy moves slowly.
    meter_interval: float = Field(default=60.0, gt=0)
    #: Failed polls in a row after which a device is offline.
    offline_after: int = Field(default=2, ge=1)
    #: An offline device is polled every interval x 2^k, up to this many intervals.
    offline_backoff_max: int = Field(default=8, ge=1)
    #: Readings are handed on in batches at most this often (seconds).
    batch_interval: float = Field(default=1.0, gt=0)


class TileLayerConfig(_Strict):
    """The basemap the console's map draws under the devices (a slippy-map tile source).

    ``url`` is a template with ``{z}``, ``{x}`` and ``{y}`` (and ``{s}`` for
    ``subdomains``), for example 天地图 or a self-hosted tile server. A tile key
    (天地图's ``tk``) is a secret: write ``{key}`` in the URL and name the
    environment variable holding it in ``key_env``; the browser fetching the
    tiles sees it, so use a key bound to the console's domain.
    """

    url: str = Field(pattern=r"^(https?://|/)", max_length=500)
    #: Shown on the map, as every tile provider's terms require.
    attribution: str = Field(min_length=1, max_length=300)
    subdomains: str = ""
    min_zoom: int = Field(default=3, ge=0, le=22)
    max_zoom: int = Field(default=18, ge=1, le=22)
    #: The datum the tiles are drawn in: devices are surveyed in WGS-84, and Chinese
    #: commercial tiles (Gaode/Amap, Tencent) use GCJ-02, offset by up to several
    #: hundred metres; the console shifts the devices onto such tiles. 天地图 is WGS-84
    #: (CGCS2000, close enough at street scale).
    datum: Literal["wgs84", "gcj02"] = "wgs84"
    key_env: EnvName | None = None

    @field_validator("url")
    @classmethod
    def _tile_placeholders(cls, value: str) -> str:
        missing = [p for p in ("{z}", "{x}", "{y}") if p not in value]
        if missing:
            raise ValueError(f"the tile URL lacks {', '.join(missing)}")
        return value

    @model_validator(mode="after")
    def _key_where_named(self) -> TileLayerConfig:
        if ("{key}" in self.url) != (self.key_env is not None):
            raise ValueError("write {key} in url exactly when key_env names the tile key")
        if self.min_zoom > self.max_zoom:
            raise ValueError(f"min_zoom {self.min_zoom} is above max_zoom {self.max_zoom}")
        return self


class MapConfig(_Strict):
    """The console's map."""

    #: Without tiles (offline, the demo) the map is drawn from the asset register.
    tiles: TileLayerConfig | None = None


class SiteConfig(_Strict):
    """The city this controller serves."""

    city: str = "demo-city"
    #: What people call it, on the console and the reports (阳江市); the city id when empty.
    name: str = Field(default="", max_length=64)
    timezone: str = "Asia/Shanghai"
    #: GeoJSON FeatureCollection of the city-management grid cells (polygons with a
    #: ``code`` property), drawn on the dashboard map; relative to this file.
    grid_cells: str | None = None
    map: MapConfig = MapConfig()

    @property
    def display_name(self) -> str:
        """The name people read: ``name``, else the city id."""
        return self.name or self.city

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        """The city's time zone."""
        return ZoneInfo(self.timezone)


class WireConfig(_Strict):
    """The wire a simulated link emulates: an RS-485 line, behind a 4G DTU on RTU-over-TCP links."""

    baudrate: int = Field(default=9600, ge=300, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    #: Time a device takes between the end of a request and the start of its answer.
    turnaround_ms: float = Field(default=5.0, ge=0, le=1000)
    #: Round trip through a 4G DTU and the mobile network, with up to ``dtu_jitter_ms`` more.
    dtu_rtt_ms: float = Field(default=150.0, ge=0, le=10000)
    dtu_jitter_ms: float = Field(default=30.0, ge=0, le=10000)
    #: Fraction of requests a DTU loses (the centre then times out).
    dtu_loss: float = Field(default=0.0, ge=0, le=1)


class SimulatorConfig(_Strict):
    """Simulated hardware for the demo and CI."""

    scenario: str | None = Field(default=None, description="scenario YAML, relative to this file")
    #: Simulated seconds per real second (a storm in minutes, not hours).
    time_scale: float = Field(default=1.0, gt=0, le=10000)
    seed: int = 1
    #: How lamps are at start: all ``lit`` (a bench's fixed state), or ``by_sun``: lit
    #: between sunset and sunrise at their place, as a city on schedule is found.
    lamps_at_start: Literal["lit", "by_sun"] = "lit"
    #: ``physics`` serves every request through pymodbus (faults, garbling, for tests);
    #: ``fast`` answers TCP links from pre-encoded images at a few µs a request (benchmarks).
    responder: Literal["physics", "fast"] = "physics"
    #: Emulate the wire's timing on the fast responder's links (none: loopback speed).
    wire: WireConfig | None = None
    #: A contactor follows its command after between these many milliseconds.
    contactor_delay_ms: tuple[float, float] = (0.0, 0.0)

    @model_validator(mode="after")
    def _delay_in_order(self) -> SimulatorConfig:
        low, high = self.contactor_delay_ms
        if not 0 <= low <= high <= 60_000:
            raise ValueError("contactor_delay_ms must be [min, max] with 0 <= min <= max <= 60000")
        return self


class LoggingConfig(_Strict):
    """How the controller logs: plain text for a terminal, JSON lines for a log system."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ApiConfig(_Strict):
    """Where the HTTP API listens, and where its (hashed) API keys are kept."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    keys_path: str = "keys.db"
    #: Largest request body taken (an asset import may be 50 MB).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: Read-only views opened to callers without a key (a wall-screen map). The audit
    #: log, links, cases, exports, commands and live events can never be opened.
    public: list[
        Literal["map", "devices", "telemetry", "alarms", "statistics", "schedules", "assets"]
    ] = []
    #: Failed authentications one address may make in a minute before it gets 429.
    auth_failures_allowed: int = Field(default=10, ge=1, le=1_000_000)
    #: The session cookie's Secure flag: ``auto`` sets it except for plain HTTP to
    #: this machine itself (localhost), where a browser would not keep it.
    session_cookie_secure: Literal["auto", "always", "never"] = "auto"


class AssetsConfig(_Strict):
    """The lamp-pole asset register."""

    #: The register's SQLite file before the state database: imported once, then unused.
    db_path: str = "assets.db"


class DatabaseConfig(_Strict):
    """The state database (``controller.state.database``): alarms, audit, assets,
    overrides and cases, under one URL."""

    #: SQLAlchemy URL; default SQLite in the data folder. For PostgreSQL:
    #: postgresql+psycopg://streetsense@db.example/streetsense, password in ``password_env``.
    url: str = "sqlite+aiosqlite:///state.db"
    password_env: EnvName | None = None
    #: Upgrade an older schema when the controller starts (off: refuse to start until
    #: ``streetsense db upgrade`` has run, for sites that upgrade by hand after a backup).
    migrate_on_start: bool = True


class LeadershipConfig(_Strict):
    """An active/standby pair (``controller.leadership``): two controllers with the same
    config and the same PostgreSQL; only the holder of the lease polls, switches and
    listens."""

    enabled: bool = False
    #: This controller's name in the lease (default: the host's name). Each node sets
    #: its own, by ``STREETSENSE_NODE`` in its environment.
    node: str | None = None
    #: Where this node's API is reached (named to callers of the standby); default
    #: ``STREETSENSE_ADVERTISE_URL``, else http://HOSTNAME:api.port.
    advertise_url: str | None = None
    #: A leader that has not renewed its lease for this long is taken over.
    lease_seconds: float = Field(default=8.0, ge=2.0, le=120.0)
    #: How often the leader renews and the standby tries to take over.
    renew_seconds: float = Field(default=2.0, ge=0.2, le=40.0)
    #: The standby passes the calls it cannot answer (changes, and what only the
    #: leader knows) to the leader; off: it answers them 503 with the leader's address.
    forward_to_leader: bool = True

    @model_validator(mode="after")
    def _renewed_within_the_lease(self) -> LeadershipConfig:
        if self.renew_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"renew_seconds ({self.renew_seconds:g}) must be at most half of "
                f"lease_seconds ({self.lease_seconds:g}): one late renewal must not lose the lease"
            )
        return self


#: ``cases`` keys of the release before the state database, now ``database`` keys.
_MOVED_TO_DATABASE = {
    "db_url": "url",
    "password_env": "password_env",
    "migrate_on_start": "migrate_on_start",
}


class StreetsenseConfig(_Strict):
    """The whole of config.yaml."""

    site: SiteConfig = SiteConfig()
    #: Where the controller writes (stores, spool, keys): relative to this file;
    #: the environment variable STREETSENSE_DATA_DIR overrides it.
    data_dir: str = "var"
    profile_dirs: list[str] = Field(default=[], description="extra profile folders")
    polling: PollingConfig = PollingConfig()
    links: list[LinkConfig] = []
    cabinets: list[CabinetConfig] = []
    lamps: list[StandaloneLampConfig] = []
    gauges: list[GaugeConfig] = []
    meters: list[MeterConfig] = []
    mqtt_devices: list[MqttDeviceConfig] = []
    listeners: list[ListenerConfig] = []
    #: Modules that register push protocols (imported before the config is checked).
    protocol_packages: list[str] = []
    sources: list[SourceEntry] = []
    source_devices: list[SourceDeviceConfig] = []
    sl651_stations: list[Sl651StationConfig] = []
    rules: list[RuleConfig] = []
    alarms: AlarmsConfig = AlarmsConfig()
    flood_watch: FloodWatchConfig | None = None
    storage: StorageConfig = StorageConfig()
    mqtt: MqttConfig | None = None
    simulator: SimulatorConfig = SimulatorConfig()
    api: ApiConfig = ApiConfig()
    logging: LoggingConfig = LoggingConfig()
    control: ControlConfig = ControlConfig()
    assets: AssetsConfig = AssetsConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    cases: CasesConfig = CasesConfig()
    database: DatabaseConfig = DatabaseConfig()
    leadership: LeadershipConfig = LeadershipConfig()

    @model_validator(mode="after")
    def _a_pair_shares_a_server_database(self) -> StreetsenseConfig:
        if self.leadership.enabled and not self.database.url.startswith("postgresql"):
            raise ValueError(
                "leadership.enabled needs database.url on PostgreSQL: the two controllers "
                f"of a pair share one state database, and {self.database.url.split(':')[0]} "
                "is a file of one machine"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _database_from_cases(cls, data: object) -> object:
        """Take ``cases.db_url`` (and its password and migration keys) as ``database``,
        as the release before the state database named them; both at once is refused."""
        if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
            return data
        moved = {k: v for k, v in data["cases"].items() if k in _MOVED_TO_DATABASE}
        if not moved:
            return data
        if "database" in data:
            old = ", ".join(f"cases.{k}" for k in moved)
            raise ValueError(
                f"{old} and database are both set: {old} is the old name of the database "
                "keys (database.url, database.password_env, database.migrate_on_start); "
                "keep database only"
            )
        cases = {k: v for k, v in data["cases"].items() if k not in _MOVED_TO_DATABASE}
        database = {_MOVED_TO_DATABASE[k]: v for k, v in moved.items()}
        return {**data, "cases": cases, "database": database}


class LoadedConfig:
    """A validated configuration with the profiles it refers to."""

    def __init__(
        self,
        config: StreetsenseConfig,
        profiles: ProfileLibrary,
        path: Path,
        sources: list[tuple[PushProtocol, SourceConfig]] | None = None,
    ) -> None:
        self.config = config
        self.profiles = profiles
        self.path = path
        #: Each push source with its protocol and its config as the protocol validated it.
        self.sources = sources or []

    @property
    def data_dir(self) -> Path:
        """The folder everything the controller writes goes into."""
        override = os.environ.get(DATA_DIR_ENV)
        folder = Path(override) if override else Path(self.config.data_dir)
        return folder if folder.is_absolute() else self.path.parent / folder

    def rule_site(self) -> RuleSite:
        """What the rule compiler needs of this config."""
        polling = self.config.polling
        intervals = {
            "cabinet": polling.cabinet_interval,
            "lamp": polling.lamp_interval,
            "gauge": polling.gauge_interval,
            "meter": polling.meter_interval,
        }
        return RuleSite(str(self.path), self.config.rules, intervals, polling.batch_interval)

    def data_path(self, relative: str) -> Path:
        """A path the controller writes (a store, the spool): relative to the data folder."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else self.data_dir / candidate

    def resolve(self, relative: str) -> Path:
        """A file the config names to read (a scenario, grid cells): beside the config
        file, else one shipped with streetsense under the same relative path."""
        candidate = Path(relative)
        if candidate.is_absolute():
            return candidate
        beside = self.path.parent / candidate
        if beside.exists():
            return beside
        shipped = PACKAGE_ROOT / candidate
        return shipped if shipped.exists() else beside


def secret(env_name: str | None, file: str, key: str) -> str | None:
    """The value of a secret named by an environment variable, or None if none is named."""
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise ConfigError(file, key, f"environment variable {env_name} is not set")
    return value


def parse_config(raw: object, path: Path) -> LoadedConfig:
    """Validate an already-parsed YAML document as a streetsense configuration."""
    file = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "the configuration must be a mapping of keys")
    try:
        config = StreetsenseConfig.model_validate(raw)
    except ValidationError as exc:
        raise invalid_file(file, exc, raw) from exc
    extra_dirs = [
        (Path(d) if Path(d).is_absolute() else path.parent / d) for d in config.profile_dirs
    ]
    tiles = config.site.map.tiles
    if tiles is not None:
        secret(tiles.key_env, file, "site.map.tiles.key_env")  # set now, not at first view
    profiles = ProfileLibrary.load(extra_dirs)
    sources = check_references(config, profiles, file)
    return LoadedConfig(config, profiles, path, sources)


def load_config(path: Path) -> LoadedConfig:
    """Read and validate config.yaml and every profile it needs."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    return parse_config(raw, path)
