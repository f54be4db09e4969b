// streetsense duty dashboard: plain ES module, no build step, no network beyond this API.
// Roles come from /whoami; what a role may not do is not shown (the API refuses it anyway).

import { TileMap, loadLeaflet, wgs84ToGcj02 } from "./tilemap.js";

const SVG = "http://www.w3.org/2000/svg";
// A person logs in with a password (the session is an HttpOnly cookie; the page keeps
// only its CSRF token); a machine's API key may be pasted instead.
const state = { key: sessionStorage.getItem("streetsense-key"), csrf: null, may: {}, map: null,
  selected: null, gauge: null, command: null, me: null,
  lang: localStorage.getItem("streetsense-lang") === "en" ? "en" : "zh", timezone: null };

const $ = (sel) => document.querySelector(sel);
const signedIn = () => Boolean(state.key || state.csrf);
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
// Times are the city's, whatever the browser's own zone, and the zone is named in the header.
const localTime = (iso) => new Date(iso).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB",
  { hour12: false, timeZone: state.timezone || undefined });
// Chinese cities keep Beijing time: named so, as people say it.
const zoneName = (tz) => (tz === "Asia/Shanghai" ? t("app.beijing_time") : t("app.timezone", { tz }));
// Ids and names are data: marked so that nobody translates them (nor the catalogue test).
const data = (text) => el("span", { translate: "no" }, text);

// -- language -------------------------------------------------------------------------------
// One catalogue (messages.json) for every text the console shows: Chinese first, English by
// the switch in the header (remembered in this browser). Data (ids, names) is never translated.

