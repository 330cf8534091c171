// Map: the distances (and optionally geodesic barriers) between a set of networks as a heatmap, and a 2-D
// picture of the set by classical MDS of the geodesic distances. Click two points to compare them.
import { runJob } from "../api.js";
import { MultiPicker } from "../picker.js";
import { clearPlot, drawPlot, plotBox } from "../plots.js";
import { go, setState } from "../router.js";
import { kindFields, updateFields } from "../forms.js";
import { byId, distanceLabel, ensureNetworks, onNetworks } from "../store.js";
import { classicalMDS } from "../stats.js";
import { GROUP_BY, byPairType, groupsOf } from "../groups.js";
import { $, clearProgress, colorOf, esc, idList, num, pct, ptext, samplerOf, setError, showJobProgress, toCSV, traitsOf } from "../util.js";

const quantity = (key) => (key === "barriers" ? "geodesic barrier (max train error)" : distanceLabel(key));

let root;
let picker;
let run = 0;
let lastKey = "";
let clicked = null;  // the first point clicked on the map, waiting for the second
const state = { nets: [], dist: "geodesic", color: "sampler", group: "sampler", barriers: false, points: 11, result: null, job: null };

const urlParams = () => ({ nets: state.nets, dist: state.dist, color: state.color, group: state.group === "sampler" ? "" : state.group, barriers: state.barriers ? 1 : "", points: state.barriers ? state.points : "" });
const saveView = () => setState("map", urlParams());

async function runMatrix(ev) {
  if (ev) ev.preventDefault();
  state.nets = picker.selected.slice();
  state.barriers = $("#map-barriers", root).checked;
  state.points = Number($("#map-points", root).value) || 11;
  const err = $("#map-error", root);
  setError(err, "");
  if (state.nets.length < 2) { setError(err, "Choose at least two networks."); return; }
  setState("map", urlParams(), { push: true });
  lastKey = JSON.stringify({ nets: state.nets, barriers: state.barriers, points: state.points });
  const mine = ++run;
  state.result = null;
  clicked = null;
  clearProgress($("#map-progress", root));
  clearPlot("map-heatmap");
  clearPlot("map-mds");
  const params = { networks: state.nets, barriers: state.barriers };
  if (state.barriers) params.points = state.points;
  const bn = $("#map-bn", root);  // shown only for BatchNorm networks (the kind's applies_to)
  if (state.barriers && bn && !bn.closest("label").hidden && bn.value !== "recompute") params.bn = bn.value;
  try {
    const job = await runJob("matrix", params, (j) => { if (mine === run) showJobProgress($("#map-progress", root), j, `distance matrix of ${state.nets.length} networks`); });
    if (mine !== run) return;
    state.result = job.result;
    state.job = job;
    // barriers asked for (ticked and computed): the heatmap and the pair types show them
    if (state.barriers && job.result.barriers && (ev || state.showBarriers)) { state.dist = "barriers"; saveView(); }
    fillDistanceChoice();
    draw();
  } catch (e) {
    if (mine === run) setError(err, e.message);
  }
}

function matrices() {
  const r = state.result;
  const out = { ...(r.distances || {}) };
  if (r.barriers) out.barriers = r.barriers;
  return out;
}

function fillDistanceChoice() {
  const keys = Object.keys(matrices());
  if (!keys.includes(state.dist)) state.dist = keys.includes("geodesic") ? "geodesic" : keys[0];
  $("#map-dist", root).innerHTML = keys.map((k) => `<option value="${k}" ${k === state.dist ? "selected" : ""}>${esc(quantity(k))}</option>`).join("");
}

const names = () => state.result.networks.map((id, i) => `${state.result.names ? state.result.names[i] : byId(id) ? byId(id).name : ""} #${id}`);

