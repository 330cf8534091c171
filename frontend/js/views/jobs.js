// Jobs: live progress, status, errors in words, cancel, re-run (the same kind and params), open the result.
import { cancelJob, getJob, listJobs, submitJob } from "../api.js";
import { hashOf, setState } from "../router.js";
import { byId, refreshNetworks } from "../store.js";
import { $, archText, dateText, esc, progressText, scheduleText, setError } from "../util.js";

const KINDS = ["train", "evaluate", "path", "distance", "matrix", "canonicalize", "flatness", "plane", "slice"];
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

let root;
let timer = null;
let visible = false;
// cached: also list the jobs answered at once from the cache (every visit to a view whose jobs ran before
// makes one); hidden by default so that they never bury the work that was computed
const ui = { status: "", kind: "", cached: false, focus: null, jobs: [] };

const netName = (id) => { const n = byId(id); return n ? `${esc(n.name)} #${id}` : `#${id}`; };

// What a job is about, in a few words.
function describe(j) {
  const p = j.params || {};
  switch (j.kind) {
    case "train": return `${esc(p.name || "")}: ${esc(archText(j))} on ${esc(p.dataset)} with ${esc(p.optimizer)}, ${p.epochs ?? "?"} epochs, seed ${p.seed ?? 0}`;
    case "path": return `${esc(p.type)} path ${netName(p.a)} → ${netName(p.b)}, ${p.points} points${p.variant ? ` (${esc(p.variant)})` : ""}`;
    case "distance": return `distances ${netName(p.a)} ↔ ${netName(p.b)}`;
    case "matrix": return `matrix of ${(p.networks || []).length} networks${p.barriers ? " with barriers" : ""}`;
    case "flatness": return `flatness of ${netName(p.network)}${p.sigmas ? `, σ ∈ {${p.sigmas.join(", ")}}` : ""}`;
    case "plane": return `plane through ${(p.networks || []).map(netName).join(", ")}, ${p.grid ?? "?"}²${p.mode ? ` ${esc(p.mode)}` : ""}`;
    case "slice": return `${p.dims ?? 2}-D ${esc(p.mode || "filter")} slice around ${netName(p.network)}, ${p.points ?? "?"} points, span ${p.span ?? "?"}`;
    case "evaluate": case "canonicalize": return `${j.kind} ${netName(p.network)}`;
    default: return esc(JSON.stringify(p));
  }
}

// The view that shows a job's result (the same address the view itself would write).
function link(j) {
  const p = j.params || {};
  if (j.kind === "train" && (j.status === "running" || j.status === "queued")) return `<a href="${esc(hashOf("network", { job: j.id }))}" data-live="${j.id}">live curve</a>`;
  if (j.status !== "succeeded") return "";
  const q = (view, params) => `<a href="${esc(hashOf(view, params))}">${view === "network" || view === "networks" ? "network" : "open"}</a>`;
  switch (j.kind) {
    case "train": return q("networks", { q: p.name || "" });
    case "path": return q("compare", { a: p.a, b: p.b, types: [p.type], points: p.points, bn: p.bn && p.bn !== "recompute" ? p.bn : "",
      variant: p.variant && p.variant !== "geodesic" ? p.variant : "", epochs: p.type === "bend" ? p.epochs : "", lr: p.type === "bend" ? p.lr : "" });
    case "distance": return q("compare", { a: p.a, b: p.b });
    case "matrix": return q("map", { nets: p.networks || [], barriers: p.barriers ? 1 : "", points: p.barriers ? p.points : "" });
    case "flatness": return q("flatness", { nets: [p.network], sigmas: (p.sigmas || []).join(","), draws: p.draws, noise: p.params === "all" ? "all" : "", seed: p.seed || "" });
    case "plane": return q("plane", { nets: p.networks || [], grid: p.grid, mode: p.mode, margin: p.margin, bn: p.bn && p.bn !== "recompute" ? p.bn : "" });
    case "slice": return q("slice", { network: p.network, dims: p.dims, points: p.points, span: p.span, mode: p.mode, seed: p.seed, bn: p.bn });
    case "evaluate": case "canonicalize": return q("network", { id: p.network });
    default: return "";
  }
}

