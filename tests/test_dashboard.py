"""The operator dashboard in a real headless browser (Debian's chromium, driven by playwright).

Runs the demo as a newcomer would (``streetsense demo``) on a copy of config.yaml with
free ports, logs in with the demo's keys, and does what duty staff do: look at the
map, acknowledge an alarm, switch a circuit and see it confirmed, open a gauge chart.
A screenshot of the main page is saved in ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import yaml
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import free_port
from tests.demo_process import ROOT, SIM_TOKEN, Demo, run_demo

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's probe starts it: no sandbox as root, nothing reaching out to the internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def running_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo on a copy of config.yaml with free ports, its files in a temporary folder."""
    folder = tmp_path_factory.mktemp("demo")
    doc = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    for link in doc["links"]:
        link["port"] = free_port()
    doc["simulator"]["scenario"] = str(ROOT / doc["simulator"]["scenario"])
    doc["site"]["grid_cells"] = str(ROOT / doc["site"]["grid_cells"])
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with run_demo(config) as demo:
        yield demo


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def open_dashboard(browser: Browser, demo: Demo, role: str) -> Page:
    page = await browser.new_page(viewport={"width": 1500, "height": 950})
    await page.goto(f"{demo.api}/")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=20_000)
    # Private by default: before a key is given the page shows nothing of the city.
    await expect(page.locator("#map .device")).to_have_count(0)
    await page.fill("#login-key", demo.keys[role])
    await page.click("#login-button")
    await expect(page.locator("#whoami")).to_have_text(f"demo-{role} ({role})")
    return page


async def test_duty_staff_log_in_see_the_city_acknowledge_switch_and_chart(
    running_demo: Demo, browser: Browser
) -> None:
    demo = running_demo
    page = await open_dashboard(browser, demo, "engineer")
    api = httpx.AsyncClient(base_url=demo.api, headers={"X-API-Key": demo.keys["admin"]})
    control = httpx.AsyncClient(base_url=demo.control)

    # Right after login the alarms tab shows alone: the control panel waits for its tab.
    await expect(page.locator("#tab-alarms")).to_be_visible()
    await expect(page.locator("#tab-control")).to_be_hidden()
    await expect(page.locator(".tabs button[data-tab=control]")).to_be_visible()

    # The map: every cabinet, lamp and gauge of the demo city, and its grid cells.
    city = (await api.get("/health")).json()["devices"]
    await expect(page.locator("#map .device")).to_have_count(sum(city.values()))
    await expect(page.locator("#map .device.cabinet")).to_have_count(city["cabinet"])
    assert await page.locator("#map path.cell").count() >= 4

    # An alarm comes in live; the engineer acknowledges it.
    fault = {"kind": "door_open", "device": "JC-XJ-002"}
    headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
    assert (await control.post("/faults", json=fault, headers=headers)).status_code == 201
    row = page.locator("#alarms tbody tr", has_text="JC-XJ-002")
    await expect(row).to_have_count(1, timeout=30_000)
    await expect(row.locator(".state")).to_have_text("active unacknowledged")
    await row.locator("button.ack").click()
    await expect(row.locator(".state")).to_have_text("active acknowledged")
    alarms = (await api.get("/alarms", params={"device": "JC-XJ-002"})).json()
    assert alarms[0]["acknowledged_by"] == "demo-engineer"

    # Switch circuit 2 of a cabinet off, through the confirm dialog, and see it confirmed.
    await page.click("[data-tab=control]")
    await page.select_option("#ctl-kind", "circuits")
    await page.select_option("#ctl-scope", "cabinet")
    await page.select_option("#ctl-target", "JC-DF-001")
    await page.check("input[name=circuit][value='2']")
    await page.select_option("#ctl-action", "off")
    await page.click("#ctl-send")
    await expect(page.locator("#confirm-text")).to_have_text(
        "Switch OFF circuit 2 of cabinet JC-DF-001?"
    )
    await page.click("#confirm-yes")
    status = page.locator("#ctl-status")
    await expect(status).to_contain_text("confirmed — 1 confirmed, 0 failed", timeout=20_000)
    await expect(page.locator("#ctl-results li")).to_have_text(["JC-DF-001/circuit2: confirmed"])
    audit = (await api.get("/audit", params={"target": "JC-DF-001"})).json()
    assert audit[0]["by"] == "demo-engineer" and audit[0]["outcome"] == "confirmed"

    # A gauge's chart with its threshold bands.
    await page.click("[data-tab=water]")
    await page.click(".gauge-item[data-id='WL-DF-UNDERPASS']")
    await expect(page.locator("#gauge-title")).to_contain_text("WL-DF-UNDERPASS")
    await expect(page.locator("#gauge-chart .band")).to_have_count(4)
    await expect(page.locator("#gauge-chart polyline.series")).to_have_count(1)
    await expect(page.locator("#gauge-rate")).to_contain_text("cm/min")

    await page.click("[data-tab=cases]")
    await expect(page.locator("#case-board .column")).to_have_count(6)
    await page.click("[data-tab=alarms]")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 20_000
    await api.aclose()
    await control.aclose()


async def test_a_viewer_is_not_offered_control_or_alarm_actions(
    running_demo: Demo, browser: Browser
) -> None:
    page = await open_dashboard(browser, running_demo, "viewer")
    await expect(page.locator("[data-tab=control]")).to_be_hidden()
    await expect(page.locator("#tab-control")).to_be_hidden()
    await expect(page.locator("#alarms button")).to_have_count(0)
    await page.click("#logout")
    await page.fill("#login-key", "ssk_nope_nope")
    await page.click("#login-button")
    await expect(page.locator("#login-error")).to_have_text("unknown or revoked key")


def test_the_daily_report_prints_its_sections(running_demo: Demo) -> None:
    page = running_demo.get(f"{running_demo.api}/reports/day")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for heading in ("Lighting rate", "Faults", "Cases", "Flood events", "Remote control"):
        assert f"<h2>{heading}" in page.text
    assert page.text.count("<svg") >= 4
    assert running_demo.get(f"{running_demo.api}/reports/year").status_code == 422
