// Compare two networks: error along linear, linear-aligned, geodesic, bent (and Hamming) paths, overlaid,
// with the barrier of each marked, and their distances.
import { runJob } from "../api.js";
import { fillSelect } from "../picker.js";
import { clearPlot, drawPlot, plotBox, wrapParts } from "../plots.js";
import { setState } from "../router.js";
import { byId, distanceHelp, distanceLabel, ensureNetworks, jobKinds, onNetworks, store } from "../store.js";
import { enterMany, initMany, manyParams, renderManyPicker } from "./compare_many.js";
import { $, $$, archText, clearProgress, esc, idList, isBinary, num, pathColor, pct, ptext, setError, showJobProgress, toCSV } from "../util.js";

export const PATH_TYPES = [
  { type: "linear", label: "linear", help: "straight line between the raw networks", real: true },
  { type: "linear_aligned", label: "linear-aligned", help: "straight line after aligning B's hidden units to A's: permuted, BatchNorm units sign-flipped to A's gamma signs (raw scales kept)", real: true },
  { type: "geodesic", label: "geodesic-aligned", help: "geodesic on the product of spheres between the canonical forms, B aligned to A", real: true },
  { type: "bend", label: "single bend", help: "a midpoint trained to low error, joined to A and B by geodesics (slower: trains a network)", real: true },
  { type: "hamming", label: "hamming", help: "random shortest paths in Hamming space between the aligned sign patterns (binary networks)", real: false },
];
const typeLabel = (t) => (PATH_TYPES.find((p) => p.type === t) || { label: t }).label;

let root;
let run = 0;  // each run has a number; results of an older run are dropped
let lastKey = "";
const state = { a: null, b: null, types: ["linear", "geodesic"], points: 21, bn: "recompute", variant: "geodesic", epochs: "", lr: "", results: {}, errors: {}, jobs: {}, distances: null };

function readForm() {
  state.a = Number($("#compare-a", root).value) || null;
  state.b = Number($("#compare-b", root).value) || null;
  state.types = $$("input[name='path-type']:checked", root).filter((c) => !c.disabled).map((c) => c.value);
  state.points = Number($("#path-points", root).value);
  state.bn = $("#path-bn", root).value;
  state.variant = $("#bend-variant", root).value;
  state.epochs = $("#bend-epochs", root).value.trim();
  state.lr = $("#bend-lr", root).value.trim();
}

const urlParams = () => ({ ...manyParams(), a: state.a, b: state.b, types: state.types, points: state.points,
  bn: state.bn === "recompute" ? "" : state.bn, variant: state.types.includes("bend") && state.variant !== "geodesic" ? state.variant : "",
  epochs: state.types.includes("bend") ? state.epochs : "", lr: state.types.includes("bend") ? state.lr : "" });

// what the main paths were run with (the several-Bs panel has its own key)
const mainKey = () => { const { bs, btype, bpoints, bgroup, ...main } = urlParams(); return JSON.stringify(main); };

// Which path types fit A: Hamming for binary networks, the others for real ones.
function updateTypes() {
  const a = byId($("#compare-a", root).value);
  const binary = isBinary(a);
  $$("input[name='path-type']", root).forEach((c) => {
    const spec = PATH_TYPES.find((p) => p.type === c.value);
    c.disabled = !!a && spec.real === binary;
    c.closest("label").classList.toggle("disabled", c.disabled);
  });
  $("#bend-options", root).hidden = !$("input[value='bend']", root).checked;
  const ready = $("#compare-a", root).value && $("#compare-b", root).value;
  $("#run-path", root).disabled = !ready;
}

function fillPickers() {
  const filter = $("#compare-search", root).value.trim();
  fillSelect($("#compare-a", root), state.a ?? undefined, filter);
  const a = byId($("#compare-a", root).value);
  // B must be another network of A's architecture on A's data set: the others are greyed, saying why
  fillSelect($("#compare-b", root), state.b ?? undefined, filter, { reason: (n) => (a ? mismatch(a, n) : "") });
  updateTypes();
}

