// The REST API, as the dashboard uses it. Every error becomes an ApiError whose message is the API's
// detail, in words. A token (shared lab servers) lives in localStorage and goes with every request.

const TOKEN_KEY = "toroid.token";
export const FINAL = ["succeeded", "failed", "cancelled"];

export class ApiError extends Error {
  constructor(status, message, body = null) { super(message); this.status = status; this.body = body; }
}

export const getToken = () => { try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; } };
export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY);
}

export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => (d && d.msg ? `${(d.loc || []).join(".")}: ${d.msg}` : JSON.stringify(d))).join("; ");
  return JSON.stringify(detail);
}

// Low level: /api + path; options.json is sent as a JSON body; options.form as multipart.
export async function api(path, options = {}) {
  const opts = { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } };
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers["Content-Type"] = "application/json";
    delete opts.json;
  }
  if (opts.form !== undefined) { opts.body = opts.form; delete opts.form; }
  let res;
  try {
    res = await fetch(`/api${path}`, opts);
  } catch (e) {
    throw new ApiError(0, `the service did not answer (${e.message}); is \`toroid serve\` running?`);
  }
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    let body = null;
    try { body = await res.json(); if (body.detail !== undefined) detail = detailText(body.detail); } catch (_) { /* not JSON */ }
    if (res.status === 401) window.dispatchEvent(new CustomEvent("toroid:auth-required", { detail }));
    throw new ApiError(res.status, detail, body);
  }
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("application/json") ? res.json() : res.text();
}

export const qs = (params) => {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? "?" + new URLSearchParams(entries).toString() : "";
};

export const listNetworks = (filters = {}) => api(`/networks${qs(filters)}`);
export const getNetwork = (id) => api(`/networks/${id}`);
export const patchNetwork = (id, patch) => api(`/networks/${id}`, { method: "PATCH", json: patch });
export const deleteNetwork = (id) => api(`/networks/${id}`, { method: "DELETE" });
export const uploadNetwork = (formData) => api("/networks", { method: "POST", form: formData });
export const listJobs = (filters = {}) => api(`/jobs${qs({ limit: 100, ...filters })}`);
export const getJob = (id) => api(`/jobs/${id}`);
export const getResult = (id) => api(`/results/${id}`);
export const submitJob = (kind, params) => api("/jobs", { method: "POST", json: { kind, params } });
export const cancelJob = (id) => api(`/jobs/${id}`, { method: "DELETE" });

// Follow a job until it ends; onUpdate(job) on every poll. Resolves with the final job (with its result).
// Polls quickly at first and more slowly for long jobs, so that a page with many jobs stays light.
export async function followJob(job, onUpdate = () => {}, { signal } = {}) {
  let current = job;
  let interval = 250;
  for (;;) {
    onUpdate(current);
    if (FINAL.includes(current.status) && (current.status !== "succeeded" || current.result)) return current;
    if (signal && signal.aborted) throw new ApiError(0, "stopped following the job");
    await new Promise((r) => setTimeout(r, interval));
    interval = Math.min(1500, interval * 1.3);
    current = await getJob(current.id);
  }
}

// Submit and follow: resolves with the succeeded job; rejects with the job's error in words otherwise.
export async function runJob(kind, params, onUpdate = () => {}, opts = {}) {
  const submitted = await submitJob(kind, params);
  const done = await followJob(submitted, onUpdate, opts);
  if (done.status !== "succeeded") {
    const why = done.status === "cancelled" ? "was cancelled" : `failed: ${done.error || done.message || "no reason given"}`;
    const err = new ApiError(0, `${kind} job ${done.id} ${why}`);
    err.job = done;
    throw err;
  }
  return done;
}
