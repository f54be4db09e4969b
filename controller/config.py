"""config.yaml: the installed site (links, cabinets, lamps, gauges) and how to poll it.

Profiles say what a device type is; this file says which devices are installed
where. Loading validates everything, including references between the two
(a cabinet's link must exist, its profile must be a cabinet profile, unit ids
must not collide on a link), and a mistake names the file, the key and why.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
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
from controller.control.config import ControlConfig
from controller.schedules.config import SchedulesConfig
from drivers.errors import ConfigError, invalid_file
from drivers.profile import AnyProfile, ProfileLibrary
from drivers.sources import PushProtocol, SourceConfig, push_protocol, push_protocol_names
from rules.compile import RuleSite
from rules.config import AlarmsConfig, FloodWatchConfig, RuleConfig

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=64)]

#: The folder holding the streetsense packages: shipped resources resolve from here.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = "STREETSENSE_DATA_DIR"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LinkConfig(_Strict):
    """A TCP connection or serial line, and its timing."""

    id: Identifier
    kind: Literal["modbus_tcp", "rtu_over_tcp", "rtu_serial"]
    host: str | None = None
    port: int | str | None = Field(
        default=None, description="TCP port number, or serial device path for rtu_serial"
    )
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=5)
    turnaround_ms: float = Field(default=0.0, ge=0, le=1000)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    #: rtu_serial only: the far end of the line that the simulator serves. When
    #: neither path exists, the simulator joins the two with a socat PTY pair.
    sim_port: str | None = None

    @model_validator(mode="after")
    def _check_address(self) -> LinkConfig:
        if self.kind == "rtu_serial":
            if not isinstance(self.port, str) or not self.port:
                raise ValueError("rtu_serial needs port: a serial device path like /dev/ttyUSB0")
        else:
            if not self.host:
                raise ValueError(f"{self.kind} needs host")
            if not isinstance(self.port, int) or not 0 < self.port < 65536:
                raise ValueError(f"{self.kind} needs port: a TCP port number 1-65535")
        return self


class Located(_Strict):
    """Where a piece of street furniture is and who answers for it."""

    name: str = ""
    lat: float = Field(default=0.0, ge=-90, le=90)
    lon: float = Field(default=0.0, ge=-180, le=180)
    grid: str = Field(default="", description="grid cell code of the city-management grid")
    road: str = ""
    district: str = ""
    department: str = ""
    #: Free labels for groups that are not places ("landscape", "tunnel", "school-zone").
    tags: list[str] = []
    #: Administrative division, street (sub-district) and community codes, carried into cases.
    admin_code: str = ""
    street_code: str = ""
    community_code: str = ""
    #: Values of the parameters its profile's derived points read (mounting height, ...).
    params: dict[str, float] = {}


class LampConfig(Located):
    """One lamp with its single-lamp controller."""

    id: Identifier
    pole: str = ""
    circuit: int = Field(default=1, ge=1, le=32)
    phase: Literal["A", "B", "C"] = "A"
    rated_w: float = Field(default=150.0, gt=0, le=5000)


class LampRunConfig(_Strict):
    """A row of identical lamps on one circuit, numbered ``{cabinet}-L001`` onward."""

    circuit: int = Field(ge=1, le=32)
    count: int = Field(ge=1, le=1024)
    rated_w: float = Field(default=150.0, gt=0, le=5000)
    road: str = ""


class CabinetConfig(Located):
    """A control cabinet, polled through its link, with its lamps behind the concentrator."""

    id: Identifier
    link: str
    unit: int = Field(ge=1, le=247)
    profile: str = "sl-cabinet-4c"
    circuits: int = Field(default=4, ge=1, le=32)
    lamps: list[LampConfig] = []
    lamp_runs: list[LampRunConfig] = []

    def all_lamps(self) -> list[LampConfig]:
        """Listed lamps, then the lamps of each run, in concentrator slot order.

        Lamps of a run take the cabinet's location and are spread over the phases
        A, B, C in turn, as electricians balance a street circuit.
        """
        lamps = list(self.lamps)
        number = len(lamps)
        for run in self.lamp_runs:
            for _ in range(run.count):
                number += 1
                lamps.append(
                    LampConfig(
                        id=f"{self.id}-L{number:03d}",
                        circuit=run.circuit,
                        phase=("A", "B", "C")[(number - 1) % 3],
                        rated_w=run.rated_w,
                        road=run.road or self.road,
                        lat=self.lat,
                        lon=self.lon,
                        grid=self.grid,
                        district=self.district,
                        department=self.department,
                        tags=self.tags,
                        admin_code=self.admin_code,
                        street_code=self.street_code,
                        community_code=self.community_code,
                    )
                )
        return lamps


class StandaloneLampConfig(LampConfig):
    """A single-lamp controller on its own unit id (not behind a concentrator)."""

    link: str
    unit: int = Field(ge=1, le=247)
    profile: str = "slc-lamp"


class GaugeLevels(Located):
    """A water-level gauge at a waterlogging point, with its alarm levels in metres."""

    id: Identifier
    levels: dict[Literal["blue", "yellow", "orange", "red"], float] = {}


class GaugeConfig(GaugeLevels):
    """A polled (Modbus) water-level gauge."""

    link: str
    unit: int = Field(ge=1, le=247)
    profile: str = "wl-radar"


class MeterConfig(Located):
    """A DL/T 645-2007 energy meter on an RS-485 line (alone, or beside Modbus units)."""

    id: Identifier
    #: A serial line (rtu_serial) or a transparent DTU (rtu_over_tcp): DL/T 645 frames
    #: cannot pass a Modbus TCP gateway.
    link: str
    #: The meter's 12-digit number (its nameplate address), most significant digit first.
    address: str = Field(pattern=r"^[0-9]{12}$")
    profile: str = "dlt645-cabinet-meter"
    #: The cabinet whose supply the meter measures (its readings carry that cabinet's tag).
    cabinet: str | None = None


class ListenerConfig(_Strict):
    """A port the centre listens on for stations that dial in (SL651-2014 over 4G TCP)."""

    id: Identifier
    protocol: Literal["sl651"]
    host: str = "0.0.0.0"
    port: int = Field(ge=1, le=65535)
    #: HEX/BCD frames (7E7E) or ASCII frames (SOH); one listener serves one encoding.
    encoding: Literal["hex", "ascii"] = "hex"
    #: A station silent this long is disconnected (about 3 keep-alives after an ESC).
    idle_timeout: float = Field(default=900.0, gt=0)
    #: How long a command waits for its station to come online before it fails.
    command_expiry: float = Field(default=86400.0, gt=0)
    #: A station whose clock is found more than 5 minutes off gets a set-clock (4AH)
    #: queued by the controller (audited as the controller's command).
    auto_set_clock: bool = True


class Sl651StationConfig(GaugeLevels):
    """An SL651 water-level/rain station that reports to one of the centre's listeners."""

    listener: str
    #: The 5-byte station address as 10 hex digits (SL651 6.2.3.2), "0012345678".
    station: str = Field(pattern=r"^[0-9A-Fa-f]{10}$")
    #: The 2-byte password the centre gave the station, 4 hex digits.
    password: str = Field(pattern=r"^[0-9A-Fa-f]{4}$")
    profile: str = "sl651-level-gauge"
    #: How often the station reports (its timed-report interval): comm-loss counts in these.
    report_interval: float = Field(default=300.0, gt=0)