function draw() {
  const r = state.result;
  const ids = r.networks;
  const labels = names();
  const z = matrices()[state.dist];
  const isBarrier = state.dist === "barriers";
  const shown = isBarrier ? z.map((row) => row.map((v) => (v === null ? null : 100 * v))) : z;
  // the columns are labelled by id (rotated names ran into each other), the rows by name (by id on a narrow
  // plot); the hover names both networks
  const narrow = document.getElementById("map-heatmap").clientWidth < 600;
  const short = ids.map((id) => `#${id}`);
  drawPlot("map-heatmap", [{
    type: "heatmap", z: shown, x: short, y: narrow ? short : labels.map(ptext), colorscale: "Viridis", reversescale: false,
    customdata: ids.map((a, i) => ids.map((b, j) => [a, b, ptext(labels[i]), ptext(labels[j])])),
    colorbar: { title: { text: isBarrier ? "barrier %" : quantity(state.dist), side: "right" } },
    hovertemplate: `%{customdata[2]} ↔ %{customdata[3]}<br>${esc(quantity(state.dist))} = %{z:.5g}${isBarrier ? "%" : ""}<extra>click: compare</extra>`,
  }], {
    title: { text: `${quantity(state.dist)} between ${ids.length} networks` },
    xaxis: { type: "category", tickangle: 0, automargin: true, title: { text: "network (id)" } },
    yaxis: { type: "category", automargin: true, autorange: "reversed" }, height: 460,
  }, { name: `map-${state.dist}`, csv: toCSV(Object.fromEntries([["network", labels], ...labels.map((l, j) => [l, z.map((row) => row[j])])])), json: r });
  drawMDS();
  drawPairs();
  $("#map-note", root).dataset.job = state.job.id;
  $("#map-note", root).textContent = `Matrix job ${state.job.id}${state.job.cached ? " (answered from the cache)" : ""}. Click a heatmap cell, or two points of the map, to compare two networks along their paths.`;
  const heat = document.getElementById("map-heatmap");
  if (!heat.dataset.clicks) {
    heat.dataset.clicks = "1";
    heat.on("plotly_click", (ev) => {
      const [a, b] = ev.points[0].customdata;
      if (a !== b) go("compare", { a, b });
    });
  }
}

// Classical MDS of the geodesic distances (hamming for binary networks), coloured by sampler or test error.
function drawMDS() {
  const r = state.result;
  const ids = r.networks;
  const key = r.distances.geodesic ? "geodesic" : r.distances.hamming ? "hamming" : Object.keys(r.distances)[0];
  const { coords, eigenvalues } = classicalMDS(r.distances[key], 2);
  state.mds = { key, coords, eigenvalues };
  const labels = names();
  const testErr = ids.map((id, i) => (r.test_error ? r.test_error[i] : byId(id) ? byId(id).test_error : null));
  const sampler = ids.map((id, i) => (r.optimizer && r.optimizer[i]) || samplerOf(byId(id)));
  const point = (i) => ({ id: ids[i], name: labels[i], x: coords[i][0], y: coords[i][1], sampler: sampler[i], test_error: testErr[i] });
  const all = ids.map((_, i) => point(i));
  let traces;
  // the names are placed after drawing, where they do not overprint (placeLabels); the hover always has them
  const hover = `%{customdata[3]}<br>sampler %{customdata[1]}<br>test error %{customdata[2]}<extra>click two points to compare</extra>`;
  const custom = (p) => [p.id, ptext(p.sampler), pct(p.test_error), ptext(p.name)];
  if (state.color === "test_error") {
    traces = [{ x: all.map((p) => p.x), y: all.map((p) => p.y), text: all.map(() => " "), customdata: all.map(custom), mode: "markers+text", textposition: "top center", cliponaxis: false,
      name: "networks", marker: { size: 14, color: all.map((p) => (p.test_error === null ? null : 100 * p.test_error)), colorscale: [[0, "#15803d"], [0.5, "#facc15"], [1, "#b91c1c"]],
        colorbar: { title: { text: "test error %", side: "right" } }, line: { color: "#333", width: 1 } }, hovertemplate: hover }];
  } else {
    traces = [...new Set(sampler)].map((s) => {
      const group = all.filter((p) => p.sampler === s);
      return { x: group.map((p) => p.x), y: group.map((p) => p.y), text: group.map(() => " "), customdata: group.map(custom), mode: "markers+text",
        textposition: "top center", cliponaxis: false, name: ptext(s), marker: { size: 14, color: colorOf(s), line: { color: "white", width: 1 } }, hovertemplate: hover };
    });
  }
  if (clicked !== null) {
    const p = all.find((q) => q.id === clicked);
    if (p) traces.push({ x: [p.x], y: [p.y], mode: "markers", name: "first pick", showlegend: false, hoverinfo: "skip", marker: { size: 24, color: "rgba(0,0,0,0)", line: { color: "#111", width: 2 } } });
  }
  const explained = eigenvalues.map((v) => Math.max(v, 0));
  // room around the points for their names
  const padded = (vals) => { const lo = Math.min(...vals), hi = Math.max(...vals), pad = 0.25 * (hi - lo) || 1; return [lo - pad, hi + pad]; };
  const drawn = drawPlot("map-mds", traces, {
    title: { text: `Classical MDS of the ${quantity(key)} distances` },
    xaxis: { title: { text: `MDS 1 (eigenvalue ${num(explained[0], 3)})` }, zeroline: false, range: padded(all.map((p) => p.x)) },
    yaxis: { title: { text: `MDS 2 (eigenvalue ${num(explained[1], 3)})` }, zeroline: false, scaleanchor: "x", scaleratio: 1, range: padded(all.map((p) => p.y)) },
    margin: { t: 40, r: 40, b: 100, l: 60 },
    height: 460, legend: { title: { text: state.color === "test_error" ? "" : "sampler" }, orientation: "h", yref: "container", y: 0.01, yanchor: "bottom", x: 0 },
  }, { name: "map-mds", csv: toCSV({ network_id: all.map((p) => p.id), name: all.map((p) => p.name), sampler: all.map((p) => p.sampler), test_error: all.map((p) => p.test_error), mds1: all.map((p) => p.x), mds2: all.map((p) => p.y) }), json: { distance: key, eigenvalues, points: all } });
  const mds = document.getElementById("map-mds");
  drawn.then(() => placeLabels(mds, all)).catch(() => {});
  if (!mds.dataset.clicks) {
    mds.dataset.clicks = "1";
    mds.on("plotly_click", (ev) => {
      const p = ev.points[0];
      if (!p || !p.customdata) return;
      pick(p.customdata[0]);
    });
  }
  fillPairChoice();
}

