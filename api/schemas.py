"""API schemas: what the HTTP API returns, separate from config and storage models."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from api.errors import MessageOut
from controller.cases.exchange import CaseRecord, TransitionRecord
from controller.control.selector import GroupSelector

#: The error type of a dim without a level (or a level without a dim): the console words
#: its own validators' errors by type (``validation.*`` in the catalogue), as pydantic's.
LEVEL_FOR_DIM = "level_for_dim"


def utc(ts: float | None) -> datetime | None:
    """A Unix time as an aware UTC datetime; None (or NaN, never read) stays None."""
    if ts is None or ts != ts:
        return None
    return datetime.fromtimestamp(ts, tz=UTC)


class DeviceHealthOut(BaseModel):
    """Communication health of a device."""

    online: bool
    polls: int
    consecutive_failures: int
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str
    errors: dict[str, int]


class DeviceSummary(BaseModel):
    """A device in a list."""

    id: str
    device_class: str
    profile: str
    name: str
    link: str
    unit: int
    parent: str | None
    grid: str
    road: str
    district: str
    lat: float
    lon: float
    online: bool


class PointValue(BaseModel):
    """The latest reading of one point."""

    point: str
    value: float | None
    unit: str
    ts: datetime | None
    quality: str
    #: A switch or contact (1 is on, closed, open door...), shown as yes or no.
    boolean: bool = False


class DeviceDetail(DeviceSummary):
    """A device with its latest readings and health."""

    circuit: int | None
    phase: str | None
    rated_w: float | None
    health: DeviceHealthOut
    readings: list[PointValue]


class LinkOut(BaseModel):
    """Health of one link."""

    id: str
    kind: str
    address: str
    connected: bool
    connects: int
    connect_failures: int
    disconnects: int
    requests: int
    errors: dict[str, int]
    last_success: datetime | None
    last_error: str
    devices: int
    devices_online: int


class StationOut(BaseModel):
    """An SL651 station that dials in: whether it is reachable, its clock, its counters."""

    id: str
    listener: str
    station: str
    connected: bool
    #: Online for commands (after an ESC confirm or a keep-alive) until then.
    online_until: datetime | None
    last_report: datetime | None
    reports: int
    duplicates: int
    keep_alives: int
    wrong_password: int
    bad_body: int
    #: The station's clock minus the centre's at its last report, in seconds.
    clock_offset_s: float | None
    #: More than 5 minutes off: set its clock.
    clock_drift: bool
    pending_commands: int
    commands_sent: int
    commands_answered: int
    commands_failed: int


class StationCommandIn(BaseModel):
    """A command for a station: ``set_clock`` (to the centre's clock), ``query`` (its
    real-time data now), ``query_period`` (one point's values the station stored
    from ``start`` to ``end``, every ``step_minutes``: after an outage, the history
    it could not send), ``read_settings`` (the runtime parameters named in
    ``settings``, or every one its profile names) or ``write_settings`` (``values``:
    parameter name -> new value)."""

    model_config = ConfigDict(extra="forbid")

    command: Literal["set_clock", "query", "query_period", "read_settings", "write_settings"]
    #: query_period: the point (``water_level``, ``rain_today``, ...).
    point: str | None = Field(default=None, max_length=64)
    #: query_period: whole hours of the station's (the city's) time, with an offset.
    start: datetime | None = None
    end: datetime | None = None
    step_minutes: int = Field(default=60, ge=1, le=1440)
    #: read_settings: the parameters to read (all the profile names if left out).
    settings: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=64
    )
    #: write_settings: parameter name -> the value to set.
    values: dict[Annotated[str, Field(max_length=64)], float] | None = Field(
        default=None, min_length=1, max_length=64
    )

    @model_validator(mode="after")
    def _fields_of_command(self) -> StationCommandIn:
        period = self.point is not None or self.start is not None or self.end is not None
        if self.command != "query_period" and period:
            raise PydanticCustomError(
                "station_command_fields", "point, start and end belong to query_period only"
            )
        if self.command == "query_period" and (
            self.point is None or self.start is None or self.end is None
        ):
            raise PydanticCustomError(
                "station_command_fields", "query_period needs point, start and end"
            )
        if self.settings is not None and self.command != "read_settings":
            raise PydanticCustomError(
                "station_command_fields", "settings belongs to read_settings only"
            )
        if (self.values is not None) != (self.command == "write_settings"):
            raise PydanticCustomError(
                "station_command_fields", "write_settings needs values, and only it takes them"
            )
        return self


class PeriodValueOut(BaseModel):
    """One value a station answered a period query with."""

    at: datetime
    value: float | None


class StationCommandOut(BaseModel):
    """A station command: pending delivery until the station next calls, then its outcome."""

    id: int
    station: str
    command: str
    by: str
    role: str
    status: str
    queued_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    sends: int
    reason: str
    #: What the station answered a query with: point name -> value.
    readings: dict[str, float | None]
    #: query_period: the point asked for and its values in time order.
    point: str | None = None
    values: list[PeriodValueOut] = []
    #: read_settings / write_settings: parameter name -> the value the station has
    #: (asked or set; what its answer shows once it answered).
    settings: dict[str, float | None] = {}


class LeadershipOut(BaseModel):
    """Which node of an active/standby pair this is, and who leads."""

    role: Literal["leader", "standby"]
    node: str
    #: The epoch of the lease this node holds (None on the standby).
    epoch: int | None
    #: Since when this node leads (None on the standby).
    since: datetime | None
    #: The node that leads, as far as this one knows, and where its API is.
    leader: str | None
    leader_url: str | None
    #: Whether this node reached the state database at its last try for the lease.
    database_reachable: bool
    #: On the standby: when it last read the leader's open alarms from the database.
    alarms_read_at: datetime | None = None


class SystemHealth(BaseModel):
    """Whether the controller does its job (ok, degraded, failing), why, and the fleet."""

    status: Literal["ok", "degraded", "failing"]
    #: What makes it degraded or failing, in words.
    reasons: list[str] = []
    city: str
    devices: dict[str, int]
    poll_targets: int
    online: int
    #: Present for a controller of a pair.
    leadership: LeadershipOut | None = None


class SampleOut(BaseModel):
    """One stored reading."""

    ts: datetime
    value: float | None
    quality: str


class BucketOut(BaseModel):
    """One downsampling interval."""

    ts: datetime
    mean: float
    min: float
    max: float
    count: int


class SeriesOut(BaseModel):
    """A point's readings over a time range, raw or downsampled."""

    device: str
    point: str
    unit: str
    start: datetime
    end: datetime
    every_s: float | None
    source: str
    samples: list[SampleOut] | None = None
    buckets: list[BucketOut] | None = None