let MESSAGES = {};
function t(key, vars = {}) {
  const entry = MESSAGES[key];
  let text = entry ? entry[state.lang] : key;
  for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{${k}}`, String(v));
  return text;
}
// A value from the API (an alarm state, a stage): its name in the catalogue, else as sent.
const term = (group, value) => (MESSAGES[`${group}.${value}`] ? t(`${group}.${value}`) : value);
// Units people read in words (米, 小时); V, A, kWh and the like stay as symbols.
const unitText = (unit) => (unit ? term("unit", unit) : "");

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const [attr, data] of [["placeholder", "i18nPlaceholder"], ["title", "i18nTitle"],
    ["aria-label", "i18nAriaLabel"]]) {
    for (const node of document.querySelectorAll(`[data-${attr === "aria-label" ? "i18n-aria-label" : `i18n-${attr}`}]`)) {
      node.setAttribute(attr, t(node.dataset[data]));
    }
  }
  // The reports open in the console's language.
  for (const link of document.querySelectorAll("a[href^='/reports/']")) {
    link.href = `${link.pathname}${state.lang === "en" ? "?lang=en" : ""}`;
  }
  if (state.timezone) $("#timezone").textContent = zoneName(state.timezone);
  if (state.me) $("#whoami").textContent = t("login.whoami", { name: state.me.name, role: term("role", state.me.role) });
  if (typeof showMute === "function") showMute();
}

$("#lang").addEventListener("click", async () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("streetsense-lang", state.lang);
  applyLanguage();
  if (!signedIn()) return;
  renderAlarms(state.alarms || []);
  await refreshAlarms();
  const current = document.querySelector(".tabs button.active");
  if (current) showTab(current.dataset.tab);
  if (state.selected) selectDevice(state.selected, false);
  if (state.gauge) showGauge(state.gauge);
  renderRecent();
});


async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers["X-API-Key"] = state.key;
  else if (state.csrf && (options.method || "GET") !== "GET") headers["X-CSRF-Token"] = state.csrf;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { ...options, headers });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    const words = refusalText(body && body.message);
    const reason = typeof detail === "string" ? detail : validationText(detail);
    const framed = t(REFUSAL_BY_STATUS[response.status] || "refusal.http_other",
      { status: response.status, reason });
    const error = new Error(words || framed);
    error.status = response.status;
    error.worded = Boolean(words);
    error.detail = reason;  // the API's own reason, for a sentence that frames it itself
    throw error;
  }
  return body;
}

// A refusal the API does not word for people is framed in the reader's language by its
// status, the API's reason after it (validation: each field and what is wrong with it).
const REFUSAL_BY_STATUS = {
  400: "refusal.http_400", 401: "refusal.http_401", 403: "refusal.http_403", 404: "refusal.http_404",
  409: "refusal.http_409", 413: "refusal.http_413", 415: "refusal.http_415", 422: "refusal.http_422",
  428: "refusal.http_428", 429: "refusal.http_429",
};
// Each field and what is wrong with it: in the reader's language where the catalogue
// words the kind of error (its bound from the API's ctx), else as the API says it.
function validationText(detail) {
  if (!Array.isArray(detail)) return JSON.stringify(detail);
  return detail.map((d) => {
    const path = (d.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
    const where = term("field", path);
    const key = `validation.${d.type}`;
    const why = MESSAGES[key] ? t(key, d.ctx || {}) : d.msg;
    return where ? `${where}${t("validation.colon")}${why}` : why;
  }).join(t("validation.separator"));
}

// A refusal the API words for people (its catalogue key and values) is shown in the
// reader's language, the stage and action in it named too; others as the API says them.
const REFUSAL_TERMS = {
  stage: "stage", action: "case_action", role: "role", alarm_state: "alarm_state",
  device_class: "class", control: "control_kind", field: "field", error: "link_error",
  point: "point",
};
function refusalText(message) {
  if (!message || !MESSAGES[message.key]) return null;
  const params = Object.fromEntries(Object.entries(message.params || {})
    .map(([k, v]) => [k, REFUSAL_TERMS[k] ? term(REFUSAL_TERMS[k], v) : v]));
  return t(message.key, params);
}

// -- session ------------------------------------------------------------------------------

function applyPermissions() {
  for (const node of document.querySelectorAll("[data-needs]")) {
    // Tab panels are shown by showTab alone: permission only makes them possible.
    if (!node.classList.contains("tab")) node.hidden = !state.may[node.dataset.needs];
  }
  const current = document.querySelector(".tabs button.active");
  showTab(current && !current.hidden ? current.dataset.tab : "alarms");
  $("#login").hidden = signedIn();
  $("#session").hidden = !signedIn();
  renderAlarms(state.alarms || []);
}

function signOut() {
  state.key = null;
  state.csrf = null;
  state.may = {};
  state.me = null;
  sessionStorage.removeItem("streetsense-key");
}

async function whoami() {
  const me = await api("/whoami");
  state.may = me.may;
  state.me = me;
  if (me.csrf_token) state.csrf = me.csrf_token;
}

function loginFailed(error, unknown) {
  signOut();
  const message = error.worded ? error.message
    : error.status === 401 ? t(unknown) : error.status === 429 ? t("login.locked") : error.message;
  $("#login-error").textContent = message;
}

async function login(key) {
  state.key = key;
  try {
    await whoami();
    sessionStorage.setItem("streetsense-key", key);
    $("#login-error").textContent = "";
  } catch (error) {
    loginFailed(error, "login.bad_key");
  }
  applyLanguage();
  applyPermissions();
}

async function loginWithPassword(username, password) {
  try {
    const session = await api("/session/login", { method: "POST", json: { username, password } });
    state.key = null;
    state.csrf = session.csrf_token;
    await whoami();
    $("#login-error").textContent = "";
  } catch (error) {
    loginFailed(error, "login.bad_password");
  }
  $("#login-password").value = "";
  applyLanguage();
  applyPermissions();
}

// After a reload the cookie may still hold a session: ask who it is.
async function resumeSession() {
  try {
    await whoami();
  } catch {
    signOut();
  }
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("#login-key").value.trim();
  if (key) await login(key);
  else await loginWithPassword($("#login-user").value.trim(), $("#login-password").value);
  await loadAll();
});
$("#logout").addEventListener("click", async () => {
  if (state.csrf && !state.key) {
    try { await api("/session/logout", { method: "POST" }); } catch { /* ended already */ }
  }
  signOut();
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
  if (name === "users") renderUsers();
  if (name === "schedules") renderSchedules();
  if (name === "assets") renderAssets();
}

// -- pole register ----------------------------------------------------------------------------

async function renderAssets() {
  const query = new URLSearchParams({ limit: "200" });
  const road = $("#asset-road").value.trim();
  const cabinet = $("#asset-cabinet").value.trim();
  if (road) query.set("road", road);
  if (cabinet) query.set("cabinet", cabinet);
  const poles = await api(`/assets?${query}`);
  state.poles = poles;
  $("#asset-count").textContent = t("assets.count", { n: poles.length });
  $("#assets tbody").replaceChildren(...poles.map((p) => {
    const row = el("tr", { "data-pole": p.pole_id, tabindex: "0" });
    row.append(el("td"), el("td"), el("td"), el("td"), el("td", {}, p.install_date || ""));
    row.children[0].append(data(p.pole_id));
    row.children[1].append(data(p.road));
    row.children[2].append(data([p.cabinet, p.circuit].filter((v) => v !== null && v !== "").join(" / ")));
    row.children[3].append(data(`${p.lamp_type} ${p.rated_w} W`));
    row.addEventListener("click", () => editPole(p.pole_id));
    return row;
  }));
}

function editPole(poleId) {
  const pole = state.poles.find((p) => p.pole_id === poleId);
  if (!pole || !state.may.assets) return;
  state.pole = pole;
  $("#asset-edit-title").textContent = t("assets.edit", { pole: poleId });
  $("#asset-lamp-type").value = pole.lamp_type;
  $("#asset-rated").value = pole.rated_w;
  $("#asset-notes").value = pole.notes;
  $("#asset-edit-status").textContent = "";
}

$("#asset-search").addEventListener("submit", (event) => { event.preventDefault(); renderAssets(); });

$("#asset-edit").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!state.pole) return;
  const pole = { ...state.pole, lamp_type: $("#asset-lamp-type").value.trim(),
    rated_w: +$("#asset-rated").value, notes: $("#asset-notes").value };
  try {
    await api(`/assets/${encodeURIComponent(pole.pole_id)}`, { method: "PUT", json: pole });
    $("#asset-edit-status").textContent = t("assets.saved", { pole: pole.pole_id });
  } catch (error) {
    $("#asset-edit-status").textContent = error.message;
  }
  await renderAssets();
});

$("#asset-file").addEventListener("change", () => {
  const file = $("#asset-file").files[0];
  $("#asset-file-name").textContent = file ? file.name : "";
});

$("#asset-import").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("#asset-file").files[0];
  if (!file) {
    $("#asset-import-result").textContent = t("assets.choose_file");
    return;
  }
  const csv = !/\.(geo)?json$/i.test(file.name);
  const dryRun = $("#asset-dry-run").checked;
  $("#asset-rejects").replaceChildren();  // the last file's rejects are not this one's
  try {
    const report = await api(`/assets/import?dry_run=${dryRun}`, { method: "POST", body: file,
      headers: { "Content-Type": csv ? "text/csv" : "application/geo+json" } });
    $("#asset-import-result").textContent = t(dryRun ? "assets.result_dry" : "assets.result", {
      accepted: report.accepted, created: report.created, updated: report.updated,
      rejected: report.rejected_total });
    $("#asset-rejects").replaceChildren(...report.rejected.map((r) =>
      el("li", { translate: "no" }, t("assets.reject",
        { row: r.row, pole: r.pole_id, reason: refusalText(r.message) || r.reason }))));
  } catch (error) {
    $("#asset-import-result").textContent = error.message;
  }
  await renderAssets();
});

// -- schedules ------------------------------------------------------------------------------

const shortTime = (iso) => clock(new Date(iso).getTime(), true);
const stepText = (step) => `${shortTime(step.at)} ${term("command_action", step.action)}` +
  (step.level ? ` ${step.level}%` : "");

async function renderSchedules() {
  const groups = await api("/schedules");
  $("#schedule-groups tbody").replaceChildren(...groups.map((g) => {
    const row = el("tr", { "data-group": g.id, tabindex: "0" });
    row.append(el("td"), el("td"), el("td", {}, String(g.places)),
      el("td", {}, g.next_step ? stepText(g.next_step) : t("schedules.none")));
    row.children[0].append(data(g.name));
    row.children[1].append(data(g.program_name));
    row.addEventListener("click", () => showTimeline(g.id, g.name));
    return row;
  }));
  if (groups.length && !state.scheduleGroup) state.scheduleGroup = groups[0].id;
  const shown = groups.find((g) => g.id === state.scheduleGroup);
  if (shown) await showTimeline(shown.id, shown.name);
  await renderOverrides();
  const tables = await api("/schedules/device-tables");
  const rows = tables.map((p) => {
    const row = el("tr");
    row.append(el("td"), el("td", {}, shortTime(p.at)), el("td", {}, String(p.entries)),
      el("td", {}, t(p.ok ? "schedules.push_ok" : "schedules.push_failed")));
    row.children[0].append(data(namedDevices([p.cabinet])));
    return row;
  });
  if (!rows.length) {
    const none = el("tr");
    none.append(el("td", { colspan: "4" }, t("schedules.no_tables")));
    rows.push(none);
  }
  $("#device-tables tbody").replaceChildren(...rows);
  const targets = $("#ovr-target");
  const keep = targets.value;
  const cabinets = state.map.devices.filter((d) => d.device_class === "cabinet");
  targets.replaceChildren(...cabinets.map((d) => el("option", { value: d.id }, `${d.id} ${d.name || ""}`)));
  if (keep) targets.value = keep;
}

async function showTimeline(group, name = group) {
  state.scheduleGroup = group;
  for (const row of document.querySelectorAll("#schedule-groups tr[data-group]")) {
    row.classList.toggle("selected", row.dataset.group === group);
  }
  const timeline = await api(`/schedules/${encodeURIComponent(group)}/timeline`);
  $("#timeline-title").textContent = t("schedules.timeline", { group: name, night: timeline.night });
  $("#timeline").replaceChildren(...timeline.places.map((p) => {
    const item = el("li");
    item.append(data(namedDevices([p.place])), el("span", {}, "：" + p.steps.map(stepText).join(" → ")));
    return item;
  }));
}

async function renderOverrides() {
  const overrides = await api("/overrides?limit=20");
  $("#overrides tbody").replaceChildren(...overrides.map((o) => {
    const row = el("tr", { "data-override": String(o.id) });
    const period = `${shortTime(o.starts_at)} – ${shortTime(o.expires_at)}`;
    const end = el("td");
    if (state.may.control && (o.state === "active" || o.state === "scheduled")) {
      const button = el("button", { type: "button" }, t("schedules.cancel"));
      button.addEventListener("click", async () => {
        await api(`/overrides/${o.id}`, { method: "DELETE" }).catch((e) => { $("#ovr-status").textContent = e.message; });
        await renderOverrides();
      });
      end.append(button);
    }
    row.append(el("td"), el("td", {}, term("command_action", o.action) + (o.level ? ` ${o.level}%` : "")),
      el("td", {}, period), el("td", {}, term("override_state", o.state)), el("td"), end);
    row.children[0].append(data(selectorText(o.selector)));
    row.children[4].append(data(`${o.reason} — ${o.by}`));
    return row;
  }));
}

$("#override-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const hours = +$("#ovr-hours").value;
  const option = $("#ovr-target").selectedOptions[0];
  const verb = t($("#ovr-action").value === "on" ? "control.verb_on" : "control.verb_off");
  if (!(await ask(t("schedules.confirm", { verb, target: option ? option.textContent : "", hours })))) return;
  const body = { targets: { cabinets: [$("#ovr-target").value] }, action: $("#ovr-action").value,
    expires_at: new Date(Date.now() + hours * HOUR).toISOString(), reason: $("#ovr-reason").value,
    confirm: true };
  try {
    const made = await api("/overrides", { method: "POST", json: body });
    $("#ovr-status").textContent = t("schedules.created", { id: made.id, state: term("override_state", made.state) });
    $("#ovr-reason").value = "";
  } catch (error) {
    $("#ovr-status").textContent = error.message;
  }
  await renderOverrides();
});

// -- users (admin) --------------------------------------------------------------------------

async function renderUsers() {
  const body = $("#users tbody");
  const users = await api("/users");
  body.replaceChildren(...users.map((u) => {
    const state = u.disabled ? t("users.disabled")
      : u.locked_until ? t("users.locked", { time: localTime(u.locked_until) }) : t("users.active");
    const actions = el("td");
    const toggle = el("button", { type: "button" }, t(u.disabled ? "users.enable" : "users.disable"));
    toggle.addEventListener("click", () => changeUser(u.username, { disabled: !u.disabled }));
    const reset = el("button", { type: "button" }, t("users.reset"));
    reset.addEventListener("click", async () => {
      const password = await askFor(t("users.reset_prompt", { user: u.username }), { type: "password" });
      if (password) changeUser(u.username, { password });
    });
    actions.append(toggle, " ", reset);
    const row = el("tr", { "data-user": u.username });
    row.append(el("td"), el("td"), el("td", {}, term("role", u.role)), el("td", {}, state), actions);
    row.children[0].append(data(u.username));
    row.children[1].append(data(u.name));
    return row;
  }));
}

async function changeUser(username, change) {
  try {
    await api(`/users/${encodeURIComponent(username)}`, { method: "PATCH", json: change });
    $("#user-error").textContent = "";
  } catch (error) {
    $("#user-error").textContent = error.message;
  }
  await renderUsers();
}

$("#user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = { username: $("#user-username").value.trim(), name: $("#user-name").value.trim(),
    role: $("#user-role").value, password: $("#user-password").value };
  try {
    await api("/users", { method: "POST", json: user });
    $("#user-error").textContent = t("users.created", { user: user.username });
    $("#user-form").reset();
  } catch (error) {
    $("#user-error").textContent = error.message;
  }
  await renderUsers();
});

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
  // Gauges are coloured by the band their water stands in, not by "any alarm".
  state.water = await api("/telemetry/water").catch(() => []);
  state.timezone = data.timezone;
  $("#city").textContent = data.city_name;
  $("#timezone").textContent = zoneName(data.timezone);
  fillSearch();
  if (data.tiles && !state.tileMap && !state.tileMapFailed) await openTileMap(data.tiles);
  drawMap();
}

// With a tile source configured the map is Leaflet over the tiles; if the vendored
// library is missing the drawn map stays, and says why.
async function openTileMap(tiles) {
  try {
    await loadLeaflet();
  } catch (err) {
    state.tileMapFailed = true;
    $("#map-note").textContent = t("map.no_library");
    return;
  }
  $("#map").style.display = "none";  // an svg has no hidden property
  $("#tile-map").hidden = false;
  state.tileMap = new TileMap($("#tile-map"), tiles, (id) => selectDevice(id));
  // For the people who run the console and for its tests: the map and its datum shift.
  window.streetsense = { tileMap: state.tileMap, wgs84ToGcj02 };
}

const deviceTitle = (d) => `${d.id} ${d.name || ""} — ${term("device_state", d.state)}`;

// The map's view: a window on the 1000 x 700 drawing, moved by drag, wheel, pinch and the
// buttons. Marks keep their size on screen whatever the zoom.
const FULL = { x: 0, y: 0, w: 1000, h: 700 };
const mapView = { ...FULL };

function setView(view) {
  const w = Math.min(Math.max(view.w, 20), FULL.w);
  const h = (w * FULL.h) / FULL.w;
  mapView.w = w; mapView.h = h;
  mapView.x = Math.min(Math.max(view.x, FULL.x - w / 2), FULL.w - w / 2);
  mapView.y = Math.min(Math.max(view.y, FULL.y - h / 2), FULL.h - h / 2);
  drawMap();
}

function zoomAt(factor, cx = mapView.x + mapView.w / 2, cy = mapView.y + mapView.h / 2) {
  const w = mapView.w * factor;
  const h = mapView.h * factor;
  setView({ x: cx - ((cx - mapView.x) * w) / mapView.w, y: cy - ((cy - mapView.y) * h) / mapView.h, w, h });
}

function drawMap() {
  const data = state.map;
  if (!data) return;
  const bandOf = new Map((state.water || []).map((w) => [w.id, w.band || "none"]));
  if (state.tileMap) {
    state.tileMap.draw(data, bandOf, state.selected, deviceTitle);
    return;
  }
  const pad = 0.0008;
  const b = [...data.bounds];
  for (const cell of data.grids) {
    for (const [lon, lat] of cell.rings.flat()) {
      b[0] = Math.min(b[0], lon); b[1] = Math.min(b[1], lat);
      b[2] = Math.max(b[2], lon); b[3] = Math.max(b[3], lat);
    }
  }
  const project = projection([b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad]);
  state.project = project;
  const k = mapView.w / FULL.w;
  const svg = $("#map");
  svg.setAttribute("viewBox", `${mapView.x} ${mapView.y} ${mapView.w} ${mapView.h}`);
  svg.replaceChildren();
  for (const cell of data.grids) {
    for (const ring of cell.rings) {
      const d = ring.map((p, i) => `${i ? "L" : "M"}${project(p).join(",")}`).join(" ") + "Z";
      svg.append(svgEl("path", { d, class: `cell${cell.approximate ? " approximate" : ""}` }));
      const [x, y] = project(ring[0]);
      svg.append(svgEl("text", { x: x + 3 * k, y: y - 4 * k, class: "cell-label",
        style: `font-size: ${11 * k}px` }, cell.code));
    }
  }
  const order = { lamp: 0, cabinet: 1, gauge: 2 };
  const devices = [...data.devices].sort((a, c) => order[a.device_class] - order[c.device_class]);
  for (const d of devices) {
    const [x, y] = project([d.lon, d.lat]);
    let shape;
    if (d.device_class === "cabinet") {
      shape = svgEl("rect", { x: x - 7 * k, y: y - 7 * k, width: 14 * k, height: 14 * k });
    } else if (d.device_class === "gauge") {
      const r = 9 * k;
      shape = svgEl("path", { d: `M${x},${y - r}L${x + r},${y}L${x},${y + r}L${x - r},${y}Z` });
    } else {
      shape = svgEl("circle", { cx: x, cy: y, r: 4 * k });
    }
    const band = d.device_class === "gauge" && bandOf.has(d.id) ? ` band-${bandOf.get(d.id)}` : "";
    shape.setAttribute("class", `device ${d.device_class} ${d.state}${band}` +
      (state.selected === d.id ? " selected" : ""));
    shape.dataset.id = d.id;
    shape.append(svgEl("title", {}, deviceTitle(d)));
    shape.addEventListener("click", () => { if (!mapDrag.moved) selectDevice(d.id); });
    svg.append(shape);
  }
  // The case the reader asked to see (from its page) is pinned over the devices.
  if (state.casePin) {
    const [x, y] = project([state.casePin.lon, state.casePin.lat]);
    const pin = svgEl("path", { d: `M${x},${y} l${-7 * k},${-16 * k} a${8 * k},${8 * k} 0 1,1 ${14 * k},0 z`,
      class: "case-pin" });
    pin.append(svgEl("title", {}, state.casePin.title));
    svg.append(pin);
  }
}

// Drag to pan (mouse or one finger), wheel or two fingers to zoom.
const mapDrag = { start: null, moved: false, pinch: null };
function mapPoint(event) {
  const svg = $("#map");
  const box = svg.getBoundingClientRect();
  return [mapView.x + ((event.clientX - box.left) / box.width) * mapView.w,
    mapView.y + ((event.clientY - box.top) / box.height) * mapView.h];
}
$("#map").addEventListener("wheel", (event) => {
  event.preventDefault();
  const [x, y] = mapPoint(event);
  zoomAt(event.deltaY > 0 ? 1.25 : 0.8, x, y);
}, { passive: false });
$("#map").addEventListener("pointerdown", (event) => {
  mapDrag.start = { cx: event.clientX, cy: event.clientY, view: { ...mapView } };
  mapDrag.moved = false;
});
$("#map").addEventListener("pointermove", (event) => {
  if (!mapDrag.start || mapDrag.pinch) return;
  const box = $("#map").getBoundingClientRect();
  const dx = ((event.clientX - mapDrag.start.cx) / box.width) * mapView.w;
  const dy = ((event.clientY - mapDrag.start.cy) / box.height) * mapView.h;
  if (!mapDrag.moved && Math.hypot(event.clientX - mapDrag.start.cx, event.clientY - mapDrag.start.cy) < 5) return;
  mapDrag.moved = true;
  setView({ ...mapDrag.start.view, x: mapDrag.start.view.x - dx, y: mapDrag.start.view.y - dy });
});
window.addEventListener("pointerup", () => { mapDrag.start = null; setTimeout(() => { mapDrag.moved = false; }, 0); });
const fingerGap = ([a, c]) => Math.hypot(a.clientX - c.clientX, a.clientY - c.clientY);
// The gesture zooms from the fingers' first gap: from the first move, it would lose that step.
$("#map").addEventListener("touchstart", (event) => {
  mapDrag.pinch = event.touches.length === 2 ? fingerGap(event.touches) : null;
}, { passive: true });
$("#map").addEventListener("touchmove", (event) => {
  if (event.touches.length !== 2) { mapDrag.pinch = null; return; }
  event.preventDefault();
  const [a, c] = event.touches;
  const gap = fingerGap(event.touches);
  const [x, y] = mapPoint({ clientX: (a.clientX + c.clientX) / 2, clientY: (a.clientY + c.clientY) / 2 });
  if (mapDrag.pinch) zoomAt(mapDrag.pinch / gap, x, y);
  mapDrag.pinch = gap;
}, { passive: false });
$("#map").addEventListener("touchend", () => { mapDrag.pinch = null; });
$("#zoom-in").addEventListener("click", () => (state.tileMap ? state.tileMap.zoomBy(1) : zoomAt(0.6)));
$("#zoom-out").addEventListener("click", () => (state.tileMap ? state.tileMap.zoomBy(-1) : zoomAt(1 / 0.6)));
$("#zoom-reset").addEventListener("click", () => (state.tileMap ? state.tileMap.whole(state.map)
  : setView({ ...FULL })));

// Find a device by id, name or road; the map zooms to it and opens its detail.
function fillSearch() {
  const list = $("#map-search-list");
  const seen = new Set();
  const options = [];
  for (const d of state.map.devices) {
    if (d.device_class === "lamp" && !d.name) continue;  // 42,000 lamps: by their cabinet
    options.push(el("option", { value: d.id }, d.name || ""));
    if (d.road && !seen.has(d.road)) { seen.add(d.road); options.push(el("option", { value: d.road })); }
  }
  list.replaceChildren(...options);
}

function findDevice(query) {
  const q = query.trim().toLowerCase();
  if (!q) return null;
  const devices = state.map.devices;
  return devices.find((d) => d.id.toLowerCase() === q)
    || devices.find((d) => (d.name || "").toLowerCase() === q)
    || devices.find((d) => (d.name || "").toLowerCase().includes(q))
    || devices.find((d) => d.id.toLowerCase().includes(q))
    || devices.find((d) => d.device_class === "cabinet" && (d.road || "").toLowerCase().includes(q));
}

// A pole of the asset register by its number, or a case by its number (案件 12, #12): the
// map pins where it is. Devices are found first, in the page's own list.
async function findPlace(query) {
  const q = query.trim();
  const caseNo = q.match(/^(?:案件|case)?\s*#?(\d+)$/i);
  if (caseNo) {
    const found = await api(`/cases/${caseNo[1]}`).catch(() => null);
    if (found) return { id: found.id, lat: found.lat, lon: found.lon, title: `#${found.id} ${found.title}` };
  }
  const pole = q ? await api(`/assets/${encodeURIComponent(q)}`).catch(() => null) : null;
  return pole && { lat: pole.lat, lon: pole.lon,
    title: t("map.pole", { pole: pole.pole_id, road: pole.road || "" }) };
}

