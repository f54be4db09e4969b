"""SL651 stations: their reachability and clocks, and commands that wait for them to call."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.auth import Reader, current_principal, may, read_guard
from api.bounds import RowId, check_span
from api.deps import ControllerDep
from api.errors import refused
from api.keys import Principal
from api.schemas import PeriodValueOut, StationCommandIn, StationCommandOut, StationOut, utc
from controller.control.audit import Actor
from controller.runtime import Controller
from controller.station_commands import StationCommand
from drivers.sl651.downlink import (
    DEFINITIONS,
    SETTINGS_COMMANDS,
    Downlink,
    PeriodQuery,
    SettingItem,
)
from drivers.sl651.profile import Sl651Profile

router = APIRouter(
    prefix="/stations", tags=["stations"], dependencies=[Depends(read_guard("stations"))]
)

Caller = Annotated[Principal, Depends(current_principal)]
_COMMANDS = {
    "set_clock": Downlink.SET_CLOCK,
    "query": Downlink.QUERY_REALTIME,
    "query_period": Downlink.QUERY_PERIOD,
    "read_settings": Downlink.READ_SETTINGS,
    "write_settings": Downlink.WRITE_SETTINGS,
}
_DUTY = {
    "set_clock": "station_clock",
    "query": "station_query",
    "query_period": "station_query",
    "read_settings": "station_query",
    "write_settings": "station_settings",
}
#: The longest history one period query asks for (the station answers in one go).
MAX_PERIOD = timedelta(days=31)


def _station(controller: Controller, station_id: str) -> str:
    controller.station_commands.station(station_id)  # NotFound: a 404 naming it
    return station_id


def station_out(controller: Controller, device_id: str) -> StationOut:
    """The API form of a station's state."""
    listener, station = controller.station_commands.station(device_id)
    stats = listener.stats.stations[station]
    return StationOut(
        id=device_id,
        listener=listener.id,
        station=station,
        connected=listener.connected(station),
        online_until=utc(stats.online_until or None),
        last_report=utc(stats.last_report),
        reports=stats.reports,
        duplicates=stats.duplicates,
        keep_alives=stats.keep_alives,
        wrong_password=stats.wrong_password,
        bad_body=stats.bad_body,
        clock_offset_s=None if stats.clock_offset_s is None else round(stats.clock_offset_s, 1),
        clock_drift=stats.clock_drift,
        pending_commands=len(listener.pending(station)),
        commands_sent=stats.commands_sent,
        commands_answered=stats.commands_answered,
        commands_failed=stats.commands_failed,
    )


def command_out(controller: Controller, command: StationCommand) -> StationCommandOut:
    """The API form of a station command."""
    d = command.downlink
    readings: dict[str, float | None] = {}
    if d.answer is not None:
        profile = _profile(controller, command.device)
        feeds = profile.points_of()
        for o in d.answer.observations:
            for index, bit in feeds.get(o.element, ()):
                if bit is None:
                    readings[profile.points[index].name] = o.value
    name = next(k for k, v in _COMMANDS.items() if v is d.function)
    point, values = None, []
    if d.period is not None:
        point = _period_point(controller, command.device, d.period.element)
        if d.answer is not None:
            values = [
                PeriodValueOut(at=utc(o.at) or datetime.min, value=o.value)
                for o in d.answer.observations
                if o.element == d.period.element
            ]
    settings: dict[str, float | None] = {}
    if d.function in SETTINGS_COMMANDS:
        shown = d.answer.observations if d.answer is not None else d.settings
        settings = controller.station_commands.setting_names(command.device, shown)
    return StationCommandOut(
        id=command.id,
        station=command.device,
        command=name,
        by=command.actor.name,
        role=command.actor.role,
        status=d.state.value,
        queued_at=utc(d.queued_at) or datetime.min,
        sent_at=utc(d.sent_at),
        finished_at=utc(d.finished_at),
        sends=d.sends,
        reason=d.reason,
        readings=readings,
        point=point,
        values=values,
        settings=settings,
    )


def _profile(controller: Controller, device_id: str) -> Sl651Profile:
    profile = controller.registry.by_id[device_id].profile
    assert isinstance(profile, Sl651Profile)  # every station is an SL651 gauge
    return profile


def _period_point(controller: Controller, device_id: str, element: int) -> str:
    profile = _profile(controller, device_id)
    return next(p.name for p in profile.points if p.element == element and p.bit is None)


