"""The operator dashboard in a real headless browser (Debian's chromium, driven by playwright).

Runs the demo as a newcomer would (``streetsense demo``) on a copy of config.yaml with
free ports, logs in with the demo's keys, and does what duty staff do: look at the
map, acknowledge an alarm, switch a circuit and see it confirmed, open a gauge chart.
A screenshot of the main page is saved in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from playwright.async_api import (
    Browser,
    Dialog,
    FilePayload,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from rules.astro import sun_times
from tests.demo_process import ROOT, SIM_TOKEN, Demo, demo_config, run_demo

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROLE_ZH = {
    "engineer": "照明工程师",
    "viewer": "查看员",
    "dispatcher": "派遣员",
    "admin": "管理员",
    "flood_duty": "防汛值班员",
}
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
    config = demo_config(tmp_path_factory.mktemp("demo"))
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
    await log_in(page, demo, role)
    return page


async def log_in(page: Page, demo: Demo, role: str) -> None:
    """Open the console in ``page`` and log in as the demo's person of ``role``."""
    await page.goto(f"{demo.api}/")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=20_000)
    # Private by default: before a key is given the page shows nothing of the city.
    await expect(page.locator("#map .device")).to_have_count(0)
    # People log in by username and password (API keys are for machines).
    username, password = demo.logins[role]
    await page.fill("#login-user", username)
    await page.fill("#login-password", password)
    await page.click("#login-button")
    await expect(page.locator("#whoami")).to_have_text(f"demo-{role}（{ROLE_ZH[role]}）")


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

    # The map: every cabinet, lamp and gauge of the demo city, and its grid cells (the
    # energy meters sit inside their cabinets).
    city = (await api.get("/health")).json()["devices"]
    placed = sum(n for device_class, n in city.items() if device_class != "meter")
    await expect(page.locator("#map .device")).to_have_count(placed)
    await expect(page.locator("#map .device.cabinet")).to_have_count(city["cabinet"])
    assert await page.locator("#map path.cell").count() >= 4

    # An alarm comes in live; the engineer acknowledges it.
    fault = {"kind": "door_open", "device": "JC-XJ-002"}
    headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
    assert (await control.post("/faults", json=fault, headers=headers)).status_code == 201
    row = page.locator("#alarms tbody tr", has_text="JC-XJ-002")
    await expect(row).to_have_count(1, timeout=30_000)
    await expect(row.locator(".state")).to_have_text("未确认")
    await expect(row).to_contain_text("箱门打开")
    await row.locator("button.ack").click()
    await expect(row.locator(".state")).to_have_text("已确认")
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
        "分闸：配电箱 JC-DF-001 东风路一号箱变 的回路 2？"
    )
    await page.click("#confirm-yes")
    status = page.locator("#ctl-status")
    await expect(status).to_contain_text("已确认 — 确认 1，失败 0", timeout=20_000)
    await expect(page.locator("#ctl-results li")).to_have_text(["JC-DF-001/circuit2：已确认"])
    # Recent commands name their targets as people know them.
    await expect(page.locator("#ctl-recent li").first).to_contain_text("JC-DF-001 东风路一号箱变")
    audit = (await api.get("/audit", params={"target": "JC-DF-001"})).json()
    assert audit[0]["by"] == "demo-engineer" and audit[0]["outcome"] == "confirmed"
    # Putting out a whole grid's 76 lamps is asked twice, the second time with the count;
    # the engineer thinks better of it and nothing is sent.
    await page.select_option("#ctl-scope", "grid")
    await page.select_option("#ctl-target", "441702002001")
    await page.click("#ctl-send")
    await page.click("#confirm-yes")
    await expect(page.locator("#confirm-text")).to_have_text(
        "这将熄灭 76 盏灯（超过 50 盏）。确认执行这次大范围关灯？"
    )
    await page.click("#confirm-no")
    await expect(status).to_have_text("被拒绝：这将熄灭 76 盏灯（超过 50 盏）")
    refused = (await api.get("/audit", params={"target": "441702002001"})).json()
    assert [(a["outcome"], a["action"]) for a in refused] == [("refused", "circuit_off")]

    # A gauge's chart with its threshold bands.
    await page.click("[data-tab=water]")
    # The flood panel: every gauge with its level, band and how old its reading is.
    water = (await api.get("/telemetry/water")).json()
    assert {w["id"] for w in water} >= {"WL-DF-UNDERPASS"}
    panel = page.locator(".gauge-item[data-id='WL-DF-UNDERPASS']")
    await expect(panel.locator(".level")).to_contain_text("米")
    await expect(panel.locator(".pill")).to_have_count(1)
    await expect(panel.locator(".age")).to_contain_text("前")
    band = next(w["band"] for w in water if w["id"] == "WL-DF-UNDERPASS") or "none"
    marker = page.locator("#map .device.gauge[data-id='WL-DF-UNDERPASS']")
    await expect(marker).to_have_class(re.compile(f"band-{band}"))
    await page.click(".gauge-item[data-id='WL-DF-UNDERPASS']")
    await expect(page.locator("#gauge-title")).to_contain_text("WL-DF-UNDERPASS")
    await expect(page.locator("#gauge-chart .band")).to_have_count(4)
    await expect(page.locator("#gauge-chart polyline.series")).to_have_count(1)
    await expect(page.locator("#gauge-rate")).to_contain_text("厘米/分")
    # The last 24 hours by default, on a time axis of the city's hours; 2 hours by a button.
    await expect(page.locator("#gauge-range button.active")).to_have_text("24 小时")
    ticks = await page.locator("#gauge-chart text").all_text_contents()
    assert sum(bool(re.fullmatch(r"\d\d:00", t)) for t in ticks) >= 6, ticks
    await page.click("#gauge-range button[data-hours='2']")
    await expect(page.locator("#gauge-range button.active")).to_have_text("2 小时")
    await expect(
        page.locator("#gauge-chart text", has_text=re.compile(r"^\d\d:(15|30|45)$")).first
    ).to_be_visible()
    # Pointing at the line reads out a time and a level.
    box = await page.locator("#gauge-chart").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2)
    await expect(page.locator("#gauge-chart .cursor text")).to_contain_text(" 米")
    # Dragging across the chart zooms in on that span; 还原 shows the range again.
    chart = page.locator("#gauge-chart")
    two_hours = [float(await chart.get_attribute(a) or 0) for a in ("data-start", "data-end")]
    y_mid = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + box["width"] * 0.3, y_mid)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.7, y_mid, steps=5)
    await page.mouse.up()
    await expect(page.locator("#gauge-zoom-out")).to_be_visible()
    await expect(page.locator("#gauge-title")).to_contain_text("至")
    # The title changes first; the chart once the span's readings are in.
    await expect(chart).not_to_have_attribute("data-start", str(round(two_hours[0])))
    start, end = [float(await chart.get_attribute(a) or 0) for a in ("data-start", "data-end")]
    whole_span = two_hours[1] - two_hours[0]
    assert 0.3 * whole_span < end - start < 0.5 * whole_span, (two_hours, start, end)
    assert two_hours[0] < start < end < two_hours[1]
    await page.click("#gauge-zoom-out")
    await expect(page.locator("#gauge-zoom-out")).to_be_hidden()
    await expect(page.locator("#gauge-chart polyline.series")).to_have_count(1)

    # The map zooms and finds a place by its name.
    whole = await page.locator("#map").get_attribute("viewBox")
    await page.click("#zoom-in")
    zoomed = await page.locator("#map").get_attribute("viewBox")
    assert whole == "0 0 1000 700" and zoomed != whole
    await page.click("#zoom-reset")
    await expect(page.locator("#map")).to_have_attribute("viewBox", "0 0 1000 700")
    await page.fill("#map-search-input", "东风路一号箱变")
    await page.click("#map-search button[type=submit]")
    await expect(page.locator("#device-detail h3")).to_contain_text("JC-DF-001")
    await expect(page.locator("#map .device.selected")).to_have_attribute("data-id", "JC-DF-001")
    width = float((await page.locator("#map").get_attribute("viewBox") or "").split()[2])
    assert width < 200
    await page.fill("#map-search-input", "no such place")
    await page.click("#map-search button[type=submit]")
    await expect(page.locator("#map-search-result")).to_have_text("未找到")
    await page.click("#zoom-reset")

    # A cabinet's detail shows every reading, and any one opens its history.
    await page.locator("#map .device.cabinet[data-id='JC-DF-001']").click()
    points = page.locator("#device-detail .readings li")
    await expect(points.first).to_be_visible()
    assert await points.count() > 12
    # Whether it answers, and when it last did, in the city's time.
    comm = page.locator("#device-detail .comm.online")
    await expect(comm).to_contain_text(
        re.compile(r"通信正常，最近一次应答 \d{4}/\d{1,2}/\d{1,2} \d\d:\d\d:\d\d")
    )
    await expect(
        page.locator("#device-detail .readings li[data-point=leakage_current]")
    ).to_be_visible()
    # A voltage with its symbol; a contact reads 是 or 否, not 1 or 0.
    voltage = page.locator("#device-detail .readings li[data-point=voltage_a]")
    await expect(voltage).to_have_text(re.compile(r"\d V$"))
    door = page.locator("#device-detail .readings li[data-point=door_open] .bool")
    await expect(door).to_have_text(re.compile("^[是否]$"))
    await page.click("#device-detail .readings li[data-point=current_a]")
    await expect(page.locator("#point-title")).to_contain_text("最近 24 小时")
    await expect(page.locator("#point-chart polyline.series")).to_have_count(1)

    # Tonight's schedules, a place's steps, and an override held for an hour, then ended.
    await page.click("[data-tab=schedules]")
    group = page.locator("#schedule-groups tr[data-group=city-roads]")
    await expect(group).to_be_visible()
    await group.click()
    await expect(group).to_contain_text("城区道路")  # the names people use, not the ids
    await expect(page.locator("#timeline-title")).to_contain_text("城区道路")
    await expect(page.locator("#timeline li").first).to_contain_text("→")
    await expect(page.locator("#timeline li").first).to_contain_text("JC-DF-001 东风路一号箱变")
    await page.select_option("#ovr-target", "JC-XJ-001")
    await page.select_option("#ovr-action", "on")
    await page.fill("#ovr-hours", "1")
    await page.fill("#ovr-reason", "夜间抢修照明")
    await page.click("#override-form button[type=submit]")
    await expect(page.locator("#confirm-text")).to_contain_text("持续 1 小时")
    await page.click("#confirm-yes")
    await expect(page.locator("#ovr-status")).to_contain_text("生效中", timeout=20_000)
    held = page.locator("#overrides tr", has_text="夜间抢修照明").first
    await expect(held).to_contain_text("生效中")
    # Its group as people name it, not the selector's ids.
    await expect(held.locator("td").first).to_have_text("配电箱 JC-XJ-001 新江路一号箱变")
    await held.get_by_role("button", name="立即结束").click()
    await expect(held).to_contain_text("已取消")

    # The pole register: a CSV imported with one bad row reported, found, and edited.
    await page.click("[data-tab=assets]")
    sheet = (
        "pole_id,lat,lon,rated_w,lamp_type,road,cabinet,circuit\n"
        "DF-P001,21.8586,111.9823,150,LED,东风路,JC-DF-001,1\n"
        "DF-P002,21.8587,111.9825,150,LED,东风路,JC-DF-001,1\n"
        "DF-P003,21.8588,111.9827,250,HPS,东风路,JC-DF-001,2\n"
        "DF-P004,21.8589,111.9829,0,LED,东风路,JC-DF-001,2\n"
    )
    await page.set_input_files(
        "#asset-file",
        files=[FilePayload(name="poles.csv", mimeType="text/csv", buffer=sheet.encode())],
    )
    # The file picker in the page's words, the chosen file named beside it.
    picker = page.locator("#asset-import label.file-pick")
    await expect(picker).to_have_text(re.compile(r"^\s*选择文件\s+poles\.csv\s*$"))
    await page.click("#asset-import button[type=submit]")
    await expect(page.locator("#asset-import-result")).to_contain_text("接受 3 行")
    await expect(page.locator("#asset-import-result")).to_contain_text("拒绝 1 行")
    # The reason in Chinese too (rated_w must be above 0), naming the column.
    await expect(page.locator("#asset-rejects li")).to_have_text(
        ["第 5 行 DF-P004：以下列的值无效：rated_w"]
    )
    await page.fill("#asset-road", "东风路")
    await page.click("#asset-search button[type=submit]")
    await expect(page.locator("#assets tbody tr")).to_have_count(3)
    await page.click("#assets tr[data-pole=DF-P003]")
    await expect(page.locator("#asset-edit-title")).to_contain_text("DF-P003")
    await page.fill("#asset-lamp-type", "LED")
    await page.fill("#asset-rated", "120")
    await page.click("#asset-edit button[type=submit]")
    await expect(page.locator("#asset-edit-status")).to_have_text("已保存 DF-P003")
    pole = (await api.get("/assets/DF-P003")).json()
    assert (pole["lamp_type"], pole["rated_w"], pole["circuit"]) == ("LED", 120, 2)
    # A pole of the register is found on the map by its number, and pinned there.
    await page.fill("#map-search-input", "DF-P003")
    await page.click("#map-search button[type=submit]")
    pin = page.locator("#map path.case-pin")
    await expect(pin.locator("title")).to_have_text("灯杆 DF-P003 东风路")
    await expect(page.locator("#map-search-result")).to_have_text("")
    assert float((await page.locator("#map").get_attribute("viewBox") or "").split()[2]) < 200
    await page.click("#zoom-reset")

    # Energy per cabinet against full power (the demo has just started: no counter
    # readings from last noon, which the table says rather than showing 0).
    await page.click("[data-tab=stats]")
    await expect(page.locator("#energy tbody tr").first).to_be_visible()
    await expect(page.locator("#energy-total")).to_have_text("1 夜：尚无电表读数，无法与全功率对比")
    await expect(page.locator("#energy tbody tr").first).to_contain_text("无电表读数")

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
    await expect(page.locator("#login")).to_be_visible()
    # The session ended on the server too: a reload does not bring it back.
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=20_000)
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#login-user", running_demo.logins["viewer"][0])
    await page.fill("#login-password", "not the password")
    await page.click("#login-button")
    await expect(page.locator("#login-error")).to_have_text("用户名或密码错误")
    # A machine's API key still works, pasted under "API 密钥".
    await page.click(".login-key summary")
    await page.fill("#login-key", "ssk_nope_nope")
    await page.click("#login-button")
    await expect(page.locator("#login-error")).to_have_text("API 密钥无效或已吊销。")
    await page.fill("#login-key", running_demo.keys["viewer"])
    await page.click("#login-button")
    await expect(page.locator("#whoami")).to_have_text("demo-viewer（查看员）")


