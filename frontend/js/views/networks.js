// Networks: a sortable, filterable table; choose networks for the other views; train; upload; delete.
import { FINAL, deleteNetwork, listJobs, runJob, uploadNetwork } from "../api.js";
import { paramFields, readParams } from "../forms.js";
import { go, setState } from "../router.js";
import { catalogues, onNetworks, refreshNetworks, store } from "../store.js";
import { $, archText, dateText, esc, idList, pct, samplerOf, setError, showJobProgress } from "../util.js";

const HYPER = [["epochs", "epochs"], ["lr", "lr"], ["batch_size", "batch"], ["seed", "seed"]];
const params = (n) => (n.source && n.source.params) || {};
const hyper = (n, key) => { const v = params(n)[key]; return typeof v === "number" ? v : null; };
const otherHyper = (n) => Object.entries(params(n)).filter(([k]) => !HYPER.some(([h]) => h === k))
  .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");

const COLUMNS = [
  { key: "id", label: "id", value: (n) => n.id, num: true },
  { key: "name", label: "name", value: (n) => n.name.toLowerCase() },
  { key: "architecture", label: "architecture", value: (n) => archText(n) },
  { key: "dataset", label: "data set", value: (n) => n.dataset },
  { key: "sampler", label: "sampler", value: (n) => samplerOf(n) },
  { key: "train_error", label: "train error", value: (n) => n.train_error, num: true },
  { key: "test_error", label: "test error", value: (n) => n.test_error, num: true },
  { key: "flatness", label: "flatness ΔE(σmax)", value: (n) => (store.flatness.get(n.id) || {}).delta, num: true,
    title: "local energy: train error increase under multiplicative noise at the largest σ of the latest flatness job (lower = flatter)" },
  { key: "tags", label: "tags", value: (n) => (n.tags || []).join(", ") },
  { key: "owner", label: "owner", value: (n) => n.owner },
  { key: "created_at", label: "created", value: (n) => n.created_at },
  // hyper-parameters from the provenance (how a trained network was trained)
  ...HYPER.map(([key, label]) => ({ key: `hp_${key}`, label, value: (n) => hyper(n, key), num: true, hyper: key,
    title: `${key} of the sampler that trained it (from its provenance)` })),
  { key: "hp_other", label: "other hyper-parameters", value: (n) => otherHyper(n), title: "the sampler's other parameters" },
  { key: "note", label: "note", value: (n) => (n.note || "").toLowerCase() },
];

const ui = { q: "", dataset: "", sampler: "", maxtest: "", epochs: "", since: "", sort: "id", dir: "asc", selected: [] };
let root;

function urlState() {
  return { q: ui.q, dataset: ui.dataset, sampler: ui.sampler, maxtest: ui.maxtest, epochs: ui.epochs, since: ui.since, sort: ui.sort === "id" ? "" : ui.sort, dir: ui.dir === "asc" ? "" : ui.dir, sel: ui.selected.join(",") };
}

function visibleRows() {
  const q = ui.q.toLowerCase();
  const col = COLUMNS.find((c) => c.key === ui.sort) || COLUMNS[0];
  // numeric filters: test error at most x %, trained for at least n epochs, created on or after a day
  const maxTest = ui.maxtest === "" ? null : Number(ui.maxtest) / 100;
  const minEpochs = ui.epochs === "" ? null : Number(ui.epochs);
  const rows = store.networks.filter((n) =>
    (!ui.dataset || n.dataset === ui.dataset) && (!ui.sampler || samplerOf(n) === ui.sampler) &&
    (maxTest === null || Number.isNaN(maxTest) || (n.test_error !== null && n.test_error !== undefined && n.test_error <= maxTest + 1e-12)) &&
    (minEpochs === null || Number.isNaN(minEpochs) || (hyper(n, "epochs") ?? -1) >= minEpochs) &&
    (!ui.since || (n.created_at || "").slice(0, 10) >= ui.since) &&
    (!q || [n.name, `#${n.id}`, archText(n), n.dataset, samplerOf(n), n.owner, ...(n.tags || [])].join(" ").toLowerCase().includes(q)));
  const sign = ui.dir === "desc" ? -1 : 1;
  return rows.sort((a, b) => {
    const va = col.value(a), vb = col.value(b);
    const missingA = va === null || va === undefined || va === "", missingB = vb === null || vb === undefined || vb === "";
    if (missingA || missingB) return missingA === missingB ? a.id - b.id : missingA ? 1 : -1;  // unknowns last
    if (va < vb) return -sign;
    if (va > vb) return sign;
    return a.id - b.id;
  });
}

