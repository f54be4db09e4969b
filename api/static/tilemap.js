// The city map over a tile layer (site.map.tiles), drawn by Leaflet. Leaflet and its
// marker clustering come from Debian's libjs-leaflet packages, copied into vendor/ by
// the install step: nothing is fetched from the internet but the configured tiles.

const VENDOR = "vendor/leaflet/";

function loadAsset(tag, attrs) {
  return new Promise((resolve, reject) => {
    const node = document.createElement(tag);
    Object.assign(node, attrs);
    node.onload = resolve;
    node.onerror = () => reject(new Error(`${attrs.src || attrs.href} did not load`));
    document.head.append(node);
  });
}

// Loaded only when tiles are configured: the offline map costs nothing for it.
export async function loadLeaflet() {
  if (!window.L) {
    await loadAsset("link", { rel: "stylesheet", href: VENDOR + "leaflet.css" });
    await loadAsset("link", { rel: "stylesheet", href: VENDOR + "MarkerCluster.css" });
    await loadAsset("script", { src: VENDOR + "leaflet.min.js" });
  }
  if (!window.L.markerClusterGroup) await loadAsset("script", { src: VENDOR + "leaflet.markercluster.min.js" });
  return window.L;
}

// WGS-84 to GCJ-02, the datum of Chinese commercial tiles (Gaode/Amap, Tencent): the
// published offset formula on the Krasovsky ellipsoid. Outside China there is no offset.
const A = 6378245.0;
const EE = 0.00669342162296594323;

function outsideChina(lat, lon) {
  return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271;
}