async def test_an_admin_adds_a_person_in_the_console_who_then_logs_in_and_is_disabled(
    running_demo: Demo, browser: Browser
) -> None:
    admin = await open_dashboard(browser, running_demo, "admin")
    await admin.click("[data-tab=users]")
    await expect(admin.locator("#users tr[data-user=engineer]")).to_contain_text("照明工程师")
    await admin.fill("#user-username", "h")
    await admin.fill("#user-name", "黄值班")
    await admin.select_option("#user-role", "flood_duty")
    await admin.fill("#user-password", "short")
    await admin.click("#user-form button[type=submit]")
    # Refused by the API's validation: the field and its bound in the reader's language.
    await expect(admin.locator("#user-error")).to_have_text("输入有误：用户名：至少 2 个字符")
    await admin.fill("#user-username", "huang.duty")
    await admin.click("#user-form button[type=submit]")
    # Refused by the account rules, worded by the catalogue.
    await expect(admin.locator("#user-error")).to_have_text("密码至少需要 10 个字符")
    await admin.fill("#user-password", "Storm-night 2026")
    await admin.click("#user-form button[type=submit]")
    await expect(admin.locator("#user-error")).to_have_text("已创建 huang.duty")
    row = admin.locator("#users tr[data-user='huang.duty']")
    await expect(row).to_contain_text("防汛值班员")

    person = await browser.new_page(viewport={"width": 390, "height": 844})
    await person.goto(f"{running_demo.api}/")
    await expect(person.locator("body")).to_have_attribute("data-ready", "true", timeout=20_000)
    await person.fill("#login-user", "huang.duty")
    await person.fill("#login-password", "Storm-night 2026")
    await person.click("#login-button")
    await expect(person.locator("#whoami")).to_have_text("黄值班（防汛值班员）")
    await expect(person.locator("[data-tab=users]")).to_be_hidden()

    await row.get_by_role("button", name="停用").click()
    await expect(row).to_contain_text("已停用")
    # Disabling ends the person's session: their next call is refused.
    await person.reload()
    await expect(person.locator("body")).to_have_attribute("data-ready", "true", timeout=20_000)
    await expect(person.locator("#login")).to_be_visible()
    await person.close()


