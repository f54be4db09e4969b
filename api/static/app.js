// streetsense duty dashboard: plain ES module, no build step, no network beyond this API.
// Roles come from /whoami; what a role may not do is not shown (the API refuses it anyway).

const SVG = "http://www.w3.org/2000/svg";
const state = { key: sessionStorage.getItem("streetsense-key"), may: {}, map: null,
  selected: null, gauge: null, command: null };

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, text = "") => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
};
const svgEl = (tag, attrs = {}, text = "") => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
};
const localTime = (iso) => new Date(iso).toLocaleString("zh-CN", { hour12: false });

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers["X-API-Key"] = state.key;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { ...options, headers });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    throw error;
  }
  return body;
}

// -- session ------------------------------------------------------------------------------

function applyPermissions() {
  for (const node of document.querySelectorAll("[data-needs]")) {
    // Tab panels are shown by showTab alone: permission only makes them possible.
    if (!node.classList.contains("tab")) node.hidden = !state.may[node.dataset.needs];
  }
  const current = document.querySelector(".tabs button.active");
  showTab(current && !current.hidden ? current.dataset.tab : "alarms");
  $("#login").hidden = Boolean(state.key);
  $("#session").hidden = !state.key;
  renderAlarms(state.alarms || []);
}

async function login(key) {
  state.key = key;
  try {
    const me = await api("/whoami");
    state.may = me.may;
    sessionStorage.setItem("streetsense-key", key);
    $("#whoami").textContent = `${me.name} (${me.role})`;
    $("#login-error").textContent = "";
  } catch (error) {
    state.key = null;
    state.may = {};
    sessionStorage.removeItem("streetsense-key");
    $("#login-error").textContent = error.status === 401 ? "unknown or revoked key" : error.message;
  }
  applyPermissions();
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  await login($("#login-key").value.trim());
  await loadAll();
});
$("#logout").addEventListener("click", () => {
  state.key = null;
  state.may = {};
  sessionStorage.removeItem("streetsense-key");
  if (events) events.close();
  events = null;
  applyPermissions();
});

for (const button of document.querySelectorAll(".tabs button")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}
function showTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) {
    b.classList.toggle("active", b.dataset.tab === name);
  }
  for (const t of document.querySelectorAll(".tab")) {
    const allowed = !t.dataset.needs || state.may[t.dataset.needs];
    t.hidden = t.id !== `tab-${name}` || !allowed;
  }
  if (name === "stats") renderStats();
  if (name === "cases") renderCases();
  if (name === "water") renderGauges();
}

// -- map ----------------------------------------------------------------------------------

function projection(bounds) {
  const [minLon, minLat, maxLon, maxLat] = bounds;
  const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
  const spanX = Math.max((maxLon - minLon) * k, 1e-6);
  const spanY = Math.max(maxLat - minLat, 1e-6);
  const scale = Math.min(920 / spanX, 620 / spanY);
  const offX = (1000 - spanX * scale) / 2;
  const offY = (700 - spanY * scale) / 2;
  return ([lon, lat]) => [offX + (lon - minLon) * k * scale, offY + (maxLat - lat) * scale];
}

async function renderMap() {
  const data = await api("/map");
  state.map = data;
  $("#city").textContent = data.city;
  const pad = 0.0008;
  const b = [...data.bounds];
  for (const cell of data.grids) {
    for (const [lon, lat] of cell.rings.flat()) {
      b[0] = Math.min(b[0], lon); b[1] = Math.min(b[1], lat);
      b[2] = Math.max(b[2], lon); b[3] = Math.max(b[3], lat);
    }
  }
  const project = projection([b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad]);
  const svg = $("#map");
  svg.replaceChildren();
  for (const cell of data.grids) {
    for (const ring of cell.rings) {
      const d = ring.map((p, i) => `${i ? "L" : "M"}${project(p).join(",")}`).join(" ") + "Z";
      svg.append(svgEl("path", { d, class: `cell${cell.approximate ? " approximate" : ""}` }));
      const [x, y] = project(ring[0]);
      svg.append(svgEl("text", { x: x + 3, y: y - 4, class: "cell-label" }, cell.code));
    }
  }
  const order = { lamp: 0, cabinet: 1, gauge: 2 };
  const devices = [...data.devices].sort((a, c) => order[a.device_class] - order[c.device_class]);
  for (const d of devices) {
    const [x, y] = project([d.lon, d.lat]);
    let shape;
    if (d.device_class === "cabinet") {
      shape = svgEl("rect", { x: x - 7, y: y - 7, width: 14, height: 14 });
    } else if (d.device_class === "gauge") {
      shape = svgEl("path", { d: `M${x},${y - 9}L${x + 9},${y}L${x},${y + 9}L${x - 9},${y}Z` });
    } else {
      shape = svgEl("circle", { cx: x, cy: y, r: 4 });
    }
    shape.setAttribute("class", `device ${d.device_class} ${d.state}` +
      (state.selected === d.id ? " selected" : ""));
    shape.dataset.id = d.id;
    shape.append(svgEl("title", {}, `${d.id} ${d.name || ""} — ${d.state}`));
    shape.addEventListener("click", () => selectDevice(d.id));
    svg.append(shape);
  }
}