// JSON with its keys sorted, so that two equal specs compare equal whatever their key order
const canon = (v) => (Array.isArray(v) ? `[${v.map(canon).join(",")}]` : v && typeof v === "object"
  ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(",")}}` : JSON.stringify(v));

// Why B cannot be compared with A ("" when it can): paths and distances need the same architecture and data set.
export function mismatch(a, b) {
  if (!a || !b) return "";
  if (a.id === b.id) return "this is A";
  if (canon(a.architecture) !== canon(b.architecture)) return `another architecture (${archText(b.architecture)}; A is ${archText(a.architecture)})`;
  if (a.dataset !== b.dataset) return `another data set (${b.dataset}; A is on ${a.dataset})`;
  if (canon(a.dataset_options || {}) !== canon(b.dataset_options || {})) return "other data set options than A's";
  return "";
}

function pathParams(type) {
  const p = { a: state.a, b: state.b, type, points: state.points, bn: state.bn };
  if (type === "bend") {
    p.variant = state.variant;
    if (state.epochs) p.epochs = Number(state.epochs);
    if (state.lr) p.lr = Number(state.lr);
  }
  return p;
}

async function runAll(ev) {
  if (ev) ev.preventDefault();
  readForm();
  const err = $("#path-error", root);
  setError(err, "");
  if (!state.a || !state.b) { setError(err, "Choose two networks, A and B."); return; }
  if (!state.types.length) { setError(err, "Choose at least one path type."); return; }
  const why = mismatch(byId(state.a), byId(state.b));
  if (why) {  // said once, before any job (the API would refuse each path type and the distances alike)
    state.results = {}; state.errors = {}; state.jobs = {};
    clearPlot("path-plot"); clearPlot("loss-plot");
    $("#path-summary", root).innerHTML = ""; $("#distances", root).innerHTML = "";
    setError(err, `B (#${state.b}) cannot be compared with A (#${state.a}): ${why}. Choose another B.`);
    return;
  }
  const pts = $("#path-points", root);  // bounds from the path kind's declaration
  if (!(state.points >= Number(pts.min) && state.points <= Number(pts.max))) { setError(err, `Points along each path: ${pts.min} to ${pts.max}.`); return; }
  setState("compare", urlParams(), { push: true });
  lastKey = mainKey();
  const mine = ++run;
  state.results = {};
  state.errors = {};
  state.jobs = {};
  state.distances = null;
  clearProgress($("#path-progress", root));
  clearPlot("path-plot");
  clearPlot("loss-plot");
  renderSummary();
  $("#distances", root).innerHTML = "";
  const progress = $("#path-progress", root);
  const follow = (label) => (j) => { if (mine === run) showJobProgress(progress, j, label); };
  const distance = runJob("distance", { a: state.a, b: state.b }, follow("distances")).then((job) => {
    if (mine !== run) return;
    state.distances = job.result;
    state.distanceJob = job;
    renderDistances();
  }).catch((e) => { if (mine === run) $("#distances", root).innerHTML = `<p class="error" role="alert">Distances: ${esc(e.message)}</p>`; });
  const paths = state.types.map((type) => runJob("path", pathParams(type), follow(`${typeLabel(type)} path`)).then((job) => {
    if (mine !== run) return;
    state.results[type] = job.result;
    state.jobs[type] = job;
    draw();
  }).catch((e) => {
    if (mine !== run) return;
    state.errors[type] = e.message;
    renderSummary();
  }));
  await Promise.all([distance, ...paths]);
  if (mine === run && Object.keys(state.errors).length && !Object.keys(state.results).length) {
    // one line per different reason (every path type refused for the same reason: said once)
    const reasons = [...new Set(Object.values(state.errors))];
    setError(err, reasons.map((m) => {
      const types = Object.keys(state.errors).filter((t) => state.errors[t] === m).map(typeLabel);
      return `${types.length === state.types.length && types.length > 1 ? "every path" : types.join(", ")}: ${m}`;
    }).join(" · "));
  }
}