def _period_query(controller: Controller, station_id: str, body: StationCommandIn) -> PeriodQuery:
    """The 38H query the request asks for; 422 naming what is wrong."""
    assert body.point is not None and body.start is not None and body.end is not None
    profile = _profile(controller, station_id)
    spec = next((p for p in profile.points if p.name == body.point and p.bit is None), None)
    if spec is None or spec.element not in DEFINITIONS:
        queryable = [p.name for p in profile.points if p.bit is None and p.element in DEFINITIONS]
        raise refused(
            422,
            f"point {body.point!r} cannot be queried by period; one of {queryable}",
            "refusal.point_not_by_period",
            point=body.point,
        )
    start, end = body.start, body.end
    check_span(start, end, ordered=False)
    tz = controller.loaded.config.site.tz
    for name, t in (("start", start), ("end", end)):
        if t.astimezone(tz).minute or t.second or t.microsecond:
            raise refused(
                422,
                f"{name} must be a whole hour (the standard sends YYMMDDHH)",
                "refusal.whole_hour",
                field=name,
            )
    if not start < end <= start + MAX_PERIOD:
        raise refused(
            422,
            f"end must be after start and at most {MAX_PERIOD.days} days on",
            "refusal.period_span",
            days=MAX_PERIOD.days,
        )
    if body.step_minutes * 60 > (end - start).total_seconds():
        raise refused(
            422, "step_minutes is longer than the period", "refusal.step_longer_than_period"
        )
    return PeriodQuery(start.timestamp(), end.timestamp(), body.step_minutes * 60, spec.element)


def _settings(
    controller: Controller, station_id: str, body: StationCommandIn
) -> tuple[SettingItem, ...]:
    """The 42H/43H items the request asks for; 422 naming what is wrong."""
    profile = _profile(controller, station_id)
    known = [s.name for s in profile.settings]
    if not known:
        raise refused(
            422,
            f"the profile {profile.name} names no settings of the station",
            "refusal.profile_no_settings",
            profile=profile.name,
        )
    names = body.settings or (list(body.values) if body.values else known)
    unknown = [n for n in names if profile.setting(n) is None]
    if unknown:
        raise refused(
            422,
            f"no setting {unknown[0]!r} in profile {profile.name}; {known}",
            "refusal.no_setting",
            setting=unknown[0],
            profile=profile.name,
        )
    items = []
    for name in dict.fromkeys(names):
        spec = profile.setting(name)
        assert spec is not None
        value = None if body.values is None else body.values[name]
        if value is not None and (why := spec.check(value)):
            raise refused(422, why, "refusal.setting_value", setting=name)
        items.append(SettingItem(spec.id, spec.definition, value))
    return tuple(items)


@router.get("", response_model=list[StationOut])
def list_stations(controller: ControllerDep) -> list[StationOut]:
    """Every SL651 station: connected, online for commands, its clock and counters."""
    return [station_out(controller, s) for s in controller.station_commands.stations()]


@router.get("/{station_id}", response_model=StationOut)
def get_station(station_id: str, controller: ControllerDep) -> StationOut:
    """One station's state."""
    return station_out(controller, _station(controller, station_id))


@router.post("/{station_id}/commands", status_code=202, response_model=StationCommandOut)
async def send_command(
    station_id: str,
    body: StationCommandIn,
    controller: ControllerDep,
    principal: Caller,
    response: Response,
) -> StationCommandOut:
    """Queue a command; the station gets it when it next calls (its report is then
    confirmed with ESC to keep it online). Follow it at ``.../commands/{id}``."""
    station_id = _station(controller, station_id)
    actor = Actor(principal.name, principal.key_id, principal.role.value)
    action = f"sl651_{body.command}"
    if not may(principal.role, _DUTY[body.command]):
        reason = f"role {principal.role.value} may not send {body.command} to a station"
        await controller.commands.record_refusal("api", actor, action, station_id, reason)
        raise refused(403, reason, "refusal.role_may_not", role=principal.role.value)
    function = _COMMANDS[body.command]
    period = None
    if body.command == "query_period":
        period = _period_query(controller, station_id, body)
    settings: tuple[SettingItem, ...] = ()
    if function in SETTINGS_COMMANDS:
        settings = _settings(controller, station_id, body)
    try:
        command = await controller.station_commands.submit(
            station_id, function, actor, "api", period, settings
        )
    except ValueError as exc:
        raise refused(422, str(exc), "refusal.station_command_unsendable") from None
    response.headers["Location"] = f"/stations/{station_id}/commands/{command.id}"
    return command_out(controller, command)


@router.get("/{station_id}/commands", response_model=list[StationCommandOut])
def list_commands(
    station_id: str, controller: ControllerDep, _principal: Reader
) -> list[StationCommandOut]:
    """The station's recent commands, newest first (the audit log keeps all)."""
    station_id = _station(controller, station_id)
    return [command_out(controller, c) for c in controller.station_commands.recent(station_id)]


@router.get("/{station_id}/commands/{command_id}", response_model=StationCommandOut)
def get_command(station_id: str, command_id: RowId, controller: ControllerDep) -> StationCommandOut:
    """One recent command of the station."""
    station_id = _station(controller, station_id)
    command = controller.station_commands.get(command_id)
    if command is None or command.device != station_id:
        raise refused(
            404,
            f"no recent command {command_id} for station {station_id}",
            "refusal.no_command",
            command=command_id,
        )
    return command_out(controller, command)