function renderTable() {
  if (!root) return;
  const rows = visibleRows();
  const head = COLUMNS.map((c) => {
    const sorted = ui.sort === c.key;
    const aria = sorted ? (ui.dir === "asc" ? "ascending" : "descending") : "none";
    const arrow = sorted ? (ui.dir === "asc" ? " ▲" : " ▼") : "";
    return `<th aria-sort="${aria}" class="${c.num ? "num" : ""}" ${c.title ? `title="${esc(c.title)}"` : ""}><button type="button" class="sort" data-sort="${c.key}">${esc(c.label)}${arrow}</button></th>`;
  }).join("");
  $("#networks-table thead", root).innerHTML = `<tr><th><span class="sr-only">choose</span></th>${head}<th><span class="sr-only">actions</span></th></tr>`;
  $("#networks-table tbody", root).innerHTML = rows.map((n) => {
    const flat = store.flatness.get(n.id);
    const chosen = ui.selected.includes(n.id);
    return `<tr data-id="${n.id}" class="${chosen ? "chosen" : ""}">
      <td><input type="checkbox" name="choose" value="${n.id}" aria-label="choose ${esc(n.name)}" ${chosen ? "checked" : ""}></td>
      <td class="num">${n.id}</td>
      <td><a href="#/network?id=${n.id}" class="net-link">${esc(n.name)}</a>${n.visibility === "private" ? ` <span class="pill" title="visible to its owner only">private</span>` : ""}</td>
      <td>${esc(archText(n))}</td><td>${esc(n.dataset)}</td><td>${esc(samplerOf(n))}</td>
      <td class="num">${pct(n.train_error)}</td><td class="num">${pct(n.test_error)}</td>
      <td class="num" ${flat ? `title="σ = ${flat.sigma}"` : ""}>${flat ? pct(flat.delta) : "–"}</td>
      <td>${(n.tags || []).map((t) => `<span class="tag">${esc(t)}</span>`).join(" ")}</td>
      <td>${esc(n.owner)}</td><td>${esc(dateText(n.created_at))}</td>
      ${HYPER.map(([key]) => `<td class="num" data-hyper="${key}">${hyper(n, key) ?? "–"}</td>`).join("")}
      <td class="hyper-other">${esc(otherHyper(n))}</td>
      <td class="note-cell" title="${esc(n.note || "")}">${esc((n.note || "").length > 60 ? `${n.note.slice(0, 60)}…` : n.note || "")}</td>
      <td class="actions" data-actions="${n.id}"><button type="button" class="secondary small" data-delete="${n.id}" aria-label="delete ${esc(n.name)}">Delete</button></td>
    </tr>`;
  }).join("");
  const empty = $("#networks-empty", root);
  if (store.error) { empty.textContent = `Could not list the networks: ${store.error}`; empty.className = "error"; empty.hidden = false; }
  else if (!store.networks.length && !demoChecked) empty.hidden = true;  // a demo may be training: ask first
  else if (!store.networks.length && demo) { empty.textContent = "The demo's networks are being trained (see above); they appear here as they finish."; empty.className = "hint"; empty.hidden = false; }
  else if (!store.networks.length) { empty.innerHTML = "No networks yet. Train one or upload one below, or start the service with <code>--demo</code>."; empty.className = "hint"; empty.hidden = false; }
  else if (!rows.length) { empty.textContent = "No network matches the filter."; empty.className = "hint"; empty.hidden = false; }
  else empty.hidden = true;
  $("#networks-count", root).textContent = `${rows.length} of ${store.networks.length} networks`;
  renderSelection();
}