async function selectDevice(id) {
  state.selected = id;
  const device = state.map.devices.find((d) => d.id === id);
  const detail = await api(`/devices/${encodeURIComponent(id)}`);
  const box = $("#device-detail");
  box.replaceChildren(el("h3", {}, `${id} ${detail.name || ""}`));
  box.append(el("p", {}, `${device.device_class}, ${device.state}` +
    (device.road ? ` — ${device.road}` : "") + (device.grid ? `, grid ${device.grid}` : "") +
    (device.parent ? `, cabinet ${device.parent}` : "")));
  const shown = detail.readings.filter((r) => r.value !== null).slice(0, 12);
  box.append(el("p", {}, shown.map((r) => `${r.point} ${+r.value.toFixed(3)}${r.unit}`).join(" · ")));
  if (device.device_class === "gauge") {
    showTab("water");
    await showGauge(id);
  }
  for (const node of document.querySelectorAll("#map .device")) {
    node.classList.toggle("selected", node.dataset.id === id);
  }
}

// -- alarms -------------------------------------------------------------------------------

async function refreshAlarms() {
  state.alarms = await api("/alarms");
  renderAlarms(state.alarms);
  const watch = await api("/alarms/flood-watch");
  const areas = Object.keys(watch.storm_areas);
  $("#flood-watch").hidden = areas.length === 0;
  $("#flood-watch").textContent = `Storm mode: ${areas.join(", ")} — gauges polled fast`;
}

function renderAlarms(alarms) {
  const body = $("#alarms tbody");
  body.replaceChildren();
  const active = alarms.filter((a) => a.state !== "normal");
  $("#alarm-count").textContent = active.length ? `(${active.length})` : "";
  for (const a of active) {
    const row = el("tr", { "data-id": a.id, class: `sev-${a.severity}` });
    row.append(el("td", {}, a.severity), el("td", {}, a.device),
      el("td", {}, `${a.rule} ${a.level_name}${a.circuit ? ` (circuit ${a.circuit})` : ""}`),
      el("td", { class: "state" }, a.state.replaceAll("_", " ")),
      el("td", {}, localTime(a.raised_at)));
    const actions = el("td");
    if (state.may.alarms && a.state.endsWith("unacknowledged")) {
      const ack = el("button", { class: "ack" }, "Acknowledge");
      ack.addEventListener("click", () => alarmAction(a.id, "acknowledge"));
      actions.append(ack);
    }
    if (state.may.alarms && !["shelved", "out_of_service"].includes(a.state)) {
      const shelve = el("button", { class: "shelve" }, "Shelve 30 min");
      shelve.addEventListener("click", () => alarmAction(a.id, "shelve", { minutes: 30 }));
      actions.append(shelve);
    }
    row.append(actions);
    body.append(row);
  }
}

async function alarmAction(id, action, json) {
  try {
    await api(`/alarms/${id}/${action}`, { method: "POST", json });
  } catch (error) {
    alert(error.message);
  }
  await refreshAlarms();
}

// -- water levels ---------------------------------------------------------------------------

function renderGauges() {
  if (!state.map) return;
  const list = $("#gauges");
  list.replaceChildren();
  for (const g of state.map.devices.filter((d) => d.device_class === "gauge")) {
    const item = el("li", { class: `gauge-item ${state.gauge === g.id ? "active" : ""}`,
      "data-id": g.id }, `${g.name || g.id} ${g.state === "alarm" ? "⚠" : ""}`);
    item.addEventListener("click", () => showGauge(g.id));
    list.append(item);
  }
}

