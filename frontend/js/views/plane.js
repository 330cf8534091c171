// Plane: the error on the 2-D plane through three networks (Gram–Schmidt, as Garipov et al.), the three marked.
import { runJob } from "../api.js";
import { kindFields, updateFields } from "../forms.js";
import { fillSelect } from "../picker.js";
import { clearPlot, drawPlot, plotBox } from "../plots.js";
import { setState } from "../router.js";
import { byId, ensureNetworks, onNetworks } from "../store.js";
import { $, clearProgress, colorOf, esc, idList, pct, samplerOf, setError, showJobProgress, toCSV, ptext, traitsOf } from "../util.js";

let root;
let run = 0;
let lastKey = "";
const state = { nets: [], grid: 15, mode: "aligned", margin: "", bn: "recompute", show: "train", result: null, job: null };
const SLOTS = ["plane-a", "plane-b", "plane-c"];

const chosen = () => state.nets.filter(Boolean);
const urlParams = () => ({ nets: chosen(), grid: state.grid, mode: state.mode, margin: state.margin, bn: state.bn === "recompute" ? "" : state.bn,
  show: state.show === "train" ? "" : state.show });
const jobParams = () => {
  const p = { networks: state.nets, grid: state.grid, mode: state.mode };
  if (state.margin !== "") p.margin = Number(state.margin);
  if (state.bn !== "recompute") p.bn = state.bn;
  return p;
};

function fillPickers() {
  const filter = $("#plane-search", root).value.trim();
  SLOTS.forEach((slot, i) => fillSelect($(`#${slot}`, root), state.nets[i] || "", filter));
  updateFields($("#plane-params", root), traitsOf(byId($("#plane-a", root).value)));
}

function readForm() {
  state.nets = SLOTS.map((s) => Number($(`#${s}`, root).value) || null);
  // the parameter fields are built from GET /api/job-kinds when the view is first entered: a network list
  // arriving before that has no fields to read yet
  if (!$("#plane-params", root).dataset.ready) return;
  state.grid = Number($("#plane-grid", root).value);
  state.mode = $("#plane-mode", root).value;
  state.margin = $("#plane-margin", root).value.trim();
  state.bn = $("#plane-bn", root).value;
}