// `toroid serve --demo train` trains the demo's networks as train jobs tagged "demo" (plain `--demo` loads the
// shipped ones before the service answers): while any of them runs, say so with their progress.
let demo = null;
let demoChecked = false;
let demoTimer = null;
async function refreshDemo() {
  let jobs;
  try { jobs = await listJobs({ kind: "train", limit: 200 }); } catch (_) { jobs = []; }
  demoChecked = true;
  const mine = jobs.filter((j) => ((j.params || {}).tags || []).includes("demo"));
  const active = mine.filter((j) => !FINAL.includes(j.status));
  const before = demo;
  demo = active.length ? {
    total: mine.length, done: mine.length - active.length,
    progress: mine.reduce((sum, j) => sum + (FINAL.includes(j.status) ? 1 : j.progress || 0), 0) / mine.length,
    now: active.find((j) => j.status === "running"),
  } : null;
  const line = $("#demo-status", root);
  if (demo) {
    const now = demo.now ? ` Now: ${esc(demo.now.params.name || `job ${demo.now.id}`)}, ${esc(demo.now.message || "starting")}.` : "";
    line.innerHTML = `The demo is training its networks: ${demo.done} of ${demo.total} done (${Math.round(100 * demo.progress)}%).${now} <progress max="1" value="${demo.progress}"></progress>`;
    line.hidden = false;
  } else line.hidden = true;
  if (!root.querySelector(".confirm")) renderTable();  // never wipe a question the user is answering
  if ((before && (!demo || demo.done !== before.done)) || (!before && demo)) refreshNetworks();
  clearTimeout(demoTimer);
  if (demo) demoTimer = setTimeout(() => { if (!root.hidden) refreshDemo(); }, 2000);
}

function renderSelection() {
  const n = ui.selected.length;
  const names = ui.selected.map((id) => { const net = store.networks.find((x) => x.id === id); return net ? net.name : `#${id}`; });
  $("#selection-text", root).textContent = n ? `${n} chosen: ${names.join(", ")}` : "Choose networks with the boxes, then open a view with them.";
  $("#sel-compare", root).disabled = n !== 2;
  $("#sel-flatness", root).disabled = n < 1;
  $("#sel-map", root).disabled = n < 2;
  $("#sel-plane", root).disabled = n !== 3;
  $("#sel-clear", root).disabled = n === 0;
}

function saveState() { setState("networks", urlState()); }

// ---- training and upload forms ----
function archOptions(architectures, selected) {
  return architectures.map((a) => `<option value="${esc(a.kind)}" ${a.kind === selected ? "selected" : ""} title="${esc(a.description)}">${esc(a.kind)}</option>`).join("");
}

function datasetOptions(datasets) {
  return datasets.map((d) => `<option value="${esc(d.name)}" ${d.available === false ? "disabled" : ""} title="${esc(d.available === false ? d.reason : d.description)}">${esc(d.name)}${d.available === false ? " (missing)" : ""}</option>`).join("");
}

async function fillForms() {
  let cat;
  try { cat = await catalogues(); } catch (e) { setError($("#train-error", root), `Could not read the catalogues: ${e.message}`); return; }
  setError($("#train-error", root), "");
  for (const prefix of ["train", "upload"]) {
    $(`#${prefix}-kind`, root).innerHTML = archOptions(cat.architectures, "mlp");
    $(`#${prefix}-dataset`, root).innerHTML = datasetOptions(cat.datasets);
    archFields(prefix);
    datasetFields(prefix);
  }
  $("#train-optimizer", root).innerHTML = cat.optimizers.map((o) => `<option value="${esc(o.name)}" title="${esc(o.description)}">${esc(o.name)}</option>`).join("");
  optimizerFields();
}

function archFields(prefix) {
  const arch = store.catalogues.architectures.find((a) => a.kind === $(`#${prefix}-kind`, root).value);
  $(`#${prefix}-arch-params`, root).innerHTML = arch ? paramFields(arch.params, `${prefix}-arch`) : "";
  $(`#${prefix}-arch-help`, root).textContent = arch ? arch.description : "";
}