def test_the_daily_report_prints_its_sections(running_demo: Demo) -> None:
    page = running_demo.get(f"{running_demo.api}/reports/day")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # Chinese first, the sections in the words of 数字城管; English by ?lang=en.
    for heading in ("亮灯率", "故障", "案件", "内涝", "遥控"):
        assert f"<h2>{heading}</h2>" in page.text
    assert '<html lang="zh-CN">' in page.text
    assert "<h1>阳江市江城区（演示） — 日报</h1>" in page.text  # the city by its name
    assert "Asia/Shanghai" in page.text and page.text.count("<svg") >= 4
    english = running_demo.get(f"{running_demo.api}/reports/day", params={"lang": "en"})
    for heading in ("Lighting rate", "Faults", "Cases", "Flood events", "Remote control"):
        assert f"<h2>{heading}</h2>" in english.text
    assert (
        running_demo.get(f"{running_demo.api}/reports/day", params={"lang": "fr"}).status_code
        == 422
    )
    assert running_demo.get(f"{running_demo.api}/reports/year").status_code == 422


# Text nodes a person sees, outside what is marked as data (translate="no"), and the
# placeholder, title and aria-label attributes.
VISIBLE_TEXT = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const parent = node.parentElement;
    if (!parent || parent.closest('[translate="no"], script, style, title')) continue;
    if (!node.textContent.trim() || !parent.checkVisibility()) continue;
    out.push(node.textContent.trim());
  }
  for (const n of document.querySelectorAll("[placeholder], [title], [aria-label]")) {
    if (n.closest('[translate="no"]') || !n.checkVisibility()) continue;
    for (const a of ["placeholder", "title", "aria-label"]) {
      if (n.getAttribute(a)) out.push(n.getAttribute(a));
    }
  }
  return out;
}"""
# Ids (JC-DF-001, WL-DF-UNDERPASS, JC-DF-001/circuit2, ssk_…), units, file formats and the
# product's name are the same in every language.
NOT_WORDS = re.compile(
    r"[A-Za-z0-9]+(?:[-_/][A-Za-z0-9…]+)+|ssk_…|streetsense|cm/min|kWh|kW|mA|Hz|°C|dBm|"
    r"\bCSV\b|\bGeoJSON\b|\bAPI\b|\b[VAWhms]\b"
)


async def untranslated(page: Page) -> list[str]:
    texts: list[str] = await page.evaluate(VISIBLE_TEXT)
    return [t for t in texts if re.search(r"[A-Za-z]{2,}", NOT_WORDS.sub("", t))]


async def test_the_console_speaks_chinese_everywhere_and_english_by_the_switch(
    running_demo: Demo, browser: Browser
) -> None:
    page = await open_dashboard(browser, running_demo, "engineer")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(page.locator("[data-tab=alarms] [data-i18n]")).to_have_text("告警")
    await expect(page.locator("#timezone")).to_have_text("北京时间")
    await expect(page.locator("#city")).to_have_text("阳江市江城区（演示）")
    # An alarm to read, whatever the demo's storm has raised by now.
    async with httpx.AsyncClient(base_url=running_demo.control) as control:
        fault = {"kind": "door_open", "device": "JC-MY-001"}
        headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
        assert (await control.post("/faults", json=fault, headers=headers)).status_code == 201
    await expect(page.locator("#alarms tbody tr").first).to_be_visible(timeout=30_000)
    missing: dict[str, list[str]] = {"alarms": await untranslated(page)}
    await page.locator("#map .device.cabinet").first.click()
    await expect(page.locator("#device-detail p").first).to_contain_text("配电箱")
    missing["device"] = await untranslated(page)
    for tab in ("water", "stats", "cases", "control", "schedules", "assets"):
        await page.click(f"[data-tab={tab}]")
        if tab == "water":
            await page.click(".gauge-item[data-id='WL-DF-UNDERPASS']")
            await expect(page.locator("#gauge-rate")).to_contain_text("当前")
        if tab == "cases":
            await expect(page.locator("#case-board .column h4").first).to_contain_text("受理")
        await page.wait_for_timeout(500)
        missing[tab] = await untranslated(page)
    assert not any(missing.values()), {k: v for k, v in missing.items() if v}

    # English by the switch, remembered across a reload, and back.
    await page.click("#lang")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.locator("[data-tab=alarms] [data-i18n]")).to_have_text("Alarms")
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=20_000)
    await expect(page.locator("[data-tab=water]")).to_have_text("Water levels")
    await expect(page.locator("#whoami")).to_have_text("demo-engineer (engineer)")
    await page.click("#lang")
    await expect(page.locator("[data-tab=water]")).to_have_text("水位")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.click("[data-tab=alarms]")
    await page.screenshot(path=str(ARTIFACTS / "console-zh-phone.png"), full_page=True)


def test_every_catalogue_entry_has_both_languages_and_every_key_the_console_uses_exists() -> None:
    static = ROOT / "api" / "static"
    catalogue = json.loads((ROOT / "controller" / "messages.json").read_text(encoding="utf-8"))
    assert all(set(entry) == {"zh", "en"} and all(entry.values()) for entry in catalogue.values())
    source = (static / "app.js").read_text(encoding="utf-8")
    used = set(re.findall(r'\bt\("([a-z_.]+)"', source))
    used |= set(re.findall(r'"(cases\.col_[a-z]+)"', source))
    # Unworded refusals are framed by their HTTP status.
    framed = set(re.findall(r'"(refusal\.http_[a-z0-9]+)"', source))
    assert len(framed) >= 11, framed
    used |= framed
    used |= set(
        re.findall(r'data-i18n(?:-[a-z-]+)?="([a-z_.]+)"', (static / "index.html").read_text())
    )
    assert used and not used - catalogue.keys(), used - catalogue.keys()
    # The reports read the same catalogue.
    reports = (ROOT / "api" / "routers" / "reports.py").read_text(encoding="utf-8")
    in_reports = {f"report.{k}" for k in re.findall(r'\btr\(\s*"([a-z_]+)"', reports)}
    in_reports |= {f"report.{p}" for p in ("day", "week", "month")}
    assert len(in_reports) > 15 and not in_reports - catalogue.keys(), in_reports - catalogue.keys()
    # So do the case titles: a fault has the name the alarm list gives it.
    titles = (ROOT / "controller" / "cases" / "titles.py").read_text(encoding="utf-8")
    in_titles = set(re.findall(r'"(fault\.[a-z_]+)"', titles))
    assert len(in_titles) >= 5 and not in_titles - catalogue.keys(), in_titles - catalogue.keys()
    # The refusals the API words for people: tests/test_messages.py.


async def test_an_urgent_alarm_demands_attention_and_alarms_sort_group_and_filter(
    running_demo: Demo, browser: Browser
) -> None:
    page = await open_dashboard(browser, running_demo, "engineer")
    control = httpx.AsyncClient(base_url=running_demo.control)
    headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
    try:
        # Mains loss (urgent) and an open door on one cabinet.
        for kind in ("mains_loss", "door_open"):
            fault = {"kind": kind, "device": "JC-XJ-001"}
            assert (await control.post("/faults", json=fault, headers=headers)).status_code == 201
        banner = page.locator("#urgent-banner")
        await expect(banner).to_be_visible(timeout=30_000)
        await expect(banner).to_contain_text("紧急告警")
        await expect(banner).to_contain_text("JC-XJ-001")
        # Severity first: the urgent alarm heads the list whatever came later.
        await expect(page.locator("#alarms tbody tr").first).to_have_class(re.compile("sev-urgent"))
        titles = set()
        for _ in range(6):
            titles.add(await page.title())
            await page.wait_for_timeout(400)
        assert any("紧急告警" in t for t in titles) and len(titles) == 2  # it flashes
        assert await page.evaluate("window.streetsenseTones") >= 1

        # Grouped by cabinet, the cabinet's alarms are one row that opens.
        await page.select_option("#alarm-group", "cabinet")
        group = page.locator("#alarms tr.group", has_text="JC-XJ-001")
        await expect(group).to_have_count(1)
        members = page.locator("#alarms tr.member", has_text="JC-XJ-001")
        await expect(members.first).to_be_hidden()
        await group.locator("button.expand").click()
        await expect(members.first).to_be_visible()
        assert await members.count() >= 2
        # Filtered to one severity, only that severity shows.
        await page.select_option("#alarm-group", "none")
        await page.select_option("#alarm-severity", "urgent")
        classes = await page.locator("#alarms tbody tr").evaluate_all(
            "rows => rows.map(r => r.className)"
        )
        assert classes and all("sev-urgent" in c for c in classes)
        await page.select_option("#alarm-severity", "")
        assert await page.locator("#alarms tbody tr").count() > len(classes)

        # Acknowledged, the banner goes and the title stops flashing.
        await page.click("#urgent-ack")
        await expect(banner).to_be_hidden(timeout=15_000)
        await page.wait_for_timeout(1200)
        assert "紧急告警" not in await page.title()
        # Muting is remembered.
        await page.click("#mute")
        await expect(page.locator("#mute")).to_have_text("取消静音")
        assert await page.evaluate("localStorage.getItem('streetsense-mute')") == "1"
    finally:
        await control.delete("/faults/JC-XJ-001", headers=headers)
        await control.aclose()


async def report_hotline_case(api: httpx.AsyncClient, title: str) -> str:
    """A citizen's streetlight report by the 12345 hotline, in a grid cell of the demo city."""
    reported = await api.post(
        "/cases",
        json={
            "source": "hotline",
            "category": "streetlight",
            "title": title,
            "lat": 21.86,
            "lon": 111.98,
            "grid": "441702002001",
        },
    )
    assert reported.status_code == 201, reported.text
    return str(reported.json()["id"])


