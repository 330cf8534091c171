// Small helpers shared by the views: DOM, formatting, downloads, job progress.

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
export const pct = (v, digits = 2) => (v === null || v === undefined || Number.isNaN(v) ? "–" : `${(100 * v).toFixed(digits)}%`);
export const num = (v, digits = 4) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toPrecision(digits));
export const dateText = (iso) => (iso ? iso.replace("T", " ").slice(0, 16) : "");

// A network's (or a train job's) architecture by its short name: the API's architecture_label, written in one
// place for the dashboard, the CLI and the API (workers/landscape/nets.py, short_name).
export const archText = (x) => (x && (x.architecture_label || (x.architecture && x.architecture.kind))) || "";

export const BINARY_KINDS = ["binary_mlp", "binary_conv", "committee", "perceptron"];
export const isBinary = (net) => !!net && BINARY_KINDS.includes(net.architecture && net.architecture.kind);
// What a job kind's `applies_to` is matched against (null: no network chosen, every field shows)
export const traitsOf = (net) => (net ? { real: !isBinary(net), binary: isBinary(net),
  batchnorm: !!(net.architecture && (net.architecture.batchnorm || net.architecture.kind === "vgg")) } : null);

// How a network was obtained: the sampler for trained ones, else the source kind (uploaded, canonicalize, bend).
export const samplerOf = (net) => (net && net.source ? net.source.optimizer || net.source.kind || "?" : "?");
export const netLabel = (net) => (net ? `${net.name} (#${net.id})` : "—");

// Ids in a URL: "3,5,8" -> [3, 5, 8].
export const idList = (text) => String(text || "").split(",").map((s) => Number(s.trim())).filter((v) => Number.isInteger(v) && v > 0);

// Run fn over items with at most `limit` in flight (the API caps each user's unfinished jobs).
export async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => { while (next < items.length) { const i = next++; out[i] = await fn(items[i], i); } };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export function debounce(fn, ms = 200) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// A stable colour per category. Samplers and how a network was made (uploaded, bend, canonical) share
// one table and never one colour; path types have their own table (they are never drawn with samplers).
const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#475569", "#ea580c",
  "#0f766e", "#a16207", "#9333ea", "#be123c", "#1e40af", "#4d7c0f"];
const KNOWN = { sgd: 0, adv: 1, rsgd: 2, adam: 3, sam: 4, entropy_sgd: 5, uploaded: 8, bend: 9, canonicalize: 6, canonical: 6, replicated: 10, binarynet: 11 };
const PATHS = { linear: 1, linear_aligned: 3, geodesic: 0, bend: 2, hamming: 4 };
const assigned = new Map();
export function colorOf(category) {
  if (category in KNOWN) return PALETTE[KNOWN[category]];
  if (!assigned.has(category)) {
    const taken = new Set([...Object.values(KNOWN), ...assigned.values()].map((v) => (typeof v === "number" ? PALETTE[v] : v)));
    const free = PALETTE.find((c) => !taken.has(c)) || PALETTE[(assigned.size + 7) % PALETTE.length];
    assigned.set(category, free);
  }
  return assigned.get(category);
}
export const pathColor = (type) => PALETTE[PATHS[type] ?? 8];

