// The gridcover web map: vector tiles of the service's OGC collections drawn with MapLibre GL
// JS, shipped with the app (no basemap and no other host: admin boundaries are the base).
// Role-gated layers are added only when the API key in the page may read them; the key stays
// in localStorage and goes out as `Authorization: Bearer` on every request to this service.
import * as maplibregl from "./vendor/maplibre-gl/maplibre-gl.mjs";

const ROOT = new URL("./", location.href); // "/" for both / and /map
const KEY_STORAGE = "gridcover.apiKey";
const LEVELLED = new Set(["grids", "gaps", "camera_fov", "coverage_h3"]);
const INITIAL_BOUNDS = [109.1, 27.7, 110.7, 29.6]; // Xiangxi prefecture
const RAMP = [0, "#d73027", 0.25, "#fc8d59", 0.5, "#fee08b", 0.75, "#91cf60", 1, "#1a9850"];
const NO_DATA = "#c8ccd2";

// Layer groups in the page's list; a group shows only if the key may read its collections.
const GROUPS = [
  { id: "admin", label: "Admin boundaries", collections: ["counties", "townships", "villages"] },
  { id: "grids", label: "Grids", collections: ["grids"] },
  { id: "targets", label: "Roads and key places", collections: ["roads", "key_places"] },
  { id: "h3", label: "Coverage heat map (H3)", collections: ["coverage_h3"], off: true, role: "viewer" },
  { id: "gaps", label: "Coverage gaps", collections: ["gaps"], role: "planner" },
  { id: "cameras", label: "Cameras and fields of view", collections: ["cameras", "camera_fov"], role: "planner" },
  { id: "incidents", label: "Incidents", collections: ["incidents"], off: true, role: "dispatcher" },
];

const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  keyAccepted: null, // false once the service has rejected the key
  readable: new Set(),
  level: "detect",
  metric: "public_ratio",
  selected: null,
  marker: null,
};
const $ = (id) => document.getElementById(id);

// --- talking to the service ---------------------------------------------------------------

function authHeaders() {
  return state.key && state.keyAccepted !== false ? { Authorization: `Bearer ${state.key}` } : {};
}

async function api(path, params = {}) {
  const url = new URL(path, ROOT);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) url.searchParams.set(name, value);
  }
  const response = await fetch(url, { headers: { Accept: "application/json", ...authHeaders() } });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch {
      // not a problem document
    }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

const can = (collection) => state.readable.has(collection);
const mayLookUp = () => can("incidents"); // lookups and incidents both need a dispatcher key
const mayReadCoverage = () => can("coverage");

function tilejsonUrl(collection) {
  const url = new URL(`collections/${collection}/tiles/WebMercatorQuad`, ROOT);
  if (LEVELLED.has(collection)) url.searchParams.set("level", state.level);
  return url.href;
}

// --- small DOM helpers --------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "onclick") node.addEventListener("click", value);
    else if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

const pct = (value, digits = 1) =>
  value === null || value === undefined ? "—" : `${(100 * value).toFixed(digits)}%`;

function show(container, ...children) {
  container.replaceChildren(...children.flat());
}

function geometryBounds(geometry) {
  const box = [Infinity, Infinity, -Infinity, -Infinity];
  const walk = (coords) => {
    if (typeof coords[0] === "number") {
      box[0] = Math.min(box[0], coords[0]);
      box[1] = Math.min(box[1], coords[1]);
      box[2] = Math.max(box[2], coords[0]);
      box[3] = Math.max(box[3], coords[1]);
    } else coords.forEach(walk);
  };
  walk(geometry.coordinates);
  return [
    [box[0], box[1]],
    [box[2], box[3]],
  ];
}

// --- the map ------------------------------------------------------------------------------

const map = new maplibregl.Map({
  container: "map",
  style: {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#e9edf1" } }],
  },
  bounds: INITIAL_BOUNDS,
  maxZoom: 19,
  attributionControl: { compact: true, customAttribution: "gridcover · demo data" },
  // The key goes to this service only, never to another host.
  transformRequest: (url) =>
    url.startsWith(location.origin) ? { url, headers: authHeaders() } : { url },
});
const loaded = new Promise((resolve) => map.once("load", resolve));
map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-right");
window.gridcover = { map, state };

function gridColor() {
  return [
    "case",
    ["has", state.metric],
    ["interpolate", ["linear"], ["get", state.metric], ...RAMP],
    NO_DATA,
  ];
}