class LatestOut(BaseModel):
    """The newest stored values of one device."""

    device: str
    device_class: str
    grid: str
    road: str
    ts: datetime | None
    values: dict[str, float | None]


class SinkOut(BaseModel):
    """Delivery state of a telemetry destination (embedded store, InfluxDB, MQTT).

    Points are what the destination counts: InfluxDB lines (one per device per
    poll), MQTT messages, embedded-store readings.
    """

    name: str
    up: bool
    task_alive: bool
    last_success: datetime | None
    oldest_pending_age_s: float | None
    pending_records: int
    pending_points: int
    pending_bytes: int
    refused_points: int
    refused_records: int
    dropped_points: int
    rejected_records: int
    spool_full: bool
    delivered_records: int
    delivered_points: int
    failures: int
    restarts: int
    last_error: str


class AlarmOut(BaseModel):
    """An alarm as operators see it."""

    id: int
    rule: str
    kind: str
    device: str
    device_class: str
    point: str
    sub: int
    severity: str
    level: int
    level_name: str
    state: str
    condition: str
    value: float | None
    limit: float | None
    raised_at: datetime
    last_seen: datetime
    count: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    shelved_until: datetime | None
    suppressed_by: str | None
    out_of_service: bool
    chattering: bool
    grid: str
    road: str
    district: str
    cabinet: str
    circuit: int | None
    lat: float
    lon: float


class ShelveIn(BaseModel):
    """How long to shelve an alarm."""

    minutes: float = Field(gt=0, le=7 * 24 * 60)
    reason: str = Field(default="", max_length=500)


