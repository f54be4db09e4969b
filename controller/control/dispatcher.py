"""The command dispatcher: send, read back, confirm, per target, without hanging.

Units on different links are commanded concurrently; on one link they go one
after the other through the link's lock, ahead of polling. Every unit is
written first and then read back until its feedback shows the new state or
the confirm timeout passes, so a slow contactor delays nobody else's write.
A dead device costs its own link timeout once and fails its own part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from controller.control.audit import Actor, AuditEntry, AuditLog
from controller.control.config import ControlConfig
from controller.control.selector import GroupSelector
from controller.control.targets import (
    CircuitTarget,
    UnknownTarget,
    lamps_on,
    select_circuits,
    select_lamps,
)
from controller.control.writes import (
    Action,
    NotControllable,
    UnitCommand,
    circuit_key,
    plan_commands,
)
from controller.registry import Registry
from drivers.errors import (
    Invalid,
    LinkError,
    NeedsConfirmation,
    NotFound,
    PeopleMessage,
    StreetsenseError,
)
from drivers.modbus.links import ModbusLink
from drivers.priority_lock import Priority
from drivers.tasks import cancel_until_done

log = logging.getLogger(__name__)


class CommandStatus(StrEnum):
    """Where a command is."""

    PENDING = "pending"
    SENT = "sent"
    CONFIRMED = "confirmed"
    PARTIAL = "partial"
    FAILED = "failed"


class TargetStatus(StrEnum):
    """Where one target of a command is."""

    PENDING = "pending"
    SENT = "sent"
    CONFIRMED = "confirmed"
    FAILED = "failed"


@dataclass
class TargetResult:
    """One target's part of a command."""

    target: str
    status: TargetStatus = TargetStatus.PENDING
    reason: str = ""
    done_at: float | None = None
    #: ``reason`` in the catalogue's words (``result.*``), for a console to show.
    message: PeopleMessage | None = None


@dataclass
class Command:
    """A command as a resource: its request, its progress and a result per target."""

    id: int
    action: Action
    dim: int | None
    selector: GroupSelector
    actor: Actor
    source: str
    created_at: float
    results: dict[str, TargetResult]
    status: CommandStatus = CommandStatus.PENDING
    finished_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def counts(self) -> dict[str, int]:
        """Targets by status."""
        out = dict.fromkeys((s.value for s in TargetStatus), 0)
        for result in self.results.values():
            out[result.status.value] += 1
        return out


class CommandRefused(StreetsenseError):
    """A command that is not carried out (the refusal is audited)."""


class CommandTargetUnknown(CommandRefused, NotFound):
    """The command names a cabinet, circuit or lamp that is not installed."""


class CommandInvalid(CommandRefused, Invalid):
    """The command cannot be carried out as asked (an empty group, no such control)."""


class CommandNeedsConfirmation(CommandRefused, NeedsConfirmation):
    """The command puts out more lamps than may go without a confirmation."""


@dataclass(frozen=True)
class CommandRequest:
    """What a caller asks for."""

    action: Action
    selector: GroupSelector
    dim: int | None = None
    confirm: bool = False
    #: Resolved targets (the schedule runner's); when given, the selector only describes them.
    circuits: tuple[CircuitTarget, ...] | None = None
    lamps: tuple[int, ...] | None = None


#: Why a target was not sent: the lease of this node's pair ran out or was taken over.
NOT_LEADING = "not sent: this controller no longer leads its pair"


@dataclass(frozen=True)
class ReadBack:
    """What a target's last read-back showed while it was not yet confirmed."""

    text: str
    #: The link error's kind, if the read-back failed.
    error: str = ""
    point: str = ""
    reading: str = ""
    expected: str = ""

    def unconfirmed(self, seconds: str) -> PeopleMessage:
        """Not confirmed within ``seconds``, in the catalogue's words."""
        if self.error:
            return PeopleMessage(
                "result.readback_failed", {"seconds": seconds, "error": self.error}
            )
        if self.point:
            return PeopleMessage(
                "result.reads_otherwise",
                {
                    "seconds": seconds,
                    "point": self.point,
                    "reading": self.reading,
                    "expected": self.expected,
                },
            )
        return PeopleMessage("result.no_readback", {"seconds": seconds})


