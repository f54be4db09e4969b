"""The console's map with a Yangjiang-size city: time to first render in a real browser.

``python -m bench console`` runs the production controller (``streetsense
run``: its devices unreachable, which the map shows as offline) on two
generated cities and opens the console in headless Chromium, logs in, and
measures from the click on Log in to the map drawn, then a redraw:

- ``drawn``: the offline map (no tiles) of Yangjiang's cabinets, single-lamp
  controllers and gauges (4,216 devices), until every device is drawn; then a
  zoom's redraw.
- ``tiled``: the Leaflet map over tiles from a loopback tile server
  (``site.map.tiles``) with a register of 42,000 lamps (Yangjiang's count),
  until every cabinet and gauge is drawn and every lamp is in the clustering;
  then a pan's redraw (the clusters recomputed for the new view).

In the same page it measures the floor (fetching and parsing ``/map``, which
any console pays) and a competent baseline for drawing that many points: one
canvas, one ``fillRect`` per device. CPU seconds of the browser's processes
are reported beside wall time (the machine is shared).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from playwright.async_api import async_playwright

from api.keys import ApiKeyStore, Role
from bench.city import city_of_size
from controller.config import LoadedConfig, load_config
from controller.state.legacy import opened_state
from simulators.city_generator import SHANTOU_GAUGES, YANGJIANG_CABINETS, generate_city
from simulators.tile_server import TileServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
API_PORT = 25080
ROUNDS = 3

#: In the page: the floor (fetch and parse /map) and the canvas baseline for its points.
FLOOR_AND_BASELINE = """async () => {
  const t0 = performance.now();
  const key = sessionStorage.getItem('streetsense-key');
  const data = await (await fetch('/map', {headers: {'X-API-Key': key}})).json();
  const t1 = performance.now();
  const canvas = document.createElement('canvas');
  canvas.width = 1000; canvas.height = 700;
  document.body.append(canvas);
  const ctx = canvas.getContext('2d');
  const [a, b, c, d] = data.bounds;
  for (const dev of data.devices) {
    ctx.fillStyle = dev.state === 'offline' ? '#888' : '#2a2';
    ctx.fillRect(((dev.lon - a) / (c - a || 1)) * 1000, ((d - dev.lat) / (d - b || 1)) * 700, 3, 3);
  }
  ctx.getImageData(0, 0, 1, 1);  // forces the drawing to finish
  const t2 = performance.now();
  canvas.remove();
  return {fetch_s: (t1 - t0) / 1000, canvas_s: (t2 - t1) / 1000, devices: data.devices.length};
}"""

#: Drawn when every device is on the offline map.
DRAWN_READY = "document.querySelectorAll('#map .device').length >= {expected}"
#: Drawn when cabinets and gauges are on the tiled map and every lamp is in the clustering.
TILED_READY = (
    "window.streetsense && window.streetsense.tileMap.marks.size >= {expected}"
    " && window.streetsense.tileMap.lamps.getLayers().length"
    " + window.streetsense.tileMap.fixed.getLayers().length >= {expected}"
    " && document.querySelector('#tile-map .lamp-cluster') !== null"
)

PAN = """async () => {
  const map = window.streetsense.tileMap.map;
  const t0 = performance.now();
  await new Promise((r) => { map.once('moveend', r); map.panBy([400, 250], {animate: false}); });
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return (performance.now() - t0) / 1000;
}"""

ZOOM = """async () => {
  const t0 = performance.now();
  document.querySelector('#zoom-in').click();
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return (performance.now() - t0) / 1000;
}"""


def _cpu_of_tree(root: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier += children
    return sum(cpu.get(p, 0.0) for p in tree)


def _browser_cpu(controller_pid: int) -> float:
    """CPU of this process's children except the controller: the browser and its driver."""
    return _cpu_of_tree(os.getpid()) - _cpu_of_tree(controller_pid) - time.process_time()


