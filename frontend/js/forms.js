// Form fields generated from the API's catalogues ({name: {type, default, help, min, max, choices, nullable,
// applies_to, when}}: architectures, data sets, optimizers and the job kinds of GET /api/job-kinds), and read
// back into typed values. A field whose `when` does not hold, or that does not apply to the chosen network
// (`applies_to`: real / binary / batchnorm), is hidden and not sent.
import { api } from "./api.js";
import { jobKinds } from "./store.js";
import { esc } from "./util.js";

function fieldValue(spec) {
  const d = spec.default;
  if (d === null || d === undefined) return "";
  if (Array.isArray(d)) return d.join(", ");
  return String(d);
}

// HTML of labelled inputs, one per parameter. `prefix` keeps ids unique on the page.
export function paramFields(params, prefix, { skip = [] } = {}) {
  return Object.entries(params || {}).filter(([name, spec]) => !skip.includes(name) && !["object", "list[str]"].includes(spec.type)).map(([name, spec]) => {
    const id = `${prefix}-${name}`;
    const help = spec.help ? `${spec.help}${spec.nullable ? " (empty: none)" : ""}` : "";
    const attrs = `id="${id}" data-param="${esc(name)}" data-type="${esc(spec.type)}" ${spec.nullable ? "data-nullable='1'" : ""} title="${esc(help)}"`;
    let input;
    if (spec.type === "bool") {
      input = `<input type="checkbox" ${attrs} ${spec.default ? "checked" : ""}>`;
    } else if (spec.choices) {
      input = `<select ${attrs}>${spec.choices.map((c) => `<option ${c === spec.default ? "selected" : ""}>${esc(c)}</option>`).join("")}</select>`;
    } else if (spec.type === "int" || spec.type === "float") {
      const range = `${spec.min !== undefined && spec.min !== null ? `min="${spec.min}"` : ""} ${spec.max !== undefined && spec.max !== null ? `max="${spec.max}"` : ""}`;
      input = `<input type="number" ${attrs} ${range} step="${spec.type === "int" ? 1 : "any"}" value="${esc(fieldValue(spec))}" ${spec.nullable ? "placeholder='none'" : ""}>`;
    } else if (spec.type === "json") {  // e.g. a layer graph's layers
      input = `<textarea ${attrs} rows="4" cols="40">${esc(spec.default == null ? "" : JSON.stringify(spec.default))}</textarea>`;
    } else {
      input = `<input type="text" ${attrs} value="${esc(fieldValue(spec))}" size="${spec.type.startsWith("list") ? 10 : 8}">`;
    }
    const when = spec.when ? ` data-when='${esc(JSON.stringify(spec.when))}'` : "";
    const applies = spec.applies_to ? ` data-applies='${esc(JSON.stringify(spec.applies_to))}'` : "";
    return `<label class="param" for="${id}"${when}${applies}><span>${esc(name)}</span>${input}</label>`;
  }).join("");
}

// Show the fields that matter: `when` holds for the values now in the form, and the field applies to a
// network with these traits ({real, binary, batchnorm}; null: no network chosen yet, show all).
export function updateFields(container, traits = null) {
  const values = {};
  container.querySelectorAll("[data-param]").forEach((el) => {
    values[el.dataset.param] = el.dataset.type === "bool" ? el.checked : el.dataset.type === "int" || el.dataset.type === "float" ? Number(el.value) : el.value;
  });
  container.querySelectorAll("label.param").forEach((label) => {
    const when = label.dataset.when ? JSON.parse(label.dataset.when) : {};
    const applies = label.dataset.applies ? JSON.parse(label.dataset.applies) : null;
    const holds = Object.entries(when).every(([other, allowed]) => allowed.some((v) => v === values[other] || String(v) === String(values[other])));
    const fits = !traits || !applies || applies.some((t) => traits[t]);
    label.hidden = !(holds && fits);
  });
}