function draw() {
  const order = state.types.filter((t) => state.results[t]);
  const errTraces = [];
  const lossTraces = [];
  for (const type of order) {
    const r = state.results[type];
    const color = pathColor(type);
    const label = typeLabel(type);
    errTraces.push(
      { x: r.t, y: r.train_error.map((v) => 100 * v), name: `train error · ${label}`, mode: "lines+markers", marker: { size: 5 },
        line: { color }, legendgroup: type, hovertemplate: `${label}, t = %{x:.3f}<br>train error %{y:.3f}%<extra></extra>` },
      { x: r.t, y: r.test_error.map((v) => 100 * v), name: `test error · ${label}`, mode: "lines+markers", marker: { size: 5, symbol: "circle-open" },
        line: { color, dash: "dot" }, legendgroup: type, hovertemplate: `${label}, t = %{x:.3f}<br>test error %{y:.3f}%<extra></extra>` });
    const i = r.train_error.indexOf(Math.max(...r.train_error));
    // the barrier: a star on its curve; its value is written above the plot (labels on the curves overlapped)
    errTraces.push({ x: [r.t[i]], y: [100 * r.barrier], name: `barrier · ${label}`, mode: "markers", legendgroup: type, showlegend: false,
      marker: { size: 13, symbol: "star", color, line: { color: "white", width: 1 } }, cliponaxis: false,
      hovertemplate: `${label}: barrier (max train error) %{y:.3f}%<br>at t = %{x:.3f}; above the endpoints' mean by ${pct(r.barrier_excess)}<extra></extra>` });
    if (r.train_loss) {
      lossTraces.push(
        { x: r.t, y: r.train_loss, name: `train loss · ${label}`, mode: "lines", line: { color }, legendgroup: type },
        { x: r.t, y: r.test_loss, name: `test loss · ${label}`, mode: "lines", line: { color, dash: "dot" }, legendgroup: type });
    }
  }
  // the bend of a single-bend path sits at t = 1/2; its label sits in the top margin, above the curves
  const shapes = [], annotations = [];
  if (order.includes("bend")) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: 0.5, x1: 0.5, y0: 0, y1: 1, line: { color: pathColor("bend"), width: 1, dash: "dot" } });
    annotations.push({ xref: "x", yref: "paper", x: 0.5, y: 1, text: "bend", showarrow: false, yanchor: "bottom", font: { color: pathColor("bend"), size: 11 } });
  }
  // one line of barrier values between the title and the plot, each in its path's colour (never on the data)
  // (broken into lines on a narrow plot: every path's barrier stays in the figure)
  if (order.length) {
    const parts = order.map((t) => `<span style="color:${pathColor(t)}">${ptext(typeLabel(t))} ${pct(state.results[t].barrier)}</span>`);
    const room = (document.getElementById("path-plot").clientWidth || 600) - 80;
    annotations.push({ xref: "paper", yref: "paper", x: 0, xanchor: "left", y: 1, yanchor: "bottom", yshift: 18, showarrow: false, align: "left",
      name: "barriers", font: { size: 12 }, text: wrapParts(["★ barrier:", ...parts.map((p, i) => (i < parts.length - 1 ? `${p} ·` : p))], room, " ").join("<br>") });
  }
  const a = byId(state.a), b = byId(state.b);
  const title = `${ptext(a ? a.name : `#${state.a}`)} (t = 0) → ${ptext(b ? b.name : `#${state.b}`)} (t = 1)`;
  const rows = [];
  order.forEach((type) => {
    const r = state.results[type];
    r.t.forEach((t, i) => rows.push({ type, t, train_error: r.train_error[i], test_error: r.test_error[i], train_loss: r.train_loss ? r.train_loss[i] : null, test_loss: r.test_loss ? r.test_loss[i] : null }));
  });
  // the networks themselves (their own BatchNorm statistics), beside the path's ends (recomputed ones)
  const ends = storedEnds();
  if (ends) {
    for (const [end, t] of [["a", 0], ["b", 1]]) {
      const e = ends[end];
      rows.push({ type: `${end.toUpperCase()} as stored (own BatchNorm statistics)`, t, train_error: e.train_error, test_error: e.test_error, train_loss: e.train_loss, test_loss: e.test_loss });
    }
  }
  const csv = toCSV(Object.fromEntries(["type", "t", "train_error", "test_error", "train_loss", "test_loss"].map((k) => [k, rows.map((r) => r[k])])));
  const json = { a: state.a, b: state.b, paths: Object.fromEntries(order.map((t) => [t, state.results[t]])), distances: state.distances };
  drawPlot("path-plot", errTraces, {
    title: { text: `Error along the paths: ${title}`, y: 1, yref: "container", yanchor: "top", pad: { t: 10 } },
    margin: { t: 82, r: 30, b: 100, l: 60 },
    xaxis: { title: { text: "position t along the path (A → B)" }, range: [-0.03, 1.03] },
    yaxis: { title: { text: "error (%)" }, rangemode: "tozero" },
    height: 430, shapes, annotations,
  }, { name: `compare-${state.a}-${state.b}`, csv, json });
  if (lossTraces.length) {
    drawPlot("loss-plot", lossTraces, {
      title: { text: "Loss along the paths" }, height: 340,
      xaxis: { title: { text: "position t along the path (A → B)" } }, yaxis: { title: { text: "cross-entropy loss" }, type: "log" },
    }, { name: `compare-${state.a}-${state.b}-loss`, csv, json });
  }
  renderSummary();
}