$("#map-search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("#map-search-input").value;
  const found = findDevice(query);
  if (!found) {
    const place = await findPlace(query);
    $("#map-search-result").textContent = place ? "" : t("map.not_found");
    if (place) showOnMap(place);
    return;
  }
  $("#map-search-result").textContent = "";
  if (found && state.tileMap) {
    state.selected = found.id;
    state.tileMap.focus(found.id);
    selectDevice(found.id);
    return;
  }
  if (!found || !state.project) return;
  const [x, y] = state.project([found.lon, found.lat]);
  state.selected = found.id;
  setView({ x: x - 75, y: y - 52.5, w: 150, h: 105 });
  selectDevice(found.id);
});

// Whether the device answers, since when, and how its polls have failed (for a lamp
// behind a cabinet: its cabinet's concentrator, which is what is polled).
function commLine(health) {
  const last = health.last_success && localTime(health.last_success);
  const failures = health.consecutive_failures;
  const line = el("p", { class: `comm ${health.online ? "online" : "offline"}` },
    health.online ? t("detail.comm_online", { last })
      : last ? t("detail.comm_offline", { failures, last })
        : t("detail.comm_never", { failures }));
  const errors = Object.entries(health.errors || {}).filter(([, count]) => count > 0);
  if (errors.length) {
    const list = errors.map(([kind, count]) =>
      t("detail.comm_error_count", { kind: term("link_error", kind), count }));
    line.append(t("detail.comm_errors", { list: list.join(t("validation.separator")) }));
  }
  return line;
}

async function selectDevice(id, follow = true) {
  state.selected = id;
  const device = state.map.devices.find((d) => d.id === id);
  const detail = await api(`/devices/${encodeURIComponent(id)}`);
  const box = $("#device-detail");
  const heading = el("h3");
  heading.append(data(`${id} ${detail.name || ""}`));
  box.replaceChildren(heading);
  const where = el("p", {}, t("detail.kind_state", { kind: term("class", device.device_class),
    state: term("device_state", device.state) }));
  if (device.road) where.append(data(` — ${device.road}`));
  if (device.grid) where.append(t("detail.grid", { grid: device.grid }));
  if (device.parent) where.append(t("detail.cabinet", { cabinet: device.parent }));
  box.append(where, commLine(detail.health));
  // Every reading; each opens its last 24 hours below.
  const readings = el("ul", { class: "readings" });
  for (const r of detail.readings.filter((r) => r.value !== null)) {
    const item = el("li", { "data-point": r.point, tabindex: "0" });
    // A switch or a contact reads 是/否, not 1/0.
    const value = r.boolean ? el("span", { class: "bool" }, t(r.value >= 0.5 ? "value.yes" : "value.no"))
      : data(`${+r.value.toFixed(3)} ${unitText(r.unit)}`.trim());
    item.append(el("span", {}, term("point", r.point)), " ", value);
    const open = () => showPointHistory(id, r.point);
    item.addEventListener("click", open);
    item.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
    readings.append(item);
  }
  box.append(readings);
  box.append(el("p", { id: "point-title" }, t("detail.pick")));

  if (device.device_class === "gauge" && follow) {
    showTab("water");
    await showGauge(id);
  }
  for (const node of document.querySelectorAll("#map .device")) {
    node.classList.toggle("selected", node.dataset.id === id);
  }
  state.tileMap?.select(id);
}

// -- alarms -------------------------------------------------------------------------------

async function refreshAlarms() {
  state.alarms = await api("/alarms");
  renderAlarms(state.alarms);
  const watch = await api("/alarms/flood-watch");
  const areas = Object.keys(watch.storm_areas);
  $("#flood-watch").hidden = areas.length === 0;
  $("#flood-watch").textContent = t("alarms.storm", { areas: areas.join("、") });
}

