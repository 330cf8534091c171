// One network: its metadata, its training curve, tags and visibility, download, links to the other views.
import { authHeaders, followJob, getJob, getNetwork, getToken, patchNetwork } from "../api.js";
import { clearPlot, drawPlot, plotBox } from "../plots.js";
import { go } from "../router.js";
import { refreshNetworks, store } from "../store.js";
import { $, archText, dateText, esc, num, pct, progressText, ptext, rowsToCSV, samplerOf, scheduleText, setError } from "../util.js";

let root;
let net = null;
let shownId = null;  // the network the address names (net is null until it is loaded)
let watching = 0;  // the live curve being followed (a newer one stops the older)
const edited = new Set();  // edit fields the user changed since the network was shown or saved
const EDIT_FIELDS = ["#network-rename", "#network-tags", "#network-visibility", "#network-note"];
// the training curve's loss axis (right) and margins, live and stored alike
const LOSS_AXIS = { title: { text: "loss", standoff: 8 }, overlaying: "y", side: "right", showgrid: false, zeroline: false, rangemode: "tozero", automargin: true };
const HISTORY_MARGIN = { t: 40, r: 70, b: 100, l: 60 };

// A train job's progress message at the end of an epoch ("training epoch 7/400: train error 1.23%, test error
// 3.45%, train loss 0.0412, test loss 0.118", workers/landscape/train.py): one point of the curve while the
// network does not exist yet (losses null in a message without them).
export function epochOf(message) {
  const num = "([-+\\d.eE]+|nan|inf)";
  const m = new RegExp(`^(.*?)epoch (\\d+)\\/(\\d+): train error ([\\d.]+)%, test error ([\\d.]+)%(?:, train loss ${num}, test loss ${num})?`).exec(message || "");
  const loss = (v) => (v === undefined || !Number.isFinite(Number(v)) ? null : Number(v));
  return m ? { phase: m[1].trim() || "training", epoch: Number(m[2]), total: Number(m[3]), train_error: Number(m[4]) / 100,
    test_error: Number(m[5]) / 100, train_loss: loss(m[6]), test_loss: loss(m[7]) } : null;
}

