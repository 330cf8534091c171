// Compare: network A against several networks B along one path type, all curves on one plot, with the
// barrier of each pair and their mean ± std by B's group (sampler, seed or tag); or every pair of A and the
// Bs, their barriers by pair type (RSGD–SGD, ..., as the paper's barrier figure). Lives inside Compare.
import { runJob } from "../api.js";
import { GROUP_BY, groupIds, groupsOf, pairType } from "../groups.js";
import { MultiPicker } from "../picker.js";
import { clearPlot, drawPlot, plotBox } from "../plots.js";
import { byId } from "../store.js";
import { $, clearProgress, colorOf, esc, mapLimit, pct, ptext, samplerOf, setError, showJobProgress, toCSV } from "../util.js";

const TYPES = [["linear", "linear"], ["linear_aligned", "linear-aligned"], ["geodesic", "geodesic-aligned"], ["hamming", "hamming"]];
let root, picker, getA, onState;
let run = 0;
let lastKey = "";
const PAIRS = [["a", "A against each B"], ["all", "every pair of A and the Bs"]];
// results, jobs and errors are keyed by pair: B's id (A against each B), "x-y" (every pair, x < y in the order chosen)
const state = { bs: [], type: "geodesic", group: "sampler", points: 11, pairs: "a", list: [], results: new Map(), jobs: new Map(), errors: new Map() };

export const manyParams = () => ({ bs: state.bs, btype: state.bs.length ? state.type : "", bpoints: state.bs.length ? state.points : "",
  bgroup: state.bs.length && state.group !== "sampler" ? state.group : "", bpairs: state.bs.length && state.pairs === "all" ? "all" : "" });

// The pairs to run: [key, x, y] for each.
function pairsOf(a, bs, mode) {
  if (mode !== "all") return bs.map((b) => [b, a, b]);
  const nets = [a, ...bs];
  return nets.flatMap((x, i) => nets.slice(i + 1).map((y) => [`${x}-${y}`, x, y]));
}
const nameOf = (id) => { const n = byId(id); return n ? n.name : `#${id}`; };

export function initMany(container, { a, changed }) {
  root = container;
  getA = a;
  onState = changed;
  container.innerHTML = `
    <details id="many-panel" class="panel">
      <summary><h3>A against several networks</h3> <span class="hint small">one path type, a curve per pair, barriers by group or by pair type</span></summary>
      <form id="many-form">
        <div id="many-picker"></div>
        <div class="row">
          <label>Path <select id="many-type">${TYPES.map(([v, l]) => `<option value="${v}">${l}</option>`).join("")}</select></label>
          <label>Points <input id="many-points" type="number" min="2" max="201" value="11"></label>
          <label>Pairs <select id="many-pairs">${PAIRS.map(([v, l]) => `<option value="${v}">${l}</option>`).join("")}</select></label>
          <label>Group by <select id="many-group">${GROUP_BY.filter(([v]) => v).map(([v, l]) => `<option value="${v}">${l}</option>`).join("")}</select></label>
          <button id="run-many" type="submit">Run the paths</button>
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
  state.pairs = params.bpairs === "all" ? "all" : "a";
  $("#many-points", root).value = state.points;
  $("#many-pairs", root).value = state.pairs;
  picker.set(state.bs, { silent: true });
  $("#many-type", root).value = state.type;
  $("#many-group", root).value = state.group;
  const key = JSON.stringify([getA(), state.bs, state.type, state.points, state.pairs]);
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
  state.pairs = $("#many-pairs", root).value === "all" ? "all" : "a";
  if (!a) { setError(err, "Choose network A above first."); return; }
  if (!state.bs.length) { setError(err, "Choose one or more networks B (other than A)."); return; }
  onState();
  lastKey = JSON.stringify([a, state.bs, state.type, state.points, state.pairs]);
  const mine = ++run;
  state.list = pairsOf(a, state.bs, state.pairs);
  state.results = new Map(); state.jobs = new Map(); state.errors = new Map();
  clearProgress($("#many-progress", root));
  clearPlot("many-plot");
  renderSummary();
  await mapLimit(state.list, 6, ([key, x, y]) => runJob("path", { a: x, b: y, type: state.type, points: state.points },
    (j) => { if (mine === run) showJobProgress($("#many-progress", root), j, `${x === a ? "A" : nameOf(x)} → ${nameOf(y)}`); })
    .then((job) => { if (mine !== run) return; state.results.set(key, job.result); state.jobs.set(key, job); draw(); })
    .catch((e) => { if (mine !== run) return; state.errors.set(key, e.message); renderSummary(); }));
}

// {group: [pair keys]}: B's group (A against each B), or the pair type of the two networks' groups (every pair).
function pairGroups(keys) {
  if (state.pairs !== "all") return groupIds(keys, byId, state.group);
  const chosen = [getA(), ...state.bs].map(byId).filter(Boolean);
  const out = new Map();
  for (const [key, x, y] of state.list) {
    if (!keys.includes(key)) continue;
    const t = pairType(groupsOf(byId(x), state.group, chosen)[0], groupsOf(byId(y), state.group, chosen)[0]);
    out.set(t, [...(out.get(t) || []), key]);
  }
  return new Map([...out.entries()].sort((p, q) => p[0].localeCompare(q[0])));
}

function draw() {
  const keys = state.list.map(([key]) => key).filter((key) => state.results.has(key));
  const ends = new Map(state.list.map(([key, x, y]) => [key, [x, y]]));
  const groups = pairGroups(keys);
  const traces = [];
  for (const [group, members] of groups) {
    const color = colorOf(group);
    members.forEach((key, k) => {
      const r = state.results.get(key);
      const [x, y] = ends.get(key);
      const name = state.pairs === "all" ? `${ptext(nameOf(x))} → ${ptext(nameOf(y))}` : `${ptext(nameOf(y))} (#${y})`;
      traces.push({ x: r.t, y: r.train_error.map((v) => 100 * v), mode: "lines", name, meta: key,
        legendgroup: group, legendgrouptitle: k === 0 ? { text: ptext(group) } : undefined, line: { color, width: 1.5 },
        hovertemplate: `${ptext(nameOf(x))} → ${ptext(nameOf(y))} (${ptext(group)})<br>t = %{x:.3f}<br>train error %{y:.3f}%<extra></extra>` });
    });
  }
  const rows = keys.flatMap((key) => state.results.get(key).t.map((t, i) => ({ a: ends.get(key)[0], b: ends.get(key)[1], t,
    train_error: state.results.get(key).train_error[i], test_error: state.results.get(key).test_error[i] })));
  const label = esc(TYPES.find(([v]) => v === state.type)[1]);
  const title = state.pairs === "all" ? `Train error along ${label} paths between every pair of ${1 + state.bs.length} networks`
    : `Train error along ${label} paths from ${ptext(nameOf(getA()))}`;
  drawPlot("many-plot", traces, {
    title: { text: title },
    xaxis: { title: { text: `position t along the path (${state.pairs === "all" ? "first → second" : "A → B"})` } },
    yaxis: { title: { text: "train error (%)" }, rangemode: "tozero" },
    height: 430, legend: { orientation: "v", x: 1.02, xanchor: "left", y: 1, yref: "paper", yanchor: "top", groupclick: "toggleitem" },
    margin: { t: 40, r: 20, b: 60, l: 60 },
  }, { name: `compare-${getA()}-many-${state.type}${state.pairs === "all" ? "-all-pairs" : ""}`,
    csv: toCSV({ a: rows.map((r) => r.a), b: rows.map((r) => r.b), t: rows.map((r) => r.t), train_error: rows.map((r) => r.train_error), test_error: rows.map((r) => r.test_error) }),
    json: { a: getA(), type: state.type, pairs: state.pairs, paths: Object.fromEntries(keys.map((key) => [key, { a: ends.get(key)[0], b: ends.get(key)[1], ...state.results.get(key) }])) } });
  renderSummary();
}