const SEVERITY_RANK = { urgent: 0, high: 1, medium: 2, low: 3 };
const alarmView = { expanded: new Set(), picked: new Set(), shown: new Set(), muted: localStorage.getItem("streetsense-mute") === "1",
  flashing: null, toning: null, notified: new Set(), title: document.title };
window.streetsenseTones = 0;

// One fault, one row: lamps muted by a cut circuit or a silent cabinet go with that alarm.
function groupKey(a, by) {
  if (by === "none") return `alarm:${a.id}`;
  if (by === "cabinet") return a.cabinet || a.device;
  if (by === "district") return a.district || "";
  if (a.suppressed_by) return a.suppressed_by;
  if (a.kind === "circuit_break") return `circuit_break:${a.device}/${a.sub}`;
  if (a.kind === "comm_loss") return `comm_loss:${a.device}`;
  return `${a.rule}:${a.cabinet || a.device}`;
}

function passesFilters(a) {
  const sev = $("#alarm-severity").value, kind = $("#alarm-kind").value;
  const area = $("#alarm-area").value, st = $("#alarm-state").value;
  if (sev && a.severity !== sev) return false;
  if (kind && a.kind !== kind) return false;
  if (area && a.district !== area) return false;
  if (st === "unacknowledged" && !a.state.endsWith("unacknowledged")) return false;
  if (st === "acknowledged" && a.state !== "active_acknowledged") return false;
  if (st === "shelved" && a.state !== "shelved") return false;
  return true;
}

// Options of a filter from the alarms present, keeping the choice made.
function fillFilter(select, allKey, values, label) {
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, t(allKey)));
  for (const v of [...new Set(values)].filter(Boolean).sort()) {
    const option = el("option", label ? { value: v } : { value: v, translate: "no" },
      label ? label(v) : v);
    select.append(option);
  }
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

// A tick box that picks alarms for a bulk action (one row's alarm, or a group's members).
function pickCell(ids) {
  const cell = el("td", { class: "pick" });
  if (!state.may.alarms) return cell;
  const box = el("input", { type: "checkbox", "aria-label": t("alarms.pick") });
  box.checked = ids.every((id) => alarmView.picked.has(id));
  box.addEventListener("change", () => {
    for (const id of ids) {
      if (box.checked) alarmView.picked.add(id);
      else alarmView.picked.delete(id);
    }
    renderAlarms(state.alarms || []);
  });
  cell.append(box);
  return cell;
}

function alarmRow(a, extra = "") {
  const row = el("tr", { "data-id": a.id, class: `sev-${a.severity} ${extra}`.trim() });
  const device = el("td");
  device.append(data(a.device));
  row.append(pickCell([a.id]), el("td", {}, term("severity", a.severity)), device,
    el("td", {}, alarmTitle(a)),
    el("td", { class: "state" }, term("alarm_state", a.state)),
    el("td", {}, localTime(a.raised_at)));
  const actions = el("td");
  if (state.may.alarms && a.state.endsWith("unacknowledged")) {
    const ack = el("button", { class: "ack" }, t("alarms.acknowledge"));
    ack.addEventListener("click", () => alarmAction(a.id, "acknowledge"));
    actions.append(ack);
  }
  if (state.may.alarms && !["shelved", "out_of_service"].includes(a.state)) {
    const shelve = el("button", { class: "shelve" }, t("alarms.shelve"));
    shelve.addEventListener("click", () => alarmAction(a.id, "shelve", { minutes: 30 }));
    actions.append(shelve);
  }
  row.append(actions);
  return row;
}

function renderAlarms(alarms) {
  const body = $("#alarms tbody");
  body.replaceChildren();
  const active = alarms.filter((a) => a.state !== "normal");
  $("#alarm-count").textContent = active.length ? `(${active.length})` : "";
  fillFilter($("#alarm-kind"), "alarms.all_kinds", active.map((a) => a.kind), (k) => term("kind", k));
  fillFilter($("#alarm-area"), "alarms.all_areas", active.map((a) => a.district));
  // Severity first, then the newest: the red flood alarm is never row 40.
  const shown = active.filter(passesFilters).sort((x, y) =>
    (SEVERITY_RANK[x.severity] ?? 9) - (SEVERITY_RANK[y.severity] ?? 9)
    || new Date(y.raised_at) - new Date(x.raised_at));
  const by = $("#alarm-group").value;
  const groups = new Map();
  for (const a of shown) {
    const key = groupKey(a, by);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(a);
  }
  for (const [key, members] of groups) {
    if (members.length === 1) {
      body.append(alarmRow(members[0]));
      continue;
    }
    const head = members[0];
    const open = alarmView.expanded.has(key);
    const row = el("tr", { class: `sev-${head.severity} group`, "data-group": key });
    const where = el("td");
    where.append(data(by === "district" ? head.district : head.cabinet || head.device));
    const unacked = members.filter((a) => a.state.endsWith("unacknowledged"));
    const toggle = el("button", { class: "expand", "aria-expanded": String(open) },
      t(open ? "alarms.collapse" : "alarms.expand"));
    toggle.addEventListener("click", () => {
      if (alarmView.expanded.has(key)) alarmView.expanded.delete(key);
      else alarmView.expanded.add(key);
      renderAlarms(state.alarms || []);
    });
    row.append(pickCell(members.map((a) => a.id)), el("td", {}, term("severity", head.severity)), where,
      el("td", {}, `${alarmTitle(head)} ${t("alarms.group_count", { n: members.length })}`),
      el("td", { class: "state" }, t("alarms.unacked_count", { n: unacked.length })),
      el("td", {}, localTime(head.raised_at)));
    const actions = el("td");
    actions.append(toggle);
    if (state.may.alarms && unacked.length) {
      const ack = el("button", { class: "ack-group" }, t("alarms.ack_group"));
      ack.addEventListener("click", () => acknowledgeAll(unacked));
      actions.append(ack);
    }
    row.append(actions);
    body.append(row);
    for (const a of members) {
      const member = alarmRow(a, "member");
      member.hidden = !open;
      body.append(member);
    }
  }
  alarmView.unacked = shown.filter((a) => a.state.endsWith("unacknowledged"));
  $("#ack-all").disabled = alarmView.unacked.length === 0;
  // What is picked and still shown; an alarm that went away is no longer picked.
  const present = new Set(shown.map((a) => a.id));
  alarmView.shown = present;
  for (const id of [...alarmView.picked]) if (!present.has(id)) alarmView.picked.delete(id);
  const n = alarmView.picked.size;
  $("#ack-picked").textContent = t("alarms.ack_picked", { n });
  $("#shelve-picked").textContent = t("alarms.shelve_picked", { n });
  $("#ack-picked").disabled = $("#shelve-picked").disabled = n === 0;
  $("#alarm-pick-all").checked = n > 0 && n === present.size;
  raiseUrgent(active.filter((a) => a.severity === "urgent" && a.state.endsWith("unacknowledged")));
}

// One call for many alarms (the API acknowledges or shelves them in one save, and names
// any it refused); the outcome is told beside the buttons.
async function bulkAlarmAction(ids, action, extra = {}) {
  if (!ids.length) return;
  try {
    const result = await api(`/alarms/${action}`, { method: "POST", json: { ids, ...extra } });
    const summary = t(`alarms.bulk_${action}`,
      { n: result.done.length, refused: result.refused.length });
    // Why the first few were refused, in the reader's language.
    const reasons = result.refused.slice(0, 3).map((r) => refusalText(r.message) || r.reason);
    $("#picked-status").textContent = reasons.length
      ? t("alarms.bulk_refused", { summary, reasons: reasons.join(" · ") }) : summary;
    for (const a of result.done) alarmView.picked.delete(a.id);
  } catch (error) {
    $("#picked-status").textContent = error.message;
  }
  await refreshAlarms();
}

async function acknowledgeAll(alarms) {
  await bulkAlarmAction(alarms.map((a) => a.id), "acknowledge");
}

// An urgent alarm not yet acknowledged: a banner that stays, the title flashing, a tone
// (Web Audio, nothing to download; mutable) and a browser notification where allowed.
function raiseUrgent(urgent) {
  const banner = $("#urgent-banner");
  banner.hidden = urgent.length === 0;
  $("#urgent-ack").hidden = !(state.may.alarms && urgent.length);
  if (!urgent.length) {
    clearInterval(alarmView.flashing);
    clearInterval(alarmView.toning);
    alarmView.flashing = alarmView.toning = null;
    document.title = alarmView.title;
    return;
  }
  const first = urgent[0];
  const text = $("#urgent-text");
  text.replaceChildren(`${t("alarms.urgent_banner", { n: urgent.length })} `, data(first.device),
    ` ${alarmTitle(first)}`);
  alarmView.urgent = urgent;
  if (!alarmView.flashing) {
    let on = false;
    alarmView.flashing = setInterval(() => {
      on = !on;
      document.title = on ? `【${t("alarms.urgent_title")}】${alarmView.title}` : alarmView.title;
    }, 1000);
  }
  if (!alarmView.toning) {
    tone();
    alarmView.toning = setInterval(tone, 4000);
  }
  for (const a of urgent) {
    if (alarmView.notified.has(a.id)) continue;
    alarmView.notified.add(a.id);
    if ("Notification" in window && Notification.permission === "granted") {
      new Notification(t("alarms.urgent_title"), { body: `${a.device} ${alarmTitle(a)}` });
    }
  }
}

let audio = null;
function tone() {
  if (alarmView.muted) return;
  try {
    audio = audio || new AudioContext();
    const osc = audio.createOscillator(), gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.2, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.6);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.6);
    window.streetsenseTones += 1;
  } catch (error) {
    // No audio device: the banner and the title still say it.
  }
}

function showMute() {
  $("#mute").textContent = t(alarmView.muted ? "alarms.unmute" : "alarms.mute");
  $("#mute").setAttribute("aria-pressed", String(alarmView.muted));
}
$("#mute").addEventListener("click", () => {
  alarmView.muted = !alarmView.muted;
  localStorage.setItem("streetsense-mute", alarmView.muted ? "1" : "0");
  showMute();
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission();
  }
});
$("#ack-all").addEventListener("click", () => acknowledgeAll(alarmView.unacked || []));
$("#ack-picked").addEventListener("click", () =>
  bulkAlarmAction([...alarmView.picked], "acknowledge"));