class SourceEntry(BaseModel):
    """One push source (``sources[]``): its id, its protocol, and the protocol's own keys,
    checked against the model the protocol registered (see drivers/sources.py)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Identifier
    protocol: str


class SourceDeviceConfig(GaugeLevels):
    """A device that reports through a push source of a registered protocol."""

    source: str
    #: Any profile of the library: its points are the device's points, in order.
    profile: str
    device_class: Literal["cabinet", "lamp", "gauge", "meter"] = "gauge"


class MqttDeviceConfig(Located):
    """A device that publishes JSON readings over MQTT instead of being polled."""

    id: Identifier
    profile: str
    topic: str = Field(min_length=1, description="topic the device publishes on (no wildcards)")

    @model_validator(mode="after")
    def _no_wildcards(self) -> MqttDeviceConfig:
        if "+" in self.topic or "#" in self.topic:
            raise ValueError("topic must name one device: no + or # wildcards")
        return self


EnvName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]


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


class SiteConfig(_Strict):
    """The city this controller serves."""

    city: str = "demo-city"
    timezone: str = "Asia/Shanghai"
    #: GeoJSON FeatureCollection of the city-management grid cells (polygons with a
    #: ``code`` property), drawn on the dashboard map; relative to this file.
    grid_cells: str | None = None

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

    db_path: str = "assets.db"


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
        return RuleSite(str(self.path), self.config.rules, intervals)

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
    profiles = ProfileLibrary.load(extra_dirs)
    sources = _check_references(config, profiles, file)
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


class _Problems:
    """The problems found in one file, all reported at once."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.found: list[ConfigError] = []

    def add(self, key: str, reason: str) -> None:
        self.found.append(ConfigError(self.file, key, reason))

    def raise_any(self) -> None:
        if self.found:
            first, *more = self.found
            raise ConfigError(first.file, first.key, first.reason, more)