class AlarmIdsIn(BaseModel):
    """Alarms to act on together (a bulk acknowledge)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[int] = Field(min_length=1, max_length=5000)


class AlarmShelveManyIn(AlarmIdsIn):
    """Alarms to shelve together, and for how long."""

    minutes: float = Field(gt=0, le=7 * 24 * 60)
    reason: str = Field(default="", max_length=500)


class AlarmRefusal(BaseModel):
    """One alarm a bulk action left alone, and why."""

    id: int
    reason: str
    #: The reason in the catalogue's words: the console shows it in the reader's language.
    message: MessageOut


class AlarmBatchOut(BaseModel):
    """What a bulk action did."""

    done: list[AlarmOut]
    refused: list[AlarmRefusal]


class OutOfServiceIn(BaseModel):
    """Take an alarm out of service, or back."""

    out_of_service: bool
    reason: str = Field(default="", max_length=500)


class FloodWatchOut(BaseModel):
    """Areas in storm mode and areas with an alarm flood."""

    storm_areas: dict[str, datetime]
    alarm_floods: dict[str, datetime]


class LightingRateOut(BaseModel):
    """Lighting rate of a group."""

    group: str
    should_be_lit: int
    lit: int
    rate: float | None


class FaultCountOut(BaseModel):
    """Faults of one period and group."""

    period_start: datetime
    group: str
    raised: int
    cleared: int
    mttr_s: float | None


class FaultReportOut(BaseModel):
    """Fault statistics over a range: counts per period and group, availability."""

    period: str
    by: str
    start: datetime
    end: datetime
    availability: float
    rows: list[FaultCountOut]


class CircuitCommandIn(BaseModel):
    """Switch cabinet circuits (contactors) of a group on or off."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["on", "off"]
    targets: GroupSelector
    #: Needed when a switch-off puts out more lamps than the configured limit.
    confirm: bool = False


class LampCommandIn(BaseModel):
    """Switch or dim single lamps of a group."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["on", "off", "dim"]
    #: Dim level in percent, for action dim (1-100; dimming a dark lamp lights it).
    level: int | None = Field(default=None, ge=1, le=100)
    targets: GroupSelector
    confirm: bool = False

    @model_validator(mode="after")
    def _level_for_dim(self) -> LampCommandIn:
        if (self.action == "dim") != (self.level is not None):
            raise PydanticCustomError(LEVEL_FOR_DIM, "level is required for dim and only for dim")
        return self


class TargetResultOut(BaseModel):
    """One target's part of a command."""

    target: str
    status: str
    reason: str = ""
    done_at: datetime | None = None
    #: ``reason`` in the catalogue's words, where worded.
    message: MessageOut | None = None


class CommandOut(BaseModel):
    """A command: its request, status and a result per target."""

    id: int
    action: str
    level: int | None
    targets: str
    source: str
    by: str
    role: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]
    results: list[TargetResultOut]


class AuditEntryOut(BaseModel):
    """One line of the command audit log."""

    id: int
    at: datetime
    source: str
    by: str
    key_id: str
    role: str
    action: str
    level: int | None
    targets: str
    target_count: int
    outcome: str
    reason: str
    confirmed: int
    failed: int
    finished_at: datetime | None
    results: dict[str, dict[str, Any]]


class ImportRejectOut(BaseModel):
    """A row an import did not take."""

    row: int
    pole_id: str
    reason: str
    #: The reason in the catalogue's words: the console shows it in the reader's language.
    message: MessageOut


class ImportReportOut(BaseModel):
    """What a bulk import did."""

    accepted: int
    created: int
    updated: int
    #: The first rejected rows with their reasons (at most MAX_REJECTS_SHOWN).
    rejected: list[ImportRejectOut]
    #: How many rows were rejected in all.
    rejected_total: int
    dry_run: bool


class AssetGroupOut(BaseModel):
    """Poles of one road, grid cell or cabinet."""

    group: str
    poles: int
    with_controller: int
    rated_kw: float


class StepOut(BaseModel):
    """One planned step of one place."""

    at: datetime
    action: str
    level: int | None


class PlaceTimelineOut(BaseModel):
    """A place's steps on one night."""

    place: str
    lat: float
    lon: float
    steps: list[StepOut]