function renderSummary() {
  const done = state.list.map(([key]) => key).filter((key) => state.results.has(key));
  const groups = pairGroups(done);
  const stat = (values) => { const m = values.reduce((x, y) => x + y, 0) / values.length; return [m, Math.sqrt(values.reduce((x, y) => x + (y - m) ** 2, 0) / values.length)]; };
  const groupRows = [...groups.entries()].map(([g, members]) => {
    const [m, s] = stat(members.map((key) => state.results.get(key).barrier));
    return `<tr data-group="${esc(g)}"><th scope="row"><span class="swatch" style="background:${colorOf(g)}"></span>${esc(g)}</th><td class="num">${members.length}</td><td class="num" data-value="${m}">${pct(m)}</td><td class="num" data-value="${s}">${pct(s)}</td></tr>`;
  }).join("");
  const all = state.pairs === "all";
  const rows = state.list.map(([key, x, y]) => {
    const n = byId(y);
    const head = all ? `<th scope="row">${esc(nameOf(x))} → ${esc(nameOf(y))} <span class="hint small">#${x} → #${y}</span></th>`
      : `<th scope="row">${esc(nameOf(y))} <span class="hint small">#${y} · ${esc(samplerOf(n))}</span></th>`;
    if (state.errors.has(key)) return `<tr data-b="${key}">${head}<td colspan="2" class="error" role="alert">${esc(state.errors.get(key))}</td></tr>`;
    if (!state.results.has(key)) return `<tr data-b="${key}">${head}<td colspan="2" class="hint">computing…</td></tr>`;
    const job = state.jobs.get(key);
    return `<tr data-b="${key}">${head}<td class="num barrier" data-value="${state.results.get(key).barrier}">${pct(state.results.get(key).barrier)}</td><td class="job">job <a href="#/jobs?focus=${job.id}" data-job="${job.id}">${job.id}</a></td></tr>`;
  }).join("");
  $("#many-summary", root).innerHTML = state.list.length ? `
    <table class="data compact" id="many-groups"><thead><tr><th>${all ? `pair type (${esc(state.group)})` : `B's ${esc(state.group)}`}</th><th class="num">pairs</th><th class="num">mean barrier</th><th class="num">± std</th></tr></thead><tbody>${groupRows}</tbody></table>
    <table class="data compact" id="many-table"><thead><tr><th>${all ? "pair" : "B"}</th><th class="num">barrier</th><th>job</th></tr></thead><tbody>${rows}</tbody></table>` : "";
}