def _check_references(
    config: StreetsenseConfig, profiles: ProfileLibrary, file: str
) -> list[tuple[PushProtocol, SourceConfig]]:
    problems = _Problems(file)
    links: dict[str, LinkConfig] = {}
    endpoints: dict[str, str] = {}
    for i, link in enumerate(config.links):
        key = f"links[{i}] ({link.id})"
        if link.id in links:
            problems.add(f"{key}.id", "link id used twice")
        links[link.id] = link
        where = str(link.port) if link.kind == "rtu_serial" else f"{link.host}:{link.port}"
        if where in endpoints:
            # Two links to one DTU or one serial line would fight over it.
            problems.add(f"{key}.port", f"{where} is already link {endpoints[where]}")
        else:
            endpoints[where] = link.id
    ids: dict[str, str] = {}
    units: dict[tuple[str, int], str] = {}

    def claim_id(device_id: str, key: str) -> None:
        if device_id in ids:
            problems.add(key, f"device id {device_id!r} already used at {ids[device_id]}")
        else:
            ids[device_id] = key

    def check_device(
        key: str, device_id: str, link: str, unit: int, profile: str, device_class: str
    ) -> bool:
        """Whether the device's profile is known and of its class (checks that need it follow)."""
        claim_id(device_id, f"{key}.id")
        if link not in links:
            problems.add(f"{key}.link", f"unknown link {link!r}")
        elif (link, unit) in units:
            problems.add(
                f"{key}.unit", f"unit {unit} on link {link} is already {units[link, unit]}"
            )
        else:
            units[link, unit] = device_id
        if profile not in profiles:
            problems.add(
                f"{key}.profile",
                f"unknown profile {profile!r} (known: {', '.join(profiles.names())})",
            )
            return False
        if profiles[profile].device_class != device_class:
            problems.add(
                f"{key}.profile",
                f"profile {profile} is a {profiles[profile].device_class} profile, "
                f"not a {device_class} profile",
            )
            return False
        return True

    for i, cab in enumerate(config.cabinets):
        key = f"cabinets[{i}] ({cab.id})"
        if check_device(key, cab.id, cab.link, cab.unit, cab.profile, "cabinet"):
            _check_cabinet_profile(cab, key, profiles, problems)
        for j, lamp in enumerate(cab.lamps):
            claim_id(lamp.id, f"{key}.lamps[{j}].id")
            if lamp.circuit > cab.circuits:
                problems.add(
                    f"{key}.lamps[{j}] ({lamp.id}).circuit",
                    f"circuit {lamp.circuit}, but the cabinet has {cab.circuits}",
                )
        for j, run in enumerate(cab.lamp_runs):
            if run.circuit > cab.circuits:
                problems.add(
                    f"{key}.lamp_runs[{j}].circuit",
                    f"circuit {run.circuit}, but the cabinet has {cab.circuits}",
                )
        for lamp in cab.all_lamps()[len(cab.lamps) :]:
            claim_id(lamp.id, f"{key}.lamp_runs")
    for i, lamp in enumerate(config.lamps):
        check_device(f"lamps[{i}] ({lamp.id})", lamp.id, lamp.link, lamp.unit, lamp.profile, "lamp")
    for i, mdev in enumerate(config.mqtt_devices):
        key = f"mqtt_devices[{i}] ({mdev.id})"
        claim_id(mdev.id, f"{key}.id")
        if mdev.profile not in profiles.mqtt:
            problems.add(
                f"{key}.profile",
                f"unknown MQTT profile {mdev.profile!r} "
                f"(known: {', '.join(sorted(profiles.mqtt))})",
            )
        if config.mqtt is None:
            problems.add(f"{key}", "MQTT devices need an mqtt: broker section")
    _check_schedules(config, problems)
    _check_stations(config, profiles, problems, claim_id)
    for i, polled in enumerate(config.gauges):
        key = f"gauges[{i}] ({polled.id})"
        check_device(key, polled.id, polled.link, polled.unit, polled.profile, "gauge")
    level_gauges: list[tuple[str, GaugeLevels]] = [
        *((f"gauges[{i}] ({g.id})", g) for i, g in enumerate(config.gauges)),
        *((f"sl651_stations[{i}] ({s.id})", s) for i, s in enumerate(config.sl651_stations)),
    ]
    for key, gauge in level_gauges:
        order = ["blue", "yellow", "orange", "red"]
        given = [gauge.levels[c] for c in order if c in gauge.levels]
        if given != sorted(given):
            problems.add(f"{key}.levels", "levels must rise blue < yellow < orange < red")
        watch = config.flood_watch
        if watch is not None and not getattr(gauge, watch.area_by):
            # Storm mode groups gauges by this attribute; a gauge without it would
            # land in one nameless area with every other such gauge.
            problems.add(
                f"{key}.{watch.area_by}",
                f"flood_watch.area_by is {watch.area_by!r} but this gauge has no {watch.area_by}",
            )
    _check_meters(config, profiles, problems, claim_id)
    _check_params(config, profiles, problems)
    sources = _check_sources(config, profiles, problems, claim_id)
    problems.raise_any()
    return sources


