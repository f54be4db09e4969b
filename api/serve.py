"""The controller as a service: checks, start, the HTTP servers, and an orderly stop.

``streetsense run`` and ``streetsense demo`` both come through :func:`serve`;
the demo only adds the simulated city and its fault-injection API. The order
of a stop is the controller's (schedules, commands, polling with the last
batch handed to every sink, spools, stores), after the HTTP servers close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from controller.config import LoadedConfig
from controller.data_lock import DataDirLock
from controller.runtime import Controller
from controller.startup import EXIT_DEPOSED, check_data_dir, listen_socket

log = logging.getLogger("streetsense")


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT and SIGTERM to the command.

    uvicorn re-raises a captured Ctrl-C when ``serve`` returns, which would cut
    the command off before it stops the controller and prints its summary.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _nothing(_controller: Controller) -> None:
    return None


@dataclass
class ExtraServer:
    """Another HTTP app served beside the API (the demo's simulator control)."""

    app: FastAPI
    sock: socket.socket


@dataclass
class ServeOptions:
    """Where the API listens and for how long the service runs."""

    host: str
    port: int
    #: The command's name in its last line ("demo stopped: ...").
    name: str = "streetsense"
    duration: float | None = None
    #: Called once the controller runs, before the servers open (the banner).
    on_started: Callable[[Controller], Awaitable[None]] = _nothing
    extra: list[ExtraServer] = field(default_factory=list)


def uvicorn_server(app: FastAPI) -> uvicorn.Server:
    """A server for ``app`` on sockets given at ``serve`` time, logging through ours."""
    return QuietServer(uvicorn.Config(app, log_level="warning", log_config=None))


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGINT or SIGTERM; a second one exits at once."""
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(130)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop


@dataclass
class Prepared:
    """What ``prepare`` secured: the API's listening socket and the data folder's lock."""

    api_socket: socket.socket
    data_lock: DataDirLock


def prepare(loaded: LoadedConfig, host: str, port: int) -> Prepared:
    """What is checked before anything starts: the data folder (writable, and no other
    controller on it) and the API's port."""
    check_data_dir(loaded.data_dir)
    lock = DataDirLock(loaded.data_dir)
    lock.acquire()
    try:
        return Prepared(listen_socket(host, port, "API"), lock)
    except BaseException:
        lock.release()
        raise


async def serve(loaded: LoadedConfig, prepared: Prepared, options: ServeOptions) -> int:
    """Start the controller, serve the API until a signal (or ``duration``), stop in order;
    the data folder stays locked until the stores are closed. The exit status: 0, or
    :data:`EXIT_DEPOSED` when another node of the pair took the lease."""
    try:
        return await _serve(loaded, prepared.api_socket, options)
    finally:
        prepared.data_lock.release()


async def _serve(loaded: LoadedConfig, api_socket: socket.socket, options: ServeOptions) -> int:
    controller = Controller(loaded)
    app = create_app(controller, manage_controller=False)
    stop = stop_on_signals()
    try:
        await controller.start()
    except BaseException:
        await controller.stop()
        raise
    servers: list[tuple[uvicorn.Server, socket.socket]] = [(uvicorn_server(app), api_socket)]
    servers += [(uvicorn_server(extra.app), extra.sock) for extra in options.extra]
    try:
        await options.on_started(controller)
        tasks = {asyncio.create_task(s.serve(sockets=[sock])) for s, sock in servers}
        stopper = asyncio.create_task(stop.wait())
        deposed = asyncio.create_task(controller.deposed.wait())
        # A signal, a server stopping by itself, the end of ``duration``, or a take-over
        # by the other node of the pair.
        await asyncio.wait(
            {*tasks, stopper, deposed},
            timeout=options.duration,
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopper.cancel()
        deposed.cancel()
        for server, _ in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        log.info("stopping: schedules, commands, polling, sinks, stores")
        await controller.stop()
        stats = controller.poller.stats
        print(
            f"{options.name} stopped: {stats.polls} polls, {stats.failed_polls} failed, "
            f"{stats.readings} readings",
            flush=True,
        )
    if controller.deposed.is_set():
        print(
            f"{options.name}: another controller of the pair took the lease; exiting "
            f"{EXIT_DEPOSED} so that the service manager starts this one again as the standby",
            flush=True,
        )
        return EXIT_DEPOSED
    return 0