async def test_a_refused_case_action_is_told_in_the_readers_language(
    running_demo: Demo, browser: Browser
) -> None:
    """Two dispatchers on one case: the second, whose phone has lost the live stream (so
    the board has not caught up), clicks on a stage that has moved on."""
    api = httpx.AsyncClient(
        base_url=running_demo.api, headers={"X-API-Key": running_demo.keys["admin"]}
    )
    case_id = await report_hotline_case(api, "江城路 路灯闪烁")
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await page.route("**/events?**", lambda route: route.abort())
    await log_in(page, running_demo, "dispatcher")
    await page.click("[data-tab=cases]")
    card = page.locator(f"#case-board .case[data-id='{case_id}']")
    try:
        for action, lang, expected in [
            ("accept", "zh", "案件处于“已受理”阶段，不能受理。"),
            ("file", "en", "Cannot file a case that is filed."),
        ]:
            if lang == "en":
                await page.click("#lang")
                await expect(page.locator("html")).to_have_attribute("lang", "en")
            button = card.locator(f"button[data-action={action}]")
            await expect(button).to_be_visible()
            # The other dispatcher is quicker.
            assert (await api.post(f"/cases/{case_id}/{action}", json={})).status_code == 200
            await button.click()
            await page.click("#confirm-yes")  # every step is confirmed first
            # Told in the page, not by the browser's untranslated alert().
            await expect(page.locator("#refusal-text")).to_have_text(expected)
            await page.click("#refusal-ok")
            await expect(page.locator("#refusal")).to_be_hidden()
    finally:
        await page.close()
        await api.aclose()


