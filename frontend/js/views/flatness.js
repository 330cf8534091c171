// Flatness: the local energy delta_E(sigma) of several networks, overlaid with mean ± std bands, and the
// paper's summary (delta_E at the largest sigma) against test error, with Spearman's rank correlation; on
// request the Hessian's sharpness beside it (a `hessian` job per network: top eigenvalue and trace, as stored
// and in canonical coordinates), per network and by sampler.
import { runJob } from "../api.js";
import { MultiPicker } from "../picker.js";
import { clearPlot, drawPlot, plotBox } from "../plots.js";
import { setState } from "../router.js";
import { attachEstimate, kindFields } from "../forms.js";
import { byId, ensureNetworks, onNetworks, refreshFlatness } from "../store.js";
import { $, clearProgress, colorOf, esc, idList, mapLimit, num, pct, ptext, samplerOf, setError, showJobProgress, toCSV } from "../util.js";
import { spearman } from "../stats.js";
import { GROUP_BY, groupIds, meanStd } from "../groups.js";

let root;
let picker;
let run = 0;
let lastKey = "";
let estimate = () => {};
const state = { nets: [], sigmas: "", draws: "", noise: "weights", seed: "", group: "", hessian: false, results: new Map(), errors: new Map(), jobs: new Map(),
  hessians: new Map(), hessianErrors: new Map() };

const urlParams = () => ({ nets: state.nets, sigmas: state.sigmas, draws: state.draws, noise: state.noise === "weights" ? "" : state.noise, seed: state.seed, group: state.group, hessian: state.hessian ? "1" : "" });

const runKey = () => JSON.stringify({ ...urlParams(), group: "" });  // what was measured (grouping only redraws)

function params(id, s = state) {
  const p = { network: id };
  const sigmas = s.sigmas.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (sigmas.length) p.sigmas = sigmas;
  if (s.draws) p.draws = Number(s.draws);
  if (s.noise !== "weights") p.params = s.noise;
  if (s.seed) p.seed = Number(s.seed);
  return p;
}

// The jobs the form would submit now (for the estimate under it).
function formJobs() {
  const s = { sigmas: $("#flat-sigmas", root).value.trim(), draws: $("#flat-draws", root).value.trim(),
    noise: $("#flat-params", root).value, seed: $("#flat-seed", root).value.trim() };
  return picker.selected.map((id) => ["flatness", params(id, s)]);
}