class ScheduleGroupOut(BaseModel):
    """A schedule group and what it does tonight."""

    id: str
    name: str
    calendar: str
    mode: str
    places: int
    tonight: str
    program: str
    program_name: str
    next_step: StepOut | None


class TimelineOut(BaseModel):
    """A group's night, place by place."""

    group: str
    night: str
    program: str
    places: list[PlaceTimelineOut]


class FiredStepOut(BaseModel):
    """What the runner did at one moment."""

    at: datetime
    source: str
    action: str
    level: int | None
    places: list[str]
    commands: list[int]


class TablePushOut(BaseModel):
    """The last push of a cabinet's time table."""

    cabinet: str
    at: datetime
    night: str
    entries: int
    ok: bool
    detail: str


class OverrideIn(BaseModel):
    """Hold a group in a state for a while, over its schedule."""

    model_config = ConfigDict(extra="forbid")

    targets: GroupSelector
    action: Literal["on", "off", "dim"]
    level: int | None = Field(default=None, ge=1, le=100)
    #: Default: now.
    starts_at: datetime | None = None
    expires_at: datetime
    reason: str = Field(min_length=1, max_length=500)
    confirm: bool = False

    @model_validator(mode="after")
    def _check(self) -> OverrideIn:
        if (self.action == "dim") != (self.level is not None):
            raise PydanticCustomError(LEVEL_FOR_DIM, "level is required for dim and only for dim")
        if self.expires_at.tzinfo is None or (
            self.starts_at is not None and self.starts_at.tzinfo is None
        ):
            raise PydanticCustomError(
                "timezone_aware", "give times with a UTC offset, e.g. 2026-11-22T23:00:00+08:00"
            )
        if self.starts_at is not None and self.expires_at <= self.starts_at:
            raise PydanticCustomError("expires_before_start", "expires_at must be after starts_at")
        return self


class OverrideOut(BaseModel):
    """An override and where it stands."""

    id: int
    #: The group in one line of ids, for logs and machines.
    targets: str
    #: The same group as sent, for a console to name its parts in the reader's words.
    selector: GroupSelector
    action: str
    level: int | None
    starts_at: datetime
    expires_at: datetime
    reason: str
    by: str
    created_at: datetime
    cancelled_at: datetime | None
    state: Literal["scheduled", "active", "ended", "cancelled"]


class CaseDetailOut(CaseRecord):
    """A case with its history; the reporter's contact details for the command centre only."""

    transitions: list[TransitionRecord]
    contact: dict[str, str] | None = None
    #: Where the routing table would dispatch it (the dispatcher may choose another).
    routed_department: str
    #: The category as people call it (``cases.categories[].name``).
    category_name: str


class DepartmentsOut(BaseModel):
    """The departments cases are dispatched to (from the routing table)."""

    departments: list[str]


class CasePhotoOut(BaseModel):
    """A photo attached to a case."""

    id: int
    case_id: int
    url: str
    at: datetime
    by: str
    stage: str
    content_type: str
    bytes: int


class CaseIn(BaseModel):
    """A case reported by an inspector (监督员) or the hotline (12319)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["inspector", "hotline"]
    category: str
    severity: Literal["low", "medium", "high", "urgent"] = "medium"
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    component_id: str = ""
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    address: str = ""
    grid: str = ""
    road: str = ""
    district: str = ""
    admin_code: str = ""
    street_code: str = ""
    community_code: str = ""
    media: list[str] = []


class CaseActionIn(BaseModel):
    """What goes with a case action."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)
    #: dispatch: the department (default: the routing table's).
    department: str | None = None
    assignee: str | None = None
    #: extend: the new due time (with a UTC offset).
    due_at: datetime | None = None
    #: pass_verification/close/reject although the case's fault is still active
    #: (needs a note); the fault then gets a new case at its next poll.
    force: bool = False


class CaseFiguresOut(BaseModel):
    """Case figures of one period and group."""

    period_start: datetime
    group: str
    due: int
    closed: int
    closed_on_time: int
    closure_rate: float | None
    on_time_rate: float | None
    mean_disposal_minutes: float | None
    rework_rate: float | None
    extension_rate: float | None