function storedEnds() {
  const r = state.types.map((t) => state.results[t]).find((x) => x && x.ends);
  return r ? r.ends : null;
}

// one line: the networks' own errors against the path's ends, and why they differ
function endsLine() {
  const first = state.types.map((t) => state.results[t]).find((x) => x && x.ends);
  if (!first) return "";
  const { a, b } = first.ends;
  const why = first.bn === "recompute"
    ? " They differ where BatchNorm statistics are recomputed on the training data at every point of the path (the default), the ends included; the barrier and its excess are measured on the path's own curve."
    : "";
  return `<p id="path-ends" class="hint small">As stored (their own BatchNorm statistics, as in the Networks table): A train ${pct(a.train_error)}, test ${pct(a.test_error)}; B train ${pct(b.train_error)}, test ${pct(b.test_error)}. On the ${esc(typeLabel(state.types.find((t) => state.results[t] === first)))} path: t = 0 train ${pct(first.train_error[0])}, t = 1 train ${pct(first.train_error[first.train_error.length - 1])}.${why}</p>`;
}

function renderSummary() {
  const messages = Object.values(state.errors);
  const shared = [...new Set(messages)].filter((m) => messages.filter((x) => x === m).length > 1);
  const rows = state.types.map((type) => {
    const r = state.results[type];
    const job = state.jobs[type];
    if (state.errors[type]) {  // a reason shared by several paths is written once, under the table
      const shared = Object.values(state.errors).filter((m) => m === state.errors[type]).length > 1;
      return `<tr data-type="${type}"><th scope="row">${esc(typeLabel(type))}</th><td colspan="4" class="error wrap" role="alert">${shared ? "failed (the reason is under the table)" : esc(state.errors[type])}</td></tr>`;
    }
    if (!r) return `<tr data-type="${type}"><th scope="row">${esc(typeLabel(type))}</th><td colspan="4" class="hint">computing…</td></tr>`;
    const i = r.train_error.indexOf(Math.max(...r.train_error));
    const mid = r.midpoint_network_id ? `<br><span class="hint small">midpoint <a href="#/network?id=${r.midpoint_network_id}">#${r.midpoint_network_id}</a>${r.midpoint_train_error !== undefined ? `, train error ${pct(r.midpoint_train_error)}` : ""}${r.epochs ? `, ${r.epochs} epochs` : ""}</span>` : "";
    return `<tr data-type="${type}"><th scope="row"><span class="swatch" style="background:${pathColor(type)}"></span>${esc(typeLabel(type))}${r.variant ? ` (${esc(r.variant)})` : ""}${mid}</th>
      <td class="num barrier" data-value="${r.barrier}" title="at t = ${num(r.t[i], 3)}">${pct(r.barrier)}</td><td class="num" data-value="${r.barrier_excess}">${pct(r.barrier_excess)}</td>
      <td class="num">${pct(Math.max(...r.test_error))}</td>
      <td class="job">job <a href="#/jobs?focus=${job.id}" data-job="${job.id}">${job.id}</a>${job.cached ? "<br><span class=\"hint small\">cached</span>" : ""}</td></tr>`;
  }).join("");
  $("#path-summary", root).innerHTML = state.types.length ? `
    <table class="data compact"><thead><tr><th>path</th><th class="num" title="maximum train error along the path">barrier</th>
    <th class="num" title="barrier minus the mean of the endpoints' train errors">excess</th>
    <th class="num" title="maximum test error along the path">max test</th><th>job</th></tr></thead><tbody>${rows}</tbody></table>${endsLine()}
    ${shared.map((m) => `<p class="error wrap">${esc(m)}</p>`).join("")}` : "";
}