function datasetFields(prefix) {
  const ds = store.catalogues.datasets.find((d) => d.name === $(`#${prefix}-dataset`, root).value);
  const pre = ds && ds.preprocessing;
  const normalize = pre && pre.normalize
    ? `<label class="param" title="${esc(pre.normalize.help)}">normalize <input id="${prefix}-normalize" placeholder='default; "none", "torchvision" or {"mean": [...], "std": [...]}' size="34"></label>`
    : "";
  $(`#${prefix}-dataset-params`, root).innerHTML = ds ? paramFields(ds.params, `${prefix}-ds`) + normalize : "";
  $(`#${prefix}-dataset-help`, root).textContent = ds
    ? (ds.available === false ? ds.reason : `${ds.description} Inputs: ${pre ? pre.default : "as described"}; "normalize" sets your own (pixels scaled to [0, 1], then your mean and std per channel), and becomes part of the network's provenance.`)
    : "";
}

// the "normalize" field: absent when empty (the data set's default), a preset's name, or a JSON object
function normalizeOf(prefix) {
  const el = $(`#${prefix}-normalize`, root);
  const raw = el ? el.value.trim() : "";
  if (!raw) return {};
  if (/^[a-z_]+$/.test(raw)) return { normalize: raw };
  try { return { normalize: JSON.parse(raw) }; } catch (e) { throw new Error(`normalize: not a preset name nor valid JSON (${e.message})`); }
}

function optimizerFields() {
  const opt = store.catalogues.optimizers.find((o) => o.name === $("#train-optimizer", root).value);
  $("#train-opt-params", root).innerHTML = opt ? paramFields(opt.params, "train-opt") : "";
  $("#train-opt-help", root).textContent = opt ? opt.description : "";
}

const tagList = (text) => String(text || "").split(",").map((s) => s.trim()).filter(Boolean);

function architectureOf(prefix) {
  const json = prefix === "upload" ? $("#upload-arch-json", root).value.trim() : "";
  if (json) {
    try { return JSON.parse(json); } catch (e) { throw new Error(`architecture JSON: ${e.message}`); }
  }
  return { kind: $(`#${prefix}-kind`, root).value, ...readParams($(`#${prefix}-arch-params`, root)) };
}

async function submitTrain(ev) {
  ev.preventDefault();
  const err = $("#train-error", root);
  setError(err, "");
  let params;
  try {
    params = {
      architecture: architectureOf("train"),
      dataset: $("#train-dataset", root).value,
      dataset_options: { ...readParams($("#train-dataset-params", root)), ...normalizeOf("train") },
      optimizer: $("#train-optimizer", root).value,
      ...readParams($("#train-opt-params", root)),
      tags: tagList($("#train-tags", root).value),
      visibility: $("#train-visibility", root).value,
    };
    const name = $("#train-name", root).value.trim();
    if (name) params.name = name;
  } catch (e) { setError(err, e.message); return; }
  const button = $("#train-submit", root);
  button.disabled = true;
  const progress = $("#train-progress", root);
  try {
    const job = await runJob("train", params, (j) => {
      showJobProgress(progress, j, `training ${params.name || ""}`);
      if (j.status === "running" && $("#train-live", root).dataset.job !== String(j.id)) {
        $("#train-live", root).dataset.job = String(j.id);
        $("#train-live", root).innerHTML = `<a href="#/network?job=${j.id}">Follow its training curve</a> while it runs.`;
        $("#train-live", root).hidden = false;
      }
    });
    await refreshNetworks();
    const id = job.result.network_id;
    $("#train-done", root).innerHTML = `Trained <a href="#/network?id=${id}">network #${id}</a>: train error ${pct(job.result.train_error)}, test error ${pct(job.result.test_error)}${job.cached ? " (answered from the cache)" : ""}.`;
  } catch (e) {
    setError(err, e.message);
  } finally {
    $("#train-live", root).hidden = true;
    button.disabled = false;
  }
}

