"""The console's map over a configured tile source (site.map.tiles), in real Chromium.

A self-hosted tile server on loopback (simulators.tile_server) stands in for
天地图 or the city's own tiles; it records what the browser asked for. The demo
runs with that source, a tile key from the environment and the GCJ-02 datum
(as Gaode tiles use).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.async_api import Browser, Page, Request, expect

from simulators.tile_server import TileServer
from tests.demo_process import ROOT, Demo, demo_config, run_demo
from tests.test_dashboard import ARTIFACTS, browser, log_in

__all__ = ["browser"]  # the Chromium fixture, shared with the dashboard tests

TILE_KEY = "test-tile-key-0001"


@pytest.fixture(scope="module")
def tiled_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, TileServer]]:
    folder = tmp_path_factory.mktemp("tiles")
    config = demo_config(folder)
    with TileServer() as tiles:
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        doc["site"]["map"] = {
            "tiles": {
                "url": tiles.url("?tk={key}"),
                "attribution": "测试底图 © streetsense",
                "datum": "gcj02",
                "key_env": "STREETSENSE_TILE_KEY",
            }
        }
        config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        os.environ["STREETSENSE_TILE_KEY"] = TILE_KEY
        try:
            with run_demo(config) as demo:
                yield demo, tiles
        finally:
            del os.environ["STREETSENSE_TILE_KEY"]


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = (a[0] - b[0]) * 111_320
    dlon = (a[1] - b[1]) * 111_320 * math.cos(math.radians(a[0]))
    return math.hypot(dlat, dlon)


async def mark_at(page: Page, device: str) -> tuple[float, float]:
    got = await page.evaluate(
        "(id) => { const p = window.streetsense.tileMap.marks.get(id).getLatLng();"
        " return [p.lat, p.lng]; }",
        device,
    )
    return got[0], got[1]


async def test_the_map_draws_devices_over_the_configured_tiles_shifted_to_gcj02(
    tiled_demo: tuple[Demo, TileServer], browser: Browser
) -> None:
    demo, tiles = tiled_demo
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    elsewhere: list[str] = []

    def note(request: Request) -> None:
        if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            elsewhere.append(request.url)

    page.on("request", note)
    await log_in(page, demo, "engineer")
    city = demo.get(f"{demo.api}/map").json()
    assert city["tiles"]["url"].endswith(f"?tk={TILE_KEY}")
    await expect(page.locator("#tile-map")).to_be_visible()
    await expect(page.locator("#map")).to_be_hidden()
    # The tiles came from the configured server, with the key from the environment.
    await expect(page.locator("#tile-map img.leaflet-tile-loaded").first).to_be_attached()
    tile_paths = [p for p in tiles.paths if p.startswith("/tiles/")]
    assert tile_paths and all(p.endswith(f"?tk={TILE_KEY}") for p in tile_paths)
    await expect(page.locator("#tile-map .leaflet-control-attribution")).to_contain_text("测试底图")
    # Cabinets and gauges are always drawn, coloured as on the drawn map; lamps cluster.
    by_class: dict[str, list[dict[str, Any]]] = {}
    for d in city["devices"]:
        by_class.setdefault(d["device_class"], []).append(d)
    await expect(page.locator("#tile-map path.device.cabinet")).to_have_count(
        len(by_class["cabinet"])
    )
    await expect(page.locator("#tile-map path.device.gauge")).to_have_count(len(by_class["gauge"]))
    await expect(page.locator("#tile-map .lamp-cluster").first).to_be_visible()
    drawn_lamps = await page.locator("#tile-map path.device.lamp").count()
    assert drawn_lamps < len(by_class["lamp"])
    # Devices are surveyed in WGS-84; on GCJ-02 tiles they are shifted by the published
    # offset (gcoord's reference: 123 E 45 N goes to 123.00607541, 45.00197815).
    lat, lon = await page.evaluate("window.streetsense.wgs84ToGcj02(45, 123)")
    assert (lat, lon) == pytest.approx((45.00197815, 123.00607541), abs=1e-7)
    assert await page.evaluate("window.streetsense.wgs84ToGcj02(45, 183)") == [45, 183]
    gauge = by_class["gauge"][0]
    shifted = await mark_at(page, gauge["id"])
    expected = await page.evaluate(
        "([a, b]) => window.streetsense.wgs84ToGcj02(a, b)", [gauge["lat"], gauge["lon"]]
    )
    assert shifted == pytest.approx(tuple(expected), abs=1e-9)
    # In Guangdong the shift is hundreds of metres: without it a gauge sits in the wrong street.
    assert 200 < metres(shifted, (gauge["lat"], gauge["lon"])) < 1000
    # Search finds a lamp inside its cluster: the map zooms until it is drawn, selected.
    lamp = by_class["lamp"][0]
    await page.fill("#map-search-input", lamp["id"])
    await page.click("#map-search button[type=submit]")
    await expect(page.locator("#device-detail h3")).to_contain_text(lamp["id"])
    await expect(page.locator("#tile-map path.device.lamp.selected")).to_have_count(1)
    # Clicking a gauge opens it.
    await page.locator("#zoom-reset").click()
    await page.evaluate(
        "(id) => window.streetsense.tileMap.marks.get(id).fire('click')", gauge["id"]
    )
    await expect(page.locator("#device-detail h3")).to_contain_text(gauge["id"])
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "tile-map-desk.png"))
    # On a phone the tiled map fits the screen.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.locator("#zoom-reset").click()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    await page.screenshot(path=str(ARTIFACTS / "tile-map-phone.png"))
    assert not elsewhere, elsewhere  # nothing but this machine's servers
    # Leaflet is served from the console's own folder (copied there by the install step).
    async with httpx.AsyncClient() as client:
        leaflet = await client.get(f"{demo.api}/dashboard/vendor/leaflet/leaflet.min.js")
    assert leaflet.status_code == 200
    await page.close()


def streetsense_check(
    config: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if k != "STREETSENSE_TILE_KEY"},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("tiles", "reason"),
    [
        (
            {"url": "https://t0.example/tiles/{x}/{y}.png", "attribution": "x"},
            "the tile URL lacks {z}",
        ),
        ({"url": "https://t0.example/{z}/{x}/{y}.png"}, "site.map.tiles.attribution"),
        (
            {
                "url": "https://t{s}.example/wmts?TILEMATRIX={z}&TILEROW={y}&TILECOL={x}",
                "attribution": "天地图",
                "subdomains": "01",
                "min_zoom": 12,
                "max_zoom": 10,
            },
            "min_zoom 12 is above max_zoom 10",
        ),
        (
            {
                "url": "https://t0.example/{z}/{x}/{y}.png?tk={key}",
                "attribution": "天地图",
                "key_env": "STREETSENSE_TILE_KEY",
            },
            "environment variable STREETSENSE_TILE_KEY is not set",
        ),
        (
            {
                "url": "https://t0.example/{z}/{x}/{y}.png?tk=abc",
                "attribution": "天地图",
                "key_env": "K",
            },
            "write {key} in url exactly when key_env names the tile key",
        ),
    ],
)
def test_a_bad_tile_source_is_refused_naming_the_file_and_key(
    tmp_path: Path, tiles: dict[str, str], reason: str
) -> None:
    config = demo_config(tmp_path)
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc["site"]["map"] = {"tiles": tiles}
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    result = streetsense_check(config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(config) in result.stderr and reason in result.stderr, result.stderr