def _check_sources(
    config: StreetsenseConfig,
    profiles: ProfileLibrary,
    problems: _Problems,
    claim_id: Callable[[str, str], None],
) -> list[tuple[PushProtocol, SourceConfig]]:
    """Import the protocol packages, then check each source against its protocol's model."""
    for i, module in enumerate(config.protocol_packages):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            problems.add(f"protocol_packages[{i}]", f"cannot import {module!r}: {exc}")
    checked: list[tuple[PushProtocol, SourceConfig]] = []
    ids: set[str] = set()
    for i, entry in enumerate(config.sources):
        key = f"sources[{i}] ({entry.id})"
        if entry.id in ids:
            problems.add(f"{key}.id", "source id used twice")
        ids.add(entry.id)
        protocol = push_protocol(entry.protocol)
        if protocol is None:
            known = ", ".join(push_protocol_names()) or "none registered"
            problems.add(f"{key}.protocol", f"unknown protocol {entry.protocol!r} (known: {known})")
            continue
        try:
            checked.append((protocol, protocol.config.model_validate(entry.model_dump())))
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(part) for part in err["loc"])
                problems.add(f"{key}.{where}", err["msg"])
    for i, device in enumerate(config.source_devices):
        key = f"source_devices[{i}] ({device.id})"
        claim_id(device.id, f"{key}.id")
        if device.source not in ids:
            problems.add(f"{key}.source", f"unknown source {device.source!r}")
        profile = any_profile(profiles, device.profile)
        if profile is None:
            problems.add(f"{key}.profile", f"unknown profile {device.profile!r}")
        elif getattr(profile, "device_class", device.device_class) != device.device_class:
            problems.add(
                f"{key}.profile",
                f"profile {device.profile} is not a {device.device_class} profile",
            )
    return checked


