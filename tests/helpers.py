"""Test helpers: a device model with fixed values, and chosen values per profile."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import make_url

from api.app import create_app
from api.keys import ApiKeyStore, Role
from controller.config import LoadedConfig
from controller.leadership.lease import LeaderLease
from controller.runtime import Controller
from controller.state.database import StateDatabase
from controller.state.legacy import opened_state
from drivers.profile import DataType, DeviceProfile
from drivers.readings import ReadingBatch
from simulators.faults import FaultBoard
from simulators.fleet import SimulatedCity


class FixedModel:
    """A device model that reports chosen values and records writes."""

    def __init__(self, own: dict[str, float], subs: list[dict[str, float]] | None = None) -> None:
        self.own = own
        self.subs = subs or []
        self.writes: list[tuple[int, str, float]] = []

    def snapshot(
        self, board: FaultBoard, now: float
    ) -> tuple[dict[str, float], list[dict[str, float]]]:
        return self.own, self.subs

    def write_point(self, owner: int, point: str, value: float) -> None:
        self.writes.append((owner, point, value))


T = TypeVar("T")


def chosen_values(profile: DeviceProfile, seed: int = 0) -> dict[str, float]:
    """A distinct, exactly representable value for every point of a profile.

    32-bit integers are chosen above 65535 so that both words matter; signed
    types get negative values so that sign handling matters.
    """
    values: dict[str, float] = {}
    for i, p in enumerate(profile.points):
        k = i + 7 * seed
        raw: float
        if p.type is DataType.BOOL:
            raw = float((i + seed) % 2)
        elif p.type is DataType.U16:
            raw = 1000 + 37 * k
        elif p.type is DataType.I16:
            raw = -(100 + 11 * k)
        elif p.type is DataType.U32:
            raw = 70_000 + 1234 * k
        elif p.type is DataType.I32:
            raw = -(70_000 + 99 * k)
        else:
            raw = 12.375 + k
        values[p.name] = raw * p.scale + p.offset
    return values


def three_transport_links(tmp_path: Path, ports: tuple[int, int]) -> list[dict[str, Any]]:
    """One link of each kind: Modbus TCP, RTU over TCP, RTU on a PTY serial line."""
    return [
        {"id": "tcp", "kind": "modbus_tcp", "host": "127.0.0.1", "port": ports[0], "timeout": 0.5},
        {
            "id": "rtutcp",
            "kind": "rtu_over_tcp",
            "host": "127.0.0.1",
            "port": ports[1],
            "timeout": 0.5,
        },
        {
            "id": "serial",
            "kind": "rtu_serial",
            "port": str(tmp_path / "bus"),
            "sim_port": str(tmp_path / "bus-sim"),
            "baudrate": 19200,
            "timeout": 0.5,
        },
    ]


def readings_by_device(controller: Controller, batch: ReadingBatch) -> dict[str, dict[str, float]]:
    """A batch as {device id: {point name: value}}."""
    out: dict[str, dict[str, float]] = {}
    for dev, pt, value in zip(batch.device, batch.point, batch.value, strict=True):
        device = controller.registry.devices[dev]
        out.setdefault(device.id, {})[device.points[pt].name] = float(value)
    return out


def on_own_loop(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` to its end on an event loop of its own thread, so that a synchronous
    fixture, or an async test before its controller starts, can prepare the state."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work()).result()


def issue_keys(loaded: LoadedConfig, *wanted: tuple[str, Role]) -> list[str]:
    """New API keys (name, role) in the config's state database, as tokens."""

    async def create() -> list[str]:
        async with opened_state(loaded) as db:
            store = ApiKeyStore(db)
            return [await store.create(name, role) for name, role in wanted]

    return on_own_loop(create)


def new_key(loaded: LoadedConfig, name: str, role: Role) -> str:
    """One new API key in the config's state database, as its token."""
    [token] = issue_keys(loaded, (name, role))
    return token


def role_headers(loaded: LoadedConfig) -> dict[str, dict[str, str]]:
    """A fresh key of every role in the config's state database, as request headers by
    role name."""
    tokens = issue_keys(loaded, *((f"test {r.value}", r) for r in Role))
    return {r.value: {"X-API-Key": token} for r, token in zip(Role, tokens, strict=True)}


def reads_with(key: str) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook: a GET that names no key goes with ``key``
    (``X-Anonymous: 1`` sends it with none)."""

    async def hook(request: httpx.Request) -> None:
        if request.headers.pop("X-Anonymous", None) is not None:
            return
        if request.method == "GET" and not (
            "authorization" in request.headers or "x-api-key" in request.headers
        ):
            request.headers["X-API-Key"] = key

    return hook


@asynccontextmanager
async def api_client(controller: Controller) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client to the controller's API in this process (the app's lifespan is not
    run; the controller's stores are opened here, as its start would).

    Reads need a key: a GET that names none goes as an admin of the test, so tests
    about something else need not carry one. A test about anonymous reads sends
    the header ``X-Anonymous: 1``, which is taken off before the request goes.
    """
    app = create_app(controller, manage_controller=False)
    # Keys live in the state database.
    await controller.open_stores()
    default_reader = reads_with(await app.state.keys.create("test reader (admin)", Role.ADMIN))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://api",
        event_hooks={"request": [default_reader]},
    ) as client:
        yield client


@asynccontextmanager
async def city_with_controller(
    loaded: LoadedConfig,
) -> AsyncIterator[tuple[SimulatedCity, Controller]]:
    """The simulated devices of a config, and a controller for it (polling on demand):
    the devices start first and stop last, so the controller never sees them vanish."""
    async with SimulatedCity(loaded) as city, Controller(loaded) as controller:
        yield city, controller


ROOT = Path(__file__).parent.parent


async def streetsense(*args: str) -> tuple[int, str, str]:
    """The command line in its own process (the event loop goes on meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def sqlite_state(path: Path) -> StateDatabase:
    """A state database in a SQLite file (not yet open)."""
    return StateDatabase(make_url(f"sqlite+aiosqlite:///{path}"))


#: How long node a holds the lease in the in-process fence tests: soon lapsed.
BRIEF_LEASE_S = 0.5


async def lead_briefly(db: StateDatabase) -> int:
    """Node "a" holds a brief lease and ``db`` writes with its epoch, as its election
    leaves it; returns the epoch."""
    held = await LeaderLease(db, "a", "http://a", BRIEF_LEASE_S).try_hold()
    assert held is not None
    db.epoch = held.epoch
    return held.epoch


async def take_over(db: StateDatabase) -> int:
    """Once a's brief lease has lapsed, node "b" holds the lease; returns b's epoch (the
    epoch ``db`` writes with is the caller's to set)."""
    await asyncio.sleep(BRIEF_LEASE_S + 0.1)
    held = await LeaderLease(db, "b", "http://b", 5.0).try_hold()
    assert held is not None
    return held.epoch