// A running train job: its curve as it grows, then the network's own page when it is stored.
async function followTraining(jobId) {
  const mine = ++watching;
  const err = $("#network-error", root);
  let job;
  try { job = await getJob(jobId); } catch (e) { setError(err, e.message); return; }
  if (job.kind !== "train") { setError(err, `Job ${jobId} is a ${job.kind} job, not a training.`); return; }
  const points = new Map();  // "phase/epoch" -> point
  const lossShown = {};  // loss curves the user turned on in the legend stay on as the curve grows
  const rememberLegend = () => {
    const div = document.getElementById("history-plot");
    if (!div || div.dataset.legendHook === String(mine) || !div.on) return;
    div.dataset.legendHook = String(mine);
    div.on("plotly_restyle", () => { (div.data || []).forEach((t) => { if (/loss/.test(t.name)) lossShown[t.name] = t.visible === true; }); });
  };
  const p = job.params || {};
  $("#network-title", root).textContent = `Training ${p.name || ""} (job ${job.id})`;
  $("#network-meta", root).innerHTML = `<dt>architecture</dt><dd>${esc(archText(job))}</dd><dt>data set</dt><dd>${esc(p.dataset)}</dd>
    <dt>sampler</dt><dd>${esc(p.optimizer)}, ${p.epochs ?? "?"} epochs, seed ${p.seed ?? 0}</dd><dt>state</dt><dd id="live-state" aria-live="polite"></dd>`;
  $("#network-edit", root).hidden = true;
  $("#network-compare", root).hidden = true;
  $("#network-links", root).innerHTML = `<a href="#/jobs?focus=${job.id}">the job</a>`;
  const draw = (j) => {
    if (mine !== watching) return;
    const e = epochOf(j.message);
    if (e) points.set(`${e.phase}/${e.epoch}`, e);
    $("#live-state", root).textContent = `${j.status} ${progressText(j.progress)}${scheduleText(j) ? ` · ${scheduleText(j)}` : ""} — ${j.message || ""}`;
    const phases = [...new Set([...points.values()].map((q) => q.phase))];
    const traces = phases.flatMap((phase) => {
      const pts = [...points.values()].filter((q) => q.phase === phase).sort((a, b) => a.epoch - b.epoch);
      const suffix = phases.length > 1 ? ` (${phase})` : "";
      const line = (key, name, extra) => ({ x: pts.map((q) => q.epoch), y: pts.map((q) => (key.endsWith("error") ? 100 * q[key] : q[key])),
        name: `${name}${suffix}`, mode: "lines+markers", marker: { size: 4 }, ...extra });
      return [
        line("train_error", "train error", { line: { color: "#2563eb" } }),
        line("test_error", "test error", { line: { color: "#dc2626" } }),
        line("train_loss", "train loss", { yaxis: "y2", line: { color: "#2563eb", dash: "dot" }, visible: lossShown[`train loss${suffix}`] ? true : "legendonly" }),
        line("test_loss", "test loss", { yaxis: "y2", line: { color: "#dc2626", dash: "dot" }, visible: lossShown[`test loss${suffix}`] ? true : "legendonly" }),
      ];
    });
    if (!traces.length) return;
    $("#history-note", root).textContent = "Live: a point at each epoch end the worker reported (click a loss in the legend to show it); the full curve is on the network's page when the training ends.";
    drawPlot("history-plot", traces, {
      title: { text: `Training curve of ${ptext(p.name || `job ${j.id}`)} (live)` }, xaxis: { title: { text: "epoch" }, range: [0, (p.epochs || 1) + 1] },
      yaxis: { title: { text: "error (%)" }, rangemode: "tozero" },
      yaxis2: LOSS_AXIS, margin: HISTORY_MARGIN,
    }, { name: `job-${j.id}-live`, csv: rowsToCSV([...points.values()]), json: [...points.values()] });
    rememberLegend();
  };
  try {
    const done = await followJob(job, draw);
    if (mine !== watching) return;
    if (done.status === "succeeded" && done.result && done.result.network_id) go("network", { id: done.result.network_id });
    else setError(err, `The training ${done.status === "cancelled" ? "was cancelled" : `failed: ${done.error || done.message}`}.`);
  } catch (e) { if (mine === watching) setError(err, e.message); }
}

