"""The installed site in config.yaml: links, cabinets and their lamps, gauges, meters,
stations that dial in, and devices of push sources."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.config_base import Identifier


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
