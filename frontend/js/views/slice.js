// Slice: error and loss on a 1-D or 2-D random-direction section around one network (filter-normalised
// directions, or in canonical coordinates on the product of spheres), drawn as a contour and a surface.
// The form is built from the slice kind's declaration (GET /api/job-kinds).
import { runJob } from "../api.js";
import { paramFields, readParams, updateFields } from "../forms.js";
import { fillSelect } from "../picker.js";
import { clearPlot, drawPlot, plotBox } from "../plots.js";
import { setState } from "../router.js";
import { byId, ensureNetworks, jobKinds, onNetworks } from "../store.js";
import { $, clearProgress, esc, pct, ptext, setError, showJobProgress, toCSV, traitsOf } from "../util.js";

let root;
let run = 0;
let lastKey = "";
let kind = null;
const state = { network: null, params: {}, show: "train_error", result: null, job: null };
const SHOW = [["train_error", "train error"], ["test_error", "test error"], ["train_loss", "train loss"], ["test_loss", "test loss"]];

const urlParams = () => ({ network: state.network, ...state.params, show: state.show === "train_error" ? "" : state.show });

function fields() {
  const net = byId(state.network);
  updateFields($("#slice-params", root), traitsOf(net));
  $("#run-slice", root).disabled = !state.network;
}