// Every layer: its group, the collection it draws, and its style; listed bottom to top.
function layerSpecs() {
  const source = (collection) => ({ source: collection, "source-layer": collection });
  return [
    { group: "admin", id: "counties-fill", type: "fill", ...source("counties"),
      paint: { "fill-color": "#fbfbf7" } },
    { group: "h3", id: "coverage_h3-fill", type: "fill", ...source("coverage_h3"),
      paint: { "fill-color": ["interpolate", ["linear"], ["get", "covered_fraction"], ...RAMP],
               "fill-opacity": 0.7 } },
    { group: "grids", id: "grids-fill", type: "fill", ...source("grids"),
      paint: { "fill-color": gridColor(), "fill-opacity": 0.62 } },
    { group: "gaps", id: "gaps-fill", type: "fill", ...source("gaps"), minzoom: 12,
      paint: { "fill-color": "#7f1d1d", "fill-opacity": 0.3 } },
    { group: "cameras", id: "camera_fov-fill", type: "fill", ...source("camera_fov"),
      paint: { "fill-color": "#2563eb", "fill-opacity": 0.16, "fill-outline-color": "#2563eb" } },
    { group: "grids", id: "grids-line", type: "line", ...source("grids"),
      paint: { "line-color": "#52606d",
               "line-width": ["interpolate", ["linear"], ["zoom"], 8, 0.2, 14, 1.2] } },
    { group: "admin", id: "villages-line", type: "line", ...source("villages"), minzoom: 10,
      paint: { "line-color": "#7b8794", "line-width": 1, "line-dasharray": [3, 2] } },
    { group: "admin", id: "townships-line", type: "line", ...source("townships"),
      paint: { "line-color": "#3e4c59", "line-width": 1.3 } },
    { group: "admin", id: "counties-line", type: "line", ...source("counties"),
      paint: { "line-color": "#1f2933", "line-width": 2.4 } },
    { group: "targets", id: "roads-line", type: "line", ...source("roads"),
      paint: { "line-color": "#a16207",
               "line-width": ["match", ["get", "road_class"], "national", 2.2, "provincial", 1.8,
                              "county", 1.3, 0.8] } },
    { group: "targets", id: "key_places-circle", type: "circle", ...source("key_places"),
      paint: { "circle-radius": 3.5, "circle-color": "#7e22ce", "circle-stroke-width": 1,
               "circle-stroke-color": "#fff" } },
    { group: "cameras", id: "cameras-circle", type: "circle", ...source("cameras"),
      paint: { "circle-radius": 3,
               "circle-color": ["match", ["get", "status"], "online", "#1d4ed8",
                                "fault", "#ea580c", "#6b7280"],
               "circle-stroke-width": 1, "circle-stroke-color": "#fff" } },
    { group: "incidents", id: "incidents-circle", type: "circle", ...source("incidents"),
      paint: { "circle-radius": 3.2,
               "circle-color": ["case", ["==", ["get", "overdue"], true], "#dc2626", "#f59e0b"],
               "circle-stroke-width": 0.8, "circle-stroke-color": "#fff" } },
    { group: "grids", id: "grid-selected", type: "line", ...source("grids"),
      filter: ["==", ["get", "code"], ""],
      paint: { "line-color": "#111827", "line-width": 3 } },
  ];
}

function addLayers() {
  const hidden = new Set(GROUPS.filter((g) => g.off).map((g) => g.id));
  for (const collection of new Set(GROUPS.flatMap((g) => g.collections))) {
    if (can(collection)) map.addSource(collection, { type: "vector", url: tilejsonUrl(collection) });
  }
  for (const { group, ...layer } of layerSpecs()) {
    if (!can(layer.source)) continue;
    layer.layout = { visibility: hidden.has(group) ? "none" : "visible" };
    map.addLayer(layer);
  }
}

function renderToggles() {
  const hidden = new Set(GROUPS.filter((g) => g.off).map((g) => g.id));
  show(
    $("layer-toggles"),
    GROUPS.map((group) => {
      const allowed = group.collections.some(can);
      const box = h("input", { type: "checkbox", "data-group": group.id });
      box.checked = allowed && !hidden.has(group.id);
      box.disabled = !allowed;
      box.addEventListener("change", () => {
        for (const layer of layerSpecs().filter((l) => l.group === group.id)) {
          if (map.getLayer(layer.id)) {
            map.setLayoutProperty(layer.id, "visibility", box.checked ? "visible" : "none");
          }
        }
      });
      return h(
        "label",
        { class: allowed ? "" : "locked" },
        box,
        group.label,
        allowed ? null : h("span", { class: "muted" }, ` (needs a ${group.role} key)`),
      );
    }),
  );
}

function renderLegend() {
  show(
    $("legend"),
    mayReadCoverage()
      ? [h("span", {}, "0 %"), h("span", { class: "ramp" }), h("span", {}, "100 %"),
         h("span", { class: "none" }), h("span", { class: "muted" }, "none")]
      : [h("span", { class: "muted" }, "Grid coverage needs a viewer key.")],
  );
}

