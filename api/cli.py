"""The ``streetsense`` command: check, simulate, poll, run, demo, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from api.keys import Role
from controller.config import LoadedConfig, LoggingConfig, load_config
from controller.logs import configure_logging
from controller.registry import Registry
from controller.runtime import Controller
from controller.startup import EXIT_STARTUP, StartupError, listen_socket
from controller.state.database import StateDatabase
from controller.state.schema import SchemaError
from drivers.errors import ConfigError
from simulators.faults import load_scenario

log = logging.getLogger("streetsense")
EXIT_CONFIG = 2


def _load(path: str) -> LoadedConfig:
    loaded = load_config(Path(path))
    if loaded.config.simulator.scenario:
        load_scenario(loaded.resolve(loaded.config.simulator.scenario))
    return loaded


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config, the profiles and the scenario it names."""
    from controller.profile_gaps import profile_gaps
    from controller.schedules.plan import resolve_groups
    from rules.compile import compile_rules

    loaded = _load(args.config)
    registry = Registry(loaded)
    compiled = compile_rules(
        loaded.rule_site(), registry
    )  # a rule that selects nothing is an error
    groups = resolve_groups(registry, loaded.config.schedules, str(args.config))
    counts = registry.count_by_class()
    cfg = loaded.config
    print(
        f"{args.config}: OK: city {cfg.site.city}, {len(cfg.links)} links, "
        f"{counts.get('cabinet', 0)} cabinets, {counts.get('lamp', 0)} lamps, "
        f"{counts.get('gauge', 0)} gauges, {counts.get('meter', 0)} meters, "
        f"{len(compiled.rules)} rules, "
        f"{len(groups)} schedule groups; "
        f"profiles: {', '.join(loaded.profiles.names())}"
    )
    for gap in profile_gaps(loaded, registry):
        print(f"{args.config}: warning: {gap}", file=sys.stderr)
    return 0


async def _run_for(duration: float | None) -> None:
    if duration is None:
        await asyncio.Event().wait()
    else:
        await asyncio.sleep(duration)


