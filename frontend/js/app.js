// Toroid dashboard: networks table, compare two networks along a path, train, jobs.
import { api, listNetworks, listJobs, submitJob, cancelJob, followJob } from "./api.js";

const state = { networks: [], a: null, b: null };
const $ = (sel) => document.querySelector(sel);
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(2)}%`);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const archText = (a) => (a.kind === "mlp" ? `mlp ${(a.hidden || []).join("-")}${a.batchnorm ? " bn" : ""}` : a.kind);

function renderNetworks() {
  const filter = $("#network-filter").value.trim().toLowerCase();
  const rows = state.networks.filter((n) => !filter || [n.name, archText(n.architecture), n.dataset, ...(n.tags || [])].join(" ").toLowerCase().includes(filter));
  $("#networks-empty").hidden = state.networks.length > 0;
  $("#networks-table tbody").innerHTML = rows.map((n) => `
    <tr data-id="${n.id}" class="${n.id === state.a ? "picked-a" : ""} ${n.id === state.b ? "picked-b" : ""}">
      <td><input type="radio" name="pick-a" value="${n.id}" aria-label="pick ${esc(n.name)} as A" ${n.id === state.a ? "checked" : ""}></td>
      <td><input type="radio" name="pick-b" value="${n.id}" aria-label="pick ${esc(n.name)} as B" ${n.id === state.b ? "checked" : ""}></td>
      <td>${n.id}</td><td>${esc(n.name)}</td><td>${esc(archText(n.architecture))}</td><td>${esc(n.dataset)}</td>
      <td>${esc(n.source.optimizer || n.source.kind || "")}</td>
      <td class="num">${pct(n.train_error)}</td><td class="num">${pct(n.test_error)}</td><td>${esc((n.tags || []).join(", "))}</td>
    </tr>`).join("");
  const name = (id) => { const n = state.networks.find((x) => x.id === id); return n ? `${n.name} (#${n.id})` : "—"; };
  $("#pick-a").textContent = name(state.a);
  $("#pick-b").textContent = name(state.b);
  $("#run-path").disabled = !(state.a && state.b);
}

async function refreshNetworks() {
  try { state.networks = await listNetworks(); renderNetworks(); } catch (e) { $("#networks-empty").hidden = false; $("#networks-empty").textContent = `Could not list networks: ${e.message}`; }
}

function showProgress(el, job) {
  el.hidden = false;
  el.querySelector(".bar").style.width = `${Math.round(100 * job.progress)}%`;
  el.querySelector(".label").textContent = `job ${job.id}: ${job.status} ${Math.round(100 * job.progress)}% ${job.message || ""}`;
}

export function plotPath(job) {
  const r = job.result;
  const traces = [
    { x: r.t, y: r.train_error.map((v) => 100 * v), name: `train error (${r.type})`, mode: "lines+markers" },
    { x: r.t, y: r.test_error.map((v) => 100 * v), name: `test error (${r.type})`, mode: "lines+markers", line: { dash: "dot" } },
  ];
  const layout = {
    margin: { t: 30, r: 20, b: 45, l: 55 }, xaxis: { title: { text: "position t along the path (A → B)" } },
    yaxis: { title: { text: "error (%)" }, rangemode: "tozero" }, legend: { orientation: "h", y: 1.12 },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 100 * r.barrier, y1: 100 * r.barrier, line: { color: "#b91c1c", width: 1, dash: "dash" } }],
    annotations: [{ xref: "paper", x: 1, y: 100 * r.barrier, text: `barrier ${pct(r.barrier)}`, showarrow: false, yanchor: "bottom", xanchor: "right", font: { color: "#b91c1c" } }],
  };
  Plotly.react("path-plot", traces, layout, { responsive: true, displaylogo: false });
  $("#path-summary").textContent = `Barrier (max train error): ${pct(r.barrier)}; above the endpoints' mean: ${pct(r.barrier_excess)}` + (job.cached ? " — answered from the cache" : "");
}

async function runPath(ev) {
  ev.preventDefault();
  $("#path-error").textContent = "";
  const params = { a: state.a, b: state.b, type: $("#path-type").value, points: Number($("#path-points").value) };
  try {
    const job = await submitJob("path", params);
    const done = await followJob(job.id, (j) => showProgress($("#path-progress"), j));
    if (done.status === "succeeded") plotPath(done);
    else $("#path-error").textContent = `job ${done.id} ${done.status}: ${done.error || done.message}`;
  } catch (e) { $("#path-error").textContent = e.message; }
  refreshJobs();
}

async function runTrain(ev) {
  ev.preventDefault();
  $("#train-error").textContent = "";
  const f = new FormData(ev.target);
  const hidden = String(f.get("hidden")).split(",").map((s) => Number(s.trim())).filter((v) => v > 0);
  const params = { architecture: { kind: "mlp", hidden }, dataset: f.get("dataset"), optimizer: f.get("optimizer"), epochs: Number(f.get("epochs")), seed: Number(f.get("seed")) };
  if (f.get("name")) params.name = f.get("name");
  try {
    const job = await submitJob("train", params);
    refreshJobs();
    followJob(job.id, () => refreshJobs(), 800).then(refreshNetworks);
  } catch (e) { $("#train-error").textContent = e.message; }
}

async function refreshJobs() {
  try {
    const jobs = await listJobs();
    $("#jobs-table tbody").innerHTML = jobs.map((j) => `
      <tr><td>${j.id}</td><td>${esc(j.kind)}</td><td class="status-${j.status}">${j.status}${j.cached ? " (cached)" : ""}</td>
      <td><span class="minibar"><span style="width:${Math.round(100 * j.progress)}%"></span></span> ${Math.round(100 * j.progress)}%</td>
      <td>${esc(j.error || j.message || "")}</td>
      <td>${["queued", "running"].includes(j.status) ? `<button class="secondary" data-cancel="${j.id}">Cancel</button>` : ""}</td></tr>`).join("");
    if (jobs.some((j) => ["queued", "running"].includes(j.status))) setTimeout(refreshJobs, 1000);
  } catch (e) { /* shown on next refresh */ }
}

async function fillTrainForm() {
  const [datasets, optimizers] = await Promise.all([api("/datasets"), api("/optimizers")]);
  $("#train-dataset").innerHTML = datasets.map((d) => `<option ${d.available === false ? "disabled" : ""}>${esc(d.name)}</option>`).join("");
  $("#train-optimizer").innerHTML = optimizers.map((o) => `<option>${esc(o.name)}</option>`).join("");
}

document.addEventListener("DOMContentLoaded", async () => {
  $("#networks-table").addEventListener("change", (ev) => {
    if (ev.target.name === "pick-a") state.a = Number(ev.target.value);
    if (ev.target.name === "pick-b") state.b = Number(ev.target.value);
    renderNetworks();
  });
  $("#network-filter").addEventListener("input", renderNetworks);
  $("#refresh-networks").addEventListener("click", refreshNetworks);
  $("#path-form").addEventListener("submit", runPath);
  $("#train-form").addEventListener("submit", runTrain);
  $("#jobs-table").addEventListener("click", async (ev) => {
    const id = ev.target.dataset && ev.target.dataset.cancel;
    if (id) { try { await cancelJob(id); } catch (e) { alert(e.message); } refreshJobs(); }
  });
  try { const h = await api("/health"); $("#health").textContent = `service ${h.status}`; } catch (e) { $("#health").textContent = `service unreachable: ${e.message}`; }
  await Promise.all([refreshNetworks(), refreshJobs(), fillTrainForm().catch(() => {})]);
  setInterval(refreshNetworks, 5000);
});
