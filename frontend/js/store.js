// What several views share: the list of networks, the catalogues, and flatness summaries from finished jobs.
import { api, listJobs, listNetworks, getResult } from "./api.js";

const listeners = new Set();
export const store = { networks: [], loaded: false, error: "", catalogues: null, flatness: new Map(), distances: {} };
// A distance's label and meaning as the distance kind declares them (workers/landscape/paths.py, DISTANCES;
// read with the job kinds): the key itself until they are loaded.
export const distanceLabel = (key) => (store.distances[key] || {}).label || key;
export const distanceHelp = (key) => (store.distances[key] || {}).help || "";

export const byId = (id) => store.networks.find((n) => n.id === Number(id));
export function onNetworks(fn) { listeners.add(fn); return () => listeners.delete(fn); }

let pending = null;
export function refreshNetworks() {
  if (pending) return pending;
  pending = (async () => {
    try {
      store.networks = await listNetworks({ limit: 5000 });
      store.error = "";
      store.loaded = true;
      await refreshFlatness().catch(() => {});
    } catch (e) {
      store.error = e.message;
    } finally {
      pending = null;
      listeners.forEach((fn) => fn(store));
    }
    return store;
  })();
  return pending;
}

// The network list, loaded once; read again when the address names networks it does not hold yet (made
// elsewhere since: by a script, another tab, a colleague).
export async function ensureNetworks(ids = []) {
  const missing = () => !store.loaded || ids.some((id) => id && !byId(id));
  // twice at most: a reading already under way may have started before those networks were made
  for (let i = 0; i < 2 && missing(); i++) await refreshNetworks();
  return store.networks;
}

let cataloguesPending = null;
export function catalogues() {
  if (store.catalogues) return Promise.resolve(store.catalogues);
  if (!cataloguesPending) {
    cataloguesPending = Promise.all([api("/architectures"), api("/datasets"), api("/optimizers")])
      .then(([architectures, datasets, optimizers]) => { store.catalogues = { architectures, datasets, optimizers }; return store.catalogues; })
      .finally(() => { cataloguesPending = null; });
  }
  return cataloguesPending;
}

// The job kinds (GET /api/job-kinds): inputs, parameter tables, queues; the views' forms are built from them.
let kindsPending = null;
export function jobKinds() {
  if (store.jobKinds) return Promise.resolve(store.jobKinds);
  if (!kindsPending) {
    kindsPending = api("/job-kinds").then((list) => {
      store.jobKinds = Object.fromEntries(list.map((k) => [k.kind, k]));
      store.distances = (store.jobKinds.distance && store.jobKinds.distance.results && store.jobKinds.distance.results.distances) || {};
      return store.jobKinds;
    })
      .finally(() => { kindsPending = null; });
  }
  return kindsPending;
}

// Flatness of a network, if a flatness job finished for it: the most recent job's result, summarised by
// delta_E at the largest sigma (the paper's summary number). Results never change, so they are fetched once.
const resultCache = new Map();
export async function refreshFlatness() {
  let jobs;
  try { jobs = await listJobs({ kind: "flatness", status: "succeeded", limit: 500 }); } catch (_) { return; }
  const latest = new Map();
  for (const j of jobs) {  // newest first
    const id = j.params && j.params.network;
    if (id && !latest.has(id) && j.result_id) latest.set(id, j.result_id);
  }
  await Promise.all([...latest.values()].filter((r) => !resultCache.has(r)).map(async (r) => {
    try { resultCache.set(r, (await getResult(r)).data); } catch (_) { /* not readable: skip */ }
  }));
  store.flatness = new Map();
  for (const [net, r] of latest) {
    const data = resultCache.get(r);
    if (data && data.delta_mean && data.delta_mean.length) {
      store.flatness.set(net, { sigma: data.sigma[data.sigma.length - 1], delta: data.delta_mean[data.delta_mean.length - 1], kind: data.kind });
    }
  }
}
