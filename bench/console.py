"""The console's map with a Yangjiang-size city: time to first render in a real browser.

``python -m bench console`` generates the city (1.0: ~660 cabinets, ~42,000
lamps and the gauges), runs the production controller on it (``streetsense
run``: its devices unreachable, which the map shows as offline), opens the
console in headless Chromium, logs in, and measures from the click on Log in
to every device drawn on the map, then a zoom's redraw. In the same page it
measures the floor (fetching and parsing ``/map``, which any console pays)
and a competent baseline for drawing that many points: one canvas, one
``fillRect`` per device. CPU seconds of the browser's processes are reported
beside wall time (the machine is shared).
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
from controller.config import load_config

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


async def _measure(api: str, key: str, controller_pid: int) -> dict[str, Any]:
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
            await page.wait_for_function(
                f"document.querySelectorAll('#map .device').length >= {expected}",
                timeout=120_000,
                polling=50,
            )
            first_render = time.perf_counter() - started
            cpu = _browser_cpu(controller_pid) - cpu0
            floor = await page.evaluate(FLOOR_AND_BASELINE)
            zoom = await page.evaluate(ZOOM)
            rounds.append((first_render, cpu, floor, zoom))
            await page.close()
        await browser.close()
    best = min(rounds, key=lambda r: r[0])
    first_render, cpu, floor, zoom = best
    return {
        "devices": floor["devices"],
        "first_render_s": round(first_render, 3),
        "first_render_browser_cpu_s": round(cpu, 3),
        "floor_fetch_and_parse_map_s": round(min(r[2]["fetch_s"] for r in rounds), 3),
        "baseline_canvas_draw_s": round(min(r[2]["canvas_s"] for r in rounds), 3),
        "zoom_redraw_s": round(min(r[3] for r in rounds), 3),
        "ratio_render_to_fetch_floor": round(
            first_render / min(r[2]["fetch_s"] for r in rounds), 1
        ),
        "ratio_render_to_floor_plus_canvas": round(
            first_render / min(r[2]["fetch_s"] + r[2]["canvas_s"] for r in rounds), 1
        ),
        "rounds": ROUNDS,
    }


def run(size: float = 1.0) -> dict[str, Any]:
    """Generate the city, run the controller on it, measure the console in Chromium."""
    doc = city_of_size(size, 25100)
    with tempfile.TemporaryDirectory() as folder:
        doc["data_dir"] = f"{folder}/var"
        doc["api"] = {"port": API_PORT, "keys_path": "keys.db"}
        config = Path(folder) / "city.yaml"
        config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        loaded = load_config(config)
        store = ApiKeyStore(loaded.data_path("keys.db"))
        key = store.create("bench console", Role.VIEWER)
        store.close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        api = f"http://127.0.0.1:{API_PORT}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                raise RuntimeError("the controller did not answer /health within 120 s")
            figures = asyncio.run(_measure(api, key, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    city = loaded.config
    return {
        "bench": "console",
        "size": size,
        "city": {"cabinets": len(city.cabinets), "gauges": len(city.gauges)},
        **figures,
    }