class WebhookStatusOut(BaseModel):
    """Webhook delivery."""

    configured: bool
    url: str | None
    delivered: int
    failures: int
    waiting: int
    last_error: str


class CabinetEnergyOut(BaseModel):
    """One cabinet's energy over the nights asked for."""

    cabinet: str
    name: str
    rated_kw: float
    #: The rated load burning from sunset to sunrise every night.
    full_kwh: float
    #: What its counter says (None: see ``note``).
    kwh: float | None
    #: Share of full-power burning not used, in percent.
    saving_pct: float | None
    note: str


class EnergyReportOut(BaseModel):
    """Energy per cabinet: one night, or every night of a month so far."""

    period: Literal["night", "month"]
    #: The evening of the first night, and how many nights.
    first_night: date
    nights: int
    total_kwh: float
    #: Full power of the cabinets whose counters answered (what total_kwh compares with).
    total_full_kwh: float
    saving_pct: float | None
    cabinets: list[CabinetEnergyOut]


class WhoAmIOut(BaseModel):
    """The caller and what the dashboard should offer them."""

    name: str
    role: str
    may: dict[str, bool]
    #: For a person's session: the token to send as X-CSRF-Token on changes.
    csrf_token: str | None = None


class LoginIn(BaseModel):
    """A person's username and password."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SessionOut(BaseModel):
    """An open session (its token is in the HttpOnly cookie, never in a body)."""

    name: str
    role: str
    may: dict[str, bool]
    csrf_token: str
    expires_at: datetime


class UserOut(BaseModel):
    """A person's account, without the password."""

    username: str
    name: str
    role: str
    created_at: datetime
    disabled: bool
    locked_until: datetime | None


class UserCreateIn(BaseModel):
    """A new account: the admin sets a first password and tells the person."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=2, max_length=32)
    name: str = Field(default="", max_length=64)
    role: Literal["viewer", "engineer", "dispatcher", "flood_duty", "admin"]
    password: str = Field(min_length=1, max_length=256)


class UserUpdateIn(BaseModel):
    """Changes to an account; a new role or password, or disabling, ends its sessions."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=64)
    role: Literal["viewer", "engineer", "dispatcher", "flood_duty", "admin"] | None = None
    password: str | None = Field(default=None, min_length=1, max_length=256)
    disabled: bool | None = None


class MapDeviceOut(BaseModel):
    """A point on the map."""

    id: str
    device_class: str
    name: str
    lat: float
    lon: float
    #: Drawn near its cabinet: the lamp has no coordinates of its own.
    placed: bool
    state: Literal["on", "off", "offline", "alarm", "normal", "unknown"]
    severity: str | None
    alarms: int
    parent: str | None
    road: str
    grid: str
    levels: dict[str, float] | None = None


class WaterOut(BaseModel):
    """A gauge on the flood panel: its level now, band, trend and how old the reading is."""

    id: str
    name: str
    district: str
    road: str
    level: float | None
    at: datetime | None
    #: The band the water stands in, or null below blue (or with no reading).
    band: Literal["blue", "yellow", "orange", "red"] | None
    rise_cm_per_min: float | None
    trend: Literal["rising", "falling", "steady", "unknown"]
    age_s: float | None
    #: Its area is in storm mode (polled faster).
    storm: bool
    levels: dict[str, float]


class GridCellOut(BaseModel):
    """A grid cell outline: lon/lat rings; ``approximate`` when drawn around its devices."""

    code: str
    rings: list[list[list[float]]]
    approximate: bool


class TileLayerOut(BaseModel):
    """The basemap's tile source as the browser uses it (the key filled in)."""

    url: str
    attribution: str
    subdomains: str
    min_zoom: int
    max_zoom: int
    datum: Literal["wgs84", "gcj02"]


class MapOut(BaseModel):
    """What the dashboard map draws."""

    city: str
    #: What people call the city (``site.name``), else its id.
    city_name: str
    #: The basemap under the devices; null draws the map from the asset register alone.
    tiles: TileLayerOut | None = None
    #: The site's time zone (IANA name): the console shows every time in it.
    timezone: str
    bounds: list[float]
    devices: list[MapDeviceOut]
    grids: list[GridCellOut]
