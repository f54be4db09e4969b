"""Device profiles: a device type's register map, as validated data.

A profile names every point of a device (table, address, data type, word and
byte order, scale, offset, unit, access). A concentrator profile can also carry
repeated blocks: N sub-devices (for example single-lamp controllers) laid out at
``base + i * stride`` in each table, each described by another profile. Supporting
a new vendor's device means writing a YAML file, not code.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.derived import DerivedPointSpec, check_derived
from drivers.dlt645.profile import Dlt645Profile
from drivers.errors import ConfigError, invalid_file
from drivers.mqtt_profile import MqttDeviceProfile
from drivers.sl651.profile import Sl651Profile

MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


class Table(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bit(self) -> bool:
        """Coils and discrete inputs carry single bits, the others 16-bit words."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        """Only coils and holding registers can be written over Modbus."""
        return self in (Table.COIL, Table.HOLDING_REGISTER)


class DataType(StrEnum):
    """How a point's raw bits are interpreted."""

    BOOL = "bool"
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    F32 = "f32"

    @property
    def words(self) -> int:
        """Number of 16-bit registers the type occupies (bits count as one slot)."""
        return 2 if self in (DataType.U32, DataType.I32, DataType.F32) else 1


class Order(StrEnum):
    """Word order (of 32-bit values) or byte order (within each 16-bit word)."""

    BIG = "big"
    LITTLE = "little"