$("#shelve-picked").addEventListener("click", () =>
  bulkAlarmAction([...alarmView.picked], "shelve", { minutes: 30 }));
$("#alarm-pick-all").addEventListener("change", (event) => {
  if (event.target.checked) for (const id of alarmView.shown || []) alarmView.picked.add(id);
  else alarmView.picked.clear();
  renderAlarms(state.alarms || []);
});
$("#urgent-ack").addEventListener("click", () => acknowledgeAll(alarmView.urgent || []));
for (const id of ["#alarm-group", "#alarm-severity", "#alarm-kind", "#alarm-area", "#alarm-state"]) {
  $(id).addEventListener("change", () => renderAlarms(state.alarms || []));
}

// What the alarm is, in words: the point (for limits) or the kind, and the level reached.
function alarmTitle(a) {
  const what = a.kind === "threshold" && a.point ? term("point", a.point) : term("kind", a.kind);
  const numbered = /^level (\d+)$/.exec(a.level_name || "");
  // Rules without levels are simply active or not: the title says no level then.
  const plain = ["active", "normal"].includes(a.level_name);
  const level = numbered ? ` ${t("level.numbered", { n: numbered[1] })}`
    : a.level_name && !plain ? ` ${term("level", a.level_name)}` : "";
  const circuit = a.sub && a.kind === "circuit_break" ? t("alarms.circuit", { n: a.sub }) : "";
  return `${what}${level}${circuit}`;
}

async function alarmAction(id, action, json) {
  try {
    await api(`/alarms/${id}/${action}`, { method: "POST", json });
  } catch (error) {
    await tell(error.message);
  }
  await refreshAlarms();
}

// -- water levels ---------------------------------------------------------------------------

// The flood panel: every gauge, most urgent first, with its level, band, trend and age.
function renderGauges() {
  if (!state.map) return;
  const list = $("#gauges");
  list.replaceChildren();
  const water = state.water && state.water.length ? state.water
    : state.map.devices.filter((d) => d.device_class === "gauge").map((d) => ({ id: d.id,
      name: d.name, level: null, band: null, trend: "unknown", rise_cm_per_min: null,
      age_s: null, storm: false }));
  for (const g of water) {
    const item = el("li", { class: `gauge-item band-${g.band || "none"} ${state.gauge === g.id ? "active" : ""}`,
      "data-id": g.id });
    const name = el("strong");
    name.append(data(g.name || g.id));
    item.append(name);
    if (g.level === null) {
      item.append(el("span", { class: "level" }, t("water.no_reading")));
    } else {
      item.append(el("span", { class: "level" }, t("water.item_level", { v: g.level.toFixed(3) })));
      item.append(el("span", { class: `pill band-${g.band || "none"}` },
        g.band ? term("level", g.band) : t("water.below_blue")));
      const arrow = { rising: "↑", falling: "↓", steady: "→" }[g.trend] || "";
      const rate = g.rise_cm_per_min === null ? "" : t("water.rate", {
        r: `${g.rise_cm_per_min > 0 ? "+" : ""}${g.rise_cm_per_min.toFixed(1)}` });
      item.append(el("span", { class: `trend ${g.trend}`, "aria-label": t(`water.trend_${g.trend}`) },
        `${arrow} ${rate}`.trim()));
      item.append(el("span", { class: "age" }, g.age_s < 120 ? t("water.age_s", { s: Math.round(g.age_s) })
        : t("water.age_m", { m: Math.round(g.age_s / 60) })));
    }
    if (g.storm) item.append(el("span", { class: "storm-mode" }, t("water.storm")));
    item.addEventListener("click", () => showGauge(g.id));
    list.append(item);
  }
}

// -- time charts --------------------------------------------------------------------------
// One chart for every series over time: a time axis in the city's zone, a value axis, the
// gauge's bands where given, the mean line with its min-max envelope, and a crosshair that
// reads out the time and value under the pointer (or finger).

const clock = (ms, withDay) => new Date(ms).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB",
  { hour12: false, timeZone: state.timezone || undefined, hour: "2-digit", minute: "2-digit",
    ...(withDay ? { month: "2-digit", day: "2-digit" } : {}) });

function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
}

const HOUR = 3600 * 1000;