async function runPlane(ev) {
  if (ev) ev.preventDefault();
  readForm();
  const err = $("#plane-error", root);
  setError(err, "");
  if (chosen().length !== 3 || new Set(chosen()).size !== 3) { setError(err, "Choose three different networks."); return; }
  const grid = $("#plane-grid", root);  // bounds as declared by the plane kind
  if (!(state.grid >= Number(grid.min) && state.grid <= Number(grid.max))) { setError(err, `Grid: ${grid.min} to ${grid.max} points per side.`); return; }
  setState("plane", urlParams(), { push: true });
  lastKey = JSON.stringify(jobParams());
  const mine = ++run;
  state.result = null;
  clearProgress($("#plane-progress", root));
  clearPlot("plane-plot");
  try {
    const job = await runJob("plane", jobParams(),
      (j) => { if (mine === run) showJobProgress($("#plane-progress", root), j, `plane through ${state.nets.map((id) => `#${id}`).join(", ")}`); });
    if (mine !== run) return;
    state.result = job.result;
    state.job = job;
    draw();
  } catch (e) {
    if (mine === run) setError(err, e.message);
  }
}

// Where a network's name goes beside its marker: towards the inside of the plot, so that a network at the
// grid's edge (margin 0, or the window's extreme node) keeps its name in view.
function labelPlace(p, r) {
  const frac = (v, axis) => { const lo = Math.min(...axis), hi = Math.max(...axis); return hi > lo ? (v - lo) / (hi - lo) : 0.5; };
  const fx = frac(p.x, r.x), fy = frac(p.y, r.y);
  return `${fy > 0.8 ? "bottom" : "top"} ${fx < 0.25 ? "right" : fx > 0.75 ? "left" : "center"}`;
}

function draw() {
  const r = state.result;
  const key = state.show === "test" ? "test_error" : "train_error";
  const z = r[key].map((row) => row.map((v) => (v === null ? null : 100 * v)));
  const names = state.nets.map((id) => { const n = byId(id); return n ? `${n.name} #${id}` : `#${id}`; });
  const points = r.points || [];
  // a narrow plot (a phone) labels the networks by id only: full names would run into each other there
  // (the names are listed under the plot either way)
  const compact = document.getElementById("plane-plot").clientWidth < 600;
  const traces = [
    { type: "contour", x: r.x, y: r.y, z, name: `${state.show} error`, colorscale: "Viridis", reversescale: false,
      contours: { coloring: "heatmap", showlabels: true, labelfont: { color: "white", size: 10 } }, line: { width: 0.5, color: "rgba(255,255,255,0.5)" },
      colorbar: { title: { text: `${state.show} error %`, side: "right" } },
      hovertemplate: `x = %{x:.3f}, y = %{y:.3f}<br>${state.show} error %{z:.2f}%<extra></extra>` },
    { type: "scatter", mode: "markers+text", x: points.map((p) => p.x), y: points.map((p) => p.y), text: compact ? state.nets.map((id) => `#${id}`) : names.map(ptext), textposition: points.map((p) => labelPlace(p, r)), cliponaxis: false, name: "networks",
      // each network in its sampler's colour, as on the Map, in Flatness and in the tables
      textfont: { color: "white", size: 12 }, marker: { size: 12, color: state.nets.map((id) => colorOf(samplerOf(byId(id)))), line: { color: "white", width: 2 }, symbol: "circle" },
      customdata: names.map(ptext), hovertemplate: "%{customdata}<br>x = %{x:.3f}, y = %{y:.3f}<extra></extra>" },
  ];
  const cols = { y: [], x: [], train_error: [], test_error: [] };
  r.y.forEach((y, i) => r.x.forEach((x, j) => { cols.y.push(y); cols.x.push(x); cols.train_error.push(r.train_error[i][j]); cols.test_error.push(r.test_error ? r.test_error[i][j] : ""); }));
  drawPlot("plane-plot", traces, {
    title: { text: `${state.show === "test" ? "Test" : "Train"} error on the plane through the three networks (${r.mode || state.mode})` },
    xaxis: { title: { text: "x (along A → B)" }, zeroline: false, constrain: "domain" },
    yaxis: { title: { text: "y (towards C, orthogonal)" }, zeroline: false, scaleanchor: "x", scaleratio: 1, constrain: "domain" },
    height: 560, showlegend: false,
  }, { name: `plane-${state.nets.join("-")}`, csv: toCSV(cols), json: r });
  const at = (i) => { const p = points[i]; return p ? `(${p.x.toFixed(3)}, ${p.y.toFixed(3)})` : ""; };
  $("#plane-note", root).dataset.job = state.job.id;
  $("#plane-note", root).innerHTML = `Job ${state.job.id}${state.job.cached ? " (answered from the cache)" : ""}. ` +
    names.map((n, i) => `<span class="pill"><span class="swatch" style="background:${colorOf(samplerOf(byId(state.nets[i])))}"></span>${esc(n)} · ${esc(samplerOf(byId(state.nets[i])))} ${at(i)} test ${pct(byId(state.nets[i]) ? byId(state.nets[i]).test_error : null)}</span>`).join(" ");
}

export default {
  init(section) {
    root = section;
    section.innerHTML = `
      <h2>Plane through three networks</h2>
      <form id="plane-form">
        <div class="row">
          <label>Search <input id="plane-search" type="search" placeholder="filter the three lists"></label>
          <label>A <select id="plane-a"></select></label>
          <label>B <select id="plane-b"></select></label>
          <label>C <select id="plane-c"></select></label>
        </div>
        <div class="row">
          <span id="plane-params" class="params"></span>
          <button id="run-plane" type="submit">Compute the plane</button>
          <label>Show <select id="plane-show"><option value="train">train error</option><option value="test">test error</option></select></label>
        </div>
        <p id="plane-error" class="error" role="alert" hidden></p>
      </form>
      <div id="plane-progress" class="progress-list" hidden></div>
      ${plotBox("plane-plot", "square")}
      <p id="plane-note" class="hint"></p>`;
    $("#plane-form", root).addEventListener("submit", runPlane);
    $("#plane-search", root).addEventListener("input", () => { readForm(); fillPickers(); });
    $("#plane-show", root).addEventListener("change", (ev) => { state.show = ev.target.value; setState("plane", urlParams()); if (state.result) draw(); });
    $("#plane-a", root).addEventListener("change", () => updateFields($("#plane-params", root), traitsOf(byId($("#plane-a", root).value))));
    onNetworks(() => { if (!section.hidden) { readForm(); fillPickers(); } });
  },

  async enter(params) {
    await ensureNetworks(idList(params.nets));
    let fresh;
    try { fresh = await kindFields($("#plane-params", root), "plane", "plane"); } catch (e) {
      setError($("#plane-error", root), `Could not read the job kinds: ${e.message}`); return;
    }
    if (fresh) {
      $("#plane-margin", root).value = "";
      $("#plane-margin", root).placeholder = "0.2";
    }
    state.nets = idList(params.nets).slice(0, 3);
    state.grid = Number(params.grid) || 15;
    state.mode = params.mode === "raw" ? "raw" : "aligned";
    state.margin = params.margin || "";
    state.bn = params.bn === "interpolate" ? "interpolate" : "recompute";
    state.show = params.show === "test" ? "test" : "train";
    $("#plane-search", root).value = "";
    fillPickers();
    $("#plane-grid", root).value = state.grid;
    $("#plane-mode", root).value = state.mode;
    $("#plane-margin", root).value = state.margin;
    $("#plane-bn", root).value = state.bn;
    $("#plane-show", root).value = state.show;
    const key = JSON.stringify(jobParams());
    if (state.nets.length === 3 && key !== lastKey) await runPlane();
    else if (state.result) draw();
  },
};