function offsetLat(x, y) {
  let r = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  r += ((20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2) / 3;
  r += ((20 * Math.sin(y * Math.PI) + 40 * Math.sin((y / 3) * Math.PI)) * 2) / 3;
  r += ((160 * Math.sin((y / 12) * Math.PI) + 320 * Math.sin((y * Math.PI) / 30)) * 2) / 3;
  return r;
}

function offsetLon(x, y) {
  let r = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  r += ((20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2) / 3;
  r += ((20 * Math.sin(x * Math.PI) + 40 * Math.sin((x / 3) * Math.PI)) * 2) / 3;
  r += ((150 * Math.sin((x / 12) * Math.PI) + 300 * Math.sin((x / 30) * Math.PI)) * 2) / 3;
  return r;
}

export function wgs84ToGcj02(lat, lon) {
  if (outsideChina(lat, lon)) return [lat, lon];
  const radLat = (lat / 180) * Math.PI;
  let magic = Math.sin(radLat);
  magic = 1 - EE * magic * magic;
  const sqrtMagic = Math.sqrt(magic);
  const dLat = (offsetLat(lon - 105, lat - 35) * 180) / (((A * (1 - EE)) / (magic * sqrtMagic)) * Math.PI);
  const dLon = (offsetLon(lon - 105, lat - 35) * 180) / ((A / sqrtMagic) * Math.cos(radLat) * Math.PI);
  return [lat + dLat, lon + dLon];
}

// Marks keep the offline map's look: lamps small dots, cabinets larger, gauges larger still.
const RADIUS = { lamp: 4, cabinet: 7, gauge: 9 };

/** The map over tiles: grid cells, cabinets and gauges always drawn, lamps clustered. */
export class TileMap {
  constructor(container, tiles, onSelect) {
    const L = window.L;
    this.L = L;
    this.onSelect = onSelect;
    this.place = tiles.datum === "gcj02" ? wgs84ToGcj02 : (lat, lon) => [lat, lon];
    // The console's own ＋ － 全城 buttons zoom this map too.
    this.map = L.map(container, { minZoom: tiles.min_zoom, maxZoom: tiles.max_zoom, zoomControl: false });
    L.tileLayer(tiles.url, { attribution: tiles.attribution, subdomains: tiles.subdomains || "abc",
      minZoom: tiles.min_zoom, maxZoom: tiles.max_zoom }).addTo(this.map);
    // Leaflet measures its box once; a rotated phone or a resized window must re-measure.
    new ResizeObserver(() => this.map.invalidateSize()).observe(container);
    this.cells = L.layerGroup().addTo(this.map);
    this.fixed = L.layerGroup().addTo(this.map);
    // 42,000 lamps stay smooth because only clusters are drawn until the view is a street.
    this.lamps = L.markerClusterGroup({ chunkedLoading: true, showCoverageOnHover: false,
      disableClusteringAtZoom: Math.min(17, tiles.max_zoom), iconCreateFunction: (c) => this.clusterIcon(c) });
    this.lamps.addTo(this.map);
    this.marks = new Map();
    this.selected = undefined;
    this.ids = "";
    this.fitted = false;
  }

  clusterIcon(cluster) {
    const children = cluster.getAllChildMarkers();
    const alarm = children.some((m) => m.options.deviceState === "alarm");
    const size = children.length < 100 ? 34 : children.length < 1000 ? 40 : 46;
    return this.L.divIcon({ html: `<span>${children.length}</span>`, iconSize: [size, size],
      className: `lamp-cluster${alarm ? " alarm" : ""}` });
  }

  classOf(d, band, selected) {
    return `device ${d.device_class} ${d.state}${band}${selected === d.id ? " selected" : ""}`;
  }

  // The first call builds the marks; later calls restyle them in place (the register is
  // the same; only states change), so a refresh does not re-cluster 42,000 lamps.
  draw(data, bandOf, selected, title) {
    const ids = data.devices.map((d) => d.id).join("\n");
    if (ids !== this.ids) this.build(data, bandOf, selected, title);
    this.selected = selected;
    const changedLamps = [];
    for (const d of data.devices) {
      const mark = this.marks.get(d.id);
      const band = d.device_class === "gauge" && bandOf.has(d.id) ? ` band-${bandOf.get(d.id)}` : "";
      const cls = this.classOf(d, band, selected);
      if (mark.options.className === cls) continue;
      mark.options.className = cls;
      mark.options.deviceState = d.state;
      mark.getElement()?.setAttribute("class", `leaflet-interactive ${cls}`);
      if (d.device_class === "lamp") changedLamps.push(mark);
    }
    // A cluster turns red when a lamp in it is in alarm.
    if (changedLamps.length) this.lamps.refreshClusters(changedLamps);
  }

  build(data, bandOf, selected, title) {
    const L = this.L;
    this.ids = data.devices.map((d) => d.id).join("\n");
    this.cells.clearLayers(); this.fixed.clearLayers(); this.lamps.clearLayers(); this.marks.clear();
    for (const cell of data.grids) {
      for (const ring of cell.rings) {
        L.polygon(ring.map(([lon, lat]) => this.place(lat, lon)), { interactive: false,
          className: `cell${cell.approximate ? " approximate" : ""}` }).bindTooltip(cell.code).addTo(this.cells);
      }
    }
    const lamps = [];
    for (const d of data.devices) {
      const band = d.device_class === "gauge" && bandOf.has(d.id) ? ` band-${bandOf.get(d.id)}` : "";
      const mark = L.circleMarker(this.place(d.lat, d.lon), { radius: RADIUS[d.device_class] || 4,
        className: this.classOf(d, band, selected), deviceId: d.id, deviceState: d.state,
        // Colours come from the stylesheet's classes, as on the offline map.
        fillOpacity: 1, weight: 1, color: null, fillColor: null });
      mark.bindTooltip(() => title(d));
      mark.on("click", () => this.onSelect(d.id));
      this.marks.set(d.id, mark);
      if (d.device_class === "lamp") lamps.push(mark); else mark.addTo(this.fixed);
    }
    this.lamps.addLayers(lamps);
    if (!this.fitted && data.devices.length) {
      const [minLon, minLat, maxLon, maxLat] = data.bounds;
      this.map.fitBounds([this.place(minLat, minLon), this.place(maxLat, maxLon)]);
      this.fitted = true;
    }
  }

  /** Centre on a device at street zoom (out of its cluster) and mark it selected. */
  focus(id) {
    const mark = this.marks.get(id);
    if (!mark) return;
    if (this.lamps.hasLayer(mark)) this.lamps.zoomToShowLayer(mark);
    else this.map.setView(mark.getLatLng(), Math.max(this.map.getZoom(), 16));
  }

  select(id) {
    // Only the old and the new selection change: a 42,000-lamp register is not walked per click.
    for (const key of new Set([this.selected, id])) {
      const mark = key === undefined ? undefined : this.marks.get(key);
      if (!mark) continue;
      mark.getElement()?.classList.toggle("selected", key === id);
      mark.options.className = mark.options.className.replace(/ selected$/, "") + (key === id ? " selected" : "");
    }
    this.selected = id;
  }

  /** Mark a case's position (one at a time) and centre on it at street zoom. */
  pin(where) {
    const at = this.place(where.lat, where.lon);
    this.casePin?.remove();
    this.casePin = this.L.circleMarker(at, { radius: 11, className: "case-pin", weight: 3,
      color: null, fillColor: null, fillOpacity: 0.35 }).bindTooltip(where.title).addTo(this.map);
    this.map.setView(at, Math.max(this.map.getZoom(), 17));
  }

  zoomBy(steps) { this.map.setZoom(this.map.getZoom() + steps); }

  whole(data) {
    const [minLon, minLat, maxLon, maxLat] = data.bounds;
    this.map.fitBounds([this.place(minLat, minLon), this.place(maxLat, maxLon)]);
  }
}