// Each point's name goes beside it where it overlaps no other name and no other point and stays inside the
// plotting area (tried in turn: above, below, right, left, and the corners); a name that fits nowhere beside
// its point goes further out, joined to it by a thin line (labelFar), so that every point is named.
const PLACES = [["top center", 0, -1], ["bottom center", 0, 1], ["middle right", 1, 0], ["middle left", -1, 0],
  ["top right", 1, -1], ["top left", -1, -1], ["bottom right", 1, 1], ["bottom left", -1, 1]];
let measurer;
function textWidth(text) {
  measurer = measurer || document.createElement("canvas").getContext("2d");
  measurer.font = "12px system-ui, -apple-system, 'Segoe UI', sans-serif";
  return measurer.measureText(text).width;
}

const hit = (a, b) => a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
const within = (box, area) => !area || (box.x0 >= area.x0 && box.x1 <= area.x1 && box.y0 >= area.y0 && box.y1 <= area.y1);

export function labelPlaces(points, radius = 8, height = 15, gap = 2, area = null, placed = []) {
  const marks = points.map((p) => ({ x0: p.px - radius, x1: p.px + radius, y0: p.py - radius, y1: p.py + radius }));
  return points.map((p, i) => {
    const w = p.width + 4;
    for (const [where, dx, dy] of PLACES) {
      const cx = p.px + dx * (radius + gap + w / 2), cy = p.py + dy * (radius + gap + height / 2);
      const box = { x0: cx - w / 2, x1: cx + w / 2, y0: cy - height / 2, y1: cy + height / 2 };
      if (within(box, area) && !placed.some((b) => hit(b, box)) && !marks.some((m, j) => j !== i && hit(m, box))) { placed.push(box); return where; }
    }
    return null;
  });
}

// Where the name of a point with no room beside it goes: the nearest free spot further out (rings of
// growing radius, 16 directions), as an offset {dx, dy} in pixels of the name's centre from the point.
export function labelFar(p, points, placed, area, radius = 8, height = 15) {
  const w = p.width + 4;
  const marks = points.map((q) => ({ x0: q.px - radius, x1: q.px + radius, y0: q.py - radius, y1: q.py + radius }));
  for (const d of [30, 42, 56, 72, 90, 110, 135, 160]) {
    for (let k = 0; k < 16; k++) {
      const angle = -Math.PI / 2 + (k * Math.PI) / 8;  // from straight above, clockwise
      const dx = Math.round(d * Math.cos(angle)), dy = Math.round(d * Math.sin(angle));
      const box = { x0: p.px + dx - w / 2, x1: p.px + dx + w / 2, y0: p.py + dy - height / 2, y1: p.py + dy + height / 2 };
      if (within(box, area) && !placed.some((b) => hit(b, box)) && !marks.some((m) => hit(m, box))) { placed.push(box); return { dx, dy }; }
    }
  }
  return null;
}

