// Compare: network A against several networks B along one path type, all curves on one plot, with the
// barrier of each pair and their mean ± std by B's group (sampler, seed or tag). Lives inside Compare.
import { runJob } from "../api.js";
import { GROUP_BY, groupIds } from "../groups.js";
import { MultiPicker } from "../picker.js";
import { clearPlot, drawPlot, plotBox } from "../plots.js";
import { byId } from "../store.js";
import { $, clearProgress, colorOf, esc, mapLimit, pct, ptext, samplerOf, setError, showJobProgress, toCSV } from "../util.js";

const TYPES = [["linear", "linear"], ["linear_aligned", "linear-aligned"], ["geodesic", "geodesic-aligned"], ["hamming", "hamming"]];
let root, picker, getA, onState;
let run = 0;
let lastKey = "";
const state = { bs: [], type: "geodesic", group: "sampler", points: 11, results: new Map(), jobs: new Map(), errors: new Map() };

export const manyParams = () => ({ bs: state.bs, btype: state.bs.length ? state.type : "", bpoints: state.bs.length ? state.points : "",
  bgroup: state.bs.length && state.group !== "sampler" ? state.group : "" });

export function initMany(container, { a, changed }) {
  root = container;
  getA = a;
  onState = changed;
  container.innerHTML = `
    <details id="many-panel" class="panel">
      <summary><h3>A against several networks</h3> <span class="hint small">one path type, a curve per B, barriers by group</span></summary>
      <form id="many-form">
        <div id="many-picker"></div>
        <div class="row">
          <label>Path <select id="many-type">${TYPES.map(([v, l]) => `<option value="${v}">${l}</option>`).join("")}</select></label>
          <label>Points <input id="many-points" type="number" min="2" max="201" value="11"></label>
          <label>Group the Bs by <select id="many-group">${GROUP_BY.filter(([v]) => v).map(([v, l]) => `<option value="${v}">${l}</option>`).join("")}</select></label>
          <button id="run-many" type="submit">Run against all</button>
        </div>
        <p id="many-error" class="error" role="alert" hidden></p>
      </form>
      <div id="many-progress" class="progress-list" hidden></div>
      <div class="two-col wide-left"><div>${plotBox("many-plot")}</div><div id="many-summary" class="summary"></div></div>
    </details>`;
  picker = new MultiPicker($("#many-picker", root), { name: "many-nets" });
  $("#many-form", root).addEventListener("submit", (ev) => { ev.preventDefault(); runMany(); });
  $("#many-group", root).addEventListener("change", (ev) => { state.group = ev.target.value; onState(); if (state.results.size) draw(); });
}

export function renderManyPicker() { if (picker) picker.render(); }

export async function enterMany(params) {
  state.bs = String(params.bs || "").split(",").map(Number).filter((v) => Number.isInteger(v) && v > 0);
  state.type = TYPES.some(([v]) => v === params.btype) ? params.btype : "geodesic";
  state.group = ["tag", "seed"].includes(params.bgroup) ? params.bgroup : "sampler";
  state.points = Math.min(201, Math.max(2, Number(params.bpoints) || 11));
  $("#many-points", root).value = state.points;
  picker.set(state.bs, { silent: true });
  $("#many-type", root).value = state.type;
  $("#many-group", root).value = state.group;
  const key = JSON.stringify([getA(), state.bs, state.type, state.points]);
  if (state.bs.length && getA() && key !== lastKey) {
    $("#many-panel", root).open = true;
    await runMany();
  }
}