def any_profile(profiles: ProfileLibrary, name: str) -> AnyProfile | None:
    """The named profile of any protocol's format, or None."""
    return (
        profiles.get(name)
        or profiles.mqtt.get(name)
        or profiles.sl651.get(name)
        or profiles.dlt645.get(name)
    )


def _check_meters(
    config: StreetsenseConfig,
    profiles: ProfileLibrary,
    problems: _Problems,
    claim_id: Callable[[str, str], None],
) -> None:
    links = {link.id: link for link in config.links}
    cabinets = {cab.id for cab in config.cabinets}
    addresses: dict[tuple[str, str], str] = {}
    for i, meter in enumerate(config.meters):
        key = f"meters[{i}] ({meter.id})"
        claim_id(meter.id, f"{key}.id")
        link = links.get(meter.link)
        if link is None:
            problems.add(f"{key}.link", f"unknown link {meter.link!r}")
        elif link.kind == "modbus_tcp":
            problems.add(
                f"{key}.link",
                f"link {link.id} is modbus_tcp; a DL/T 645 meter needs an rtu_serial line "
                "or an rtu_over_tcp (transparent) DTU",
            )
        if (meter.link, meter.address) in addresses:
            problems.add(
                f"{key}.address",
                f"meter {meter.address} on link {meter.link} is already "
                f"{addresses[meter.link, meter.address]}",
            )
        addresses[meter.link, meter.address] = meter.id
        if meter.profile not in profiles.dlt645:
            known = ", ".join(sorted(profiles.dlt645)) or "none"
            problems.add(
                f"{key}.profile", f"unknown DL/T 645 profile {meter.profile!r} (known: {known})"
            )
        if meter.cabinet is not None and meter.cabinet not in cabinets:
            problems.add(f"{key}.cabinet", f"unknown cabinet {meter.cabinet!r}")


def _check_params(config: StreetsenseConfig, profiles: ProfileLibrary, problems: _Problems) -> None:
    """Each device gives the parameters its profile's derived points need, and no others."""

    devices: list[tuple[str, Located, str, AnyProfile | None]]
    devices = [
        (f"cabinets[{i}] ({c.id})", c, c.profile, profiles.get(c.profile))
        for i, c in enumerate(config.cabinets)
    ]
    devices += [
        (f"lamps[{i}] ({x.id})", x, x.profile, profiles.get(x.profile))
        for i, x in enumerate(config.lamps)
    ]
    devices += [
        (f"gauges[{i}] ({g.id})", g, g.profile, profiles.get(g.profile))
        for i, g in enumerate(config.gauges)
    ]
    devices += [
        (f"mqtt_devices[{i}] ({m.id})", m, m.profile, profiles.mqtt.get(m.profile))
        for i, m in enumerate(config.mqtt_devices)
    ]
    devices += [
        (f"sl651_stations[{i}] ({s.id})", s, s.profile, profiles.sl651.get(s.profile))
        for i, s in enumerate(config.sl651_stations)
    ]
    devices += [
        (f"meters[{i}] ({m.id})", m, m.profile, profiles.dlt645.get(m.profile))
        for i, m in enumerate(config.meters)
    ]
    for key, device, name, profile in devices:
        if profile is None:
            continue  # reported as an unknown profile
        declared = profile.params
        for param in sorted(set(device.params) - set(declared)):
            problems.add(f"{key}.params.{param}", f"profile {name} has no parameter {param!r}")
        for param, default in declared.items():
            if default is None and param not in device.params:
                problems.add(
                    f"{key}.params", f"profile {name} needs parameter {param!r} (no default)"
                )