function placeLabels(gd, all) {
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const byTrace = gd.data.map((t) => (t.customdata || []).map((c) => all.find((p) => p.id === c[0])).filter(Boolean));
  const flat = byTrace.flat().map((p) => ({ id: p.id, name: p.name, x: p.x, y: p.y, px: xa.l2p(p.x), py: ya.l2p(p.y), width: textWidth(p.name) }));
  const area = { x0: 2, x1: xa._length - 2, y0: 2, y1: ya._length - 2 };  // the plotting area, in its own pixels
  const placed = [];
  const where = new Map(labelPlaces(flat, 8, 15, 2, area, placed).map((w, i) => [flat[i].id, w]));
  const far = flat.filter((p) => !where.get(p.id)).map((p) => ({ p, at: labelFar(p, flat, placed, area) })).filter((f) => f.at);
  // (the traces were drawn with a blank name each: Plotly 4 draws no text restyled into a trace drawn without any)
  const data = gd.data.map((t, i) => (byTrace[i].length ? { ...t, text: byTrace[i].map((p) => (where.get(p.id) ? ptext(p.name) : "")),
    textposition: byTrace[i].map((p) => where.get(p.id) || "top center") } : t));
  const annotations = far.map(({ p, at }) => ({ x: p.x, y: p.y, xref: "x", yref: "y", text: ptext(p.name), showarrow: true, arrowhead: 0,
    arrowwidth: 1, arrowcolor: "#9ca3af", standoff: 8, ax: at.dx, ay: at.dy, font: { size: 12, color: "#444" }, name: "far label" }));
  return Plotly.react(gd, data, { ...gd.layout, annotations });
}

// The shown quantity (a distance, or the barrier) for every pair, by pair type (RSGD–RSGD, RSGD–SGD, ...,
// as in the paper's barrier figure): one box per type with all its pairs as points.
function drawPairs() {
  const r = state.result;
  const ids = r.networks;
  const z = matrices()[state.dist];
  const isBarrier = state.dist === "barriers";
  const chosen = ids.map((id) => byId(id)).filter(Boolean);
  const label = (id, i) => {
    if (state.group === "sampler" && r.optimizer && r.optimizer[i]) return r.optimizer[i];
    return groupsOf(byId(id), state.group || "sampler", chosen)[0];
  };
  const labels = ids.map(label);
  const groups = byPairType(isBarrier ? z.map((row) => row.map((v) => (v === null ? null : 100 * v))) : z, labels);
  const traces = [...groups.entries()].map(([type, values]) => ({
    type: "box", y: values, name: `${ptext(type)} (${values.length})`, boxpoints: "all", jitter: 0.4, pointpos: 0, boxmean: "sd",
    marker: { size: 6 }, meta: type, hovertemplate: `${ptext(type)}: %{y:.4g}${isBarrier ? "%" : ""}<extra></extra>`,
  }));
  const what = quantity(state.dist);
  const rows = [...groups.entries()].map(([type, values]) => {
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
    return { type, n: values.length, mean, std };
  });
  drawPlot("map-pairs", traces, {
    title: { text: `${what} by pair type (grouped by ${state.group || "sampler"})` }, showlegend: false,
    // (a narrow plot stands the pair types upright: slanted, their boxes ran into each other)
    yaxis: { title: { text: isBarrier ? "barrier (max train error, %)" : what }, rangemode: "tozero" },
    xaxis: { automargin: true, ...(document.getElementById("map-pairs").clientWidth < 600 ? { tickangle: -90 } : {}) },
    height: 380, margin: { t: 40, r: 20, b: 80, l: 60 },
  }, { name: `map-pairs-${state.dist}`, csv: toCSV({ pair_type: rows.map((x) => x.type), n: rows.map((x) => x.n), mean: rows.map((x) => x.mean), std: rows.map((x) => x.std) }), json: { quantity: state.dist, group_by: state.group, pairs: Object.fromEntries(groups) } });
  $("#map-pairs-table", root).innerHTML = `<table class="data compact"><thead><tr><th>pair type</th><th class="num">pairs</th><th class="num">mean</th><th class="num">± std</th></tr></thead><tbody>${
    rows.map((x) => `<tr data-pair="${esc(x.type)}"><th scope="row">${esc(x.type)}</th><td class="num">${x.n}</td><td class="num" data-value="${x.mean}">${isBarrier ? `${num(x.mean, 4)}%` : num(x.mean, 5)}</td><td class="num" data-value="${x.std}">${isBarrier ? `${num(x.std, 3)}%` : num(x.std, 3)}</td></tr>`).join("")}</tbody></table>`;
}