// --- the grid panel -----------------------------------------------------------------------

async function countIncidents(params) {
  const page = await api("collections/incidents/items", { limit: 1, properties: "id", ...params });
  return page.numberMatched;
}

async function selectGrid(code) {
  state.selected = code;
  if (map.getLayer("grid-selected")) {
    map.setFilter("grid-selected", ["==", ["get", "code"], code]);
  }
  const info = $("info");
  info.className = "";
  show(info, h("p", { class: "muted" }, `Loading ${code} …`));
  const quietly = (promise) => promise.catch(() => null);
  const [grid, village, township, county] = await Promise.all([
    quietly(api(`v1/grids/${code}`)),
    quietly(api(`collections/villages/items/${code.slice(0, 12)}`)),
    quietly(api(`collections/townships/items/${code.slice(0, 9)}`)),
    quietly(api(`collections/counties/items/${code.slice(0, 6)}`)),
  ]);
  if (state.selected !== code) return;
  if (!grid) {
    show(info, h("p", { class: "error" }, `No current grid ${code}.`));
    return;
  }
  const p = grid.properties;
  const row = (label, value) =>
    value === undefined || value === null ? [] : [h("dt", {}, label), h("dd", {}, value)];
  const parts = [
    h("h3", {}, p.name),
    h(
      "dl",
      {},
      row("code", p.code),
      row("kind", p.kind),
      row("chain", [county, township, village].map((a) => a?.properties.name ?? "?").join(" › ")),
      row("households", p.households),
      row("population", p.population),
      row("worker", p.worker_name ?? (can("coverage") ? "—" : "needs a viewer key")),
      row("phone", p.worker_phone),
    ),
  ];
  show(info, parts, h("div", { id: "coverage-info" }), h("div", { id: "incident-info" }));
  info.dataset.grid = code;
  await Promise.all([showCoverage(code), showIncidents(code)]);
}

async function showCoverage(code) {
  const box = $("coverage-info");
  if (!mayReadCoverage()) {
    show(box, h("p", { class: "muted" }, "Coverage needs a viewer key."));
    return;
  }
  let report;
  try {
    report = await api(`v1/grids/${code}/coverage`);
  } catch (error) {
    show(box, h("p", { class: "muted" }, `Coverage: ${error.message}`));
    return;
  }
  if (!report.levels?.length) {
    show(box, h("p", { class: "muted" }, "No coverage computed for this grid yet."));
    return;
  }
  show(
    box,
    h(
      "table",
      {},
      h("tr", {}, ["level", "public", "area", "roads", "places", "cams"].map((t) => h("th", {}, t))),
      report.levels.map((l) =>
        h(
          "tr",
          { class: l.level === state.level ? "current" : "" },
          h("td", {}, l.level),
          h("td", {}, pct(l.public_ratio, 0)),
          h("td", {}, pct(l.ratio, 0)),
          h("td", {}, pct(l.road_ratio, 0)),
          h("td", {}, `${l.places_covered ?? "—"}/${l.places_total ?? "—"}`),
          h("td", {}, l.camera_count ?? "—"),
        ),
      ),
    ),
  );
}

async function showIncidents(code) {
  const box = $("incident-info");
  if (!can("incidents")) return;
  try {
    const [all, open, overdue] = await Promise.all([
      countIncidents({ grid_code: code }),
      countIncidents({
        filter: `grid_code = '${code}' AND status NOT IN ('closed', 'evaluated', 'rejected')`,
      }),
      countIncidents({ grid_code: code, overdue: "true" }),
    ]);
    show(box, h("p", {}, `Incidents: ${all} reported, ${open} open, ${overdue} late.`));
  } catch (error) {
    show(box, h("p", { class: "muted" }, `Incidents: ${error.message}`));
  }
}

// --- search -------------------------------------------------------------------------------

async function search(text) {
  const result = $("search-result");
  delete result.dataset.grid;
  result.className = "muted";
  if (!text.trim()) return;
  if (!mayLookUp()) {
    show(result, "Looking places up needs a dispatcher key.");
    return;
  }
  const point = text.match(/^\s*(-?\d+(?:\.\d+)?)\s*[,\s]\s*(-?\d+(?:\.\d+)?)\s*$/);
  show(result, "Looking up …");
  let found;
  try {
    found = await api("v1/lookup", point ? { lon: point[1], lat: point[2] } : { address: text });
  } catch (error) {
    result.className = "error";
    show(result, error.message);
    return;
  }
  if (!found.grid) {
    show(result, found.outside ? "That place is outside every grid." : "No grid found.");
    return;
  }
  result.className = "";
  const chain = [found.county, found.township, found.village].map((a) => a?.name).filter(Boolean);
  show(
    result,
    h("strong", {}, `${found.grid.name}`),
    ` (${found.grid.code})`,
    h("br"),
    chain.join(" › "),
    found.precision ? h("span", { class: "muted" }, ` · ${found.precision}`) : null,
  );
  result.dataset.grid = found.grid.code;
  state.marker?.remove();
  state.marker = new maplibregl.Marker({ color: "#111827" }).setLngLat(found.point).addTo(map);
  map.flyTo({ center: found.point, zoom: Math.max(map.getZoom(), 15), duration: 800 });
  await selectGrid(found.grid.code);
}