async function submitUpload(ev) {
  ev.preventDefault();
  const err = $("#upload-error", root);
  setError(err, "");
  $("#upload-done", root).textContent = "";
  const file = $("#upload-file", root).files[0];
  if (!file) { setError(err, "Choose a weights file (.safetensors, or a .pt / .pth state_dict)."); return; }
  let meta;
  try {
    meta = {
      name: $("#upload-name", root).value.trim() || file.name.replace(/\.[^.]+$/, ""),
      architecture: architectureOf("upload"),
      dataset: $("#upload-dataset", root).value,
      dataset_options: { ...readParams($("#upload-dataset-params", root)), ...normalizeOf("upload") },
      tags: tagList($("#upload-tags", root).value),
      visibility: $("#upload-visibility", root).value,
      ...renameOf(),
    };
  } catch (e) { setError(err, e.message); return; }
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("meta", JSON.stringify(meta));
  const button = $("#upload-submit", root);
  button.disabled = true;
  try {
    const net = await uploadNetwork(form);
    $("#upload-done", root).innerHTML = `Uploaded as <a href="#/network?id=${net.id}">network #${net.id}</a>; its errors are being measured (see Jobs).`;
    // the next file is usually another run of the same architecture on the same data: keep every field but
    // the file and its name (a reset would bring back the default architecture)
    $("#upload-file", root).value = "";
    $("#upload-name", root).value = "";
    await refreshNetworks();
    setTimeout(refreshNetworks, 2500);  // the evaluate job fills in the errors
  } catch (e) {
    setError(err, e.message);
    const proposed = e.body && e.body.proposed;
    if (proposed) {  // the names do not fit, the shapes do: offer the service's mapping, never apply it unasked
      const accept = document.createElement("button");
      accept.type = "button";
      accept.id = "upload-accept-names";
      accept.textContent = "Accept the proposed names and upload";
      accept.addEventListener("click", () => {
        $("#upload-rename", root).value = JSON.stringify(proposed);
        $("#upload-form", root).requestSubmit();
      });
      err.append(" ", accept);
    }
  } finally {
    button.disabled = false;
  }
}

// the rename field: {"rename": {...}} and/or {"keys": {...}}, or a plain map of substrings (a rename)
function renameOf() {
  const raw = $("#upload-rename", root).value.trim();
  if (!raw) return {};
  let v;
  try { v = JSON.parse(raw); } catch (e) { throw new Error(`rename: not valid JSON (${e.message})`); }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("rename: a JSON object of substrings, e.g. {\"linear.\": \"fc.\"}");
  return ("rename" in v || "keys" in v) ? { rename: v.rename || {}, keys: v.keys || {} } : { rename: v };
}

// ---- deletion, confirmed in the row itself ----
function askDelete(id) {
  const cell = $(`[data-actions='${id}']`, root);
  const net = store.networks.find((n) => n.id === id);
  cell.innerHTML = `<span class="confirm">Delete “${esc(net ? net.name : id)}” and its weights?
    <button type="button" class="danger small" data-confirm-delete="${id}">Delete</button>
    <button type="button" class="secondary small" data-keep="${id}">Keep</button></span>`;
  $(`[data-keep='${id}']`, root).focus();
}

async function confirmDelete(id) {
  const cell = $(`[data-actions='${id}']`, root);
  cell.innerHTML = `<span class="hint">deleting…</span>`;
  try {
    await deleteNetwork(id);
    ui.selected = ui.selected.filter((x) => x !== id);
    saveState();
    await refreshNetworks();
  } catch (e) {
    cell.innerHTML = `<span class="error" role="alert">${esc(e.message)}</span> <button type="button" class="secondary small" data-keep="${id}">OK</button>`;
  }
}