function sourceText(src) {
  if (!src) return "";
  if (src.kind === "trained") {
    const params = Object.entries(src.params || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    return `trained with ${src.optimizer}${params ? ` (${params})` : ""}${src.job_id ? ` by job ${src.job_id}` : ""}`;
  }
  if (src.kind === "uploaded") return `uploaded${src.filename ? ` from ${src.filename}` : ""}`;
  return `${src.kind} ${JSON.stringify(Object.fromEntries(Object.entries(src).filter(([k]) => k !== "kind")))}`;
}

// Whether a training reached its target (train jobs since science version 6 record it in the source)
function targetText(src) {
  if (!src || src.kind !== "trained" || src.reached_target === undefined) return "";
  const target = `training error ≤ ${pct(src.target_error)}`;
  return src.reached_target
    ? `<dt>minimizer</dt><dd id="network-target" class="ok">yes: ${esc(target)}${src.warning ? ` <span class="error">${esc(src.warning)}</span>` : ""}</dd>`
    : `<dt>minimizer</dt><dd id="network-target" class="error">no: ${esc(src.warning || `not at ${target}`)}</dd>`;
}

function render() {
  const n = net;
  const flat = store.flatness.get(n.id);
  $("#network-title", root).textContent = `${n.name} (#${n.id})`;
  $("#network-meta", root).innerHTML = `
    <dt>architecture</dt><dd>${esc(archText(n))} <code>${esc(JSON.stringify(n.architecture))}</code></dd>
    <dt>data set</dt><dd>${esc(n.dataset)} ${Object.keys(n.dataset_options || {}).length ? `<code>${esc(JSON.stringify(n.dataset_options))}</code>` : ""}</dd>
    <dt>how it was made</dt><dd>${esc(sourceText(n.source))}</dd>${targetText(n.source)}
    <dt>train error</dt><dd class="num">${pct(n.train_error)} <span class="hint">loss ${num(n.train_loss)}</span></dd>
    <dt>test error</dt><dd class="num">${pct(n.test_error)} <span class="hint">loss ${num(n.test_loss)}</span></dd>
    <dt>flatness</dt><dd>${flat ? `ΔE = ${pct(flat.delta)} at σ = ${flat.sigma}` : `not measured yet — <a href="#/flatness?nets=${n.id}">measure it</a>`}</dd>
    <dt>parameters</dt><dd class="num">${n.n_params.toLocaleString("en")}</dd>
    <dt>owner</dt><dd>${esc(n.owner)} · ${esc(n.visibility)}</dd>
    <dt>created</dt><dd>${esc(dateText(n.created_at))}</dd>
    <dt>note</dt><dd id="network-note-text" class="note">${n.note ? esc(n.note) : `<span class="hint">none yet — write one below</span>`}</dd>
    <dt>weights</dt><dd><code title="SHA-256 of the weights">${esc(n.weights_hash.slice(0, 16))}…</code> <button type="button" class="link" id="network-download">download .safetensors</button></dd>`;
  // what the user typed while the network was loading (or since its last save) stays: only untouched fields
  // take the stored values
  const fill = (sel, value) => { if (!edited.has(sel)) $(sel, root).value = value; };
  fill("#network-tags", (n.tags || []).join(", "));
  fill("#network-rename", n.name);
  fill("#network-visibility", n.visibility);
  fill("#network-note", n.note || "");
  $("#network-save", root).disabled = false;
  $("#network-saved", root).textContent = edited.size ? "Not saved yet: your changes are kept; press Save." : "";
  $("#network-links", root).innerHTML = `
    <a href="#/flatness?nets=${n.id}">Flatness of this network</a> ·
    <a href="#/networks?sel=${n.id}">Choose it in the table</a> ·
    <a href="#/jobs">Jobs</a>`;
  $("#network-download", root).addEventListener("click", download);
  plotHistory();
}

function plotHistory() {
  const h = net.history || [];
  if (!h.length) {
    clearPlot("history-plot");
    $("#history-note", root).textContent = net.source && net.source.kind === "trained" ? "No training curve was recorded." : "Uploaded networks have no training curve.";
    return;
  }
  $("#history-note", root).textContent = "";
  // the x axis counts epochs over all phases (ADV: pre-training first, then training)
  const x = h.map((_, i) => i + 1);
  const phase = h.map((e) => e.phase || "train");
  const curve = (key, name, extra = {}) => ({
    x, y: h.map((e) => (e[key] === undefined || e[key] === null ? null : key.includes("error") ? 100 * e[key] : e[key])),
    name, mode: "lines+markers", marker: { size: 4 }, customdata: phase,
    hovertemplate: `${name}: %{y:.4g}${key.includes("error") ? "%" : ""}<br>epoch %{x} (%{customdata})<extra></extra>`, ...extra,
  });
  const traces = [
    curve("train_error", "train error", { line: { color: "#2563eb" } }),
    curve("test_error", "test error", { line: { color: "#dc2626" } }),
    curve("train_loss", "train loss", { yaxis: "y2", line: { color: "#2563eb", dash: "dot" }, visible: "legendonly" }),
    curve("test_loss", "test loss", { yaxis: "y2", line: { color: "#dc2626", dash: "dot" }, visible: "legendonly" }),
  ];
  const pre = phase.filter((p) => p === "pretrain").length;
  const shapes = pre ? [{ type: "rect", xref: "x", yref: "paper", x0: 0.5, x1: pre + 0.5, y0: 0, y1: 1, fillcolor: "#fde68a", opacity: 0.3, line: { width: 0 } }] : [];
  const annotations = pre ? [{ xref: "x", yref: "paper", x: (pre + 1) / 2, y: 1, text: "pre-training", showarrow: false, yanchor: "bottom" }] : [];
  drawPlot("history-plot", traces, {
    title: { text: `Training curve of ${ptext(net.name)}` },
    xaxis: { title: { text: "epoch" } },
    yaxis: { title: { text: "error (%)" }, rangemode: "tozero" },
    yaxis2: LOSS_AXIS, margin: HISTORY_MARGIN,
    shapes, annotations,
  }, { name: `network-${net.id}-history`, csv: rowsToCSV(h), json: h });
}

async function download() {
  const url = `/api/networks/${net.id}/weights`;
  if (!getToken()) { window.location.assign(url); return; }  // a plain link: the browser saves it
  try {
    const res = await fetch(url, { headers: authHeaders() });
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    const blob = await res.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${net.name}-${net.id}.safetensors`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) { setError($("#network-error", root), `Download failed: ${e.message}`); }
}

async function save(ev) {
  ev.preventDefault();
  const err = $("#network-error", root);
  setError(err, "");
  if (!net || net.id !== shownId) { setError(err, "The network is still loading: your changes are kept; save once it is shown."); return; }
  const patch = {
    name: $("#network-rename", root).value.trim(),
    tags: $("#network-tags", root).value.split(",").map((s) => s.trim()).filter(Boolean),
    visibility: $("#network-visibility", root).value,
    note: $("#network-note", root).value,
  };
  try {
    net = await patchNetwork(net.id, patch);
    edited.clear();
    render();
    $("#network-saved", root).textContent = "Saved.";
    setTimeout(() => { if ($("#network-saved", root).textContent === "Saved.") $("#network-saved", root).textContent = ""; }, 2500);
    refreshNetworks();
  } catch (e) { setError(err, e.message); }
}

export default {
  init(section) {
    root = section;
    section.innerHTML = `
      <p><a href="#/networks">← all networks</a></p>
      <h2 id="network-title">Network</h2>
      <p id="network-error" class="error" role="alert" hidden></p>
      <div class="two-col">
        <div>
          <dl id="network-meta" class="meta"></dl>
          <form id="network-edit" class="row">
            <label>Name <input id="network-rename"></label>
            <label>Tags <input id="network-tags" placeholder="comma, separated"></label>
            <label>Visibility <select id="network-visibility"><option>lab</option><option>private</option></select></label>
            <label class="block wide">Note <textarea id="network-note" rows="3" maxlength="4000" placeholder="what this run is, what to remember about it"></textarea></label>
            <button type="submit" id="network-save">Save</button> <span id="network-saved" class="done" aria-live="polite"></span>
          </form>
          <p id="network-links"></p>
          <form id="network-compare" class="row">
            <label>Compare with <select id="network-other"></select></label>
            <button type="submit">Open in Compare</button>
          </form>
        </div>
        <div>
          ${plotBox("history-plot")}
          <p id="history-note" class="hint"></p>
        </div>
      </div>`;
    $("#network-edit", root).addEventListener("submit", save);
    for (const sel of EDIT_FIELDS) $(sel, root).addEventListener("input", () => edited.add(sel));
    $("#network-compare", root).addEventListener("submit", (ev) => {
      ev.preventDefault();
      const other = $("#network-other", root).value;
      if (other) go("compare", { a: net.id, b: other });
    });
  },

  async enter(params) {
    const err = $("#network-error", root);
    setError(err, "");
    watching++;  // stop following a training shown before
    $("#network-edit", root).hidden = false;
    $("#network-compare", root).hidden = false;
    if (Number(params.job)) { clearPlot("history-plot"); $("#history-note", root).textContent = "Waiting for the first epoch…"; await followTraining(Number(params.job)); return; }
    const id = Number(params.id);
    if (id !== shownId) {  // another network: its fields start empty, Save waits until it is loaded
      shownId = id;
      net = null;
      edited.clear();
      for (const sel of EDIT_FIELDS) if (sel !== "#network-visibility") $(sel, root).value = "";
      $("#network-saved", root).textContent = "";
    }
    $("#network-save", root).disabled = true;
    if (!id) { setError(err, "No network given: the address needs ?id=<network id> (or ?job=<a running train job>)."); return; }
    try {
      const loaded = await getNetwork(id);
      if (id !== shownId) return;  // another network was opened meanwhile
      net = loaded;
    } catch (e) {
      if (id !== shownId) return;
      $("#network-title", root).textContent = `Network #${id}`;
      $("#network-meta", root).innerHTML = "";
      clearPlot("history-plot");
      setError(err, e.message);
      return;
    }
    const others = store.networks.filter((n) => n.id !== net.id && n.dataset === net.dataset);
    $("#network-other", root).innerHTML = `<option value="">— choose —</option>` + others.map((n) => `<option value="${n.id}">${esc(n.name)} (#${n.id}) · ${esc(samplerOf(n))}</option>`).join("");
    render();
  },
};