async function runSlice(ev) {
  if (ev) ev.preventDefault();
  const err = $("#slice-error", root);
  setError(err, "");
  state.network = Number($("#slice-network", root).value) || null;
  if (!state.network) { setError(err, "Choose a network."); return; }
  try { state.params = readParams($("#slice-params", root)); } catch (e) { setError(err, e.message); return; }
  setState("slice", urlParams(), { push: true });
  lastKey = JSON.stringify([state.network, state.params]);
  const mine = ++run;
  state.result = null;
  clearProgress($("#slice-progress", root));
  clearPlot("slice-contour");
  clearPlot("slice-surface");
  $("#slice-note", root).textContent = "";
  try {
    const net = byId(state.network);
    const job = await runJob("slice", { network: state.network, ...state.params },
      (j) => { if (mine === run) showJobProgress($("#slice-progress", root), j, `${state.params.dims || 2}-D slice around ${net ? net.name : `#${state.network}`}`); });
    if (mine !== run) return;
    state.result = job.result;
    state.job = job;
    draw();
  } catch (e) {
    if (mine === run) setError(err, e.message);
  }
}

const scale = (key, v) => (v === null || v === undefined ? null : key.includes("error") ? 100 * v : v);

function draw() {
  const r = state.result;
  const key = state.show;
  const label = SHOW.find(([k]) => k === key)[1];
  const unit = key.includes("error") ? " (%)" : "";
  const net = byId(state.network);
  const title = `${label} around ${ptext(net ? net.name : `#${state.network}`)} · ${r.mode === "canonical" ? "canonical coordinates" : "filter-normalised"}, seed ${r.seed}`;
  const json = { network: state.network, job: state.job.id, ...r };
  if (r.dims === 1) {
    const traces = SHOW.filter(([k]) => k.endsWith(key.endsWith("loss") ? "loss" : "error")).map(([k, l]) => ({
      x: r.x, y: r[k].map((v) => scale(k, v)), name: l, mode: "lines+markers", line: { dash: k.startsWith("test") ? "dot" : "solid" },
      hovertemplate: `${l}: %{y:.4g}${unit ? "%" : ""}<br>x = %{x:.3f}<extra></extra>` }));
    traces.push({ x: [0], y: [scale(key, r.center[key])], name: "the network", mode: "markers", marker: { size: 12, symbol: "star", color: "#111" } });
    drawPlot("slice-contour", traces, { title: { text: title }, xaxis: { title: { text: "position along the direction" } },
      yaxis: { title: { text: `${key.endsWith("loss") ? "loss" : "error"}${unit}` }, rangemode: "tozero" }, height: 440 },
    { name: `slice-${state.network}-1d`, csv: toCSV({ x: r.x, train_error: r.train_error, test_error: r.test_error, train_loss: r.train_loss, test_loss: r.test_loss }), json });
    clearPlot("slice-surface");
  } else {
    const z = r[key].map((row) => row.map((v) => scale(key, v)));
    const cols = { x: [], y: [], train_error: [], test_error: [], train_loss: [], test_loss: [] };
    r.y.forEach((y, i) => r.x.forEach((x, j) => { cols.x.push(x); cols.y.push(y); SHOW.forEach(([k]) => cols[k].push(r[k][i][j])); }));
    drawPlot("slice-contour", [
      { type: "contour", x: r.x, y: r.y, z, name: label, colorscale: "Viridis", contours: { coloring: "heatmap" },
        colorbar: { title: { text: `${label}${unit}`, side: "right" } }, hovertemplate: `(%{x:.3f}, %{y:.3f})<br>${label} %{z:.4g}<extra></extra>` },
      { type: "scatter", x: [0], y: [0], mode: "markers", name: "the network", marker: { size: 13, symbol: "star", color: "white", line: { color: "#111", width: 1 } },
        hovertemplate: `the network: ${label} ${scale(key, r.center[key]).toPrecision(4)}<extra></extra>` },
    ], { title: { text: title },
      // one scale on both axes; the plot area shrinks to the grid (constrain "domain") instead of the axes
      // running past it, so the section fills its frame and no zero line sticks out of it
      xaxis: { title: { text: "direction 1" }, range: [r.x[0], r.x[r.x.length - 1]], constrain: "domain", zeroline: false },
      yaxis: { title: { text: "direction 2" }, range: [r.y[0], r.y[r.y.length - 1]], scaleanchor: "x", scaleratio: 1, constrain: "domain", zeroline: false },
      height: 480, showlegend: false, margin: { t: 40, r: 30, b: 60, l: 60 } },
    { name: `slice-${state.network}-contour`, csv: toCSV(cols), json });
    drawPlot("slice-surface", [{ type: "surface", x: r.x, y: r.y, z, colorscale: "Viridis", name: label, showscale: false,
      hovertemplate: `(%{x:.3f}, %{y:.3f})<br>${label} %{z:.4g}<extra></extra>` }], {
      title: { text: `${label} as a surface` }, height: 480, showlegend: false, margin: { t: 40, r: 10, b: 10, l: 10 },
      scene: { xaxis: { title: { text: "direction 1" } }, yaxis: { title: { text: "direction 2" } }, zaxis: { title: { text: `${label}${unit}` } } },
    }, { name: `slice-${state.network}-surface`, csv: toCSV(cols), json });
  }
  const c = r.center;
  $("#slice-note", root).dataset.job = state.job.id;
  $("#slice-note", root).textContent = `Job ${state.job.id}${state.job.cached ? " (answered from the cache)" : ""}: at the network, train error ${pct(c.train_error)}, `
    + `test error ${pct(c.test_error)}; grid ${r.x.length}${r.dims === 2 ? ` × ${r.y.length}` : ""} points on [−${r.span}, ${r.span}]`
    + `${r.bn ? `; BatchNorm ${r.bn}` : ""}.`;
}

export default {
  init(section) {
    root = section;
    section.innerHTML = `
      <h2>Slice around one network</h2>
      <p class="hint">Error and loss along random directions through a network: filter-normalised (each unit's direction as long as its
        weights, Li et al. 2018), or in canonical coordinates, moving on the product of spheres (the same picture whatever each unit's scale).</p>
      <form id="slice-form">
        <div class="row">
          <label>Search <input id="slice-search" type="search" placeholder="filter networks"></label>
          <label>Network <select id="slice-network"></select></label>
        </div>
        <div class="row"><span id="slice-params" class="params"></span>
          <label>Show <select id="slice-show">${SHOW.map(([k, l]) => `<option value="${k}">${l}</option>`).join("")}</select></label>
          <button id="run-slice" type="submit">Compute the slice</button></div>
        <p id="slice-help" class="hint small"></p>
        <p id="slice-error" class="error" role="alert" hidden></p>
      </form>
      <div id="slice-progress" class="progress-list" hidden></div>
      <div class="two-col">
        <div>${plotBox("slice-contour")}</div>
        <div>${plotBox("slice-surface")}</div>
      </div>
      <p id="slice-note" class="hint" aria-live="polite"></p>`;
    $("#slice-form", root).addEventListener("submit", runSlice);
    $("#slice-search", root).addEventListener("input", () => fillSelect($("#slice-network", root), state.network ?? undefined, $("#slice-search", root).value.trim()));
    $("#slice-network", root).addEventListener("change", () => { state.network = Number($("#slice-network", root).value) || null; fields(); });
    $("#slice-params", root).addEventListener("change", fields);
    $("#slice-show", root).addEventListener("change", (ev) => { state.show = ev.target.value; setState("slice", urlParams()); if (state.result) draw(); });
    onNetworks(() => { if (!section.hidden) fillSelect($("#slice-network", root), state.network ?? undefined, $("#slice-search", root).value.trim()); });
  },

  async enter(params) {
    await ensureNetworks([Number(params.network)]);
    const err = $("#slice-error", root);
    try { kind = (await jobKinds()).slice; } catch (e) { setError(err, `Could not read the job kinds: ${e.message}`); return; }
    if (!kind) { setError(err, "This server has no slice job kind."); return; }
    if (!$("#slice-params", root).dataset.ready) {
      $("#slice-params", root).innerHTML = paramFields(kind.params, "slice");
      $("#slice-params", root).dataset.ready = "1";
      $("#slice-help", root).textContent = kind.description;
    }
    state.network = Number(params.network) || null;
    state.show = SHOW.some(([k]) => k === params.show) ? params.show : "train_error";
    $("#slice-show", root).value = state.show;
    fillSelect($("#slice-network", root), state.network ?? undefined, "");
    // the address's values into the generated fields (the declared defaults otherwise)
    for (const [name, spec] of Object.entries(kind.params)) {
      const el = $(`#slice-${name}`, root);
      if (!el) continue;
      const v = params[name] !== undefined ? params[name] : spec.default;
      if (spec.type === "bool") el.checked = v === true || v === "true"; else el.value = v === null || v === undefined ? "" : String(v);
    }
    fields();
    if (!state.network) return;
    let p;
    try { p = readParams($("#slice-params", root)); } catch (e) { setError(err, e.message); return; }
    if (JSON.stringify([state.network, p]) !== lastKey) {
      if (!byId(state.network)) { setError(err, `Network #${state.network} does not exist or is not visible to you.`); return; }
      await runSlice();
    } else if (state.result) draw();
  },
};