function renderDistances() {
  const d = state.distances;
  const keys = [...Object.keys(store.distances), ...Object.keys(d).filter((k) => !(k in store.distances))];
  const items = keys.filter((key) => typeof d[key] === "number")
    .map((key) => `<tr data-distance="${key}"><th scope="row" title="${esc(distanceHelp(key))}">${esc(distanceLabel(key))}</th><td class="num" data-value="${d[key]}">${key === "n_parameters" ? d[key].toLocaleString("en") : num(d[key], 5)}</td></tr>`);
  $("#distances", root).innerHTML = `<h3>Distances between A and B</h3> <span class="hint small" data-job="${state.distanceJob.id}">job ${state.distanceJob.id}${state.distanceJob.cached ? " · cached" : ""}</span><table class="data compact"><tbody>${items.join("")}</tbody></table>
    <p class="hint small">Per parameter (‖θA − θB‖ / √N) unless stated; hover a name for its meaning.</p>`;
}

// The path kind's declaration (GET /api/job-kinds) sets the form's bounds, defaults, choices and help: path
// types the server does not offer are not offered, the bend's fields take its declared limits.
let bound = false;
async function bindCatalogue() {
  if (bound) return;
  let kind;
  try { kind = (await jobKinds()).path; } catch (_) { return; }  // the hand-written limits stay
  if (!kind) return;
  bound = true;
  const p = kind.params;
  const set = (el, spec) => {
    if (!el || !spec) return;
    if (spec.min !== undefined && spec.min !== null) el.min = spec.min;
    if (spec.max !== undefined && spec.max !== null) el.max = spec.max;
    if (spec.help) el.closest("label").title = spec.help;
  };
  set($("#path-points", root), p.points);
  set($("#bend-epochs", root), p.epochs);
  set($("#bend-lr", root), p.lr);
  if (p.epochs && p.epochs.default !== null && p.epochs.default !== undefined) $("#bend-epochs", root).placeholder = String(p.epochs.default);
  if (p.lr && p.lr.default !== null && p.lr.default !== undefined) $("#bend-lr", root).placeholder = String(p.lr.default);
  if (p.variant && p.variant.choices) {
    const names = { geodesic: "geodesic (paper)", garipov: "Garipov polychain" };
    $("#bend-variant", root).innerHTML = p.variant.choices.map((c) => `<option value="${esc(c)}">${esc(names[c] || c)}</option>`).join("");
  }
  if (p.bn && p.bn.choices) $("#path-bn", root).innerHTML = p.bn.choices.map((c) => `<option value="${esc(c)}">${esc(c)}</option>`).join("");
  const offered = p.type && p.type.choices ? p.type.choices : null;
  if (offered) $$("input[name='path-type']", root).forEach((c) => { c.closest("label").hidden = !offered.includes(c.value); });
}