// Text for Plotly: it reads a subset of HTML in names, labels and titles (<b>, <a href>, <br>); a
// network's name is shown as typed, never as markup.
export const ptext = (s) => String(s ?? "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

// One CSV cell. Other users' network names are in these files, and a spreadsheet runs text that
// starts with = + - @ (or tab, CR) as a formula, also where a cell is split at a list separator the
// file does not use (Excel with ";" splits `x;=cmd|...` into a formula cell). So every text cell is
// quoted, and each of its pieces between separators (, ; tab) that would start a formula gets a
// leading ' ; numbers stay numbers (a number-like piece is left alone).
const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;
const PIECE = /(^|[,;\t])([ ]*)([^,;\t]*)/g;
export function csvCell(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  let s = String(v).replace(PIECE, (all, sep, space, piece) =>
    (/^[=+\-@\t\r]/.test(piece) && !NUMBER.test(piece) ? `${sep}${space}'${piece}` : all));
  if (/^[\t\r]/.test(s)) s = "'" + s;
  return `"${s.replace(/"/g, '""')}"`;
}

// CSV from column arrays: {name: [values]}; missing cells stay empty.
export function toCSV(columns) {
  const names = Object.keys(columns);
  const n = Math.max(0, ...names.map((k) => columns[k].length));
  const cell = csvCell;
  const lines = [names.map(cell).join(",")];
  for (let i = 0; i < n; i++) lines.push(names.map((k) => cell(columns[k][i])).join(","));
  return lines.join("\n") + "\n";
}

// CSV from rows of objects (the union of their keys, in first-seen order).
export function rowsToCSV(rows) {
  const keys = [];
  rows.forEach((r) => Object.keys(r).forEach((k) => { if (!keys.includes(k)) keys.push(k); }));
  const columns = Object.fromEntries(keys.map((k) => [k, rows.map((r) => (typeof r[k] === "object" && r[k] !== null ? JSON.stringify(r[k]) : r[k]))]));
  return toCSV(columns);
}

// A data: URL, so that a download never leaves the page (and needs no blob bookkeeping).
export const dataURL = (text, type) => `data:${type};charset=utf-8,${encodeURIComponent(text)}`;

// Where a job stands: its place in its queue (and when it should start) while queued, its ETA while running
// (all from the API).
export function durationText(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${String(Math.round(seconds % 60)).padStart(2, "0")} s`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.round((seconds % 3600) / 60)).padStart(2, "0")} min`;
}
// progress in percent: a long job (a 400-epoch train) moves by less than 1% an epoch, so small values keep a decimal
export const progressText = (p) => { const v = 100 * (p || 0); return v > 0 && v < 10 ? `${v.toFixed(1)}%` : `${Math.round(v)}%`; };
export function scheduleText(job) {
  if (job.status === "queued") {
    if (!job.queue_position) return "";
    const place = job.queue_position === 1 ? "next in its queue" : `${job.queue_position}th in its queue`.replace(/^2th/, "2nd").replace(/^3th/, "3rd");
    const start = job.starts_in_seconds;
    return start === null || start === undefined ? place : `${place}, starts in about ${durationText(start)}`;
  }
  if (job.status === "running" && job.eta_seconds !== null && job.eta_seconds !== undefined) return `about ${durationText(job.eta_seconds)} left`;
  return "";
}

// Progress of one or more jobs in a container: one bar per job, updated in place.
export function showJobProgress(container, job, label) {
  container.hidden = false;
  let row = container.querySelector(`[data-job='${job.id}']`);
  if (!row) {
    row = document.createElement("div");
    row.className = "progress";
    row.dataset.job = job.id;
    row.setAttribute("role", "progressbar");
    row.setAttribute("aria-valuemin", "0");
    row.setAttribute("aria-valuemax", "100");
    row.innerHTML = `<div class="bar"></div><span class="label"></span>`;
    container.appendChild(row);
  }
  const p = Math.round(100 * (job.progress || 0));
  row.setAttribute("aria-valuenow", String(p));
  row.classList.toggle("failed", job.status === "failed" || job.status === "cancelled");
  row.classList.toggle("done", job.status === "succeeded");
  row.querySelector(".bar").style.width = `${job.status === "succeeded" ? 100 : p}%`;
  const what = label ? `${label} — ` : "";
  const when = scheduleText(job);
  const state = job.cached ? "answered from the cache" : `${job.status}${job.status === "queued" ? "" : ` ${progressText(job.progress)}`}${when ? ` · ${when}` : ""}`;
  row.dataset.status = job.status;
  row.querySelector(".label").textContent = `${what}job ${job.id}: ${state}${job.message && !job.cached ? ` · ${job.message}` : ""}`;
}

export function clearProgress(container) { container.innerHTML = ""; container.hidden = true; }

export function setError(el, message) { el.textContent = message || ""; el.hidden = !message; }