async function showGauge(id) {
  state.gauge = id;
  renderGauges();
  const gauge = state.map.devices.find((d) => d.id === id);
  const end = new Date();
  const start = new Date(end.getTime() - 2 * 3600 * 1000);
  const series = await api(`/telemetry/series/${encodeURIComponent(id)}/water_level?` +
    new URLSearchParams({ start: start.toISOString(), end: end.toISOString() }));
  const samples = (series.samples || []).filter((s) => s.value !== null);
  $("#gauge-title").textContent = `${gauge.name || id} (${id}) — water level, last 2 h`;
  const chart = $("#gauge-chart");
  chart.replaceChildren();
  const levels = gauge.levels || {};
  const top = Math.max(0.1, ...Object.values(levels).map((v) => v * 1.25),
    ...samples.map((s) => s.value * 1.1));
  const W = 600, H = 260, L = 40, B = 20;
  const y = (v) => (H - B) - (v / top) * (H - B - 10);
  const x = (t) => L + ((t - start.getTime()) / (end.getTime() - start.getTime())) * (W - L - 10);
  const names = ["blue", "yellow", "orange", "red"];
  names.forEach((name, i) => {
    if (levels[name] === undefined) return;
    const upper = names.slice(i + 1).map((n) => levels[n]).find((v) => v !== undefined) ?? top;
    chart.append(svgEl("rect", { class: `band ${name}`, x: L, width: W - L - 10,
      y: y(upper), height: y(levels[name]) - y(upper) }));
    chart.append(svgEl("text", { x: 2, y: y(levels[name]) + 4 }, `${levels[name]} m`));
  });
  chart.append(svgEl("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#667" }));
  if (samples.length) {
    const points = samples.map((s) => `${x(new Date(s.ts).getTime()).toFixed(1)},${y(s.value).toFixed(1)}`);
    chart.append(svgEl("polyline", { class: "series", points: points.join(" ") }));
    const last = samples[samples.length - 1];
    const tenAgo = new Date(last.ts).getTime() - 600 * 1000;
    const earlier = samples.find((s) => new Date(s.ts).getTime() >= tenAgo) || samples[0];
    const minutes = (new Date(last.ts) - new Date(earlier.ts)) / 60000;
    const rate = minutes > 0 ? ((last.value - earlier.value) * 100) / minutes : 0;
    $("#gauge-rate").textContent = `Now ${last.value.toFixed(3)} m; rising ${rate.toFixed(2)} cm/min` +
      ` over the last ${Math.round(minutes)} min`;
  } else {
    $("#gauge-rate").textContent = "No readings in the last 2 hours.";
  }
}

// -- statistics -------------------------------------------------------------------------------

function bars(svg, rows, unit = "", max = null) {
  svg.replaceChildren();
  const top = max ?? Math.max(1, ...rows.map((r) => r[1]));
  const H = 22, labelW = 150, W = 600;
  svg.setAttribute("viewBox", `0 0 ${W} ${Math.max(H, rows.length * H + 4)}`);
  rows.forEach(([label, value], i) => {
    const w = ((W - labelW - 60) * value) / top;
    svg.append(svgEl("text", { x: labelW - 6, y: i * H + 15, "text-anchor": "end" }, label));
    svg.append(svgEl("rect", { class: "bar", x: labelW, y: i * H + 4, width: Math.max(0, w),
      height: H - 8 }));
    svg.append(svgEl("text", { x: labelW + w + 4, y: i * H + 15 }, `${value}${unit}`));
  });
  if (!rows.length) svg.append(svgEl("text", { x: 4, y: 15 }, "nothing yet"));
}