async function runMany() {
  const a = getA();
  const err = $("#many-error", root);
  setError(err, "");
  state.bs = picker.selected.filter((id) => id !== a);
  state.type = $("#many-type", root).value;
  state.points = Number($("#many-points", root).value) || 11;
  if (!a) { setError(err, "Choose network A above first."); return; }
  if (!state.bs.length) { setError(err, "Choose one or more networks B (other than A)."); return; }
  onState();
  lastKey = JSON.stringify([a, state.bs, state.type, state.points]);
  const mine = ++run;
  state.results = new Map(); state.jobs = new Map(); state.errors = new Map();
  clearProgress($("#many-progress", root));
  clearPlot("many-plot");
  renderSummary();
  await mapLimit(state.bs, 6, (b) => runJob("path", { a, b, type: state.type, points: state.points },
    (j) => { if (mine === run) showJobProgress($("#many-progress", root), j, `A → ${byId(b) ? byId(b).name : `#${b}`}`); })
    .then((job) => { if (mine !== run) return; state.results.set(b, job.result); state.jobs.set(b, job); draw(); })
    .catch((e) => { if (mine !== run) return; state.errors.set(b, e.message); renderSummary(); }));
}

function draw() {
  const bs = state.bs.filter((b) => state.results.has(b));
  const groups = groupIds(bs, byId, state.group);
  const traces = [];
  for (const [group, members] of groups) {
    const color = colorOf(group);
    members.forEach((b, k) => {
      const r = state.results.get(b);
      const n = byId(b);
      traces.push({ x: r.t, y: r.train_error.map((v) => 100 * v), mode: "lines", name: `${ptext(n ? n.name : `#${b}`)} (#${b})`, meta: b,
        legendgroup: group, legendgrouptitle: k === 0 ? { text: ptext(group) } : undefined, line: { color, width: 1.5 },
        hovertemplate: `A → ${ptext(n ? n.name : `#${b}`)} (${ptext(group)})<br>t = %{x:.3f}<br>train error %{y:.3f}%<extra></extra>` });
    });
  }
  const a = byId(getA());
  const rows = bs.flatMap((b) => state.results.get(b).t.map((t, i) => ({ b, t, train_error: state.results.get(b).train_error[i], test_error: state.results.get(b).test_error[i] })));
  drawPlot("many-plot", traces, {
    title: { text: `Train error along ${esc(TYPES.find(([v]) => v === state.type)[1])} paths from ${ptext(a ? a.name : `#${getA()}`)}` },
    xaxis: { title: { text: "position t along the path (A → B)" } }, yaxis: { title: { text: "train error (%)" }, rangemode: "tozero" },
    height: 430, legend: { orientation: "v", x: 1.02, xanchor: "left", y: 1, yref: "paper", yanchor: "top", groupclick: "toggleitem" },
    margin: { t: 40, r: 20, b: 60, l: 60 },
  }, { name: `compare-${getA()}-many-${state.type}`, csv: toCSV({ b: rows.map((r) => r.b), t: rows.map((r) => r.t), train_error: rows.map((r) => r.train_error), test_error: rows.map((r) => r.test_error) }),
    json: { a: getA(), type: state.type, paths: Object.fromEntries(bs.map((b) => [b, state.results.get(b)])) } });
  renderSummary();
}

function renderSummary() {
  const bs = state.bs;
  const done = bs.filter((b) => state.results.has(b));
  const groups = groupIds(done, byId, state.group);
  const stat = (values) => { const m = values.reduce((x, y) => x + y, 0) / values.length; return [m, Math.sqrt(values.reduce((x, y) => x + (y - m) ** 2, 0) / values.length)]; };
  const groupRows = [...groups.entries()].map(([g, members]) => {
    const [m, s] = stat(members.map((b) => state.results.get(b).barrier));
    return `<tr data-group="${esc(g)}"><th scope="row"><span class="swatch" style="background:${colorOf(g)}"></span>${esc(g)}</th><td class="num">${members.length}</td><td class="num" data-value="${m}">${pct(m)}</td><td class="num" data-value="${s}">${pct(s)}</td></tr>`;
  }).join("");
  const rows = bs.map((b) => {
    const n = byId(b);
    const head = `<th scope="row">${esc(n ? n.name : `#${b}`)} <span class="hint small">#${b} · ${esc(samplerOf(n))}</span></th>`;
    if (state.errors.has(b)) return `<tr data-b="${b}">${head}<td colspan="2" class="error" role="alert">${esc(state.errors.get(b))}</td></tr>`;
    if (!state.results.has(b)) return `<tr data-b="${b}">${head}<td colspan="2" class="hint">computing…</td></tr>`;
    const job = state.jobs.get(b);
    return `<tr data-b="${b}">${head}<td class="num barrier" data-value="${state.results.get(b).barrier}">${pct(state.results.get(b).barrier)}</td><td class="job">job <a href="#/jobs?focus=${job.id}" data-job="${job.id}">${job.id}</a></td></tr>`;
  }).join("");
  $("#many-summary", root).innerHTML = bs.length ? `
    <table class="data compact" id="many-groups"><thead><tr><th>B's ${esc(state.group)}</th><th class="num">pairs</th><th class="num">mean barrier</th><th class="num">± std</th></tr></thead><tbody>${groupRows}</tbody></table>
    <table class="data compact" id="many-table"><thead><tr><th>B</th><th class="num">barrier</th><th>job</th></tr></thead><tbody>${rows}</tbody></table>` : "";
}