// Read the fields back: {name: value}. Throws an Error naming the field when a value cannot be read.
export function readParams(container) {
  const out = {};
  container.querySelectorAll("[data-param]").forEach((el) => {
    if (el.closest("label.param") && el.closest("label.param").hidden) return;  // does not apply: not sent
    const name = el.dataset.param;
    const type = el.dataset.type;
    if (type === "bool") { out[name] = el.checked; return; }
    const raw = el.value.trim();
    if (raw === "") {
      if (el.dataset.nullable) out[name] = null;
      return;  // the API's default
    }
    if (type === "int" || type === "float") {
      const v = Number(raw);
      if (!Number.isFinite(v) || (type === "int" && !Number.isInteger(v))) throw new Error(`${name}: '${raw}' is not ${type === "int" ? "an integer" : "a number"}`);
      out[name] = v;
    } else if (type === "json") {
      try { out[name] = JSON.parse(raw); } catch (e) { throw new Error(`${name}: not valid JSON (${e.message})`); }
    } else if (type.startsWith("list")) {
      const items = raw.replace(/^\[|\]$/g, "").split(/[,\s]+/).filter(Boolean);
      const numeric = type.includes("int") || type.includes("float");
      out[name] = items.map((s) => {
        if (!numeric) return s;
        const v = Number(s);
        if (!Number.isFinite(v)) throw new Error(`${name}: '${s}' is not a number`);
        return v;
      });
    } else {
      out[name] = raw;
    }
  });
  return out;
}

// A job kind's parameter fields, as declared (GET /api/job-kinds), built into `box` once: true when they were
// built by this call (the caller then sets its own placeholders), false when they were there already.
export async function kindFields(box, kind, prefix) {
  if (box.dataset.ready) return false;
  box.innerHTML = paramFields((await jobKinds())[kind].params, prefix);
  box.dataset.ready = "1";
  return true;
}

// What the jobs of a form would cost, from dry runs (POST /api/jobs?dry_run=true: nothing is submitted), shown in
// `line` 400 ms after the form last changed: "≈ N GFLOP, M MiB, ~S s" (summed over the jobs; memory: the largest
// job's; seconds from the server's measured throughput, "time unknown" before any job finished). `jobs()` gives
// the [kind, params] pairs the form would submit now; an empty list (or a throw: a field cannot be read) clears it.
// Returns the refresh, to call when the form is filled in by code.
export function attachEstimate(form, line, jobs, { delay = 400 } = {}) {
  let timer = null;
  let seq = 0;
  const refresh = async () => {
    const mine = ++seq;
    let list;
    try { list = jobs(); } catch (_) { list = []; }
    if (!list.length) { line.textContent = ""; return; }
    try {
      const out = await Promise.all(list.map(([kind, params]) => api("/jobs?dry_run=true", { method: "POST", json: { kind, params } })));
      if (mine === seq) line.textContent = estimateText(out);
    } catch (e) {
      if (mine === seq) line.textContent = `No estimate: ${e.message}`;
    }
  };
  const later = () => { clearTimeout(timer); timer = setTimeout(refresh, delay); };
  form.addEventListener("input", later);
  form.addEventListener("change", later);
  return refresh;
}

export function estimateText(estimates) {
  const flops = estimates.reduce((s, e) => s + e.cost_flops, 0);
  const mib = Math.max(...estimates.map((e) => e.memory_bytes)) / 2 ** 20;
  const secs = estimates.every((e) => e.estimated_seconds !== null && e.estimated_seconds !== undefined)
    ? estimates.reduce((s, e) => s + e.estimated_seconds, 0) : null;
  const fmt = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toPrecision(2));
  const jobs = estimates.length > 1 ? ` for ${estimates.length} jobs` : "";
  return `≈ ${fmt(flops / 1e9)} GFLOP, ${fmt(mib)} MiB, ${secs === null ? "time unknown" : `~${fmt(secs)} s`}${jobs}`;
}
