"""Real servers for tests and benchmarks: influxd, victoria-metrics, mosquitto, PostgreSQL.

Each runs on a loopback port of its own from a folder with its own data, can be
stopped and started again on the same port (outage tests), and is stopped by
its owner. Part of the test bench, like the simulated hardware.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

#: Ports handed out for test servers: below Linux's ephemeral range (32768-60999), so
#: an outgoing connection cannot take the port between this check and the server's bind,
#: and above the benchmarks' simulated cities (21000-23700).
_TEST_PORTS = (24000, 32000)
#: Ports already handed out by this process: a port written into a config is free
#: until its server starts, and must not be handed out again meanwhile.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    while True:
        port = random.randrange(*_TEST_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port


def _wait_port(port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {within}s")


class ServerProcess:
    """A server binary run with arguments, restartable on the same port."""

    def __init__(self, name: str, folder: Path, port: int) -> None:
        self.name = name
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / f"{name}.log"

    def command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    def ready(self) -> None:
        """Return once the server takes connections."""
        _wait_port(self.port)

    def start(self) -> None:
        """Start the server and wait until it is ready."""
        binary = self.command()[0]
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} is not installed (scripts/test installs it)")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.folder)
        try:
            self.ready()
        except RuntimeError:
            self.stop()
            raise RuntimeError(
                f"{self.name} did not start: {self.log.read_text()[-2000:]}"
            ) from None

    def stop(self) -> None:
        """Stop the server (its data stays for a restart)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Influxd(ServerProcess):
    """InfluxDB 1.x (Debian's influxdb package) with a config of its own."""

    def __init__(self, folder: Path) -> None:
        super().__init__("influxd", folder, free_port())
        self.rpc_port = free_port()
        config = folder / "influxdb.conf"
        config.write_text(
            f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{folder}/meta"
[data]
  dir = "{folder}/data"
  wal-dir = "{folder}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
""",
            encoding="utf-8",
        )
        self.config = config

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """influxd with the generated config."""
        return ["influxd", "run", "-config", str(self.config)]

    def ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("influxd did not answer /ping")

    def query(self, database: str, q: str) -> list[dict[str, object]]:
        """Series answered by an InfluxQL query (epoch ms)."""
        body = httpx.post(f"{self.url}/query", data={"db": database, "q": q, "epoch": "ms"}).json()
        result = body["results"][0]
        assert "error" not in result, result
        series: list[dict[str, object]] = result.get("series", [])
        return series


class VictoriaMetrics(ServerProcess):
    """Debian's victoria-metrics: accepts influxdb-client's /api/v2/write."""

    def __init__(self, folder: Path) -> None:
        super().__init__("victoria-metrics", folder, free_port())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "victoria-metrics",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.folder}/vmdata",
            "-search.disableCache",
            # Queries at "now" see what was just written (the default hides the last 30 s).
            "-search.latencyOffset=1s",
            "-loggerLevel=ERROR",
        ]


class Prometheus(ServerProcess):
    """Debian's prometheus, scraping one target every second with an API key."""

    def __init__(self, folder: Path, target: str, api_key: str) -> None:
        super().__init__("prometheus", folder, free_port())
        self.config = folder / "prometheus.yml"
        self.config.write_text(
            f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: streetsense
    metrics_path: /metrics
    authorization: {{type: Bearer, credentials: "{api_key}"}}
    static_configs: [{{targets: ["{target}"]}}]
""",
            encoding="utf-8",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "prometheus",
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.folder}/tsdb",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]


class Mosquitto(ServerProcess):
    """A mosquitto broker with persistence in its folder (so QoS 1 sessions survive a restart)."""

    def __init__(self, folder: Path, every_packet: bool = False) -> None:
        """``every_packet``: log each PUBLISH in and out (to tell which hop lost one)."""
        super().__init__("mosquitto", folder, free_port())
        self.config = folder / "mosquitto.conf"
        # Started as root, mosquitto drops to the "mosquitto" user, which cannot write a
        # root-only temporary folder: persistence would fail and sessions die with a restart.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"""
listener {self.port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {folder}/
autosave_interval 1
{"log_type all" if every_packet else ""}
{user}""",
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        """mosquitto with the generated config."""
        return ["mosquitto", "-c", str(self.config)]


def postgres_bin() -> Path:
    """Folder of the PostgreSQL server programs (Debian keeps them out of PATH)."""
    given = os.environ.get("STREETSENSE_PG_BIN")
    if given:
        return Path(given)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("PostgreSQL is not installed (scripts/test installs it)")
    return Path(found).parent


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb in a temporary folder, one loopback port.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the
    ``postgres`` user the Debian package creates.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="streetsense-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the test database."""
        return f"postgresql+psycopg://streetsense@127.0.0.1:{self.port}/streetsense"

    def start(self) -> None:
        """Create the cluster, start the server and create the database."""
        binaries = postgres_bin()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.folder / "data"
        subprocess.run(
            [
                *self._as,
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "streetsense",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        self._serve()
        try:
            _wait_port(self.port)
            deadline = time.monotonic() + 20
            while True:
                created = subprocess.run(
                    [
                        str(binaries / "createdb"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-U",
                        "streetsense",
                        "streetsense",
                    ],
                    capture_output=True,
                )
                if created.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(created.stderr.decode())
                time.sleep(0.1)  # the server listens before it accepts logins
        except RuntimeError:
            self.stop()
            raise

    def _serve(self) -> None:
        """Run the server on the cluster (its port and socket folder)."""
        binaries = postgres_bin()
        data = self.folder / "data"
        log = self.folder / "server.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    *self._as,
                    str(binaries / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.folder),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                ],
                stdout=out,
                stderr=out,
            )

    def halt(self) -> None:
        """Stop the server as an outage does (open connections cut: a "fast" shutdown),
        keeping the cluster for :meth:`resume`."""
        if self.proc is not None and self.proc.poll() is None:
            pg_ctl = str(postgres_bin() / "pg_ctl")
            subprocess.run(
                [*self._as, pg_ctl, "stop", "-D", str(self.folder / "data"), "-m", "fast"],
                check=True,
                capture_output=True,
            )
            self.proc.wait(timeout=20)
        self.proc = None

    def resume(self) -> None:
        """Start the halted server again on the same port, with its data."""
        self._serve()
        _wait_port(self.port)
        ready = [str(postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]
        deadline = time.monotonic() + 20
        while subprocess.run(ready, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on {self.port} did not come back")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: PostgreSQL's "smart" shutdown
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)


async def fresh_postgres_database(server_url: str) -> str:
    """A new, empty database on a PostgreSQL server; its URL."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"schema_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)