async function runAll(ev) {
  if (ev) ev.preventDefault();
  state.nets = picker.selected.slice();
  state.sigmas = $("#flat-sigmas", root).value.trim();
  state.draws = $("#flat-draws", root).value.trim();
  state.noise = $("#flat-params", root).value;
  state.seed = $("#flat-seed", root).value.trim();
  state.hessian = $("#flat-hessian", root).checked;
  const err = $("#flat-error", root);
  setError(err, "");
  if (!state.nets.length) { setError(err, "Choose at least one network."); return; }
  const sigmas = state.sigmas.split(",").map((s) => s.trim()).filter(Boolean);
  if (sigmas.some((s) => !(Number(s) >= 0))) { setError(err, `Noise levels σ must be numbers ≥ 0, separated by commas (got “${state.sigmas}”).`); return; }
  setState("flatness", urlParams(), { push: true });
  lastKey = runKey();
  const mine = ++run;
  state.results = new Map();
  state.errors = new Map();
  state.jobs = new Map();
  state.hessians = new Map();
  state.hessianErrors = new Map();
  clearProgress($("#flat-progress", root));
  clearPlot("flat-curves");
  clearPlot("flat-scatter");
  $("#flat-spearman", root).textContent = "";
  renderTable();
  const progress = $("#flat-progress", root);
  const hessians = state.hessian ? mapLimit(state.nets, 4, (id) => {
    const net = byId(id);
    const p = { network: id };
    if (state.seed) p.seed = Number(state.seed);
    return runJob("hessian", p, (j) => { if (mine === run) showJobProgress(progress, j, `Hessian of ${net ? net.name : `#${id}`}`); })
      .then((job) => { if (mine !== run) return; state.hessians.set(id, { ...job.result, job_id: job.id }); renderTable(); })
      .catch((e) => { if (mine !== run) return; state.hessianErrors.set(id, e.message); renderTable(); });
  }) : Promise.resolve();
  await mapLimit(state.nets, 8, (id) => {
    const net = byId(id);
    return runJob("flatness", params(id), (j) => { if (mine === run) showJobProgress(progress, j, `flatness of ${net ? net.name : `#${id}`}`); })
      .then((job) => { if (mine !== run) return; state.results.set(id, job.result); state.jobs.set(id, job); draw(); })
      .catch((e) => { if (mine !== run) return; state.errors.set(id, e.message); renderTable(); });
  });
  await hessians;
  if (mine !== run) return;
  if (!state.results.size && state.errors.size) setError(err, [...state.errors.values()][0]);
  refreshFlatness().catch(() => {});
}

const label = (id) => { const n = byId(id); return n ? `${n.name} (#${id})` : `#${id}`; };
const xTitle = (kinds) => (kinds.every((k) => k === "flip") ? "fraction ε of flipped weights" : kinds.some((k) => k === "flip") ? "σ (real nets) / ε (binary nets)" : "noise level σ (multiplicative)");

// One curve per group: the mean over its networks of their ΔE(σ), with a band of ± one standard deviation
// across the networks (networks measured on another σ grid than the group's first are left out, and said).
function groupTraces(ids) {
  const traces = [];
  const skipped = [];
  for (const [group, members] of groupIds(ids, byId, state.group)) {
    const grid = state.results.get(members[0]).sigma;
    const same = members.filter((id) => JSON.stringify(state.results.get(id).sigma) === JSON.stringify(grid));
    skipped.push(...members.filter((id) => !same.includes(id)));
    const { mean, std, n } = meanStd(same.map((id) => state.results.get(id).delta_mean.map((v) => 100 * v)));
    const color = colorOf(group);
    const upper = mean.map((m, i) => m + std[i]), lower = mean.map((m, i) => m - std[i]);
    traces.push({ x: [...grid, ...grid.slice().reverse()], y: [...upper, ...lower.reverse()], fill: "toself", fillcolor: color, opacity: 0.18,
      line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: group, name: `± std · ${ptext(group)}`, mode: "lines" });
    traces.push({ x: grid, y: mean, name: `${ptext(group)} (n = ${n})`, legendgroup: group, mode: "lines+markers", line: { color, width: 3 },
      marker: { size: 6 }, customdata: std, meta: `group:${group}`,
      hovertemplate: `${ptext(group)}, ${n} network(s)<br>σ = %{x}<br>mean ΔE = %{y:.3f}% ± %{customdata:.3f}%<extra></extra>` });
  }
  $("#flat-group-note", root).textContent = skipped.length ? `Left out of their group's curve (measured on another σ grid): ${skipped.map(label).join(", ")}.` : "";
  return traces;
}

function draw() {
  const ids = state.nets.filter((id) => state.results.has(id));
  const traces = state.group ? groupTraces(ids) : [];
  if (!state.group) $("#flat-group-note", root).textContent = "";
  const DASHES = ["solid", "dash", "dot", "dashdot", "longdash"];
  const seen = new Map();  // networks of the same sampler share a colour; a dash tells them apart
  if (!state.group) ids.forEach((id) => {
    const r = state.results.get(id);
    const sampler = samplerOf(byId(id));
    const color = colorOf(sampler);
    const dash = DASHES[(seen.get(sampler) || 0) % DASHES.length];
    seen.set(sampler, (seen.get(sampler) || 0) + 1);
    const upper = r.delta_mean.map((m, i) => 100 * (m + r.delta_std[i]));
    const lower = r.delta_mean.map((m, i) => 100 * (m - r.delta_std[i]));
    traces.push({ x: [...r.sigma, ...r.sigma.slice().reverse()], y: [...upper, ...lower.reverse()], fill: "toself", fillcolor: color, opacity: 0.15,
      line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: String(id), name: `± std · ${ptext(label(id))}`, mode: "lines" });
    traces.push({ x: r.sigma, y: r.delta_mean.map((v) => 100 * v), name: `${ptext(label(id))} · ${ptext(samplerOf(byId(id)))}`, legendgroup: String(id), mode: "lines+markers",
      line: { color, dash }, marker: { size: 5 }, customdata: r.delta_std.map((v) => 100 * v), meta: id,
      hovertemplate: `${ptext(label(id))}<br>σ = %{x}<br>ΔE = %{y:.3f}% ± %{customdata:.3f}%<extra></extra>` });
  });
  const kinds = ids.map((id) => state.results.get(id).kind || "gaussian");
  const cols = { network_id: [], name: [], sampler: [], sigma: [], delta_mean: [], delta_std: [], delta_sem: [], base_train_error: [] };
  ids.forEach((id) => {
    const r = state.results.get(id);
    r.sigma.forEach((s, i) => {
      cols.network_id.push(id); cols.name.push(byId(id) ? byId(id).name : ""); cols.sampler.push(samplerOf(byId(id)));
      cols.sigma.push(s); cols.delta_mean.push(r.delta_mean[i]); cols.delta_std.push(r.delta_std[i]);
      cols.delta_sem.push(r.delta_sem ? r.delta_sem[i] : ""); cols.base_train_error.push(r.base_train_error);
    });
  });
  const json = Object.fromEntries(ids.map((id) => [id, state.results.get(id)]));
  drawPlot("flat-curves", traces, {
    title: { text: state.group ? `Local energy ΔE(σ) by ${state.group}: mean ± std over the networks` : "Local energy ΔE(σ), mean ± std over the draws" },
    xaxis: { title: { text: xTitle(kinds) } }, yaxis: { title: { text: "ΔE (train error %, above the network's own)" }, rangemode: "tozero" },
    height: 420,
  }, { name: "flatness-curves", csv: toCSV(cols), json });
  drawScatter(ids);
  renderTable();
}

function drawScatter(ids) {
  const points = ids.map((id) => {
    const r = state.results.get(id);
    const n = byId(id);
    const last = r.delta_mean.length - 1;
    return { id, name: n ? n.name : `#${id}`, sampler: samplerOf(n), sigma: r.sigma[last], flatness: r.delta_mean[last], test_error: n ? n.test_error : null };
  });
  const usable = points.filter((p) => p.test_error !== null && p.test_error !== undefined);
  const samplers = [...new Set(usable.map((p) => p.sampler))];
  const traces = samplers.map((s) => {
    const group = usable.filter((p) => p.sampler === s);
    return { x: group.map((p) => 100 * p.flatness), y: group.map((p) => 100 * p.test_error), text: group.map((p) => ptext(p.name)), customdata: group.map((p) => p.id),
      name: ptext(s), mode: "markers", marker: { size: 11, color: colorOf(s), line: { color: "white", width: 1 } },
      hovertemplate: `%{text} (${ptext(s)})<br>ΔE(σmax) = %{x:.3f}%<br>test error = %{y:.3f}%<extra></extra>` };
  });
  const rho = spearman(usable.map((p) => p.flatness), usable.map((p) => p.test_error));
  const sigmas = [...new Set(usable.map((p) => p.sigma))];
  const rhoText = Number.isNaN(rho) ? `Spearman ρ: needs at least 3 networks with distinct values (have ${usable.length}).`
    : `Spearman rank correlation between flatness and test error: ρ = ${rho.toFixed(3)} (n = ${usable.length}).`;
  $("#flat-spearman", root).textContent = rhoText + (sigmas.length > 1 ? ` Note: the largest σ differs between networks (${sigmas.join(", ")}).` : "");
  $("#flat-spearman", root).dataset.rho = Number.isNaN(rho) ? "" : String(rho);
  drawPlot("flat-scatter", traces, {
    title: { text: `Flatness vs generalisation${Number.isNaN(rho) ? "" : ` (Spearman ρ = ${rho.toFixed(3)})`}` },
    xaxis: { title: { text: `ΔE at the largest σ (${sigmas.join(", ")}), %` } }, yaxis: { title: { text: "test error (%)" } },
    height: 420, showlegend: true, legend: { title: { text: "sampler" }, orientation: "h", yref: "container", y: 0.01, yanchor: "bottom", x: 0 },
  }, { name: "flatness-vs-test-error", csv: toCSV({ network_id: usable.map((p) => p.id), name: usable.map((p) => p.name), sampler: usable.map((p) => p.sampler), sigma: usable.map((p) => p.sigma), flatness: usable.map((p) => p.flatness), test_error: usable.map((p) => p.test_error) }), json: { points: usable, spearman: Number.isNaN(rho) ? null : rho } });
}

// The Hessian's numbers of one network: top eigenvalue raw and canonical, canonical trace ± its standard error
function hessianCells(id) {
  if (!state.hessian) return "";
  if (state.hessianErrors.has(id)) return `<td colspan="3" class="error">${esc(state.hessianErrors.get(id))}</td>`;
  const h = state.hessians.get(id);
  if (!h) return `<td colspan="3" class="hint">computing…</td>`;
  return `<td class="num" data-hessian="raw" data-value="${h.raw.eigenvalues[0]}">${num(h.raw.eigenvalues[0], 4)}</td>
    <td class="num" data-hessian="canonical" data-value="${h.canonical.eigenvalues[0]}">${num(h.canonical.eigenvalues[0], 4)}</td>
    <td class="num" data-hessian="trace" data-value="${h.canonical.trace}">${num(h.canonical.trace, 4)} ± ${num(h.canonical.trace_sem, 2)} <a href="#/jobs?focus=${h.job_id}" data-hessian-job="${h.job_id}">job ${h.job_id}</a></td>`;
}

const fmt = (values, digits, scale = 1) => {
  const { mean, std } = meanStd(values.map((v) => [scale * v]));
  return values.length ? `${num(mean[0], digits)} ± ${num(std[0], digits)}` : "–";
};

// By sampler: ΔE(σmax) next to the Hessian's top eigenvalue (raw and canonical) and canonical trace, mean ± std
function renderSummary() {
  const box = $("#flat-by-sampler", root);
  const ids = state.nets.filter((id) => state.results.has(id) || state.hessians.has(id));
  if (!ids.length) { box.innerHTML = ""; return; }
  const samplers = [...new Set(ids.map((id) => samplerOf(byId(id))))];
  const rows = samplers.map((s) => {
    const mine = ids.filter((id) => samplerOf(byId(id)) === s);
    const flat = mine.filter((id) => state.results.has(id)).map((id) => { const r = state.results.get(id); return r.delta_mean[r.delta_mean.length - 1]; });
    const hs = mine.filter((id) => state.hessians.has(id)).map((id) => state.hessians.get(id));
    const cells = state.hessian ? `<td class="num">${fmt(hs.map((h) => h.raw.eigenvalues[0]), 4)}</td><td class="num">${fmt(hs.map((h) => h.canonical.eigenvalues[0]), 4)}</td>
      <td class="num">${fmt(hs.map((h) => h.canonical.trace), 4)}</td>` : "";
    return `<tr data-sampler="${esc(s)}"><th scope="row">${esc(s)}</th><td class="num">${mine.length}</td><td class="num">${fmt(flat, 3, 100)}%</td>${cells}</tr>`;
  }).join("");
  const heads = state.hessian ? `<th class="num" title="top eigenvalue of the training loss's Hessian, the network as stored">λmax raw</th>
    <th class="num" title="top eigenvalue on the canonical form, restricted to the tangent space of the spheres">λmax canonical</th><th class="num">trace canonical</th>` : "";
  box.innerHTML = `<table class="data compact"><caption>By sampler (mean ± std over the networks)</caption><thead><tr><th>sampler</th><th class="num">n</th>
    <th class="num">ΔE(σmax)</th>${heads}</tr></thead><tbody>${rows}</tbody></table>`;
}

function renderTable() {
  renderSummary();
  const span = state.hessian ? 8 : 5;
  const rows = state.nets.map((id) => {
    const n = byId(id);
    const r = state.results.get(id);
    const job = state.jobs.get(id);
    const head = `<th scope="row"><a href="#/network?id=${id}">${esc(label(id))}</a></th><td>${esc(samplerOf(n))}</td>`;
    if (state.errors.has(id)) return `<tr data-id="${id}">${head}<td colspan="${span}" class="error" role="alert">${esc(state.errors.get(id))}</td></tr>`;
    if (!r) return `<tr data-id="${id}">${head}<td colspan="5" class="hint">computing…</td>${hessianCells(id)}</tr>`;
    const last = r.delta_mean.length - 1;
    return `<tr data-id="${id}">${head}<td class="num">${num(r.sigma[last], 3)}</td><td class="num">${pct(r.delta_mean[last])} ± ${pct(r.delta_std[last])}</td>
      <td class="num">${pct(r.base_train_error)}</td><td class="num">${pct(n ? n.test_error : null)}</td><td>job <a href="#/jobs?focus=${job.id}" data-job="${job.id}">${job.id}</a>${job.cached ? " · cached" : ""} · ${Array.isArray(r.draws) ? r.draws.join("/") : r.draws} draws</td>${hessianCells(id)}</tr>`;
  }).join("");
  $("#flat-table", root).innerHTML = state.nets.length ? `<table class="data compact"><thead><tr><th>network</th><th>sampler</th><th class="num">σmax</th>
    <th class="num">ΔE(σmax) ± std</th><th class="num">train error</th><th class="num">test error</th><th></th>${state.hessian ? `<th class="num" title="top eigenvalue of the training loss's Hessian, the network as stored">λmax raw</th>
    <th class="num" title="top eigenvalue on the canonical form, restricted to the tangent space of the spheres (the same for every rescaled copy)">λmax canonical</th>
    <th class="num" title="Hutchinson estimate ± its standard error, canonical">trace canonical</th>` : ""}</tr></thead><tbody>${rows}</tbody></table>` : "";
}

export default {
  init(section) {
    root = section;
    section.innerHTML = `
      <h2>Flatness (local energy)</h2>
      <p class="hint">ΔE(σ) = E[train error of w + σ z ⊙ w] − train error of w, z ~ N(0, I): how fast the error grows when every weight is
        shaken in proportion to itself. Flatter minimizers grow slower; the paper finds they also generalise better.</p>
      <form id="flat-form">
        <div id="flat-picker"></div>
        <div class="row">
          <span id="flat-params-fields" class="params"></span>
          <label title="one curve per group: the mean over its networks, with a band of ± one standard deviation">Group by <select id="flat-group">${GROUP_BY.map(([v, l]) => `<option value="${v}">${l}</option>`).join("")}</select></label>
          <label title="also a hessian job per network: the training loss's top Hessian eigenvalue and trace, as stored and in canonical coordinates (Dinh et al.: the raw numbers change under rescaling; the canonical ones do not)"><input type="checkbox" id="flat-hessian"> Hessian too</label>
          <button id="run-flatness" type="submit">Measure flatness</button>
        </div>
        <p id="flat-estimate" class="hint small" aria-live="polite"></p>
        <p id="flat-error" class="error" role="alert" hidden></p>
      </form>
      <div id="flat-progress" class="progress-list" hidden></div>
      <div class="two-col">
        <div>${plotBox("flat-curves")}<p id="flat-group-note" class="hint small"></p></div>
        <div>${plotBox("flat-scatter")}<p id="flat-spearman" class="summary" aria-live="polite"></p></div>
      </div>
      <div id="flat-table"></div>
      <div id="flat-by-sampler"></div>`;
    picker = new MultiPicker($("#flat-picker", root), { name: "flat-nets" });
    $("#flat-form", root).addEventListener("submit", runAll);
    estimate = attachEstimate($("#flat-form", root), $("#flat-estimate", root), formJobs);
    $("#flat-group", root).addEventListener("change", (ev) => {
      state.group = ev.target.value;
      setState("flatness", urlParams());
      lastKey = runKey();
      if (state.results.size) draw();
    });
    onNetworks(() => picker.render());
  },

  async enter(params) {
    await ensureNetworks(idList(params.nets));
    const box = $("#flat-params-fields", root);
    let fresh;
    try { fresh = await kindFields(box, "flatness", "flat"); } catch (e) {
      setError($("#flat-error", root), `Could not read the job kinds: ${e.message}`); return;
    }
    if (fresh) {
      $("#flat-sigmas", root).placeholder = "(the architecture's default)";
      $("#flat-sigmas", root).size = 24;
      $("#flat-seed", root).value = "";
      $("#flat-seed", root).placeholder = "0";
    }
    state.nets = idList(params.nets);
    state.sigmas = params.sigmas || "";
    state.draws = params.draws || "";
    state.noise = params.noise === "all" ? "all" : "weights";
    state.seed = params.seed || "";
    state.group = GROUP_BY.some(([v]) => v === params.group) ? params.group : "";
    state.hessian = params.hessian === "1";
    $("#flat-hessian", root).checked = state.hessian;
    $("#flat-group", root).value = state.group;
    picker.set(state.nets, { silent: true });
    $("#flat-sigmas", root).value = state.sigmas;
    $("#flat-draws", root).value = state.draws;
    $("#flat-params", root).value = state.noise;
    $("#flat-seed", root).value = state.seed;
    estimate();
    const key = runKey();
    if (state.nets.length && key !== lastKey) await runAll();
    else if (state.results.size) draw();  // the same measurements, perhaps grouped otherwise
  },
};