function duration(j) {
  if (!j.started_at) return "";
  const end = j.finished_at ? new Date(j.finished_at + (j.finished_at.endsWith("Z") ? "" : "Z")) : new Date();
  const s = (end - new Date(j.started_at + (j.started_at.endsWith("Z") ? "" : "Z"))) / 1000;
  return s < 0 ? "" : s < 60 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

function render() {
  const rows = ui.jobs.map((j) => {
    const p = Math.round(100 * (j.progress || 0));
    const active = j.status === "queued" || j.status === "running";
    const words = j.status === "failed" ? `<span class="error">${esc(j.error || j.message || "failed without a message")}</span>` : esc(j.message || "");
    return `<tr data-job="${j.id}" class="${ui.focus === j.id ? "focus" : ""}">
      <td class="num">${j.id}</td><td>${esc(j.kind)}</td><td class="what">${describe(j)}</td>
      <td class="status-${j.status}">${j.status}${j.cached ? ` <span class="pill" title="answered at once from job ${j.cached_from}'s result">cached</span>` : ""}${j.status === "queued" && j.queue_position ? `<br><span class="hint small queue-position" data-position="${j.queue_position}"${j.starts_in_seconds !== null && j.starts_in_seconds !== undefined ? ` data-starts="${j.starts_in_seconds}"` : ""}>${esc(scheduleText(j))}</span>` : ""}</td>
      <td><span class="minibar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${p}" aria-label="progress of job ${j.id}"><span style="width:${j.status === "succeeded" ? 100 : 100 * (j.progress || 0)}%"></span></span> ${j.status === "succeeded" ? "100%" : progressText(j.progress)}${j.status === "running" && j.eta_seconds !== null && j.eta_seconds !== undefined ? `<br><span class="hint small eta" data-eta="${j.eta_seconds}">${esc(scheduleText(j))}</span>` : ""}</td>
      <td class="message">${words}</td>
      <td>${esc(j.owner)}</td><td>${esc(dateText(j.created_at))}</td><td class="num">${duration(j)}</td>
      <td class="actions">${active ? `<button type="button" class="secondary small" data-cancel="${j.id}">Cancel</button>` : ""}
        ${!active && j.kind !== "evaluate" ? `<button type="button" class="secondary small" data-rerun="${j.id}">Re-run</button>` : ""} ${link(j)}</td>
    </tr>`;
  }).join("");
  $("#jobs-table tbody", root).innerHTML = rows || `<tr><td colspan="10" class="hint">No jobs${ui.status || ui.kind ? " match the filter" : ui.cached ? " yet" : " computed yet"}.</td></tr>`;
}

async function refresh() {
  clearTimeout(timer);
  if (!visible) return;
  try {
    ui.jobs = await listJobs({ status: ui.status, kind: ui.kind, limit: 200, cached: ui.cached ? "" : "false" });
    // a job the address points at (a view's "job N" link) is shown even when it is a cached answer
    if (ui.focus && !ui.jobs.some((j) => j.id === ui.focus)) {
      try { const j = await getJob(ui.focus); if (j && (!ui.status || j.status === ui.status) && (!ui.kind || j.kind === ui.kind)) ui.jobs = [j, ...ui.jobs].sort((x, y) => y.id - x.id); } catch (_) { /* gone or not visible */ }
    }
    setError($("#jobs-error", root), "");
    render();
  } catch (e) {
    setError($("#jobs-error", root), `Could not list the jobs: ${e.message}`);
  }
  const busy = ui.jobs.some((j) => j.status === "queued" || j.status === "running");
  timer = setTimeout(refresh, busy ? 1000 : 5000);
}

async function act(ev) {
  const cancel = ev.target.closest("[data-cancel]");
  const rerun = ev.target.closest("[data-rerun]");
  const note = $("#jobs-note", root);
  if (cancel) {
    cancel.disabled = true;
    try { await cancelJob(cancel.dataset.cancel); note.textContent = `Job ${cancel.dataset.cancel} cancelled.`; }
    catch (e) { setError($("#jobs-error", root), `Cancel job ${cancel.dataset.cancel}: ${e.message}`); }
    refresh();
  }
  if (rerun) {
    const job = ui.jobs.find((j) => j.id === Number(rerun.dataset.rerun));
    rerun.disabled = true;
    try {
      const fresh = await submitJob(job.kind, job.params);
      note.textContent = `Job ${job.id} re-submitted as job ${fresh.id}${fresh.cached ? ", answered at once from the cache" : ""}.`;
      ui.focus = fresh.id;
      if (job.kind === "train") setTimeout(refreshNetworks, 2000);
    } catch (e) { setError($("#jobs-error", root), `Re-run job ${job.id}: ${e.message}`); }
    refresh();
  }
}

function saveState() { setState("jobs", { status: ui.status, kind: ui.kind, cached: ui.cached ? 1 : "" }); }

export default {
  init(section) {
    root = section;
    section.innerHTML = `
      <div class="view-head"><h2>Jobs</h2>
        <div class="toolbar">
          <label>Status <select id="jobs-status"><option value="">all</option>${STATUSES.map((s) => `<option>${s}</option>`).join("")}</select></label>
          <label>Kind <select id="jobs-kind"><option value="">all</option>${KINDS.map((k) => `<option>${k}</option>`).join("")}</select></label>
          <label title="jobs answered at once from an earlier job's result (reopening a view makes one each time)"><input type="checkbox" id="jobs-cached"> cached answers</label>
          <button id="jobs-refresh" type="button" class="secondary">Refresh</button>
        </div></div>
      <p id="jobs-error" class="error" role="alert" hidden></p>
      <p id="jobs-note" class="done" aria-live="polite"></p>
      <div class="table-wrap"><table id="jobs-table" class="data">
        <thead><tr><th class="num">id</th><th>kind</th><th>what</th><th>status</th><th>progress</th><th>message</th><th>owner</th><th>created</th><th class="num">took</th><th><span class="sr-only">actions</span></th></tr></thead>
        <tbody></tbody></table></div>`;
    $("#jobs-status", root).addEventListener("change", (ev) => { ui.status = ev.target.value; saveState(); refresh(); });
    $("#jobs-kind", root).addEventListener("change", (ev) => { ui.kind = ev.target.value; saveState(); refresh(); });
    $("#jobs-cached", root).addEventListener("change", (ev) => { ui.cached = ev.target.checked; saveState(); refresh(); });
    $("#jobs-refresh", root).addEventListener("click", refresh);
    $("#jobs-table", root).addEventListener("click", act);
  },

  async enter(params) {
    visible = true;
    ui.status = STATUSES.includes(params.status) ? params.status : "";
    ui.kind = params.kind || "";
    ui.focus = Number(params.focus) || null;
    ui.cached = params.cached === "1";
    $("#jobs-cached", root).checked = ui.cached;
    $("#jobs-status", root).value = ui.status;
    if (ui.kind && !KINDS.includes(ui.kind)) $("#jobs-kind", root).insertAdjacentHTML("beforeend", `<option>${esc(ui.kind)}</option>`);
    $("#jobs-kind", root).value = ui.kind;
    await refresh();
  },

  leave() { visible = false; clearTimeout(timer); },
};