async def test_a_dispatcher_works_a_case_through_its_loop_in_the_browser(
    running_demo: Demo, browser: Browser
) -> None:
    """From the board's search to the case's own page, on a phone: every step confirmed,
    dispatched to a department of the dispatcher's choosing, a photo at disposal, and
    the history, the position and the evaluation on the page."""
    api = httpx.AsyncClient(
        base_url=running_demo.api, headers={"X-API-Key": running_demo.keys["admin"]}
    )
    case_id = await report_hotline_case(api, "东风路 路灯不亮")
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await log_in(page, running_demo, "dispatcher")
    alerts: list[str] = []

    async def answer(dialog: Dialog) -> None:
        # The console tells refusals in the page: no browser dialog should ever open.
        alerts.append(dialog.message)
        await dialog.accept()

    page.on("dialog", lambda dialog: asyncio.ensure_future(answer(dialog)))
    await page.click("[data-tab=cases]")
    # The board finds the case by its words, and the lateness filter leaves it out.
    await page.fill("#case-q", "东风路 路灯不亮")
    card = page.locator(f"#case-board .case[data-id='{case_id}']")
    await expect(card).to_be_visible()
    await page.check("#case-overdue")
    await expect(card).to_have_count(0)
    await page.uncheck("#case-overdue")
    await card.locator("a.case-link").click()
    case_page = page.locator("#case-page")
    await expect(case_page.locator("h3")).to_contain_text("东风路 路灯不亮")
    assert page.url.endswith(f"#case-{case_id}")
    await expect(case_page.locator(".facts")).to_contain_text("热线")
    await expect(case_page.locator(".stage")).to_contain_text("待受理")
    confirms: list[str] = []
    for action, stage in [
        ("accept", "accepted"),
        ("file", "filed"),
        ("dispatch", "dispatched"),
        ("start_disposal", "in_disposal"),
        ("report_disposal", "disposal_reported"),
        ("start_verification", "under_verification"),
        ("pass_verification", "under_verification"),
        ("close", "evaluated"),  # closing evaluates it at once (on time or not)
    ]:
        if action == "start_disposal":
            # Dispatched with too little time for the crew: the centre gives 48 hours more.
            due = (await api.get(f"/cases/{case_id}")).json()["due_at"]
            await case_page.locator("button[data-action=extend]").click()
            await expect(page.locator("#confirm-input")).to_have_value("24")
            await page.fill("#confirm-input", "48")
            await page.click("#confirm-yes")
            for _ in range(50):
                if (await api.get(f"/cases/{case_id}")).json()["due_at"] != due:
                    break
                await asyncio.sleep(0.1)
            extended = (await api.get(f"/cases/{case_id}")).json()["due_at"]
            assert 47.9 * 3600 <= extended - max(due, time.time() - 60) <= 48.1 * 3600
        steps = len((await api.get(f"/cases/{case_id}")).json()["transitions"])
        if action == "dispatch":
            # Not where the routing table would send it: the dispatcher chooses.
            await case_page.locator("select.department").select_option("市城市照明管理所")
        if action == "report_disposal":
            # A file that is no photo is refused in the page, in the reader's words.
            await case_page.locator("input.photo").set_input_files(
                files=[FilePayload(name="notes.png", mimeType="image/png", buffer=b"<script>")]
            )
            await expect(page.locator("#refusal")).to_be_visible()
            await expect(page.locator("#refusal-text")).to_have_text(
                "该文件不是照片，请上传 JPEG、PNG 或 WebP 格式的图片。"
            )
            await page.locator("#refusal-ok").click()
            await expect(page.locator("#refusal")).to_be_hidden()
            await expect(case_page.locator("img.photo-large")).to_have_count(0)
            # The proof of disposal: a photo from the phone, attached before reporting.
            await case_page.locator("input.photo").set_input_files(
                files=[FilePayload(name="repaired.png", mimeType="image/png", buffer=PHOTO)]
            )
            await expect(case_page.locator("img.photo-large")).to_have_count(1)
        await case_page.locator(f"button[data-action={action}]").click()
        await expect(page.locator("#confirm")).to_be_visible()
        if action == "report_disposal":  # the note it asks for is the confirmation
            await expect(page.locator("#confirm-input")).to_be_visible()
            await page.fill("#confirm-input", "已更换灯具")
        else:
            await expect(page.locator("#confirm-input")).to_be_hidden()
            confirms.append(await page.locator("#confirm-text").inner_text())
        await page.click("#confirm-yes")
        for _ in range(50):
            now = (await api.get(f"/cases/{case_id}")).json()
            if now["stage"] == stage and len(now["transitions"]) > steps:
                break
            await asyncio.sleep(0.1)
        assert (await api.get(f"/cases/{case_id}")).json()["stage"] == stage
        await expect(page.locator("#refusal")).to_be_hidden()  # no refusal met on the way
    assert alerts == []
    assert f"#{case_id}" in confirms[0] and "受理" in confirms[0]
    assert "派往 市城市照明管理所" in confirms[2]
    # Closed: nothing left to do; every step is on the page, in Chinese, in order.
    await expect(case_page.locator(".stage")).to_contain_text("已评价")
    await expect(case_page.locator("button[data-action]")).to_have_count(0)
    detail = (await api.get(f"/cases/{case_id}")).json()
    history = detail["transitions"]
    assert detail["department"] == "市城市照明管理所"
    rows = case_page.locator(".history li")
    await expect(rows).to_have_count(len(history))
    await expect(rows.nth(1)).to_contain_text("受理")
    await expect(case_page.locator(".history")).to_contain_text("已更换灯具")
    await expect(case_page.locator(".facts")).to_contain_text("评价")
    # Where it is: the pin on the page's drawing, then on the city map.
    await expect(case_page.locator("svg.case-map .case-pin")).to_have_count(1)
    await case_page.locator("button.show-on-map").click()
    await expect(page.locator("#map path.case-pin")).to_have_count(1)
    # And by its number in the map's search.
    await page.click("#zoom-reset")
    await expect(page.locator("#map")).to_have_attribute("viewBox", "0 0 1000 700")
    await page.fill("#map-search-input", f"案件 {case_id}")
    await page.click("#map-search button[type=submit]")
    await expect(page.locator("#map")).not_to_have_attribute("viewBox", "0 0 1000 700")
    await expect(page.locator("#map path.case-pin title")).to_contain_text(f"#{case_id} ")
    assert float((await page.locator("#map").get_attribute("viewBox") or "").split()[2]) < 200
    assert await page.evaluate(PAGE_WIDTH) <= 390
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "case-page-phone.png"), full_page=True)
    # A link to the case opens its page.
    await page.reload()
    await expect(page.locator("#case-page h3")).to_contain_text("东风路 路灯不亮", timeout=20_000)
    await page.close()
    assert any(h.get("note") == "已更换灯具" for h in history)
    # The photo went with the case, and reads back as sent.
    [link] = detail["media"]
    photo = await api.get(link)
    assert photo.headers["content-type"] == "image/png" and photo.content == PHOTO
    assert (await httpx.AsyncClient(base_url=running_demo.api).get(link)).status_code == 401
    photos = f"/cases/{case_id}/photos"
    not_a_photo = await api.post(photos, content=b"<script>", headers={"Content-Type": "image/png"})
    assert not_a_photo.status_code == 422 and "not a JPEG" in not_a_photo.text
    too_late = await api.post(photos, content=PHOTO, headers={"Content-Type": "image/png"})
    assert too_late.status_code == 409 and "evaluated" in too_late.text
    clicked = [h for h in history if h.get("action") in {"accept", "dispatch", "close"}]
    assert len(clicked) == 3 and all(h["actor"] == "demo-dispatcher" for h in clicked)
    await api.aclose()