async def _measure(api: str, key: str, controller_pid: int, tiled: bool) -> dict[str, Any]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        rounds = []
        for _ in range(ROUNDS):
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            await page.goto(f"{api}/")
            await page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            await page.click(".login-key summary")  # the API key field, under the password
            await page.fill("#login-key", key)
            cpu0 = _browser_cpu(controller_pid)
            started = time.perf_counter()
            await page.click("#login-button")
            expected = await page.evaluate(
                "async (key) => (await (await fetch('/map', {headers: {'X-API-Key': key}}))"
                ".json()).devices.length",
                key,
            )
            ready = TILED_READY if tiled else DRAWN_READY
            await page.wait_for_function(
                ready.format(expected=expected), timeout=180_000, polling=50
            )
            first_render = time.perf_counter() - started
            cpu = _browser_cpu(controller_pid) - cpu0
            floor = await page.evaluate(FLOOR_AND_BASELINE)
            redraw = await page.evaluate(PAN if tiled else ZOOM)
            rounds.append((first_render, cpu, floor, redraw))
            await page.close()
        await browser.close()
    best = min(rounds, key=lambda r: r[0])
    first_render, cpu, floor, _ = best
    return {
        "devices": floor["devices"],
        "first_render_s": round(first_render, 3),
        "first_render_browser_cpu_s": round(cpu, 3),
        "floor_fetch_and_parse_map_s": round(min(r[2]["fetch_s"] for r in rounds), 3),
        "baseline_canvas_draw_s": round(min(r[2]["canvas_s"] for r in rounds), 3),
        ("pan_redraw_s" if tiled else "zoom_redraw_s"): round(min(r[3] for r in rounds), 3),
        "ratio_render_to_fetch_floor": round(
            first_render / min(r[2]["fetch_s"] for r in rounds), 1
        ),
        "ratio_render_to_floor_plus_canvas": round(
            first_render / min(r[2]["fetch_s"] + r[2]["canvas_s"] for r in rounds), 1
        ),
        "rounds": ROUNDS,
    }


#: Yangjiang's street lamps (the city's asset register), for the tiled map.
YANGJIANG_LAMPS = 42_000


async def _viewer_key(loaded: LoadedConfig) -> str:
    async with opened_state(loaded) as db:
        return await ApiKeyStore(db).create("bench console", Role.VIEWER)


def _measure_city(doc: dict[str, Any], tiled: bool) -> dict[str, Any]:
    """Run the controller on a generated city and measure its console's map."""
    with tempfile.TemporaryDirectory() as folder, TileServer() as tiles:
        doc["data_dir"] = f"{folder}/var"
        doc["api"] = {"port": API_PORT}
        if tiled:
            doc["site"]["map"] = {"tiles": {"url": tiles.url(), "attribution": "bench tiles"}}
        config = Path(folder) / "city.yaml"
        config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        loaded = load_config(config)
        key = asyncio.run(_viewer_key(loaded))
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        api = f"http://127.0.0.1:{API_PORT}"
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                raise RuntimeError("the controller did not answer /health within 180 s")
            figures = asyncio.run(_measure(api, key, proc.pid, tiled))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    city = loaded.config
    lamps = sum(run.count for cabinet in city.cabinets for run in cabinet.lamp_runs)
    return {
        "city": {"cabinets": len(city.cabinets), "lamps": lamps, "gauges": len(city.gauges)},
        **figures,
    }


def run(size: float = 1.0) -> dict[str, Any]:
    """Measure the drawn map (Yangjiang's devices) and the tiled one (its 42,000 lamps)."""
    drawn = _measure_city(city_of_size(size, 25100), tiled=False)
    lamps = round(YANGJIANG_LAMPS * size)
    cabinets = max(1, round(YANGJIANG_CABINETS * size))
    big = generate_city(
        cabinets=cabinets, lamps=lamps, gauges=max(1, round(SHANTOU_GAUGES * size)), base_port=25100
    )
    tiled = _measure_city(big, tiled=True)
    return {"bench": "console", "size": size, "drawn": drawn, "tiled": tiled}