// --- ranking ------------------------------------------------------------------------------

async function loadRanking() {
  const list = $("ranking");
  const by = $("rank-by").value;
  if (!mayReadCoverage()) {
    show(list, h("li", {}, `The ${by} ranking needs a viewer key.`));
    return;
  }
  let summary;
  try {
    summary = await api("v1/coverage/summary", { by, level: state.level, limit: 25 });
  } catch (error) {
    show(list, h("li", { class: "error" }, error.message));
    return;
  }
  if (!summary.units.length) {
    show(list, h("li", {}, "No coverage computed yet."));
    return;
  }
  list.className = "";
  show(
    list,
    summary.units.map((unit) =>
      h(
        "li",
        { onclick: () => zoomToUnit(by, unit.code), title: unit.code },
        `${unit.name} `,
        h("span", { class: "pct" }, pct(unit.public_ratio)),
        h("span", { class: "bar", style: `width:${Math.round(60 * (unit.public_ratio ?? 0))}px` }),
      ),
    ),
  );
}

async function zoomToUnit(by, code) {
  const feature = await api(`collections/${by}s/items/${code}`);
  map.fitBounds(geometryBounds(feature.geometry), { padding: 40, duration: 800 });
}

// --- controls -----------------------------------------------------------------------------

function setLevel(level) {
  state.level = level;
  for (const collection of LEVELLED) {
    if (map.getSource(collection)) map.getSource(collection).setUrl(tilejsonUrl(collection));
  }
  loadRanking();
  if (state.selected) selectGrid(state.selected);
}

function wireControls() {
  $("api-key").value = state.key;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    location.reload();
  });
  $("key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    location.reload();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("search-input").value);
  });
  $("level").addEventListener("change", (event) => setLevel(event.target.value));
  for (const radio of document.querySelectorAll("input[name=metric]")) {
    radio.addEventListener("change", () => {
      state.metric = radio.value;
      if (map.getLayer("grids-fill")) map.setPaintProperty("grids-fill", "fill-color", gridColor());
    });
  }
  $("rank-by").addEventListener("change", loadRanking);
  map.on("click", "grids-fill", (event) => selectGrid(event.features[0].properties.code));
  map.on("mouseenter", "grids-fill", () => (map.getCanvas().style.cursor = "pointer"));
  map.on("mouseleave", "grids-fill", () => (map.getCanvas().style.cursor = ""));
}

function describeKey(rejected) {
  const status = $("key-status");
  if (rejected) {
    status.className = "error";
    status.textContent = `The key was rejected (${rejected}); showing public layers only.`;
    return;
  }
  if (!state.key) return;
  const role = can("cameras") ? "planner or admin" : can("incidents") ? "dispatcher"
    : can("coverage") ? "viewer" : "public";
  status.className = "";
  status.textContent = `Key in use: ${role} layers.`;
}

async function start() {
  wireControls();
  let rejected = null;
  let listing;
  try {
    listing = await api("collections");
    state.keyAccepted = true;
  } catch (error) {
    if (!state.key || (error.status !== 401 && error.status !== 403)) throw error;
    rejected = error.message;
    state.keyAccepted = false;
    listing = await api("collections");
  }
  state.readable = new Set(listing.collections.map((c) => c.id));
  // H3 coverage cells have tiles only (no items): whoever reads coverage reads them.
  if (state.readable.has("coverage")) state.readable.add("coverage_h3");
  describeKey(rejected);
  renderToggles();
  renderLegend();
  const grids = listing.collections.find((c) => c.id === "grids");
  const bbox = grids?.extent?.spatial?.bbox?.[0];
  await loaded;
  addLayers();
  if (bbox) map.fitBounds([[bbox[0], bbox[1]], [bbox[2], bbox[3]]], { padding: 20, duration: 0 });
  map.once("idle", () => {
    document.body.dataset.ready = "true";
  });
  loadRanking();
}

start().catch((error) => {
  console.error(error);
  show($("key-status"), h("span", { class: "error" }, `The map could not start: ${error.message}`));
});