def tiny_png() -> bytes:
    """A real 8x8 PNG (a photo stand-in the browser can decode)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(b"\x00" + bytes([200, 120, 40]) * 8 for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PHOTO = tiny_png()


def lamp_faults_for_now(lamps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Faults that make twenty or more lamp alarms in the demo city now, and their kind: by
    day a contactor stuck closed lights its circuit's 30 lamps whose controllers do not
    switch off (day-burning), by night
    burnt-out lamps spread over the street runs (lamp failure, each its own alarm)."""
    sunrise, sunset = sun_times(np.array([21.86]), np.array([111.98]), time.time())
    now, slack = time.time(), 45 * 60  # the rule's 30-minute margin at dawn and dusk, and more
    if sunrise[0] + slack < now < sunset[0] - slack:
        # Circuit 1 of JC-XJ-001 is its first 30 street lamps; their controllers stay on.
        stuck = [{"kind": "lamp_stuck_on", "device": f"JC-XJ-001-L{n:03d}"} for n in range(1, 31)]
        contactor = {"kind": "contactor_fail", "device": "JC-XJ-001", "circuit": 1}
        return [contactor, *stuck], "day_burning"
    if now < sunrise[0] - slack or now > sunset[0] + slack:
        by_cabinet: dict[str, list[str]] = {}
        for lamp in lamps:
            if lamp["parent"] and re.search(r"-L\d{3}$", lamp["id"]):
                by_cabinet.setdefault(lamp["parent"], []).append(lamp["id"])
        spread = [lamp for ids in by_cabinet.values() for lamp in ids[1::4][:4]][:20]
        return [{"kind": "lamp_burnt_out", "device": lamp} for lamp in spread], "lamp_failure"
    pytest.skip("dawn or dusk in Yangjiang: lamps are neither surely lit nor surely dark")