// The city's offset from UTC at a moment, in ms (Intl knows the zone; Date only the browser's).
function zoneOffset(ms) {
  const parts = new Intl.DateTimeFormat("en-US", { timeZone: state.timezone || undefined,
    hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit" }).formatToParts(ms);
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  const wall = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second"));
  return wall - Math.floor(ms / 1000) * 1000;
}

// Downsampled to about 300 buckets: one request whatever the span, and a line a phone draws.
async function seriesBuckets(id, point, hours, span = null) {
  const end = span ? span.end : Date.now();
  const start = span ? span.start : end - hours * HOUR;
  const every = Math.max(1, Math.round((end - start) / 1000 / 300));
  const series = await api(`/telemetry/series/${encodeURIComponent(id)}/${encodeURIComponent(point)}?` +
    new URLSearchParams({ start: new Date(start).toISOString(), end: new Date(end).toISOString(), every }));
  return { start, end, unit: series.unit, buckets: series.buckets || [] };
}

// A time series with its threshold bands, the city's hours on the time axis, a cursor
// that reads out the nearest value, and drag across it to zoom in (``onZoom(start, end)``).
function timeChart(svg, { start, end, buckets, unit = "", bands = {}, onZoom = null }) {
  const W = 600, H = 260, L = 48, R = 10, T = 10, B = 34;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  svg.dataset.start = String(Math.round(start));
  svg.dataset.end = String(Math.round(end));
  const values = buckets.flatMap((b) => [b.min, b.max]);
  const bandValues = Object.values(bands);
  let lo = Math.min(...values, ...(bandValues.length ? [0] : []));
  let hi = Math.max(...values, ...bandValues.map((v) => v * 1.15));
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const pad = (hi - lo) * 0.05;
  lo -= bandValues.length && lo >= 0 ? 0 : pad;
  hi += pad;
  const x = (ms) => L + ((ms - start) / (end - start)) * (W - L - R);
  const y = (v) => T + ((hi - v) / (hi - lo)) * (H - T - B);
  const names = ["blue", "yellow", "orange", "red"];
  names.forEach((name, i) => {
    if (bands[name] === undefined) return;
    const upper = names.slice(i + 1).map((n) => bands[n]).find((v) => v !== undefined) ?? hi;
    const top = y(Math.min(upper, hi)), bottom = y(Math.max(bands[name], lo));
    if (bottom > top) svg.append(svgEl("rect", { class: `band ${name}`, x: L, width: W - L - R, y: top, height: bottom - top }));
    if (bands[name] >= lo && bands[name] <= hi) {
      svg.append(svgEl("text", { x: L + 4, y: y(bands[name]) - 2, class: "band-label" },
        t("water.level_m", { v: bands[name] })));
    }
  });
  const step = niceStep(hi - lo, 5);
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
    svg.append(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(svgEl("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, `${+v.toFixed(3)}`));
  }
  svg.append(svgEl("text", { x: 2, y: T + 4 }, unitText(unit)));
  const hours = (end - start) / HOUR;
  const tick = (hours <= 3 ? 0.25 : hours <= 12 ? 1 : 3) * HOUR;
  // Ticks on the city's own whole hours, whatever the browser's zone.
  const shift = zoneOffset(start);
  for (let ms = Math.ceil((start + shift) / tick) * tick - shift; ms <= end; ms += tick) {
    svg.append(svgEl("line", { class: "grid", x1: x(ms), x2: x(ms), y1: T, y2: H - B }));
    svg.append(svgEl("text", { x: x(ms), y: H - B + 14, "text-anchor": "middle" }, clock(ms, false)));
  }
  svg.append(svgEl("text", { x: L, y: H - 4 }, clock(start, true)));
  svg.append(svgEl("text", { x: W - R, y: H - 4, "text-anchor": "end" }, clock(end, true)));
  svg.append(svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  if (!buckets.length) {
    svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, t("chart.no_data")));
    return;
  }
  const at = (b) => new Date(b.ts).getTime();
  const upper = buckets.map((b) => `${x(at(b)).toFixed(1)},${y(b.max).toFixed(1)}`);
  const lower = buckets.slice().reverse().map((b) => `${x(at(b)).toFixed(1)},${y(b.min).toFixed(1)}`);
  svg.append(svgEl("polygon", { class: "envelope", points: [...upper, ...lower].join(" ") }));
  svg.append(svgEl("polyline", { class: "series",
    points: buckets.map((b) => `${x(at(b)).toFixed(1)},${y(b.mean).toFixed(1)}`).join(" ") }));
  const cursor = svgEl("g", { class: "cursor", visibility: "hidden" });
  const line = svgEl("line", { y1: T, y2: H - B });
  const dot = svgEl("circle", { r: 4 });
  const label = svgEl("text", { y: T + 12 });
  cursor.append(line, dot, label);
  svg.append(cursor);
  const follow = (event) => {
    const box = svg.getBoundingClientRect();
    const point = event.touches ? event.touches[0] : event;
    const px = ((point.clientX - box.left) / box.width) * W;
    const ms = start + ((px - L) / (W - L - R)) * (end - start);
    const near = buckets.reduce((a, b) => (Math.abs(at(b) - ms) < Math.abs(at(a) - ms) ? b : a));
    const cx = x(at(near));
    line.setAttribute("x1", cx); line.setAttribute("x2", cx);
    dot.setAttribute("cx", cx); dot.setAttribute("cy", y(near.mean));
    label.setAttribute("x", cx > W / 2 ? cx - 6 : cx + 6);
    label.setAttribute("text-anchor", cx > W / 2 ? "end" : "start");
    label.textContent = `${clock(at(near), true)}  ${+near.mean.toFixed(3)} ${unitText(unit)}`;
    cursor.setAttribute("visibility", "visible");
  };
  const box = svgEl("rect", { class: "zoom-box", y: T, height: H - T - B, width: 0, visibility: "hidden" });
  svg.append(box);
  const toX = (event) => {
    const rect = svg.getBoundingClientRect();
    return Math.min(W - R, Math.max(L, ((event.clientX - rect.left) / rect.width) * W));
  };
  const toMs = (px) => start + ((px - L) / (W - L - R)) * (end - start);
  let dragFrom = null;
  svg.onmousedown = (event) => {
    if (!onZoom) return;
    dragFrom = toX(event);
    event.preventDefault();
  };
  svg.onmousemove = (event) => {
    follow(event);
    if (dragFrom === null) return;
    const to = toX(event);
    box.setAttribute("x", Math.min(dragFrom, to));
    box.setAttribute("width", Math.abs(to - dragFrom));
    box.setAttribute("visibility", "visible");
  };
  svg.onmouseup = (event) => {
    if (dragFrom === null) return;
    const from = dragFrom, to = toX(event);
    dragFrom = null;
    box.setAttribute("visibility", "hidden");
    // A click is not a zoom; under a minute of span is too little to read.
    const [a, b] = [toMs(Math.min(from, to)), toMs(Math.max(from, to))];
    if (Math.abs(to - from) >= 8 && b - a >= 60000) onZoom(a, b);
  };
  svg.ontouchstart = follow;
  svg.ontouchmove = follow;
  svg.onmouseleave = () => {
    cursor.setAttribute("visibility", "hidden");
    dragFrom = null;
    box.setAttribute("visibility", "hidden");
  };
}

async function showPointHistory(id, point, span = null) {
  for (const node of document.querySelectorAll("#device-detail .readings li")) {
    node.classList.toggle("selected", node.dataset.point === point);
  }
  const shown = await seriesBuckets(id, point, 24, span);
  $("#point-title").textContent = t("detail.history", { point: term("point", point) });
  let chart = $("#point-chart");
  if (!chart) {
    chart = svgEl("svg", { id: "point-chart", class: "chart", role: "img" });
    $("#point-title").after(chart);
  }
  timeChart(chart, { ...shown, unit: shown.unit,
    onZoom: (start, end) => showPointHistory(id, point, { start, end }) });
}

async function showGauge(id) {
  if (state.gauge !== id) state.gaugeSpan = null;  // another gauge opens on its whole range
  state.gauge = id;
  renderGauges();
  const gauge = state.map.devices.find((d) => d.id === id);
  const hours = state.gaugeHours || 24;
  for (const b of document.querySelectorAll("#gauge-range button")) {
    b.classList.toggle("active", Number(b.dataset.hours) === hours);
  }
  const zoomed = state.gaugeSpan;
  $("#gauge-title").textContent = zoomed
    ? t("water.title_span", { name: gauge.name || id, id, from: clock(zoomed.start, true), to: clock(zoomed.end, true) })
    : t("water.title", { name: gauge.name || id, id, hours });
  $("#gauge-zoom-out").hidden = !zoomed;
  const span = await seriesBuckets(id, "water_level", hours, zoomed);
  timeChart($("#gauge-chart"), { ...span, unit: "m", bands: gauge.levels || {}, onZoom: (start, end) => {
    state.gaugeSpan = { start, end };
    showGauge(id);
  } });
  // The rate of rise from the raw readings of the last ten minutes.
  const end = new Date();
  const recent = await api(`/telemetry/series/${encodeURIComponent(id)}/water_level?` +
    new URLSearchParams({ start: new Date(end - 15 * 60000).toISOString(), end: end.toISOString() }));
  const samples = (recent.samples || []).filter((s) => s.value !== null);
  if (samples.length) {
    const last = samples[samples.length - 1];
    const tenAgo = new Date(last.ts).getTime() - 600 * 1000;
    const earlier = samples.find((s) => new Date(s.ts).getTime() >= tenAgo) || samples[0];
    const minutes = (new Date(last.ts) - new Date(earlier.ts)) / 60000;
    const rate = minutes > 0 ? ((last.value - earlier.value) * 100) / minutes : 0;
    $("#gauge-rate").textContent = t("water.now", { level: last.value.toFixed(3),
      rate: Math.abs(rate).toFixed(2), minutes: Math.round(minutes),
      trend: t(rate < 0 ? "water.now_falling" : "water.now_rising") });
  } else {
    $("#gauge-rate").textContent = t("water.none");
  }
}

for (const button of document.querySelectorAll("#gauge-range button[data-hours]")) {
  button.addEventListener("click", () => {
    state.gaugeHours = Number(button.dataset.hours);
    state.gaugeSpan = null;
    if (state.gauge) showGauge(state.gauge);
  });
}
$("#gauge-zoom-out").addEventListener("click", () => {
  state.gaugeSpan = null;
  if (state.gauge) showGauge(state.gauge);
});

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
  if (!rows.length) svg.append(svgEl("text", { x: 4, y: 15 }, t("stats.none")));
}

async function renderStats() {
  const lighting = await api("/statistics/lighting?by=road");
  bars($("#chart-lighting"), lighting.map((r) => [r.group || t("stats.no_group"),
    Math.round(100 * (r.rate ?? 0))]), "%", 100);
  const city = await api("/statistics/lighting?by=city");
  $("#city-rate").textContent = city.length && city[0].rate !== null
    ? t("stats.city_rate", { rate: (100 * city[0].rate).toFixed(1) }) : "";
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
  await renderEnergy();
}

// Energy per cabinet: the counter noon to noon against full power from sunset to sunrise.
async function renderEnergy() {
  const period = state.energyPeriod || "night";
  for (const b of document.querySelectorAll("#energy-range button")) {
    b.classList.toggle("active", b.dataset.period === period);
  }
  let report;
  try {
    report = await api(`/statistics/energy?period=${period}`);
  } catch (error) {
    $("#energy-total").textContent = error.message;
    return;
  }
  const pct = (v) => (v === null ? "—" : `${v}%`);
  // No counter answered: the totals would read 0 kWh, which is a reading nobody took.
  const metered = report.cabinets.some((c) => c.kwh !== null);
  $("#energy-total").textContent = metered ? t("energy.total", { kwh: report.total_kwh,
    full: report.total_full_kwh, saving: pct(report.saving_pct), nights: report.nights })
    : t("energy.total_unmetered", { nights: report.nights });
  $("#energy tbody").replaceChildren(...report.cabinets.map((c) => {
    const row = el("tr");
    const name = el("td");
    name.append(data(`${c.cabinet} ${c.name}`));
    const used = el("td", {}, c.kwh === null ? t("energy.no_reading") : String(c.kwh));
    row.append(name, used, el("td", {}, String(c.full_kwh)), el("td", {}, pct(c.saving_pct)));
    return row;
  }));
}

for (const button of document.querySelectorAll("#energy-range button")) {
  button.addEventListener("click", () => {
    state.energyPeriod = button.dataset.period;
    renderEnergy();
  });
}

// -- cases ------------------------------------------------------------------------------------

const COLUMNS = [
  ["cases.col_new", ["awaiting_acceptance", "accepted", "filed"]],
  ["cases.col_dispatched", ["dispatched", "returned"]],
  ["cases.col_disposal", ["in_disposal"]],
  ["cases.col_verifying", ["disposal_reported", "under_verification"]],
  ["cases.col_closed", ["closed", "evaluated"]],
  ["cases.col_rejected", ["rejected"]],
];

function timeLeft(c) {
  if (c.due_at === null || ["closed", "evaluated", "rejected"].includes(c.stage)) {
    return c.evaluation ? term("evaluation", c.evaluation) : "";
  }
  const minutes = Math.round((c.due_at * 1000 - Date.now()) / 60000);
  const text = (m) => (m >= 120 ? t("cases.hours", { n: Math.round(m / 60) }) : t("cases.minutes", { n: m }));
  return minutes < 0 || c.overdue ? t("cases.overdue", { t: text(Math.abs(minutes)) })
    : t("cases.left", { t: text(minutes) });
}

// What can be done to a case at its stage, and who may (the API checks again).
const STAGE_ACTIONS = {
  awaiting_acceptance: ["accept", "reject"], accepted: ["file"], filed: ["dispatch"],
  returned: ["dispatch"], dispatched: ["start_disposal", "return"],
  in_disposal: ["report_disposal"], disposal_reported: ["start_verification"],
  under_verification: ["pass_verification", "fail_verification", "close"],
};
const CENTRE_ACTIONS = new Set(["accept", "reject", "file", "dispatch", "close",
  "start_verification", "pass_verification", "fail_verification"]);
const NOTE_NEEDED = new Set(["reject", "return"]);

function caseActions(c, onDone = renderCases) {
  const box = el("div", { class: "case-actions" });
  for (const action of STAGE_ACTIONS[c.stage] || []) {
    const allowed = CENTRE_ACTIONS.has(action) ? state.may.cases_centre : state.may.cases_work;
    if (!allowed) continue;
    const button = el("button", { "data-action": action }, t(`case_action.${action}`));
    button.addEventListener("click", () => caseAction(c, action, {}, onDone));
    box.append(button);
  }
  // The department's staff photograph the work: the proof of disposal goes with the case.
  if (state.may.cases_work && PHOTO_STAGES.has(c.stage)) {
    const label = el("label", { class: "file-pick" });
    const input = el("input", { type: "file", class: "photo", accept: "image/jpeg,image/png,image/webp",
      capture: "environment" });
    input.addEventListener("change", () => attachPhoto(c, input.files[0], onDone));
    label.append(el("span", { class: "file-button" }, t("cases.attach_photo")), input);
    box.append(label);
  }
  return box;
}

const PHOTO_STAGES = new Set(["dispatched", "in_disposal", "disposal_reported"]);
const FINISHED = new Set(["closed", "evaluated", "rejected"]);

async function attachPhoto(c, file, onDone = renderCases) {
  if (!file) return;
  try {
    await api(`/cases/${c.id}/photos`, { method: "POST", body: file,
      headers: { "Content-Type": file.type || "application/octet-stream" } });
  } catch (error) {
    await tell(error.message);
  }
  await onDone();
}

// Photos are fetched with the caller's credentials (a key header or the session), then shown.
function photoThumbs(c, size = "thumb") {
  const strip = el("div", { class: "thumbs" });
  for (const link of c.media || []) {
    if (!/^\/cases\/\d+\/photos\/\d+$/.test(link)) continue;
    const img = el("img", { class: size, alt: t("cases.photo"), loading: "lazy" });
    strip.append(img);
    const headers = state.key ? { "X-API-Key": state.key } : {};
    fetch(link, { headers }).then((r) => (r.ok ? r.blob() : null)).then((blob) => {
      if (blob) img.src = URL.createObjectURL(blob);
    });
  }
  return strip;
}

// Every step is confirmed: one that needs a note asks for it (the note is the confirmation),
// the others ask in the console's confirm dialog, naming the case and, for a dispatch, where to.
async function caseAction(c, action, extra = {}, onDone = renderCases) {
  let note = "";
  if (NOTE_NEEDED.has(action) || action === "report_disposal" || action === "fail_verification") {
    note = await askFor(t("cases.note_prompt", { action: t(`case_action.${action}`) }));
    if (note === null) return;
    if (NOTE_NEEDED.has(action) && !note.trim()) return;
  } else {
    const to = action === "dispatch" ? t("cases.confirm_to", { department: extra.department || c.department
      || c.routed_department || t("cases.no_department") }) : "";
    if (!(await ask(t("cases.confirm", { action: t(`case_action.${action}`), id: c.id, title: c.title, to })))) return;
  }
  try {
    await api(`/cases/${c.id}/${action}`, { method: "POST", json: { note, ...extra } });
  } catch (error) {
    await tell(error.message);
  }
  await onDone();
}

// The board's filters: by words (number, title, road, address), severity, source, department
// and lateness; the columns are the stages.
const caseFilters = () => ({ q: $("#case-q").value.trim().toLowerCase(), severity: $("#case-severity").value,
  source: $("#case-source").value, department: $("#case-department").value, overdue: $("#case-overdue").checked });

function isLate(c) {
  return c.overdue || (c.due_at !== null && c.due_at * 1000 < Date.now() && !FINISHED.has(c.stage));
}

function caseMatches(c, f) {
  if (f.severity && c.severity !== f.severity) return false;
  if (f.source && c.source !== f.source) return false;
  if (f.department && c.department !== f.department) return false;
  if (f.overdue && !isLate(c)) return false;
  if (!f.q) return true;
  return [`#${c.id}`, String(c.id), c.title, c.road, c.address, c.component_id, c.device_id]
    .some((v) => (v || "").toLowerCase().includes(f.q));
}

function fillDepartmentFilter(cases) {
  const select = $("#case-department");
  const keep = select.value;
  const names = [...new Set(cases.map((c) => c.department).filter(Boolean))].sort();
  select.replaceChildren(el("option", { value: "" }, t("cases.all_departments")),
    ...names.map((n) => el("option", { value: n }, n)));
  select.value = names.includes(keep) ? keep : "";
}

async function renderCases() {
  if (routeCase()) return;
  const cases = await api("/cases?limit=1000");
  fillDepartmentFilter(cases);
  const filters = caseFilters();
  const shown = cases.filter((c) => caseMatches(c, filters));
  $("#case-count").textContent = t("cases.count", { n: shown.length, total: cases.length });
  const board = $("#case-board");
  board.replaceChildren();
  for (const [titleKey, stages] of COLUMNS) {
    const title = t(titleKey);
    const column = el("div", { class: "column", "data-stage": stages[0] });
    // Overdue cases first, then the nearest time limit.
    const members = shown.filter((c) => stages.includes(c.stage))
      .sort((a, b) => isLate(b) - isLate(a) || (a.due_at ?? Infinity) - (b.due_at ?? Infinity));
    column.append(el("h4", {}, `${title} (${members.length})`));
    for (const c of members.slice(0, 30)) {
      const card = el("div", { class: `case${isLate(c) ? " overdue" : ""}`, "data-id": c.id });
      const heading = el("a", { href: `#case-${c.id}`, class: "case-link" }, `#${c.id} `);
      heading.append(data(c.title));
      const who = el("div");
      who.append(data(c.department || "—"), ` · ${term("severity", c.severity)}`);
      card.append(heading, who, el("div", { class: "left" }, timeLeft(c)));
      if ((c.media || []).length) card.append(photoThumbs(c));
      const actions = caseActions(c);
      if (actions.childElementCount) card.append(actions);
      column.append(card);
    }
    board.append(column);
  }
}

for (const id of ["#case-severity", "#case-source", "#case-department", "#case-overdue"]) {
  $(id).addEventListener("change", () => renderCases());
}
$("#case-q").addEventListener("input", () => renderCases());
$("#case-filters").addEventListener("submit", (event) => event.preventDefault());

// -- the case page ------------------------------------------------------------------------
// A case's own page (#case-<n>, so it can be linked): what it is, where, its time left, every
// step with who and when, the photos, and the steps the reader's role may take.

function routeCase() {
  const match = /^#case-(\d+)$/.exec(location.hash);
  const page = $("#case-page");
  if (!match) {
    page.hidden = true;
    $("#case-board").hidden = false;
    $("#case-filters").hidden = false;
    return false;
  }
  if ($("#tab-cases").hidden) showTab("cases");
  else renderCasePage(Number(match[1]));
  return true;
}
window.addEventListener("hashchange", () => { if (signedIn()) routeCase(); });
$("#case-back").addEventListener("click", () => { history.pushState(null, "", location.pathname); renderCases(); });

let casePageRender = 0;

async function renderCasePage(id) {
  // Hash changes, refreshes and board renders may ask at once; only the newest
  // request may fill the page, or its parts would be appended twice.
  const mine = ++casePageRender;
  let c;
  try {
    c = await api(`/cases/${id}`);
  } catch (error) {
    if (mine !== casePageRender) return;
    $("#case-body").replaceChildren(el("p", { class: "error" }, error.message));
    showCasePage();
    return;
  }
  const body = document.createElement("div");
  const heading = el("h3", { class: isLate(c) ? "overdue" : "" }, `#${c.id} `);
  heading.append(data(c.title));
  const stage = el("p", { class: "stage" }, term("stage", c.stage));
  const left = timeLeft(c);
  if (left) stage.append(" · ", el("span", { class: isLate(c) ? "late" : "left" }, left));
  body.replaceChildren(heading, stage, caseFacts(c));
  if (c.description) {
    const description = el("p", { class: "description" });
    description.append(data(c.description));
    body.append(description);
  }
  body.append(casePosition(c));
  if ((c.media || []).length) {
    body.append(el("h4", {}, t("cases.evidence")), photoThumbs(c, "photo-large"));
  }
  const actions = caseActions(c, () => renderCasePage(id));
  if (state.may.cases_centre && actions.querySelector("[data-action=dispatch]")) {
    actions.prepend(await departmentChoice(c, actions));
  }
  if (mine !== casePageRender) return;
  if (state.may.cases_centre && c.due_at !== null && !FINISHED.has(c.stage)) actions.append(extendControl(c, id));
  if (actions.childElementCount) body.append(el("h4", {}, t("cases.actions")), actions);
  body.append(el("h4", {}, t("cases.history")), caseHistory(c));
  $("#case-body").replaceChildren(...body.childNodes);
  showCasePage();
}

function showCasePage() {
  $("#case-board").hidden = true;
  $("#case-filters").hidden = true;
  $("#case-page").hidden = false;
}

function caseFacts(c) {
  const facts = el("dl", { class: "facts" });
  const add = (key, value, isData = true) => {
    if (value === null || value === undefined || value === "") return;
    const dd = el("dd");
    dd.append(isData ? data(String(value)) : String(value));
    facts.append(el("dt", {}, t(key)), dd);
  };
  add("cases.source", term("source", c.source), false);
  add("cases.severity", term("severity", c.severity), false);
  add("cases.category", c.category_name || c.category);
  add("cases.department", c.department || t("cases.no_department"), Boolean(c.department));
  add("cases.assignee", c.assignee);
  // An alarm's case has its district and road in its address already: not said twice.
  const place = [c.district, c.road].filter((p) => p && !(c.address || "").includes(p));
  add("cases.address", [...place, c.address].filter(Boolean).join(" "));
  add("cases.grid", c.grid);
  add("cases.device", c.device_id || c.component_id);
  add("cases.reported", localTime(c.reported_at * 1000), false);
  if (c.due_at !== null) add("cases.due", localTime(c.due_at * 1000), false);
  if (c.closed_at !== null) add("cases.closed", localTime(c.closed_at * 1000), false);
  if (c.evaluation) add("cases.evaluation", term("evaluation", c.evaluation), false);
  if (c.rework_count || c.extension_count || c.return_count) {
    add("cases.counts", t("cases.counts_text", { rework: c.rework_count, extension: c.extension_count,
      returned: c.return_count }), false);
  }
  // The reporter's contact is sent only to the command centre.
  if (c.contact && Object.keys(c.contact).length) add("cases.contact", Object.values(c.contact).join(" "));
  return facts;
}

function caseHistory(c) {
  const list = el("ol", { class: "history" });
  for (const step of c.transitions) {
    const item = el("li");
    item.append(el("time", {}, localTime(step.at * 1000)), " ",
      el("strong", {}, term("case_action", step.action)), " ",
      step.from_stage && step.from_stage !== step.to_stage
        ? t("cases.step", { from: term("stage", step.from_stage), to: term("stage", step.to_stage) })
        : term("stage", step.to_stage), " · ");
    item.append(data(term("actor", step.actor)), ` (${term("role", step.role)})`);
    if (step.note) {
      const note = el("div", { class: "note" });
      // The evaluation is the system's verdict (on_time ...): a term, not a person's words.
      note.append(step.action === "evaluate" ? term("evaluation", step.note) : data(step.note));
      item.append(note);
    }
    list.append(item);
  }
  return list;
}

// Where the case is: a small drawing of the devices around it (300 m each way), the nearest
// named, and a button to show it on the city map.
function casePosition(c) {
  const box = el("div", { class: "case-position" });
  const span = 0.003;
  const k = Math.cos((c.lat * Math.PI) / 180);
  const project = ([lon, lat]) => [150 + ((lon - c.lon) * k * 150) / span, 100 - ((lat - c.lat) * 100) / (span * 0.667)];
  const svg = svgEl("svg", { viewBox: "0 0 300 200", class: "case-map", role: "img",
    "aria-label": t("cases.position") });
  const devices = (state.map?.devices || []).filter((d) => Math.abs(d.lat - c.lat) < span && Math.abs(d.lon - c.lon) < span / k * 1.5);
  for (const cell of state.map?.grids || []) {
    for (const ring of cell.rings) {
      const d = ring.map((p, i) => `${i ? "L" : "M"}${project(p).join(",")}`).join(" ") + "Z";
      svg.append(svgEl("path", { d, class: "cell" }));
    }
  }
  for (const d of devices) {
    const [x, y] = project([d.lon, d.lat]);
    const mark = svgEl("circle", { cx: x, cy: y, r: d.device_class === "lamp" ? 3 : 6,
      class: `device ${d.device_class} ${d.state}${d.id === c.device_id ? " selected" : ""}` });
    mark.append(svgEl("title", {}, deviceTitle(d)));
    svg.append(mark);
  }
  svg.append(svgEl("path", { d: "M150,100 l-7,-16 a8,8 0 1,1 14,0 z", class: "case-pin" }));
  box.append(svg);
  const metres = (d) => Math.hypot((d.lon - c.lon) * k, d.lat - c.lat) * 111320;
  const nearest = devices.map((d) => [metres(d), d]).sort((a, b) => a[0] - b[0])[0];
  const line = el("p", {}, t("cases.coordinates", { lat: c.lat.toFixed(5), lon: c.lon.toFixed(5) }));
  if (nearest) {
    line.append(" · ", t("cases.nearest", { m: Math.round(nearest[0]) }), " ");
    line.append(data(`${nearest[1].id} ${nearest[1].name || ""}`.trim()));
  }
  const show = el("button", { type: "button", class: "show-on-map" }, t("cases.show_on_map"));
  show.addEventListener("click", () => showCaseOnMap(c));
  box.append(line, show);
  return box;
}

function showCaseOnMap(c) {
  showOnMap({ id: c.id, lat: c.lat, lon: c.lon, title: `#${c.id} ${c.title}` });
}

// Pin a place (a case, a pole) over the devices and bring the map to it.
function showOnMap(place) {
  state.casePin = place;
  if (state.tileMap) state.tileMap.pin(state.casePin);
  else if (state.project) {
    const [x, y] = state.project([place.lon, place.lat]);
    setView({ x: x - 75, y: y - 52.5, w: 150, h: 105 });
  }
  $("#map-panel").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function departmentChoice(c, actions) {
  const { departments } = await api("/cases/departments");
  const chosen = c.department || c.routed_department;
  const select = el("select", { class: "department", "aria-label": t("cases.department"), translate: "no" });
  for (const name of new Set([chosen, ...departments].filter(Boolean))) select.append(el("option", { value: name }, name));
  select.value = chosen;
  // The dispatch button sends to the chosen department.
  const button = actions.querySelector("[data-action=dispatch]");
  const again = button.cloneNode(true);
  again.addEventListener("click", () => caseAction(c, "dispatch", { department: select.value },
    () => renderCasePage(c.id)));
  button.replaceWith(again);
  const label = el("label", { class: "department-pick" });
  label.append(el("span", {}, t("cases.dispatch_to")), select);
  return label;
}

function extendControl(c, id) {
  const button = el("button", { "data-action": "extend", type: "button" }, t("case_action.extend"));
  button.addEventListener("click", async () => {
    const answer = await askFor(t("cases.extend_prompt"), { type: "number", value: "24", min: 1 });
    if (answer === null) return;
    const hours = Number(answer);
    if (!Number.isFinite(hours) || hours <= 0) return;
    const due = new Date(Math.max(c.due_at * 1000, Date.now()) + hours * 3600000).toISOString();
    try {
      await api(`/cases/${c.id}/extend`, { method: "POST", json: { due_at: due, note: t("cases.extend_note", { h: hours }) } });
    } catch (error) {
      await tell(error.message);
    }
    await renderCasePage(id);
  });
  return button;
}

// -- remote control -------------------------------------------------------------------------

function fillTargets() {
  if (!state.map) return;
  const scope = $("#ctl-scope").value;
  const devices = state.map.devices;
  let options;
  // A cabinet is chosen by its name as well as its id (people know 东风路1号箱, not JC-DF-001).
  const names = Object.fromEntries(devices.map((d) => [d.id, d.name || ""]));
  if (scope === "cabinet") options = devices.filter((d) => d.device_class === "cabinet").map((d) => d.id);
  else if (scope === "road") options = [...new Set(devices.filter((d) => d.device_class !== "gauge").map((d) => d.road).filter(Boolean))];
  else options = [...new Set(devices.filter((d) => d.device_class !== "gauge").map((d) => d.grid).filter(Boolean))];
  const select = $("#ctl-target");
  const keep = select.value;
  select.replaceChildren(...options.sort().map((o) =>
    el("option", { value: o }, scope === "cabinet" && names[o] ? `${o} ${names[o]}` : o)));
  if (options.includes(keep)) select.value = keep;
  const lamps = $("#ctl-kind").value === "lamps";
  $("#ctl-circuits").hidden = lamps || scope !== "cabinet";
  $("#ctl-action").querySelector("[value=dim]").disabled = !lamps;
  if (!lamps && $("#ctl-action").value === "dim") $("#ctl-action").value = "on";
  levelApplies();
}
for (const id of ["#ctl-kind", "#ctl-scope"]) $(id).addEventListener("change", fillTargets);
// The level is a dim's only: disabled otherwise, it neither shows nor blocks a switch.
function levelApplies() {
  $("#ctl-level").disabled = $("#ctl-action").value !== "dim";
}
$("#ctl-action").addEventListener("change", levelApplies);

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
  const verb = action === "dim" ? t("control.verb_dim", { level: body.level })
    : t(action === "on" ? "control.verb_on" : "control.verb_off");
  const scopeWord = t(`control.scope_word_${scope}`);
  // The confirm names the place as people know it: the cabinet's name after its id.
  const option = $("#ctl-target").selectedOptions[0];
  const named = option ? option.textContent : target;
  const what = kind === "circuits"
    ? t("control.what_circuits", { verb, scope: scopeWord, target: named, which: targets.circuits
      ? t("control.which_circuits", { list: targets.circuits.join(", ") }) : t("control.which_all") })
    : t("control.what_lamps", { verb, scope: scopeWord, target: named });
  return { path: kind === "circuits" ? "/control/circuits" : "/control/lamps", body, what };
}

// A refusal told in the page (the browser's alert() is untranslated, blocks the page,
// and on a phone may be suppressed); resolves once the reader has closed it.
function tell(text) {
  return new Promise((resolve) => {
    const dialog = $("#refusal");
    $("#refusal-text").textContent = text;
    dialog.addEventListener("close", () => resolve(), { once: true });
    dialog.showModal();
  });
}

function ask(text) {
  return askFor(text, null).then((answer) => answer !== null);
}

// The confirm dialog with a field: a note, hours, a password. The answer is the field's
// text, or null when cancelled; Enter in the field is the confirm button.
function askFor(text, field = {}) {
  return new Promise((resolve) => {
    const dialog = $("#confirm");
    const input = $("#confirm-input");
    $("#confirm-text").textContent = text;
    input.hidden = field === null;
    if (field !== null) {
      input.type = field.type || "text";
      input.value = field.value ?? "";
      if (field.min !== undefined) input.min = field.min; else input.removeAttribute("min");
    }
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") resolve(null);
      else resolve(field === null ? "" : input.value);
    }, { once: true });
    dialog.showModal();
    if (field !== null) input.focus();
  });
}