#: What a target not confirmed in time showed, when no read-back answered at all.
_SILENT = ReadBack("no read-back answered")


def _result_record(result: TargetResult) -> dict[str, Any]:
    """A target's result as the audit log keeps it (JSON), its reason worded too."""
    record: dict[str, Any] = {"status": result.status.value}
    if result.reason:
        record["reason"] = result.reason
    if result.message is not None:
        record["message"] = {"key": result.message.key, "params": dict(result.message.params)}
    return record


class CommandDispatcher:
    """Accepts commands, carries them out over the links, and audits them."""

    def __init__(
        self,
        registry: Registry,
        links: dict[str, ModbusLink],
        audit: AuditLog,
        config: ControlConfig,
        clock: Callable[[], float] = time.time,
        poles_on: Callable[[str, int], int] | None = None,
    ) -> None:
        self.registry = registry
        self.links = links
        self.audit = audit
        self.config = config
        #: Asked before every write to a device: in a pair, whether this node still leads.
        self.may_write: Callable[[], bool] = lambda: True
        self.clock = clock
        #: Poles the asset register knows on a circuit (many have no controller).
        self.poles_on = poles_on
        self._commands: OrderedDict[int, Command] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished_hooks: list[Callable[[Command], None]] = []
        #: Finished commands by outcome (confirmed, partial, failed), for metrics.
        self.outcomes: Counter[str] = Counter()
        #: Reads the devices a command changed, before its end is announced.
        self.read_back: Callable[[set[int]], Awaitable[None]] | None = None

    def on_finished(self, hook: Callable[[Command], None]) -> None:
        """Call ``hook`` with every command when it ends (the dashboard's live feed)."""
        self._finished_hooks.append(hook)

    async def refuse(self, request: CommandRequest, actor: Actor, source: str, reason: str) -> None:
        """Write a refused command to the audit log."""
        await self.record_refusal(
            source, actor, request.action.value, request.selector.describe(), reason, request.dim
        )

    async def record_refusal(
        self,
        source: str,
        actor: Actor,
        action: str,
        targets: str,
        reason: str,
        dim: int | None = None,
    ) -> None:
        """Write a refused attempt (a command, a table push, an override) to the audit log."""
        now = self.clock()
        await self.audit.append(
            AuditEntry(
                0,
                now,
                source,
                actor,
                action,
                dim,
                targets,
                0,
                "refused",
                reason=reason,
                finished_at=now,
            )
        )

    async def submit(self, request: CommandRequest, actor: Actor, source: str = "api") -> Command:
        """Check and accept a command; it runs in the background (see :meth:`wait`).

        Raises CommandRefused (after auditing the refusal) when the selector names
        unknown devices or nothing, or a large switch-off lacks ``confirm``.
        """
        try:
            units, keys = self._plan(request)
        except CommandRefused as exc:
            await self.refuse(request, actor, source, exc.reason)
            raise
        now = self.clock()
        command = Command(
            0,
            request.action,
            request.dim,
            request.selector,
            actor,
            source,
            now,
            {key: TargetResult(key) for key in keys},
        )
        command.id = await self.audit.append(self._entry(command))
        self._remember(command)
        task = asyncio.create_task(self._run(command, units), name=f"command:{command.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return command

    def check(self, request: CommandRequest) -> None:
        """Raise CommandRefused if ``request`` would be refused (nothing is sent or logged)."""
        self._plan(request)

    def _plan(self, request: CommandRequest) -> tuple[list[UnitCommand], list[str]]:
        try:
            if request.action.on_circuits:
                circuits = (
                    list(request.circuits)
                    if request.circuits is not None
                    else select_circuits(self.registry, request.selector)
                )
                lamps: list[int] = []
                keys = [circuit_key(self.registry, c) for c in circuits]
                dark = self._lamps_on(circuits)
            else:
                circuits = []
                lamps = (
                    list(request.lamps)
                    if request.lamps is not None
                    else select_lamps(self.registry, request.selector)
                )
                keys = [self.registry.devices[i].id for i in lamps]
                dark = len(lamps)
            units = plan_commands(self.registry, request.action, circuits, lamps, request.dim)
        except (UnknownTarget, NotControllable) as exc:
            if isinstance(exc, UnknownTarget):
                raise CommandTargetUnknown(str(exc), exc.message) from exc
            raise CommandInvalid(str(exc), exc.message) from exc
        if not keys:
            raise CommandInvalid(
                f"the group ({request.selector.describe()}) is empty",
                PeopleMessage("refusal.group_empty"),
            )
        if (
            request.action.switches_off
            and dark > self.config.confirm_above_lamps
            and not request.confirm
        ):
            above = self.config.confirm_above_lamps
            raise CommandNeedsConfirmation(
                f"this puts out {dark} lamps (more than {above}); send it again with confirm: true",
                PeopleMessage("refusal.confirm_lamps_off", {"lamps": dark, "above": above}),
            )
        return units, keys

    def _lamps_on(self, circuits: list[CircuitTarget]) -> int:
        """Lamps a circuit switch-off puts out: controllers or registered poles, the larger."""
        total = lamps_on(self.registry, circuits)
        if self.poles_on is not None:
            poles = sum(
                self.poles_on(self.registry.devices[c.cabinet].id, c.circuit) for c in circuits
            )
            total = max(total, poles)
        return total

    def _remember(self, command: Command) -> None:
        self._commands[command.id] = command
        while len(self._commands) > self.config.keep_commands:
            oldest = next(iter(self._commands.values()))
            if not oldest.done.is_set():
                break
            self._commands.popitem(last=False)

    def get(self, command_id: int) -> Command | None:
        """A recent command by id (older ones are in the audit log)."""
        return self._commands.get(command_id)

    def recent(self, limit: int = 50) -> list[Command]:
        """The newest commands first."""
        return list(reversed(self._commands.values()))[:limit]

    async def execute(self, request: CommandRequest, actor: Actor, source: str) -> Command:
        """Submit and wait for the end (schedules and the CLI use this)."""
        command = await self.submit(request, actor, source)
        await command.done.wait()
        return command

    async def _run(self, command: Command, units: list[UnitCommand]) -> None:
        by_link: dict[str, list[UnitCommand]] = {}
        for unit in units:
            by_link.setdefault(unit.link, []).append(unit)
        cancelled = False
        try:
            await asyncio.gather(
                *(self._run_link(command, self.links[link], todo) for link, todo in by_link.items())
            )
        except asyncio.CancelledError:
            cancelled = True
            self._finish_targets(
                command,
                "controller stopped before confirmation",
                PeopleMessage("result.stopped"),
            )
            raise
        finally:
            self._conclude(command)
            try:
                await asyncio.shield(self.audit.update(self._entry(command)))
            except Exception:
                log.exception("audit update of command %d failed", command.id)
            if not cancelled and self.read_back is not None:
                await self._read_back(command, self.read_back)
            command.done.set()
            for hook in self._finished_hooks:
                hook(command)

    async def _read_back(
        self, command: Command, read: Callable[[set[int]], Awaitable[None]]
    ) -> None:
        devices = {
            self.registry.by_id[key.split("/")[0]].index
            for key, result in command.results.items()
            if result.status is TargetStatus.CONFIRMED
        }
        if not devices:
            return
        try:
            await read(devices)
        except Exception:
            # The command is done and audited; the next regular poll shows its effect.
            log.exception("reading back the devices of command %d failed", command.id)

    async def _run_link(self, command: Command, link: ModbusLink, units: list[UnitCommand]) -> None:
        sent: list[UnitCommand] = []
        for unit in units:
            if not self.may_write():
                self._set(
                    command,
                    unit.targets,
                    TargetStatus.FAILED,
                    NOT_LEADING,
                    PeopleMessage("result.not_leading"),
                )
                continue
            try:
                for write in unit.writes:
                    await link.write(
                        unit.unit,
                        write.table,
                        write.address,
                        list(write.values),
                        priority=Priority.COMMAND,
                    )
            except LinkError as exc:
                self._set(
                    command,
                    unit.targets,
                    TargetStatus.FAILED,
                    f"write failed: {exc}",
                    PeopleMessage("result.write_failed", {"error": exc.kind}),
                )
                continue
            self._set(command, unit.targets, TargetStatus.SENT)
            if command.status is CommandStatus.PENDING:
                command.status = CommandStatus.SENT
            sent.append(unit)
        deadline = time.monotonic() + self.config.confirm_timeout
        last_seen: dict[str, ReadBack] = {}
        while sent:
            waiting: list[UnitCommand] = []
            for unit in sent:
                if not await self._confirm(command, link, unit, last_seen):
                    waiting.append(unit)
            sent = waiting
            if not sent:
                break
            if time.monotonic() >= deadline:
                for unit in sent:
                    for target in unit.targets:
                        if command.results[target].status is TargetStatus.SENT:
                            seen = last_seen.get(target, _SILENT)
                            seconds = f"{self.config.confirm_timeout:g}"
                            self._set(
                                command,
                                (target,),
                                TargetStatus.FAILED,
                                f"not confirmed within {seconds}s: {seen.text}",
                                seen.unconfirmed(seconds),
                            )
                break
            await asyncio.sleep(self.config.confirm_interval)

    async def _confirm(
        self,
        command: Command,
        link: ModbusLink,
        unit: UnitCommand,
        last_seen: dict[str, ReadBack],
    ) -> bool:
        """Read a unit's feedback once; True when all its targets are settled."""
        buffer: list[int] = [0] * unit.readback.buffer_size
        try:
            for request in unit.readback.requests:
                words = await link.read(
                    unit.unit,
                    request.table,
                    request.address,
                    request.count,
                    retries=0,
                    priority=Priority.COMMAND,
                )
                buffer[request.buffer_start : request.buffer_start + request.count] = words
        except LinkError as exc:
            for target in unit.targets:
                last_seen[target] = ReadBack(f"read-back failed: {exc}", error=exc.kind)
            return False
        settled = True
        for check in unit.checks:
            if command.results[check.target].status is not TargetStatus.SENT:
                continue
            if check.holds(buffer):
                self._set(command, (check.target,), TargetStatus.CONFIRMED)
            else:
                settled = False
                point, reading = check.point.name, f"{check.reading(buffer):g}"
                expected = f"{check.expected:g}"
                last_seen[check.target] = ReadBack(
                    f"{point} reads {reading}, expected {expected}",
                    point=point,
                    reading=reading,
                    expected=expected,
                )
        return settled

    def _set(
        self,
        command: Command,
        targets: tuple[str, ...],
        status: TargetStatus,
        reason: str = "",
        message: PeopleMessage | None = None,
    ) -> None:
        now = self.clock()
        for target in targets:
            result = command.results[target]
            result.status = status
            result.reason = reason
            result.message = message
            if status in (TargetStatus.CONFIRMED, TargetStatus.FAILED):
                result.done_at = now

    def _finish_targets(self, command: Command, reason: str, message: PeopleMessage) -> None:
        open_targets = tuple(
            r.target
            for r in command.results.values()
            if r.status in (TargetStatus.PENDING, TargetStatus.SENT)
        )
        self._set(command, open_targets, TargetStatus.FAILED, reason, message)

    def _conclude(self, command: Command) -> None:
        self._finish_targets(command, "not carried out", PeopleMessage("result.not_carried_out"))
        counts = command.counts()
        if counts[TargetStatus.FAILED] == 0:
            command.status = CommandStatus.CONFIRMED
        elif counts[TargetStatus.CONFIRMED] == 0:
            command.status = CommandStatus.FAILED
        else:
            command.status = CommandStatus.PARTIAL
        command.finished_at = self.clock()
        self.outcomes[command.status.value] += 1

    def _entry(self, command: Command) -> AuditEntry:
        counts = command.counts()
        return AuditEntry(
            id=command.id,
            at=command.created_at,
            source=command.source,
            actor=command.actor,
            action=command.action.value,
            dim=command.dim,
            selector=command.selector.describe(),
            target_count=len(command.results),
            outcome=command.status.value,
            confirmed=counts[TargetStatus.CONFIRMED],
            failed=counts[TargetStatus.FAILED],
            finished_at=command.finished_at,
            results={key: _result_record(r) for key, r in command.results.items()},
        )

    async def stop(self) -> None:
        """Cancel commands still running (their open targets fail and are audited)."""
        await cancel_until_done(list(self._tasks))