function pick(id) {
  if (clicked === null || clicked === id) {
    clicked = id;
    const n = byId(id);
    $("#map-pick", root).textContent = `A = ${n ? n.name : ""} #${id}; click a second point to compare.`;
    drawMDS();
    return;
  }
  const a = clicked;
  clicked = null;
  go("compare", { a, b: id });
}

function fillPairChoice() {
  const options = names().map((l, i) => `<option value="${state.result.networks[i]}">${esc(l)}</option>`).join("");
  $("#map-pair-a", root).innerHTML = options;
  $("#map-pair-b", root).innerHTML = options;
  if (state.result.networks.length > 1) $("#map-pair-b", root).selectedIndex = 1;
  $("#map-pair", root).hidden = false;
}

export default {
  init(section) {
    root = section;
    section.innerHTML = `
      <h2>Map of a set of networks</h2>
      <form id="map-form">
        <div id="map-picker"></div>
        <div class="row">
          <span id="map-params" class="params"></span>
          <button id="run-map" type="submit">Compute the map</button>
        </div>
        <p id="map-error" class="error" role="alert" hidden></p>
      </form>
      <div id="map-progress" class="progress-list" hidden></div>
      <div class="row">
        <label>Heatmap of <select id="map-dist"></select></label>
        <label>Colour the map by <select id="map-color"><option value="sampler">sampler</option><option value="test_error">test error</option></select></label>
        <label title="pairs of networks are typed by the groups of their two networks">Pair types by <select id="map-group">${GROUP_BY.filter(([v]) => v).map(([v, l]) => `<option value="${v}">${l}</option>`).join("")}</select></label>
        <span id="map-pick" class="hint" aria-live="polite"></span>
      </div>
      <div class="two-col">
        <div>${plotBox("map-heatmap")}</div>
        <div>${plotBox("map-mds")}</div>
      </div>
      <div class="two-col wide-left"><div>${plotBox("map-pairs")}</div><div id="map-pairs-table" class="summary"></div></div>
      <p id="map-note" class="hint"></p>
      <form id="map-pair" class="row" hidden>
        <label>Compare <select id="map-pair-a"></select></label><label>with <select id="map-pair-b"></select></label>
        <button type="submit">Open in Compare</button>
      </form>`;
    picker = new MultiPicker($("#map-picker", root), { name: "map-nets" });
    $("#map-form", root).addEventListener("submit", runMatrix);
    $("#map-dist", root).addEventListener("change", (ev) => { state.dist = ev.target.value; saveView(); if (state.result) draw(); });
    $("#map-color", root).addEventListener("change", (ev) => { state.color = ev.target.value; saveView(); if (state.result) drawMDS(); });
    $("#map-group", root).addEventListener("change", (ev) => { state.group = ev.target.value; saveView(); if (state.result) drawPairs(); });
    $("#map-pair", root).addEventListener("submit", (ev) => {
      ev.preventDefault();
      const a = $("#map-pair-a", root).value, b = $("#map-pair-b", root).value;
      if (a !== b) go("compare", { a, b });
    });
    onNetworks(() => picker.render());
  },

  async enter(params) {
    await ensureNetworks(idList(params.nets));
    const box = $("#map-params", root);
    let fresh;
    try { fresh = await kindFields(box, "matrix", "map"); } catch (e) {
      setError($("#map-error", root), `Could not read the job kinds: ${e.message}`); return;
    }
    if (fresh) {
      box.addEventListener("change", () => updateFields(box, traitsOf(byId(picker.selected[0]))));
    }
    state.nets = idList(params.nets);
    state.dist = params.dist || (params.barriers === "1" ? "barriers" : "geodesic");
    state.showBarriers = params.barriers === "1" && !params.dist;
    state.color = params.color === "test_error" ? "test_error" : "sampler";
    state.group = ["tag", "seed"].includes(params.group) ? params.group : "sampler";
    $("#map-group", root).value = state.group;
    state.barriers = params.barriers === "1";
    state.points = Number(params.points) || 11;
    picker.set(state.nets, { silent: true });
    $("#map-barriers", root).checked = state.barriers;
    $("#map-points", root).value = state.points;
    updateFields(box, traitsOf(byId(state.nets[0])));
    $("#map-color", root).value = state.color;
    const key = JSON.stringify({ nets: state.nets, barriers: state.barriers, points: state.points });
    if (state.nets.length >= 2 && key !== lastKey) await runMatrix();
    else if (state.result) { fillDistanceChoice(); draw(); }
  },
};