$("#confirm-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    $("#confirm").close("ok");
  }
});

$("#control-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { path, body, what } = commandRequest();
  if (!(await ask(t("control.ask", { what })))) return;
  const status = $("#ctl-status");
  status.className = "status";
  let command;
  try {
    command = await api(path, { method: "POST", json: body });
  } catch (error) {
    const reason = error.worded ? error.message : error.detail;
    if (error.status === 428 && (await ask(t("control.ask_large", { reason })))) {
      command = await api(path, { method: "POST", json: { ...body, confirm: true } });
    } else {
      status.textContent = t("control.refused", { reason });
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
    status.textContent = t("control.progress", { id: command.id,
      status: term("command_status", command.status), confirmed: command.counts.confirmed,
      total: command.results.length });
    command = await api(`/commands/${command.id}?wait=2`);
  }
  status.textContent = t("control.done", { id: command.id,
    status: term("command_status", command.status), confirmed: command.counts.confirmed,
    failed: command.counts.failed });
  status.className = `status ${command.status}`;
  const list = $("#ctl-results");
  list.replaceChildren(...command.results.map((r) =>
    el("li", {}, t(r.reason ? "control.result_reason" : "control.result",
      { target: r.target, status: term("command_status", r.status),
        reason: refusalText(r.message) || r.reason }))));
  renderRecent();
  renderMap();
}

// A group as people name it: cabinets and lamps by id and name, a road, a grid, the city.
function selectorText(selector) {
  if (selector.all) return t("selector.all");
  const parts = [];
  if (selector.cabinets) parts.push(t("selector.cabinets", { list: namedDevices(selector.cabinets) }));
  if (selector.lamps) parts.push(t("selector.lamps", { list: namedDevices(selector.lamps) }));
  for (const key of ["road", "grid", "district", "tag"]) {
    if (selector[key]) parts.push(t(`selector.${key}`, { name: selector[key] }));
  }
  if (selector.circuits) parts.push(t("selector.circuits", { list: selector.circuits.join(", ") }));
  return parts.join(t("selector.joiner"));
}

// A command's targets by name (the devices its results name), not the selector's ids.
function namedTargets(c) {
  const ids = [...new Set((c.results || []).map((r) => r.target.split("/")[0]))];
  return ids.length ? namedDevices(ids) : c.targets;
}

// The first two devices by id and name, and how many there are in all.
function namedDevices(ids) {
  const devices = state.map ? state.map.devices : [];
  const named = ids.slice(0, 2).map((id) => {
    const d = devices.find((x) => x.id === id);
    return d && d.name && d.name !== id ? `${id} ${d.name}` : id;
  });
  return ids.length > 2 ? `${named.join("、")} ${t("control.and_more", { n: ids.length })}` : named.join("、");
}

async function renderRecent() {
  const recent = await api("/commands?limit=8");
  $("#ctl-recent").replaceChildren(...recent.map((c) =>
    el("li", { translate: "no" }, t("control.recent_row", { id: c.id, action: term("command_action", c.action),
      targets: namedTargets(c), by: term("actor", c.by), status: term("command_status", c.status) }))));
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
  if (!signedIn()) return;
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
  if (!signedIn()) return;
  await renderMap();
  fillTargets();
  await refreshAlarms();
  renderRecent();
  await connect();
  // A link to a case (#case-<n>) opens its page.
  routeCase();
}

for (const link of document.querySelectorAll("nav.reports a")) {
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    if (!signedIn()) return;
    const tab = window.open("", "_blank");
    tab.location = `${link.getAttribute("href")}?ticket=${encodeURIComponent(await ticket())}`;
  });
}

async function start() {
  MESSAGES = await (await fetch("messages.json")).json();
  applyLanguage();
  if (state.key) await login(state.key);
  else {
    await resumeSession();
    applyLanguage();
    applyPermissions();
  }
  await loadAll();
  setInterval(async () => {
    if (!signedIn()) return;
    await renderMap();
    // The flood panel follows the readings while it is open, not only when it is opened.
    if (!$("#tab-water").hidden) {
      renderGauges();
      if (state.gauge) showGauge(state.gauge);
    }
  }, 10000);
  setInterval(() => { if (signedIn()) refreshAlarms(); }, 15000);
  document.body.dataset.ready = "true";
}

start();