async function renderStats() {
  const lighting = await api("/statistics/lighting?by=road");
  bars($("#chart-lighting"), lighting.map((r) => [r.group || "(none)",
    Math.round(100 * (r.rate ?? 0))]), "%", 100);
  const city = await api("/statistics/lighting?by=city");
  $("#city-rate").textContent = city.length && city[0].rate !== null
    ? `— city ${(100 * city[0].rate).toFixed(1)} %` : "";
  const end = new Date();
  const daily = await api("/statistics/faults?" + new URLSearchParams({ period: "day", by: "kind",
    start: new Date(end - 14 * 86400e3).toISOString(), end: end.toISOString() }));
  const perDay = {};
  for (const r of daily.rows) {
    const day = r.period_start.slice(0, 10);
    perDay[day] = (perDay[day] || 0) + r.raised;
  }
  bars($("#chart-faults-day"), Object.entries(perDay).sort());
  const grids = await api("/statistics/faults?" + new URLSearchParams({ period: "month",
    by: "grid", start: new Date(end - 30 * 86400e3).toISOString(), end: end.toISOString() }));
  const perGrid = {};
  for (const r of grids.rows) perGrid[r.group] = (perGrid[r.group] || 0) + r.raised;
  bars($("#chart-faults-grid"), Object.entries(perGrid).sort((a, c) => c[1] - a[1]));
}

// -- cases ------------------------------------------------------------------------------------

const COLUMNS = [
  ["New", ["awaiting_acceptance", "accepted", "filed"]],
  ["Dispatched", ["dispatched", "returned"]],
  ["In disposal", ["in_disposal"]],
  ["Verifying", ["disposal_reported", "under_verification"]],
  ["Closed", ["closed", "evaluated"]],
  ["Rejected", ["rejected"]],
];

function timeLeft(c) {
  if (c.due_at === null || ["closed", "evaluated", "rejected"].includes(c.stage)) {
    return c.evaluation ? c.evaluation.replace("_", " ") : "";
  }
  const minutes = Math.round((c.due_at * 1000 - Date.now()) / 60000);
  const text = (m) => (m >= 120 ? `${Math.round(m / 60)} h` : `${m} min`);
  return minutes < 0 || c.overdue ? `OVERDUE ${text(Math.abs(minutes))}` : `${text(minutes)} left`;
}

async function renderCases() {
  const cases = await api("/cases?limit=300");
  const board = $("#case-board");
  board.replaceChildren();
  for (const [title, stages] of COLUMNS) {
    const column = el("div", { class: "column", "data-stage": stages[0] });
    const members = cases.filter((c) => stages.includes(c.stage));
    column.append(el("h4", {}, `${title} (${members.length})`));
    for (const c of members.slice(0, 30)) {
      const late = c.overdue || (c.due_at !== null && c.due_at * 1000 < Date.now() &&
        !["closed", "evaluated", "rejected"].includes(c.stage));
      const card = el("div", { class: `case${late ? " overdue" : ""}`, "data-id": c.id });
      card.append(el("div", {}, `#${c.id} ${c.title}`),
        el("div", {}, `${c.department || "—"} · ${c.severity}`),
        el("div", { class: "left" }, timeLeft(c)));
      column.append(card);
    }
    board.append(column);
  }
}

// -- remote control -------------------------------------------------------------------------

function fillTargets() {
  if (!state.map) return;
  const scope = $("#ctl-scope").value;
  const devices = state.map.devices;
  let options;
  if (scope === "cabinet") options = devices.filter((d) => d.device_class === "cabinet").map((d) => d.id);
  else if (scope === "road") options = [...new Set(devices.filter((d) => d.device_class !== "gauge").map((d) => d.road).filter(Boolean))];
  else options = [...new Set(devices.filter((d) => d.device_class !== "gauge").map((d) => d.grid).filter(Boolean))];
  const select = $("#ctl-target");
  const keep = select.value;
  select.replaceChildren(...options.sort().map((o) => el("option", { value: o }, o)));
  if (options.includes(keep)) select.value = keep;
  const lamps = $("#ctl-kind").value === "lamps";
  $("#ctl-circuits").hidden = lamps || scope !== "cabinet";
  $("#ctl-action").querySelector("[value=dim]").disabled = !lamps;
  if (!lamps && $("#ctl-action").value === "dim") $("#ctl-action").value = "on";
}
for (const id of ["#ctl-kind", "#ctl-scope"]) $(id).addEventListener("change", fillTargets);