async def test_twenty_lamp_alarms_are_acknowledged_in_one_action(
    running_demo: Demo, browser: Browser
) -> None:
    api = httpx.AsyncClient(
        base_url=running_demo.api, headers={"X-API-Key": running_demo.keys["admin"]}
    )
    control = httpx.AsyncClient(base_url=running_demo.control)
    headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
    lamps = (await api.get("/devices", params={"device_class": "lamp"})).json()
    faults, alarm_kind = lamp_faults_for_now(lamps)
    try:
        for fault in faults:
            assert (await control.post("/faults", json=fault, headers=headers)).status_code == 201
        page = await open_dashboard(browser, running_demo, "engineer")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        await page.select_option("#alarm-group", "none")
        rows = page.locator("#alarms tbody tr[data-id]")
        for _ in range(60):
            alarms = (await api.get("/alarms", params={"state": "active_unacknowledged"})).json()
            mine = [a for a in alarms if a["kind"] == alarm_kind]
            if len(mine) >= 20:
                break
            await asyncio.sleep(1)
        assert len(mine) >= 20, [(a["device"], a["kind"]) for a in alarms]
        await asyncio.sleep(3)  # the rest of the circuit's lamps, a poll later
        # Every unacknowledged one of the kind, returned ones too (from earlier in the run).
        alarms = (await api.get("/alarms")).json()
        mine = [
            a for a in alarms if a["kind"] == alarm_kind and a["state"].endswith("unacknowledged")
        ]
        await page.select_option("#alarm-kind", alarm_kind)
        await page.select_option("#alarm-state", "unacknowledged")
        await expect(rows).to_have_count(len(mine))
        await page.check("#alarm-pick-all")
        await expect(page.locator("#ack-picked")).to_contain_text("确认所选")
        await page.click("#ack-picked")
        await expect(page.locator("#picked-status")).to_contain_text("已确认", timeout=10_000)
        acked = [p for p in posts if "/alarms/" in p and p.endswith("acknowledge")]
        assert acked == [f"{running_demo.api}/alarms/acknowledge"]  # one action, one call
        for a in mine:  # a returned alarm closes when acknowledged, so each is read by id
            assert (await api.get(f"/alarms/{a['id']}")).json()[
                "acknowledged_by"
            ] == "demo-engineer"
        await expect(rows).to_have_count(0)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.select_option("#alarm-state", "")
        await page.screenshot(path=str(ARTIFACTS / "alarms-bulk-acknowledged.png"))
    finally:
        for device in {fault["device"] for fault in faults}:
            await control.delete(f"/faults/{device}", headers=headers)
        await api.aclose()
        await control.aclose()


VIEWS = ("alarms", "water", "stats", "cases", "control", "schedules", "assets", "users")
# How far the page reaches sideways, and the visible controls a thumb would miss (< 44 px).
PAGE_WIDTH = "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
SMALL_TARGETS = """() => [...document.querySelectorAll(
  "button, select, input:not([type=file]), .file-button, .readings li, nav.reports a, a.case-link")]
  .filter((n) => n.checkVisibility() && !n.closest("#map, svg"))
  .map((n) => [n.id || n.className || n.tagName, n.tagName,
    // A tick box is hit through its label (or its table cell).
    (n.type === "checkbox" ? n.closest("label, td") || n : n).getBoundingClientRect()])
  .filter(([, tag, r]) => Math.min(r.width, r.height) < 24 || r.height < 44
    || (tag === "BUTTON" && r.width < 44))
  .map(([name, , r]) => `${name} ${Math.round(r.width)}x${Math.round(r.height)}`)"""