#: The usual names of a 32-bit value's byte layout, as (word order, byte order):
#: A is the most significant byte.
ORDER_NAMES: dict[str, tuple[Order, Order]] = {
    "ABCD": (Order.BIG, Order.BIG),
    "CDAB": (Order.LITTLE, Order.BIG),
    "BADC": (Order.BIG, Order.LITTLE),
    "DCBA": (Order.LITTLE, Order.LITTLE),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointSpec(_Strict):
    """One named value of a device: where it lives and how to read it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    table: Table
    address: int = Field(ge=0, le=65535)
    type: DataType = DataType.U16
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    #: The byte layout by its usual name (ABCD, CDAB, BADC, DCBA), instead of the two orders.
    order: Literal["ABCD", "CDAB", "BADC", "DCBA"] | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    access: Literal["r", "rw"] = "r"
    description: str = ""
    #: A raw register value the device uses to say "no valid reading" (often 0xFFFF).
    invalid_raw: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _named_order(cls, data: object) -> object:
        if not isinstance(data, dict) or data.get("order") is None:
            return data
        name = data["order"]
        if name not in ORDER_NAMES:
            return data  # the field's own check names the choices
        word, byte = ORDER_NAMES[name]
        for key, implied in (("word_order", word), ("byte_order", byte)):
            given = data.get(key)
            if given is not None and Order(given) is not implied:
                raise ValueError(f"order {name} means {key} {implied.value}, not {given}")
        return {**data, "word_order": word, "byte_order": byte}

    @model_validator(mode="after")
    def _check_consistency(self) -> PointSpec:
        if self.table.is_bit != (self.type is DataType.BOOL):
            raise ValueError(
                f"type {self.type.value} does not fit table {self.table.value}: "
                "coils and discrete inputs hold bool, registers hold numbers"
            )
        if self.access == "rw" and not self.table.writable:
            raise ValueError(f"access rw is impossible on table {self.table.value}")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address + self.type.words - 1 > 65535:
            raise ValueError("point runs past register 65535")
        return self


class BlockSpec(_Strict):
    """A repeated block: up to ``count_max`` sub-devices at ``base + i * stride``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    profile: str
    count_max: int = Field(ge=1, le=1024)
    base: dict[Table, int]
    stride: dict[Table, int]

    @model_validator(mode="after")
    def _check_tables(self) -> BlockSpec:
        if set(self.base) != set(self.stride):
            raise ValueError("base and stride must name the same tables")
        if any(s <= 0 for s in self.stride.values()):
            raise ValueError("stride must be positive")
        return self


class ControlSpec(_Strict):
    """A command point and the point whose reading confirms the command took effect.

    In a cabinet's ``circuit`` control, ``{n}`` stands for the circuit number.
    """

    command: str
    feedback: str

    def points_for(self, circuit: int | None = None) -> tuple[str, str]:
        """Command and feedback point names (with ``{n}`` filled in for a circuit)."""
        n = "" if circuit is None else str(circuit)
        return self.command.replace("{n}", n), self.feedback.replace("{n}", n)


class ProfileControls(_Strict):
    """What can be commanded: a cabinet's circuits, a lamp's relay and its dimmer."""

    circuit: ControlSpec | None = None
    switch: ControlSpec | None = None
    dim: ControlSpec | None = None
    #: The circuit feedback is the output coil itself (no auxiliary contact): a
    #: confirmation means the output latched, not that the contactor closed.
    circuit_feedback_is_coil: bool = False


#: Words per time-table entry: minute of day, circuit bitmask, state (0/1), dim (%).
TIME_TABLE_ENTRY_WORDS = 4
#: First word of an unused time-table entry.
TIME_TABLE_UNUSED = 0xFFFF


class TimeTableSpec(_Strict):
    """The device's own time-control table, so it switches on time without the centre.

    ``entries`` holding-register records from ``base``, each
    ``[minute of day (local), circuit bitmask, state 0/1, dim %]``; an unused
    entry has 0xFFFF as its minute.
    """

    base: int = Field(ge=0, le=65535)
    entries: int = Field(ge=1, le=64)


class DeviceProfile(_Strict):
    """A device type: its points, its read limits, and its repeated blocks."""

    protocol: Literal["modbus"] = "modbus"
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    device_class: Literal["cabinet", "lamp", "gauge"]
    description: str = ""
    vendor: str = ""
    #: Largest read the device accepts, in registers (coils/inputs: bits).
    max_registers_per_read: int = Field(default=MAX_REGISTERS_PER_READ, ge=1, le=125)
    #: Unused registers the planner may read through to merge two requests.
    #: 0 for devices that reject reads of undefined addresses.
    max_gap: int = Field(default=8, ge=0, le=124)
    points: list[PointSpec] = Field(min_length=1)
    blocks: list[BlockSpec] = []
    controls: ProfileControls = ProfileControls()
    time_table: TimeTableSpec | None = None
    #: Per-device parameters derived points read (a gauge's mounting height): a default,
    #: or null when every device must give its own in config (``params``).
    params: dict[str, float | None] = {}
    #: Points computed from this device's points in the same poll.
    derived: list[DerivedPointSpec] = []

    @model_validator(mode="after")
    def _check_derived(self) -> DeviceProfile:
        check_derived(self.derived, [p.name for p in self.points], self.params)
        return self

    @property
    def coil_feedback(self) -> bool:
        """Whether the circuit feedback is the output coil (the contactor is not seen)."""
        circuit = self.controls.circuit
        return circuit is not None and (
            self.controls.circuit_feedback_is_coil or circuit.feedback == circuit.command
        )

    @model_validator(mode="after")
    def _check_controls(self) -> DeviceProfile:
        names = {p.name: p for p in self.points}
        for kind in ("circuit", "switch", "dim"):
            spec: ControlSpec | None = getattr(self.controls, kind)
            if spec is None:
                continue
            command, feedback = spec.points_for(1 if kind == "circuit" else None)
            for role, name in (("command", command), ("feedback", feedback)):
                if name not in names:
                    raise ValueError(f"controls.{kind}.{role}: no point {name!r}")
            if names[command].access != "rw":
                raise ValueError(f"controls.{kind}.command: point {command!r} is not writable")
        if self.time_table is not None:
            end = self.time_table.base + self.time_table.entries * TIME_TABLE_ENTRY_WORDS
            for point in self.points:
                if (
                    point.table is Table.HOLDING_REGISTER
                    and point.address < end
                    and point.address + point.type.words > self.time_table.base
                ):
                    raise ValueError(f"time_table overlaps point {point.name!r}")
        return self

    @model_validator(mode="after")
    def _check_points(self) -> DeviceProfile:
        seen: dict[str, int] = {}
        for i, point in enumerate(self.points):
            if point.name in seen:
                raise ValueError(
                    f"points[{i}] name {point.name!r} repeats points[{seen[point.name]}]"
                )
            seen[point.name] = i
        occupied: dict[tuple[Table, int], str] = {}
        for point in self.points:
            for word in range(point.type.words):
                key = (point.table, point.address + word)
                if key in occupied:
                    raise ValueError(
                        f"point {point.name!r} overlaps point {occupied[key]!r} at "
                        f"{point.table.value} {point.address + word}"
                    )
                occupied[key] = point.name
        return self

    @cached_property
    def _point_indexes(self) -> dict[str, int]:
        return {point.name: i for i, point in enumerate(self.points)}

    def point_index(self, name: str) -> int:
        """Index of the named point (its column in readings)."""
        index = self._point_indexes.get(name)
        if index is None:
            raise KeyError(f"profile {self.name} has no point {name!r}")
        return index

    def point(self, name: str) -> PointSpec:
        """The named point."""
        return self.points[self.point_index(name)]


def shipped_profiles_dir() -> Path:
    """Folder of the profiles that ship with streetsense."""
    return Path(__file__).parent / "profiles"


#: A profile of any protocol.
AnyProfile = DeviceProfile | MqttDeviceProfile | Sl651Profile | Dlt645Profile


def load_profile(path: Path) -> AnyProfile:
    """Load and validate one profile file; errors name the file, the point and the field.

    A file with ``protocol: mqtt`` is an MQTT JSON profile, ``protocol: sl651`` an SL651
    station profile, ``protocol: dlt645`` a DL/T 645 meter profile, any other a Modbus
    profile.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "", "a profile must be a mapping")
    try:
        if raw.get("protocol") == "mqtt":
            return MqttDeviceProfile.model_validate(raw)
        if raw.get("protocol") == "sl651":
            return Sl651Profile.model_validate(raw)
        if raw.get("protocol") == "dlt645":
            return Dlt645Profile.model_validate(raw)
        return DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        raise invalid_file(str(path), exc, raw) from exc


class ProfileLibrary:
    """All known profiles by name, with cross-profile checks (blocks must resolve)."""

    def __init__(
        self,
        profiles: dict[str, tuple[DeviceProfile, Path]],
        mqtt: dict[str, tuple[MqttDeviceProfile, Path]] | None = None,
        sl651: dict[str, Sl651Profile] | None = None,
        dlt645: dict[str, Dlt645Profile] | None = None,
    ) -> None:
        self._profiles = profiles
        self.mqtt = {name: entry[0] for name, entry in (mqtt or {}).items()}
        self.sl651 = dict(sl651 or {})
        self.dlt645 = dict(dlt645 or {})

    @classmethod
    def load(cls, extra_dirs: list[Path] | None = None) -> ProfileLibrary:
        """Load the shipped profiles, then any extra folders (later files win by name)."""
        found: dict[str, tuple[DeviceProfile, Path]] = {}
        mqtt: dict[str, tuple[MqttDeviceProfile, Path]] = {}
        sl651: dict[str, Sl651Profile] = {}
        dlt645: dict[str, Dlt645Profile] = {}
        for folder in [shipped_profiles_dir(), *(extra_dirs or [])]:
            if not folder.is_dir():
                raise ConfigError(str(folder), "", "profile folder does not exist")
            for path in sorted(folder.glob("*.yaml")):
                profile = load_profile(path)
                if isinstance(profile, MqttDeviceProfile):
                    mqtt[profile.name] = (profile, path)
                elif isinstance(profile, Sl651Profile):
                    sl651[profile.name] = profile
                elif isinstance(profile, Dlt645Profile):
                    dlt645[profile.name] = profile
                else:
                    found[profile.name] = (profile, path)
        library = cls(found, mqtt, sl651, dlt645)
        library._check_blocks()
        return library

    def _check_blocks(self) -> None:
        for profile, path in self._profiles.values():
            for i, block in enumerate(profile.blocks):
                if block.profile not in self._profiles:
                    raise ConfigError(
                        str(path),
                        f"blocks[{i}].profile",
                        f"unknown profile {block.profile!r}",
                    )
                inner = self._profiles[block.profile][0]
                for point in inner.points:
                    if point.table not in block.base:
                        raise ConfigError(
                            str(path),
                            f"blocks[{i}].base",
                            f"profile {inner.name} has point {point.name!r} in table "
                            f"{point.table.value}, which the block gives no base for",
                        )

    def __contains__(self, name: object) -> bool:
        return name in self._profiles

    def __getitem__(self, name: str) -> DeviceProfile:
        return self._profiles[name][0]

    def get(self, name: str) -> DeviceProfile | None:
        """The named Modbus profile, or None."""
        entry = self._profiles.get(name)
        return None if entry is None else entry[0]

    def path_of(self, name: str) -> Path:
        """File the named profile was loaded from."""
        return self._profiles[name][1]

    def names(self) -> list[str]:
        """Names of all loaded profiles."""
        return sorted(self._profiles)