function commandRequest() {
  const kind = $("#ctl-kind").value;
  const scope = $("#ctl-scope").value;
  const target = $("#ctl-target").value;
  const targets = scope === "cabinet" ? { cabinets: [target] } : { [scope]: target };
  const circuits = [...document.querySelectorAll("input[name=circuit]:checked")].map((c) => +c.value);
  if (kind === "circuits" && scope === "cabinet" && circuits.length) targets.circuits = circuits;
  const action = $("#ctl-action").value;
  const body = { action, targets };
  if (action === "dim") body.level = +$("#ctl-level").value;
  const what = kind === "circuits"
    ? `${action === "on" ? "Switch ON" : "Switch OFF"} ${targets.circuits ? `circuit ${targets.circuits.join(", ")} of ` : "all circuits of "}${scope} ${target}`
    : `${action === "dim" ? `Dim to ${body.level} %` : action === "on" ? "Switch ON" : "Switch OFF"} the lamps of ${scope} ${target}`;
  return { path: kind === "circuits" ? "/control/circuits" : "/control/lamps", body, what };
}

function ask(text) {
  return new Promise((resolve) => {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = text;
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

$("#control-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { path, body, what } = commandRequest();
  if (!(await ask(`${what}?`))) return;
  const status = $("#ctl-status");
  status.className = "status";
  let command;
  try {
    command = await api(path, { method: "POST", json: body });
  } catch (error) {
    if (error.status === 428 && (await ask(`${error.message}. Confirm this large switch-off?`))) {
      command = await api(path, { method: "POST", json: { ...body, confirm: true } });
    } else {
      status.textContent = `Refused: ${error.message}`;
      status.className = "status failed";
      return;
    }
  }
  await followCommand(command);
});

async function followCommand(command) {
  const status = $("#ctl-status");
  state.command = command.id;
  while (["pending", "sent"].includes(command.status)) {
    status.textContent = `Command #${command.id}: ${command.status}… ` +
      `${command.counts.confirmed} of ${command.results.length} confirmed`;
    command = await api(`/commands/${command.id}?wait=2`);
  }
  status.textContent = `Command #${command.id}: ${command.status} — ` +
    `${command.counts.confirmed} confirmed, ${command.counts.failed} failed`;
  status.className = `status ${command.status}`;
  const list = $("#ctl-results");
  list.replaceChildren(...command.results.map((r) =>
    el("li", {}, `${r.target}: ${r.status}${r.reason ? ` (${r.reason})` : ""}`)));
  renderRecent();
  renderMap();
}

async function renderRecent() {
  const recent = await api("/commands?limit=8");
  $("#ctl-recent").replaceChildren(...recent.map((c) =>
    el("li", {}, `#${c.id} ${c.action} ${c.targets} by ${c.by}: ${c.status}`)));
}

// -- live updates -----------------------------------------------------------------------------

let pending = null;
function soon(fn) {
  clearTimeout(pending);
  pending = setTimeout(fn, 300);
}

// EventSource cannot send the key: the stream opens with a short-lived signed ticket.
async function ticket() {
  return (await api("/session/ticket", { method: "POST" })).ticket;
}

let events = null;

async function connect() {
  if (events) events.close();
  if (!state.key) return;
  const source = new EventSource(`/events?ticket=${encodeURIComponent(await ticket())}`);
  events = source;
  source.onopen = () => $("#live").classList.remove("down");
  source.onerror = () => {
    $("#live").classList.add("down");
    // A refused reconnect (the ticket expired) closes the stream: ask for a new ticket.
    if (source.readyState === EventSource.CLOSED && events === source) setTimeout(connect, 2000);
  };
  source.addEventListener("alarm", () => soon(() => { refreshAlarms(); renderMap(); }));
  source.addEventListener("case", () => {
    if (!$("#tab-cases").hidden) renderCases();
  });
  // The controller re-reads what a command switched before announcing it: redraw now.
  source.addEventListener("command", () => { renderRecent(); soon(() => { refreshAlarms(); renderMap(); }); });
}

// Nothing is read before a key is given: the API is private by default.
async function loadAll() {
  if (!state.key) return;
  await renderMap();
  fillTargets();
  await refreshAlarms();
  renderRecent();
  await connect();
}

for (const link of document.querySelectorAll("nav.reports a")) {
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    if (!state.key) return;
    const tab = window.open("", "_blank");
    tab.location = `${link.getAttribute("href")}?ticket=${encodeURIComponent(await ticket())}`;
  });
}

async function start() {
  if (state.key) await login(state.key);
  else applyPermissions();
  await loadAll();
  setInterval(() => { if (state.key) renderMap(); }, 10000);
  setInterval(() => { if (state.key) refreshAlarms(); }, 15000);
  document.body.dataset.ready = "true";
}

start();