async def test_every_view_fits_a_phone_and_is_photographed_at_both_sizes(
    running_demo: Demo, browser: Browser
) -> None:
    page = await open_dashboard(browser, running_demo, "admin")
    ARTIFACTS.mkdir(exist_ok=True)
    sizes: dict[str, ViewportSize] = {
        "desk": {"width": 1600, "height": 1000},
        "phone": {"width": 390, "height": 844},
    }
    overflow: dict[str, int] = {}
    small: dict[str, list[str]] = {}
    for size, viewport in sizes.items():
        await page.set_viewport_size(viewport)
        for view in VIEWS:
            await page.click(f"[data-tab={view}]")
            await expect(page.locator(f"#tab-{view}")).to_be_visible()
            if view == "water":
                await page.click(".gauge-item[data-id='WL-DF-UNDERPASS']")
                await expect(page.locator("#gauge-chart polyline.series")).to_have_count(1)
            await page.wait_for_timeout(700)
            await page.screenshot(path=str(ARTIFACTS / f"view-{view}-{size}.png"), full_page=True)
            if size == "phone":
                if (width := await page.evaluate(PAGE_WIDTH)) > viewport["width"]:
                    overflow[view] = width
                if targets := await page.evaluate(SMALL_TARGETS):
                    small[view] = targets
    # The daily report, on the phone, with the same session.
    await page.goto(f"{running_demo.api}/reports/day")
    await page.screenshot(path=str(ARTIFACTS / "view-report-phone.png"), full_page=True)
    if (width := await page.evaluate(PAGE_WIDTH)) > 390:
        overflow["report"] = width
    assert not overflow, overflow  # no view scrolls sideways at 390 px
    assert not small, small  # every control a thumb can hit


async def test_two_fingers_zoom_the_drawn_map_on_a_phone(
    running_demo: Demo, browser: Browser
) -> None:
    page = await browser.new_page(
        viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )
    await log_in(page, running_demo, "viewer")
    await expect(page.locator("#map .device").first).to_be_attached()
    box = await page.locator("#map").bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # Real touches through the browser's input pipeline, as a phone's screen sends them.
    touch = await page.context.new_cdp_session(page)

    async def fingers(kind: str, gap: float) -> None:
        points = [{"x": cx - gap / 2, "y": cy}, {"x": cx + gap / 2, "y": cy}]
        await touch.send(
            "Input.dispatchTouchEvent",
            {"type": kind, "touchPoints": [] if kind == "touchEnd" else points},
        )

    async def view_width() -> float:
        return float((await page.locator("#map").get_attribute("viewBox") or "").split()[2])

    assert await view_width() == 1000
    # Spreading the fingers from 40 to 160 px zooms in four times about their middle.
    await fingers("touchStart", 40)
    for gap in (60, 90, 120, 160):
        await fingers("touchMove", gap)
    await fingers("touchEnd", 0)
    assert await view_width() == pytest.approx(250, rel=0.01)
    # Closing them zooms back out, to the whole drawing at most.
    await fingers("touchStart", 160)
    for gap in (120, 80, 40, 10):
        await fingers("touchMove", gap)
    await fingers("touchEnd", 0)
    assert await view_width() == 1000
    await page.close()


@pytest.fixture(scope="module")
def storm_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo with a fast storm at the underpass: red (0.40 m) about 30 s after start."""
    folder = tmp_path_factory.mktemp("storm")
    scenario = folder / "storm.yaml"
    rain = {"gauges": ["WL-DF-UNDERPASS"], "start": 0, "rise": 400, "peak_m": 0.6}
    scenario.write_text(yaml.safe_dump({"rain": [{**rain, "hold": 3000, "recede": 3000}]}))
    config = demo_config(folder)
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc["simulator"]["scenario"] = str(scenario)
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with run_demo(config) as demo:
        yield demo


# Notifications the page shows, recorded as the browser raises them.
RECORD_NOTIFICATIONS = """
window.streetsenseNotices = [];
const Shown = window.Notification;
window.Notification = class extends Shown {
  constructor(title, options) {
    super(title, options);
    window.streetsenseNotices.push(`${title} ${options && options.body}`);
  }
};
"""


async def test_a_gauge_reaching_red_raises_the_banner_heads_the_list_and_is_red_everywhere(
    storm_demo: Demo, browser: Browser
) -> None:
    demo = storm_demo
    context = await browser.new_context(
        viewport={"width": 1600, "height": 1000}, permissions=["notifications"]
    )
    await context.add_init_script(RECORD_NOTIFICATIONS)
    page = await context.new_page()
    await log_in(page, demo, "flood_duty")
    api = httpx.AsyncClient(base_url=demo.api, headers={"X-API-Key": demo.keys["admin"]})
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    poll_s = float(config["polling"]["gauge_interval"])  # the storm demo's is the same
    try:
        band = None
        for _ in range(240):
            water = {w["id"]: w for w in (await api.get("/telemetry/water")).json()}
            band = water["WL-DF-UNDERPASS"]["band"]
            if band == "red":
                break
            await asyncio.sleep(0.5)
        assert band == "red"
        # Within a poll interval of the red reading (and the live stream's hop), the
        # banner names the gauge, and a notification has been raised.
        banner = page.locator("#urgent-banner")
        await expect(banner).to_contain_text("WL-DF-UNDERPASS", timeout=poll_s * 1000 + 3000)
        notices = await page.evaluate("window.streetsenseNotices")
        assert any("WL-DF-UNDERPASS" in n for n in notices), notices
        # At the top of the list, red on the map and in the flood panel.
        first = page.locator("#alarms tbody tr").first
        await expect(first).to_have_class(re.compile("sev-urgent"))
        await expect(first).to_contain_text("WL-DF-UNDERPASS")
        marker = page.locator("#map .device.gauge[data-id='WL-DF-UNDERPASS']")
        await expect(marker).to_have_class(re.compile("band-red"))
        await page.click("[data-tab=water]")
        panel = page.locator(".gauge-item[data-id='WL-DF-UNDERPASS']")
        await expect(panel.locator(".pill")).to_have_class(re.compile("band-red"))
        await expect(page.locator(".gauge-item").first).to_have_attribute(
            "data-id", "WL-DF-UNDERPASS"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "storm-red.png"), full_page=True)
    finally:
        await api.aclose()
        await context.close()