def _announce_control(host: str, port: int, token: str) -> None:
    print(
        f"simulator control on http://{host}:{port}/faults  (Authorization: Bearer {token})",
        flush=True,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run only the simulated hardware the config describes."""
    from api.serve import uvicorn_server
    from simulators.control_api import create_control_app, simulator_token
    from simulators.fleet import SimulatedCity

    loaded = _load(args.config)

    async def run() -> None:
        async with SimulatedCity(loaded) as city:
            print(
                f"simulating {len(city.cabinets)} cabinets, {len(city.lamps)} lamps, "
                f"{len(city.gauges)} gauges on {len(city.stores)} links; Ctrl-C stops",
                flush=True,
            )
            if args.control_port is None:
                await _run_for(args.duration)
                return
            token = simulator_token()
            sock = listen_socket("127.0.0.1", args.control_port, "simulator control")
            control = uvicorn_server(create_control_app(city, token))
            _announce_control("127.0.0.1", args.control_port, token)
            serve = asyncio.create_task(control.serve(sockets=[sock]))
            await asyncio.wait({serve}, timeout=args.duration)
            control.should_exit = True
            await serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def print_poll_table(controller: Controller, out: TextIO | None = None) -> None:
    """Readings and health of every polled device, as a plain-text table."""
    stream = out or sys.stdout
    reg = controller.registry
    poller = controller.poller
    print(
        f"{'device':<18} {'class':<8} {'link':<14} {'unit':>4} {'state':<8} "
        f"{'reqs':>4} {'errors':<20} readings",
        file=stream,
    )
    for target in reg.targets:
        device = reg.devices[target.device]
        health = poller.health[target.device]
        errors = ",".join(f"{k}={v}" for k, v in sorted(health.errors.items())) or "-"
        members = [device, *reg.lamps_of(device.index)]
        for n, member in enumerate(members):
            values = controller.latest.value[member.index]
            parts = [
                f"{p.name}={_fmt(float(values[i]))}{p.unit}" for i, p in enumerate(member.points)
            ]
            if n == 0:
                state = "online" if health.online else "OFFLINE"
                print(
                    f"{member.id:<18} {member.device_class:<8} {member.link:<14} "
                    f"{member.unit:>4} {state:<8} {target.plan.request_count:>4} "
                    f"{errors:<20} {' '.join(parts)}",
                    file=stream,
                )
            else:
                print(
                    f"  {member.id:<16} {member.device_class:<8} slot {member.slot:<34} "
                    f"{' '.join(parts)}",
                    file=stream,
                )


def cmd_poll(args: argparse.Namespace) -> int:
    """Poll every device and print what came back: once, or every interval until Ctrl-C."""
    from api.serve import stop_on_signals

    loaded = _load(args.config)

    async def run() -> int:
        controller = Controller(loaded)
        city = None
        if args.simulate:
            from simulators.fleet import SimulatedCity

            city = SimulatedCity(loaded)
            await city.start()
        stop = None if args.once else stop_on_signals()
        try:
            while True:
                batch = await controller.poller.poll_all_once()
                controller.latest.update(batch)
                print_poll_table(controller)
                stats = controller.poller.stats
                print(f"\n{stats.polls} polls, {stats.failed_polls} failed, {len(batch)} readings")
                if stop is None:
                    return 0 if stats.failed_polls == 0 else 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.interval)
                if stop.is_set():
                    return 0
                print(flush=True)
        finally:
            await controller.stop()
            if city is not None:
                await city.stop()

    return asyncio.run(run())


def _banner(
    loaded: LoadedConfig, host: str, port: int, links: str
) -> Callable[[Controller], Awaitable[None]]:
    async def show(controller: Controller) -> None:
        counts = controller.registry.count_by_class()
        print(
            f"{loaded.config.site.city}: {counts.get('cabinet', 0)} cabinets, "
            f"{counts.get('lamp', 0)} lamps, {counts.get('gauge', 0)} gauges on {links}",
            flush=True,
        )
        print(f"API on http://{host}:{port}  (OpenAPI: http://{host}:{port}/docs)", flush=True)
        print(f"dashboard on http://{host}:{port}/", flush=True)
        log.info("controller running; data in %s", loaded.data_dir)

    return show


def cmd_run(args: argparse.Namespace) -> int:
    """The controller on the config's real links, with its API, schedules and cases."""
    from api.serve import ServeOptions, prepare, serve

    loaded = _load(args.config)
    configure_logging(loaded.config.logging, args.verbose)
    host = args.host or loaded.config.api.host
    port = args.port if args.port is not None else loaded.config.api.port
    prepared = prepare(loaded, host, port)
    links = f"{len(loaded.config.links)} links"
    options = ServeOptions(host, port, on_started=_banner(loaded, host, port, links))
    return asyncio.run(serve(loaded, prepared, options))


def cmd_demo(args: argparse.Namespace) -> int:
    """``run`` on the simulated city of the config, with the simulator's fault API."""
    from api.serve import ExtraServer, ServeOptions, prepare, serve
    from simulators.control_api import create_control_app, simulator_token
    from simulators.fleet import SimulatedCity

    loaded = _load(args.config)
    configure_logging(loaded.config.logging.model_copy(update={"level": "WARNING"}), args.verbose)
    host = loaded.config.api.host
    port = args.port if args.port is not None else loaded.config.api.port
    control_port = args.sim_control_port if args.sim_control_port is not None else port + 1
    prepared = prepare(loaded, host, port)
    control_socket = listen_socket("127.0.0.1", control_port, "simulator control")

    async def run() -> None:
        async with SimulatedCity(loaded) as city:
            token = simulator_token()
            show = _banner(loaded, host, port, f"{len(city.stores)} simulated links")

            async def started(controller: Controller) -> None:
                print("streetsense demo", flush=True)
                await show(controller)
                _announce_control("127.0.0.1", control_port, token)
                for role, key in (await create_demo_keys(controller.state_db)).items():
                    print(f"demo API key {role:<11} {key}", flush=True)
                for username, password in (await create_demo_users(controller.state_db)).items():
                    print(f"demo login   {username:<11} password {password}", flush=True)

            extra = [ExtraServer(create_control_app(city, token), control_socket)]
            options = ServeOptions(host, port, "demo", args.duration, started, extra)
            await serve(loaded, prepared, options)

    asyncio.run(run())
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys (stored hashed in the state database)."""
    from api.keys import ApiKeyStore, Role

    loaded = _load(args.config)
    if args.action == "create" and not (args.name and args.role):
        print("error: keys create needs --name and --role", file=sys.stderr)
        return EXIT_CONFIG

    async def act(db: StateDatabase) -> int:
        store = ApiKeyStore(db)
        if args.action == "create":
            token = await store.create(args.name, Role(args.role))
            print(f"{token}\n(shown once: store it now; only its hash is kept)")
        elif args.action == "list":
            for key in await store.list():
                state = "revoked" if key.revoked_at else "active"
                print(f"{key.key_id}  {key.role.value:<11} {state:<8} {key.name}")
        else:
            if not args.id or not await store.revoke(args.id):
                print(f"error: no active key {args.id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.id}")
        return 0

    return _with_state(loaded, act)


def _with_state(loaded: LoadedConfig, act: Callable[[StateDatabase], Awaitable[int]]) -> int:
    """Run ``act`` on the state database (opened, with the old files imported, as at start)."""
    from controller.state.legacy import opened_state

    async def run() -> int:
        async with opened_state(loaded) as db:
            return await act(db)

    try:
        return asyncio.run(run())
    except (OSError, SQLAlchemyError, SchemaError) as exc:
        print(f"error: the state database: {exc}", file=sys.stderr)
        return 1


#: Where ``users add`` and ``users passwd`` take the password from when not asked for it.
PASSWORD_ENV = "STREETSENSE_PASSWORD"


def _new_password() -> str:
    """The new password: from STREETSENSE_PASSWORD, or asked twice (never an argument,
    which would stay in the shell's history and the process list)."""
    import getpass

    given = os.environ.get(PASSWORD_ENV)
    if given:
        return given
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def cmd_users(args: argparse.Namespace) -> int:
    """Add, list, change the password of, disable or enable people's accounts."""
    from api.users import UserError, UserStore

    loaded = _load(args.config)
    if args.action != "list" and not args.username:
        print(f"error: users {args.action} needs a username", file=sys.stderr)
        return EXIT_CONFIG
    if args.action == "add" and not args.role:
        print("error: users add needs --role", file=sys.stderr)
        return EXIT_CONFIG

    async def act(db: StateDatabase) -> int:
        store = UserStore(db)
        if args.action == "list":
            for user in await store.list():
                state = "disabled" if user.disabled else ("locked" if user.locked_until else "")
                print(f"{user.username:<20} {user.role.value:<11} {state:<8} {user.name}")
        elif args.action == "add":
            role = Role(args.role)
            user = await store.create(args.username, args.name or "", role, _new_password())
            print(f"added {user.username} ({user.role.value})")
        elif args.action == "passwd":
            await store.update(args.username, password=_new_password())
            print(f"password of {args.username} changed; their sessions ended")
        else:
            await store.update(args.username, disabled=args.action == "disable")
            print(f"{args.username} {args.action}d")
        return 0

    try:
        return _with_state(loaded, act)
    except (UserError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyError:
        print(f"error: no user {args.username!r}", file=sys.stderr)
        return 1


async def create_demo_users(db: StateDatabase) -> dict[str, str]:
    """A demo account per people's role (username = role), with a fresh password each run."""
    import secrets

    from api.users import UserStore

    store = UserStore(db)
    out = {}
    for role in Role:
        if role is Role.REPORTER:
            continue
        username = role.value.replace("_", "-")
        password = secrets.token_urlsafe(9)
        if await store.get(username) is None:
            await store.create(username, f"demo-{role.value}", role, password)
        else:
            await store.update(username, password=password, disabled=False)
        out[username] = password
    return out


async def create_demo_keys(db: StateDatabase) -> dict[str, str]:
    """A fresh key per role for the demo (older demo keys are revoked)."""
    from api.keys import ApiKeyStore, Role

    store = ApiKeyStore(db)
    keys = {}
    for role in Role:
        await store.revoke_named(f"demo-{role.value}")
        keys[role.value] = await store.create(f"demo-{role.value}", role)
    return keys


def _upgrade_state_database(loaded: LoadedConfig) -> int:
    from controller.state.database import StateDatabase
    from controller.state.legacy import ImportedFile, import_legacy, legacy_files
    from controller.state.schema import SchemaError, SchemaState

    db = StateDatabase.of_config(loaded)
    shown = db.shown_url

    async def upgrade() -> tuple[SchemaState, SchemaState, list[ImportedFile]]:
        try:
            before, after = await db.open(upgrade=True)
            return before, after, await import_legacy(db, legacy_files(loaded))
        finally:
            await db.close()

    try:
        before, after, imported = asyncio.run(upgrade())
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"error: cannot open the state database {shown}: {exc}", file=sys.stderr)
        return 1
    was = before.current or ("from before migrations" if before.has_tables else "empty")
    if before.current == after.current:
        print(f"state database {shown}: at revision {after.current}, nothing to do")
    else:
        print(f"state database {shown}: {was} -> revision {after.current}")
    for file in imported:
        rows = ", ".join(f"{n} {table}" for table, n in file.rows.items()) or "no rows"
        print(f"imported {file.path}: {rows}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """Upgrade the state database's schema, or back up or restore the config's SQLite
    stores (docs/deploy.md)."""
    from controller.backup import BackupError, backup, restore

    loaded = _load(args.config)
    if args.action == "upgrade":
        return _upgrade_state_database(loaded)
    folder = Path(args.folder)
    try:
        if args.action == "backup":
            manifest = backup(loaded, folder)
            verb = "backed up to"
        else:
            manifest = restore(loaded, folder)
            verb = "restored from"
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for item in manifest.stores:
        print(f"{item.name:<16} {item.bytes:>12,} bytes  {item.file}")
    for name, reason in manifest.not_included.items():
        print(f"{name:<16} not included: {reason}")
    print(f"{len(manifest.stores)} databases {verb} {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``streetsense``."""
    parser = argparse.ArgumentParser(
        prog="streetsense", description="Streetlight and flood gauge controller."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-c", "--config", default="config.yaml", help="config file")
        return p

    add("check", "validate config, profiles and scenario").set_defaults(func=cmd_check)
    p = add("simulate", "run only the simulated hardware of the config")
    p.add_argument("--duration", type=float, default=None, help="seconds, default forever")
    p.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="serve the fault-injection API on 127.0.0.1:PORT",
    )
    p.set_defaults(func=cmd_simulate)
    p = add("poll", "poll every device and print readings and health")
    p.add_argument("--once", action="store_true", help="poll once and exit")
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between rounds without --once"
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="also start the config's simulated hardware in this process",
    )
    p.set_defaults(func=cmd_poll)
    p = add("run", "the controller on the config's real links, with API, schedules and cases")
    p.add_argument("--host", default=None, help="API address (default from config)")
    p.add_argument("--port", type=int, default=None, help="API port (default from config)")
    p.set_defaults(func=cmd_run)
    p = add("demo", "simulated city + controller + API")
    p.add_argument("--port", type=int, default=None, help="API port (default from config, 8000)")
    p.add_argument(
        "--sim-control-port",
        type=int,
        default=None,
        help="fault-injection API port (default API port + 1)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds, default forever")
    p.set_defaults(func=cmd_demo)
    p = add("keys", "create, list or revoke API keys")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("--name", help="who the key is for (create)")
    p.add_argument(
        "--role",
        choices=[role.value for role in Role],
        help="what the key may do (create)",
    )
    p.add_argument("--id", help="key id (revoke)")
    p.set_defaults(func=cmd_keys)
    p = add("users", "people's accounts: add, list, passwd, disable, enable")
    p.add_argument("action", choices=["add", "list", "passwd", "disable", "enable"])
    p.add_argument("username", nargs="?", help="the account (all but list)")
    p.add_argument("--name", help="the person's name as shown (add)")
    p.add_argument(
        "--role",
        choices=[role.value for role in Role if role is not Role.REPORTER],
        help="what the person may do (add)",
    )
    p.set_defaults(func=cmd_users)
    what = "the state database's schema, and backups of the SQLite stores"
    db = sub.add_parser("db", help=what, description=what).add_subparsers(
        dest="action", required=True
    )
    for action, text in (
        (
            "upgrade",
            "bring the state database's schema to this release and import the stores' old files",
        ),
        ("backup", "copy every SQLite store into FOLDER (new or empty), online"),
        ("restore", "put a backup's stores back; the controller must be stopped"),
    ):
        p = db.add_parser(action, help=text, description=text)
        p.add_argument("-c", "--config", default="config.yaml", help="config file")
        if action != "upgrade":
            p.add_argument("folder", help="the backup folder")
        p.set_defaults(func=cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streetsense`` command."""
    args = build_parser().parse_args(argv)
    configure_logging(LoggingConfig(level="WARNING"), args.verbose)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