export default {
  init(section) {
    root = section;
    section.innerHTML = `
      <div class="view-head">
        <h2>Networks <span id="networks-count" class="hint"></span></h2>
        <div class="toolbar">
          <label>Filter <input id="network-filter" type="search" placeholder="name, tag, architecture, owner"></label>
          <label>Data set <select id="network-dataset"><option value="">all</option></select></label>
          <label>Sampler <select id="network-sampler"><option value="">all</option></select></label>
          <label title="only networks whose test error is at most this">test error ≤ <input id="network-maxtest" type="number" min="0" max="100" step="any" placeholder="%" aria-label="largest test error in percent">%</label>
          <label title="only networks trained for at least this many epochs">epochs ≥ <input id="network-epochs" type="number" min="0" step="1" aria-label="fewest epochs"></label>
          <label title="only networks created on or after this day">created since <input id="network-since" type="date"></label>
          <button id="refresh-networks" type="button" class="secondary">Refresh</button>
        </div>
      </div>
      <div class="selection-bar" aria-live="polite">
        <span id="selection-text"></span>
        <button id="sel-compare" type="button">Compare the two</button>
        <button id="sel-flatness" type="button">Flatness</button>
        <button id="sel-map" type="button">Map</button>
        <button id="sel-plane" type="button">Plane of the three</button>
        <button id="sel-clear" type="button" class="secondary">Clear</button>
      </div>
      <p id="demo-status" class="hint" role="status" hidden></p>
      <div class="table-wrap"><table id="networks-table" class="data"><thead></thead><tbody></tbody></table></div>
      <p id="networks-empty" class="hint" hidden></p>

      <div class="two-col">
        <details id="train-panel" class="panel" open>
          <summary><h3>Train a network</h3></summary>
          <form id="train-form">
            <div class="row">
              <label>Name <input id="train-name" placeholder="(automatic)"></label>
              <label>Tags <input id="train-tags" placeholder="comma, separated"></label>
              <label>Visibility <select id="train-visibility"><option value="lab">lab</option><option value="private">private</option></select></label>
            </div>
            <fieldset><legend>Architecture</legend>
              <label>Kind <select id="train-kind"></select></label><span id="train-arch-params" class="params"></span>
              <p id="train-arch-help" class="hint small"></p></fieldset>
            <fieldset><legend>Data set</legend>
              <label>Name <select id="train-dataset"></select></label><span id="train-dataset-params" class="params"></span>
              <p id="train-dataset-help" class="hint small"></p></fieldset>
            <fieldset><legend>Sampler</legend>
              <label>Sampler <select id="train-optimizer"></select></label><span id="train-opt-params" class="params"></span>
              <p id="train-opt-help" class="hint small"></p></fieldset>
            <div class="row"><button id="train-submit" type="submit">Train</button>
              <span id="train-error" class="error" role="alert" hidden></span></div>
            <div id="train-progress" class="progress-list" hidden></div>
            <p id="train-live" class="hint" hidden></p>
            <p id="train-done" class="done" aria-live="polite"></p>
          </form>
        </details>

        <details id="upload-panel" class="panel" open>
          <summary><h3>Upload a network</h3></summary>
          <form id="upload-form">
            <div class="row">
              <label>Weights file <input id="upload-file" type="file" accept=".safetensors,.pt,.pth"></label>
            </div>
            <div class="row">
              <label>Name <input id="upload-name" placeholder="(from the file name)"></label>
              <label>Tags <input id="upload-tags" placeholder="comma, separated"></label>
              <label>Visibility <select id="upload-visibility"><option value="lab">lab</option><option value="private">private</option></select></label>
            </div>
            <fieldset><legend>Architecture</legend>
              <label>Kind <select id="upload-kind"></select></label><span id="upload-arch-params" class="params"></span>
              <p id="upload-arch-help" class="hint small"></p>
              <label class="block">or as JSON (overrides the fields) <textarea id="upload-arch-json" rows="2" placeholder='{"kind": "mlp", "hidden": [64, 64]}'></textarea></label>
              <label class="block" title="substrings replaced in the file's tensor names, in order; when the names do not fit but the shapes do, the service proposes a map">Rename tensors (JSON, optional) <input id="upload-rename" placeholder='{"shortcut.": "downsample.", "linear.": "fc."}'></label>
            </fieldset>
            <fieldset><legend>Data set</legend>
              <label>Name <select id="upload-dataset"></select></label><span id="upload-dataset-params" class="params"></span>
              <p id="upload-dataset-help" class="hint small"></p></fieldset>
            <div class="row"><button id="upload-submit" type="submit">Upload</button>
              <span id="upload-error" class="error" role="alert" hidden></span></div>
            <p id="upload-done" class="done" aria-live="polite"></p>
          </form>
        </details>
      </div>`;

    $("#network-filter", root).addEventListener("input", (ev) => { ui.q = ev.target.value; renderTable(); saveState(); });
    $("#network-dataset", root).addEventListener("change", (ev) => { ui.dataset = ev.target.value; renderTable(); saveState(); });
    $("#network-sampler", root).addEventListener("change", (ev) => { ui.sampler = ev.target.value; renderTable(); saveState(); });
    for (const key of ["maxtest", "epochs", "since"]) {
      $(`#network-${key}`, root).addEventListener("input", (ev) => { ui[key] = ev.target.value.trim(); renderTable(); saveState(); });
    }
    $("#refresh-networks", root).addEventListener("click", () => refreshNetworks());
    $("#networks-table thead", root).addEventListener("click", (ev) => {
      const b = ev.target.closest("[data-sort]");
      if (!b) return;
      if (ui.sort === b.dataset.sort) ui.dir = ui.dir === "asc" ? "desc" : "asc";
      else { ui.sort = b.dataset.sort; ui.dir = "asc"; }
      renderTable();
      saveState();
      $(`[data-sort='${ui.sort}']`, root).focus();
    });
    $("#networks-table tbody", root).addEventListener("change", (ev) => {
      if (ev.target.name !== "choose") return;
      const id = Number(ev.target.value);
      ui.selected = ev.target.checked ? [...ui.selected.filter((x) => x !== id), id] : ui.selected.filter((x) => x !== id);
      ev.target.closest("tr").classList.toggle("chosen", ev.target.checked);
      renderSelection();
      saveState();
    });
    $("#networks-table tbody", root).addEventListener("click", (ev) => {
      const del = ev.target.closest("[data-delete]");
      if (del) askDelete(Number(del.dataset.delete));
      const yes = ev.target.closest("[data-confirm-delete]");
      if (yes) confirmDelete(Number(yes.dataset.confirmDelete));
      if (ev.target.closest("[data-keep]")) renderTable();
    });
    $("#sel-compare", root).addEventListener("click", () => go("compare", { a: ui.selected[0], b: ui.selected[1] }));
    $("#sel-flatness", root).addEventListener("click", () => go("flatness", { nets: ui.selected }));
    $("#sel-map", root).addEventListener("click", () => go("map", { nets: ui.selected }));
    $("#sel-plane", root).addEventListener("click", () => go("plane", { nets: ui.selected }));
    $("#sel-clear", root).addEventListener("click", () => { ui.selected = []; renderTable(); saveState(); });

    for (const prefix of ["train", "upload"]) {
      $(`#${prefix}-kind`, root).addEventListener("change", () => archFields(prefix));
      $(`#${prefix}-dataset`, root).addEventListener("change", () => datasetFields(prefix));
    }
    $("#train-optimizer", root).addEventListener("change", optimizerFields);
    $("#train-form", root).addEventListener("submit", submitTrain);
    $("#upload-form", root).addEventListener("submit", submitUpload);
    onNetworks(() => {
      if (section.querySelector(".confirm")) return;  // never wipe a question the user is answering
      fillFilters();
      renderTable();
    });
    fillForms();
    // new networks (trained elsewhere, or errors measured after an upload) appear without a reload
    setInterval(() => { if (!section.hidden && !document.hidden) refreshNetworks(); }, 15000);
  },

  async enter(params) {
    ui.q = params.q || "";
    ui.dataset = params.dataset || "";
    ui.sampler = params.sampler || "";
    ui.maxtest = params.maxtest || "";
    ui.epochs = params.epochs || "";
    ui.since = /^\d{4}-\d{2}-\d{2}$/.test(params.since || "") ? params.since : "";
    for (const key of ["maxtest", "epochs", "since"]) $(`#network-${key}`, root).value = ui[key];
    ui.sort = COLUMNS.some((c) => c.key === params.sort) ? params.sort : "id";
    ui.dir = params.dir === "desc" ? "desc" : "asc";
    ui.selected = idList(params.sel);
    $("#network-filter", root).value = ui.q;
    if (!store.catalogues && $("#train-kind", root).options.length === 0) fillForms();  // e.g. the first try came before signing in
    fillFilters();
    renderTable();
    refreshDemo();
    await refreshNetworks();
  },
};

function fillFilters() {
  if (!root) return;
  const datasets = [...new Set(store.networks.map((n) => n.dataset))].sort();
  const samplers = [...new Set(store.networks.map(samplerOf))].sort();
  const fill = (sel, values, chosen) => {
    const all = chosen && !values.includes(chosen) ? [...values, chosen] : values;
    sel.innerHTML = `<option value="">all</option>` + all.map((v) => `<option ${v === chosen ? "selected" : ""}>${esc(v)}</option>`).join("");
  };
  fill($("#network-dataset", root), datasets, ui.dataset);
  fill($("#network-sampler", root), samplers, ui.sampler);
}

