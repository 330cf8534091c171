// The REST API, as the dashboard uses it. Every error becomes an Error whose message is the API's detail.
export async function api(path, options = {}) {
  const opts = { ...options, headers: { ...(options.headers || {}) } };
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers["Content-Type"] = "application/json";
    delete opts.json;
  }
  const res = await fetch(`/api${path}`, opts);
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try { const body = await res.json(); if (body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return res.status === 204 ? null : res.json();
}

export const listNetworks = () => api("/networks");
export const listJobs = () => api("/jobs?limit=50");
export const getJob = (id) => api(`/jobs/${id}`);
export const submitJob = (kind, params) => api("/jobs", { method: "POST", json: { kind, params } });
export const cancelJob = (id) => api(`/jobs/${id}`, { method: "DELETE" });

// Follow a job until it ends; onUpdate(job) on every change. Resolves with the final job.
export async function followJob(id, onUpdate, interval = 400) {
  for (;;) {
    const job = await getJob(id);
    onUpdate(job);
    if (["succeeded", "failed", "cancelled"].includes(job.status)) return job;
    await new Promise((r) => setTimeout(r, interval));
  }
}
