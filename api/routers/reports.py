"""Daily, weekly and monthly reports (日清、周析、月报) as printable HTML with charts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from api.auth import read_guard
from api.bounds import check_day
from api.deps import ControllerDep
from api.errors import COMMON, declared
from api.svg import bar_chart
from controller.cases.statistics import figures
from controller.catalogue import Lang, catalogue
from controller.control.audit import AuditQuery
from controller.device_config import GaugeLevels
from controller.statistics import Period, lighting_rates
from controller.telemetry.flood_summary import BANDS, FloodSummary, summarize_flood
from rules.alarm_model import Alarm

if TYPE_CHECKING:
    from controller.runtime import Controller


def _flood_header(tr: Callable[[str], str]) -> str:
    cells = ("gauge", "road", "peak", "peak_at", "time_above", "now")
    return "<tr>" + "".join(f"<th>{tr('flood_' + c)}</th>" for c in cells) + "</tr>"


#: Readings of one gauge a report reads at most (a month at a 2 s storm poll fits).
_MAX_FLOOD_SAMPLES = 1_500_000

router = APIRouter(
    prefix="/reports",
    tags=["reports"],
    dependencies=[Depends(read_guard("reports"))],
    # The reports are HTML; their refusals are JSON like everywhere else.
    responses={
        code: {
            "description": answer["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        for code, answer in declared(COMMON).items()
    },
)

_STYLE = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em;
border-bottom: 1px solid #999; } .meta { color: #555; } table { border-collapse: collapse; }
td, th { border: 1px solid #bbb; padding: 3px 8px; text-align: left; font-size: 0.9em; }
svg.chart text { font-size: 12px; } svg.chart .title { font-weight: bold; }
svg.chart .bar { fill: #3b6ea8; } .figure { font-size: 1.4em; font-weight: bold; }
svg.chart { max-width: 100%; height: auto; }
table { display: block; max-width: 100%; overflow-x: auto; }
@media (max-width: 600px) { body { margin: .6em; } td, th { padding: 3px 4px; } }
@media print { body { margin: 1cm; } h2 { break-after: avoid; }
  svg, table { break-inside: avoid; } }
"""


def _span(period: Period, day: date) -> tuple[date, date]:
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


async def _flood_summaries(
    controller: Controller, floods: list[Alarm], t0: float, t1: float
) -> list[tuple[GaugeLevels, FloodSummary]]:
    """Peak, time above each band and current level of every gauge that alarmed."""
    reader = controller.telemetry.reader
    if reader is None:
        return []
    alarmed = {a.device for a in floods}
    cfg = controller.loaded.config
    out = []
    for gauge in [*cfg.gauges, *cfg.sl651_stations]:
        # A gap counts for at most three of the gauge's own intervals.
        max_gap = 3 * getattr(gauge, "report_interval", cfg.polling.gauge_interval)
        device = controller.registry.by_id.get(gauge.id)
        if gauge.id not in alarmed or device is None:
            continue
        samples = await reader.raw(device, "water_level", t0, t1, _MAX_FLOOD_SAMPLES)
        summary = summarize_flood(samples, {str(k): v for k, v in gauge.levels.items()}, max_gap)
        if summary is not None:
            out.append((gauge, summary))
    return out


def _flood_row(gauge: GaugeLevels, s: FloodSummary, when: Callable[[float], str]) -> str:
    above = " / ".join(f"{s.above[b] / 60:.0f}" if b in s.above else "–" for b in BANDS)
    return (
        f"<tr><td>{escape(gauge.name or gauge.id)}</td><td>{escape(gauge.road)}</td>"
        f"<td>{escape(s.peak_band or '')} {s.peak:.2f} m</td><td>{when(s.peak_at)}</td>"
        f"<td>{above}</td><td>{s.current:.2f} m ({when(s.current_at)})</td></tr>"
    )