export default {
  init(section) {
    root = section;
    section.innerHTML = `
      <h2>Compare two networks</h2>
      <form id="path-form" class="compare-form">
        <div class="row">
          <label>Search <input id="compare-search" type="search" placeholder="filter A and B"></label>
          <label>A (t = 0) <select id="compare-a"></select></label>
          <button type="button" id="compare-swap" class="secondary small" aria-label="swap A and B">⇄</button>
          <label>B (t = 1) <select id="compare-b"></select></label>
        </div>
        <div class="row">
          <fieldset class="inline"><legend>Paths</legend>
            ${PATH_TYPES.map((p) => `<label title="${esc(p.help)}"><input type="checkbox" name="path-type" value="${p.type}"> ${esc(p.label)}</label>`).join("")}
          </fieldset>
          <span id="bend-options" hidden><label title="geodesic: the paper's midpoint trained to low error, joined by geodesics; garipov: the bend trained on the path-averaged loss">Bend <select id="bend-variant"><option value="geodesic">geodesic (paper)</option><option value="garipov">Garipov polychain</option></select></label>
            <label title="epochs of training of the midpoint (empty: the worker's default)">epochs <input id="bend-epochs" type="number" min="1" max="10000" placeholder="default"></label>
            <label title="learning rate of the midpoint's training (empty: the worker's default)">lr <input id="bend-lr" type="number" min="0" step="any" placeholder="default"></label></span>
          <label>Points <input id="path-points" type="number" min="2" max="201" value="21"></label>
          <label title="BatchNorm statistics along the path: recomputed on training data at each point, or interpolated">BatchNorm <select id="path-bn"><option value="recompute">recompute</option><option value="interpolate">interpolate</option></select></label>
          <button id="run-path" type="submit">Run paths</button>
        </div>
        <p id="path-error" class="error" role="alert" hidden></p>
      </form>
      <div id="path-progress" class="progress-list" hidden></div>
      <div class="two-col wide-left">
        <div>${plotBox("path-plot")}${plotBox("loss-plot")}</div>
        <div><div id="path-summary" class="summary"></div><div id="distances"></div></div>
      </div>
      <div id="compare-many"></div>`;
    initMany($("#compare-many", root), { a: () => Number($("#compare-a", root).value) || state.a, changed: () => { readForm(); setState("compare", urlParams()); } });
    $("#path-form", root).addEventListener("submit", runAll);
    $("#compare-search", root).addEventListener("input", () => { readForm(); fillPickers(); });
    $("#compare-a", root).addEventListener("change", () => { readForm(); fillPickers(); });
    $("#compare-b", root).addEventListener("change", updateTypes);
    $("#compare-swap", root).addEventListener("click", () => { readForm(); [state.a, state.b] = [state.b, state.a]; fillPickers(); });
    $$("input[name='path-type']", root).forEach((c) => c.addEventListener("change", updateTypes));
    onNetworks(() => { if (!section.hidden) { readForm(); fillPickers(); renderManyPicker(); } });
  },

  async enter(params) {
    await ensureNetworks([Number(params.a), Number(params.b), ...idList(params.bs)]);
    await bindCatalogue();
    state.a = Number(params.a) || null;
    state.b = Number(params.b) || null;
    const a = byId(state.a);
    const types = (params.types || "").split(",").filter((t) => PATH_TYPES.some((p) => p.type === t));
    state.types = types.length ? types : isBinary(a) ? ["hamming"] : ["linear", "geodesic"];
    state.points = Number(params.points) || 21;
    state.bn = params.bn === "interpolate" ? "interpolate" : "recompute";
    state.variant = params.variant === "garipov" ? "garipov" : "geodesic";
    state.epochs = params.epochs || "";
    state.lr = params.lr || "";
    $("#compare-search", root).value = "";
    fillPickers();
    $$("input[name='path-type']", root).forEach((c) => { c.checked = state.types.includes(c.value); });
    $("#path-points", root).value = state.points;
    $("#path-bn", root).value = state.bn;
    $("#bend-variant", root).value = state.variant;
    $("#bend-epochs", root).value = state.epochs;
    $("#bend-lr", root).value = state.lr;
    updateTypes();
    const key = mainKey();
    const many = enterMany(params);
    if (state.a && state.b && key !== lastKey) {
      if (!byId(state.a) || !byId(state.b)) {
        setError($("#path-error", root), `Network ${!byId(state.a) ? `#${state.a}` : `#${state.b}`} does not exist or is not visible to you.`);
        return;
      }
      await runAll();
    }
    await many;
  },
};
