"""A simulated city: every device of a config as a unit on a real Modbus server.

One server per link: a Modbus TCP or RTU-over-TCP port, or a serial line (a
pseudo-terminal pair made with socat). A fleet of hundreds of units fits in
one process; faults come from a scenario file and can be injected at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from pymodbus import FramerType
from pymodbus.simulator import SimData, SimDevice

from controller.config import LoadedConfig
from controller.device_config import LinkConfig, Located
from drivers.sl651 import frame as fr
from rules.astro import sun_times
from simulators.datastore import SimulatedUnit, UnitStore
from simulators.dlt645_meter import SimulatedMeter
from simulators.fast_responder import FastResponder
from simulators.faults import FaultBoard, FaultKind, FaultSpec, Scenario, load_scenario
from simulators.modbus_server import SimSerialServer, SimTcpServer
from simulators.physics import CabinetModel, GaugeModel, LampModel, SimClock
from simulators.sl651_station import Sl651Station

log = logging.getLogger(__name__)


def _night(lat: float, lon: float, when: float) -> bool:
    """Whether the sun is down at a place (a scheduled lamp is lit there)."""
    rise, sset = sun_times(np.array([lat]), np.array([lon]), when)
    return bool(when < rise[0] or when > sset[0])


async def _exists(path: str) -> bool:
    return await asyncio.to_thread(os.path.exists, path)


class PtyPair:
    """Two linked pseudo-terminals (socat), standing in for both ends of an RS-485 line."""

    def __init__(self, end_a: str, end_b: str) -> None:
        self.end_a = end_a
        self.end_b = end_b
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, startup_limit: float = 5.0) -> None:
        """Start socat and wait until both device paths exist."""
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (apt-get install socat)")
        self._proc = await asyncio.create_subprocess_exec(
            socat,
            f"pty,raw,echo=0,link={self.end_a}",
            f"pty,raw,echo=0,link={self.end_b}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + startup_limit
        while not (await _exists(self.end_a) and await _exists(self.end_b)):
            if loop.time() > deadline:
                raise RuntimeError(f"socat did not create {self.end_a} and {self.end_b}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop socat (the device paths disappear with it)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        self._proc = None


class SimulatedCity:
    """Models, datastores and servers for every device in a configuration."""

    def __init__(
        self,
        loaded: LoadedConfig,
        scenario: Scenario | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        cfg = loaded.config
        self.config = cfg
        self.fast: FastResponder | None = None
        if scenario is None and cfg.simulator.scenario:
            scenario = load_scenario(loaded.resolve(cfg.simulator.scenario))
        self.scenario = scenario or Scenario()
        self.clock = SimClock(cfg.simulator.time_scale)
        self.board = FaultBoard(self.scenario.faults)
        self.links = {link.id: link for link in cfg.links}
        self.stores: dict[str, UnitStore] = {}
        self.cabinets: dict[str, CabinetModel] = {}
        self.lamps: dict[str, LampModel] = {}
        self.gauges: dict[str, GaugeModel] = {}
        self._servers: list[Any] = []
        self._ptys: list[PtyPair] = []
        rng = random.Random(cfg.simulator.seed)
        units: dict[str, dict[int, SimulatedUnit]] = {link.id: {} for link in cfg.links}
        library = loaded.profiles
        now = wall_clock()

        def lit_at_start(place: Located) -> bool:
            return cfg.simulator.lamps_at_start == "lit" or _night(place.lat, place.lon, now)

        def gauge_model(gauge_id: str) -> GaugeModel:
            rain = [e for e in self.scenario.rain if e.gauges is None or gauge_id in e.gauges]
            gauge = GaugeModel(gauge_id, rain, noise=random.Random(rng.random()))
            self.gauges[gauge_id] = gauge
            return gauge

        for cab in cfg.cabinets:
            lit = lit_at_start(cab)
            lamps = [
                LampModel(
                    lamp.id,
                    lamp.rated_w,
                    lamp.circuit,
                    lamp.phase,
                    burn_hours=rng.uniform(100, 20000),
                    noise=random.Random(rng.random()),
                )
                for lamp in cab.all_lamps()
            ]
            for lamp in lamps:
                lamp.switch_cmd = int(lit)
            for lamp in lamps:
                self.lamps[lamp.id] = lamp
            cabinet = CabinetModel(
                cab.id,
                cab.circuits,
                lamps,
                noise=random.Random(rng.random()),
                wall=wall_clock,
                tz=cfg.site.tz,
                circuit_cmd=[lit] * cab.circuits,
                contactor_delay=(
                    cfg.simulator.contactor_delay_ms[0] / 1000,
                    cfg.simulator.contactor_delay_ms[1] / 1000,
                ),
            )
            self.cabinets[cab.id] = cabinet
            units[cab.link][cab.unit] = SimulatedUnit(
                cab.id, library[cab.profile], library, cabinet, sub_devices=len(lamps)
            )
        for lamp_cfg in cfg.lamps:
            lamp = LampModel(
                lamp_cfg.id,
                lamp_cfg.rated_w,
                lamp_cfg.circuit,
                lamp_cfg.phase,
                switch_cmd=int(lit_at_start(lamp_cfg)),
                noise=random.Random(rng.random()),
            )
            self.lamps[lamp.id] = lamp
            units[lamp_cfg.link][lamp_cfg.unit] = SimulatedUnit(
                lamp.id, library[lamp_cfg.profile], library, lamp
            )
        for gauge_cfg in cfg.gauges:
            gauge = gauge_model(gauge_cfg.id)
            units[gauge_cfg.link][gauge_cfg.unit] = SimulatedUnit(
                gauge.id, library[gauge_cfg.profile], library, gauge
            )
        for link_id, link_units in units.items():
            self.stores[link_id] = UnitStore(link_units, self.board, self.clock)
        #: DL/T 645 meters by link and address; a cabinet's meter measures its supply.
        self.meters: dict[str, dict[str, SimulatedMeter]] = {}
        for i, meter_cfg in enumerate(cfg.meters):
            supply = self.cabinets.get(meter_cfg.cabinet or "") or CabinetModel(
                meter_cfg.id, 1, [], noise=random.Random(rng.random()), wall=wall_clock
            )
            self.meters.setdefault(meter_cfg.link, {})[meter_cfg.address] = SimulatedMeter(
                meter_cfg.address,
                library.dlt645[meter_cfg.profile],
                partial(self._supply, supply),
                device_id=meter_cfg.id,
                # Some meters prefix their answers with FE: every other one here does.
                fe_prefix=i % 2 == 0,
            )
        # SL651 stations dial in to the centre's listener with their gauge's level.
        listeners = {listener.id: listener for listener in cfg.listeners}
        self.stations: list[tuple[Sl651Station, GaugeModel, str, int, float]] = []
        for station_cfg in cfg.sl651_stations:
            gauge = gauge_model(station_cfg.id)
            listener = listeners[station_cfg.listener]
            host = "127.0.0.1" if listener.host in ("0.0.0.0", "::") else listener.host
            station = Sl651Station(
                station_cfg.station, int(station_cfg.password, 16), 1, cfg.site.tz
            )
            self.stations.append((station, gauge, host, listener.port, station_cfg.report_interval))
        self._station_tasks: list[asyncio.Task[None]] = []

    def _supply(self, cabinet: CabinetModel) -> dict[str, float]:
        return cabinet.snapshot(self.board, self.clock.now())[0]

    def inject(self, fault: FaultSpec) -> FaultSpec:
        """Put a fault in force now (``at`` and ``until`` count from now)."""
        now = self.clock.now()
        placed = fault.model_copy(
            update={
                "at": now + fault.at,
                "until": None if fault.until is None else now + fault.until,
            }
        )
        self.board.add(placed)
        return placed

    def clear(self, device: str, kind: FaultKind | None = None) -> int:
        """Remove a device's faults (one kind, or all)."""
        return self.board.clear(device, kind)

    def store_of(self, device: str) -> UnitStore:
        """The datastore serving a device (for request counts in tests)."""
        for store in self.stores.values():
            if any(unit.device_id == device for unit in store.units.values()):
                return store
        raise KeyError(device)

    async def start(self) -> None:
        """Start one server per link, and the SL651 stations' reporting."""
        sim = self.config.simulator
        try:
            # Lines with meters need the fast responder: pymodbus's server cannot share
            # a line with DL/T 645.
            fast = {
                link_id: store
                for link_id, store in self.stores.items()
                if link_id in self.meters
                or (sim.responder == "fast" and self.links[link_id].kind != "rtu_serial")
            }
            if fast:
                for link_id in fast:
                    await self._serial_pair(self.links[link_id])
                self.fast = FastResponder(
                    self.links,
                    fast,
                    # With the physics responder every answer is fresh, meters' lines too.
                    refresh_period=5.0 if sim.responder == "fast" else 0.0,
                    wire=sim.wire,
                    seed=sim.seed,
                    meters=self.meters,
                )
                await self.fast.start()
            for link_id, store in self.stores.items():
                if link_id not in fast:
                    await self._start_link(self.links[link_id], store)
        except BaseException:
            await self.stop()
            raise
        for station, gauge, host, port, every in self.stations:
            self._station_tasks.append(
                asyncio.create_task(
                    self._report(station, gauge, host, port, every), name=f"sl651:{gauge.id}"
                )
            )

    async def _report(
        self, station: Sl651Station, gauge: GaugeModel, host: str, port: int, every: float
    ) -> None:
        """Dial in (again after a lost connection) and send a timed report every interval,
        as the station's faults allow."""
        while True:
            try:
                await station.connect(host, port)
                while True:
                    if not await self._send_report(station, gauge, host, port):
                        await asyncio.sleep(every)
                        continue
                    confirm = station.confirms[-1] if station.confirms else None
                    if confirm is not None and confirm.end is fr.End.ESC:
                        # Kept online: take the centre's commands until the next report.
                        await station.stay_online(every, keep_alive=min(40.0, every / 2))
                    else:
                        await asyncio.sleep(every)
            except (OSError, asyncio.IncompleteReadError):
                await station.close()
                await asyncio.sleep(1.0)

    async def _send_report(
        self, station: Sl651Station, gauge: GaugeModel, host: str, port: int
    ) -> bool:
        """One report, through whatever fault the station has; True if it was confirmed."""
        now = self.clock.now()

        def has(kind: FaultKind) -> FaultSpec | None:
            return self.board.find(gauge.id, kind, now)

        if has(FaultKind.DEVICE_SILENT):
            return False
        drift = has(FaultKind.CLOCK_DRIFT)
        station.clock_offset = drift.offset if drift is not None else 0.0
        if has(FaultKind.RECONNECT_STORM):
            await station.close()
            await station.connect(host, port)
        level = round(max(gauge.true_level(now), 0.0), 3)
        frame = station.report(station.clock(), level)
        if has(FaultKind.TRUNCATED):
            # The 4G link drops mid-frame: half a frame, then a new connection.
            await station.send_raw(frame[: len(frame) // 2])
            await station.close()
            await station.connect(host, port)
            return False
        if has(FaultKind.BAD_CRC):
            garbled = bytearray(frame)
            garbled[-1] ^= 0xFF
            return await station.send(bytes(garbled), wait=1.0, resends=0) is not None
        if has(FaultKind.WRONG_PASSWORD):
            wrong = station.with_password(station.password ^ 0xFFFF)
            answer = await wrong.send(wrong.report(station.clock(), level), wait=1.0, resends=0)
            return answer is not None
        if has(FaultKind.DUPLICATE_RESEND):
            # The confirm was lost on the way: the same frame goes again.
            await station.send(frame)
        return await station.send(frame) is not None

    async def _start_link(self, link: LinkConfig, store: UnitStore) -> None:
        placeholder = SimDevice(0, simdata=SimData(0))
        server: Any
        if link.kind == "rtu_serial":
            assert link.sim_port is not None
            await self._serial_pair(link)
            server = SimSerialServer(
                placeholder,
                framer=FramerType.RTU,
                port=link.sim_port,
                baudrate=link.baudrate,
                parity=link.parity,
                stopbits=link.stopbits,
                bytesize=link.bytesize,
                ignore_missing_devices=True,
                trace_packet=partial(store.corrupt_outgoing, rtu=True),
            )
        else:
            rtu = link.kind == "rtu_over_tcp"
            assert isinstance(link.port, int)
            server = SimTcpServer(
                placeholder,
                framer=FramerType.RTU if rtu else FramerType.SOCKET,
                address=(link.host or "127.0.0.1", link.port),
                ignore_missing_devices=True,
                trace_packet=partial(store.corrupt_outgoing, rtu=rtu),
            )
        # pymodbus's own SimCore packs coils 16 to a register; our images keep one
        # coil per address as cabinet terminals do, so the server gets our store.
        server.context = store
        await server.serve_forever(background=True)
        self._servers.append(server)

    async def _serial_pair(self, link: LinkConfig) -> None:
        """Join a serial link's two ends with a PTY pair unless they exist."""
        if link.kind != "rtu_serial":
            return
        assert isinstance(link.port, str)
        if not link.sim_port:
            raise RuntimeError(f"link {link.id}: rtu_serial needs sim_port to be simulated")
        if not await _exists(link.sim_port):
            pty = PtyPair(link.port, link.sim_port)
            await pty.start()
            self._ptys.append(pty)

    async def stop(self) -> None:
        """Stop every server and PTY pair, and the stations."""
        for task in self._station_tasks:
            task.cancel()
        await asyncio.gather(*self._station_tasks, return_exceptions=True)
        self._station_tasks = []
        for station, *_ in self.stations:
            with contextlib.suppress(Exception):
                await station.close()
        if self.fast is not None:
            await self.fast.stop()
            self.fast = None
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.shutdown()
        self._servers = []
        for pty in self._ptys:
            await pty.stop()
        self._ptys = []

    async def __aenter__(self) -> SimulatedCity:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