@router.get("/{period}", response_class=HTMLResponse)
async def report(
    period: Period,
    controller: ControllerDep,
    day: Annotated[date | None, Query(alias="date", description="a day in the period")] = None,
    lang: Annotated[Lang, Query(description="zh (Simplified Chinese, default) or en")] = "zh",
) -> HTMLResponse:
    """The report of the day, week (from Monday) or month containing ``date`` (default today)."""
    check_day(day, "date")
    tz = controller.loaded.config.site.tz
    today = datetime.now(tz).date()
    first, last = _span(period, day or today)
    t0 = datetime.combine(first, datetime.min.time(), tzinfo=tz).timestamp()
    t1 = datetime.combine(last, datetime.min.time(), tzinfo=tz).timestamp()
    city = controller.loaded.config.site.display_name
    cat = catalogue()

    # The catalogue's texts are ours (they may carry markup); the values in them are escaped.
    def tr(key: str, **values: object) -> str:
        return cat.text(f"report.{key}", lang, **{k: escape(str(v)) for k, v in values.items()})

    lighting = lighting_rates(
        controller.registry, controller.latest, "road", controller.assets.circuit_load
    )
    city_rate = lighting_rates(
        controller.registry, controller.latest, "city", controller.assets.circuit_load
    )
    alarms = await controller.rules.store.history(t0, t1)
    raised = [a for a in alarms if t0 <= a.raised_at < t1]
    none = tr("none")
    by_kind = Counter(cat.term("kind", a.kind, lang) for a in raised)
    by_grid = Counter(a.grid or none for a in raised)
    due = await controller.cases.due_between(t0, t1)
    cases = figures(due)
    floods = [a for a in raised if a.device_class == "gauge" and a.kind == "threshold"]
    commands = await controller.audit.query(AuditQuery(since=t0, until=t1, limit=100_000))
    outcomes = Counter(c.outcome for c in commands)

    def when(ts: float | None) -> str:
        return "" if ts is None else f"{datetime.fromtimestamp(ts, tz):%m-%d %H:%M}"

    flood_rows = "".join(
        _flood_row(gauge, summary, when)
        for gauge, summary in await _flood_summaries(controller, floods, t0, t1)
    )
    rate = city_rate[0].rate if city_rate else None
    html = f"""<!doctype html>
<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(city)} {tr(period)} {first.isoformat()}</title><style>{_STYLE}</style></head>
<body>
<h1>{escape(city)} — {tr(period)}</h1>
<p class="meta">{
        tr(
            "meta",
            first=first.isoformat(),
            last=(last - timedelta(days=1)).isoformat(),
            tz=tz,
            at=f"{datetime.now(tz):%Y-%m-%d %H:%M}",
        )
    }</p>

<h2>{tr("lighting")}</h2>
<p>{tr("lighting_now", rate=_pct(rate))}</p>
{
        bar_chart(
            [(r.group or none, round(100 * (r.rate or 0), 1)) for r in lighting],
            tr("lighting_by_road"),
            "%",
            max_value=100,
        )
    }

<h2>{tr("faults")}</h2>
<p>{tr("faults_raised", n=len(raised))}</p>
{bar_chart(sorted(by_kind.items(), key=lambda kv: -kv[1]), tr("faults_by_kind"))}
{bar_chart(sorted(by_grid.items(), key=lambda kv: -kv[1]), tr("faults_by_grid"))}

<h2>{tr("cases")}</h2>
<p>{
        tr(
            "cases_due",
            due=cases.due,
            closed=cases.closed,
            on_time=cases.closed_on_time,
            closure=_pct(cases.closure_rate),
            on_time_rate=_pct(cases.on_time_rate),
            rework=_pct(cases.rework_rate),
            extension=_pct(cases.extension_rate),
        )
    }</p>
{
        bar_chart(
            [
                (tr("due"), cases.due),
                (tr("closed"), cases.closed),
                (tr("closed_on_time"), cases.closed_on_time),
            ],
            tr("cases_chart"),
        )
    }

<h2>{tr("floods")}</h2>
{f"<table>{_flood_header(tr)}{flood_rows}</table>" if floods else f"<p>{tr('no_floods')}</p>"}

<h2>{tr("control")}</h2>
{
        bar_chart(
            sorted((cat.term("command_status", o, lang), n) for o, n in outcomes.items()),
            tr("commands_by_outcome"),
        )
    }
</body></html>
"""
    return HTMLResponse(html)