def _check_stations(
    config: StreetsenseConfig,
    profiles: ProfileLibrary,
    problems: _Problems,
    claim_id: Callable[[str, str], None],
) -> None:
    listeners: dict[str, ListenerConfig] = {}
    for i, listener in enumerate(config.listeners):
        if listener.id in listeners or any(link.id == listener.id for link in config.links):
            problems.add(
                f"listeners[{i}] ({listener.id}).id", "id already used by a link or listener"
            )
        listeners[listener.id] = listener
    addresses: dict[tuple[str, str], str] = {}
    for i, station in enumerate(config.sl651_stations):
        key = f"sl651_stations[{i}] ({station.id})"
        claim_id(station.id, f"{key}.id")
        if station.listener not in listeners:
            problems.add(f"{key}.listener", f"unknown listener {station.listener!r}")
        where = (station.listener, station.station.upper())
        if where in addresses:
            problems.add(
                f"{key}.station", f"station {station.station} is already {addresses[where]}"
            )
        addresses[where] = station.id
        if station.profile not in profiles.sl651:
            known = ", ".join(sorted(profiles.sl651)) or "none"
            problems.add(
                f"{key}.profile", f"unknown SL651 profile {station.profile!r} (known: {known})"
            )


def _check_cabinet_profile(
    cab: CabinetConfig, key: str, profiles: ProfileLibrary, problems: _Problems
) -> None:
    profile = profiles[cab.profile]
    if profile.controls.circuit is not None:
        points = {p.name for p in profile.points}
        for n in range(1, cab.circuits + 1):
            command, feedback = profile.controls.circuit.points_for(n)
            if command not in points or feedback not in points:
                problems.add(
                    f"{key}.circuits",
                    f"{cab.circuits} circuits, but profile {cab.profile} "
                    f"has no {command} / {feedback} for circuit {n}",
                )
                break
    lamp_total = len(cab.lamps) + sum(run.count for run in cab.lamp_runs)
    capacity = profile.blocks[0].count_max if profile.blocks else 0
    if lamp_total > capacity:
        problems.add(
            f"{key}.lamps",
            f"{lamp_total} lamps, but profile {cab.profile} carries at most {capacity}",
        )


def _check_schedules(config: StreetsenseConfig, problems: _Problems) -> None:
    sched = config.schedules
    programs: set[str] = set()
    for i, program in enumerate(sched.programs):
        if program.id in programs:
            problems.add(f"schedules.programs[{i}].id", f"program {program.id} twice")
        programs.add(program.id)

    def known(program: str, key: str) -> None:
        if program not in programs:
            problems.add(key, f"unknown program {program!r} (known: {', '.join(sorted(programs))})")

    calendars: set[str] = set()
    for i, cal in enumerate(sched.calendars):
        key = f"schedules.calendars[{i}] ({cal.id})"
        if cal.id in calendars:
            problems.add(f"{key}.id", f"calendar {cal.id} twice")
        calendars.add(cal.id)
        known(cal.default, f"{key}.default")
        for j, rule in enumerate(cal.rules):
            known(rule.program, f"{key}.rules[{j}].program")
    groups: set[str] = set()
    for i, group in enumerate(sched.groups):
        key = f"schedules.groups[{i}] ({group.id})"
        if group.id in groups:
            problems.add(f"{key}.id", f"group {group.id} twice")
        groups.add(group.id)
        if group.calendar not in calendars:
            problems.add(f"{key}.calendar", f"unknown calendar {group.calendar!r}")
