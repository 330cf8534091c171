// Toroid dashboard: a view per tab, its state in the URL (#/view?key=value), every number from the REST API.
import { api, getToken, setToken, listJobs } from "./api.js";
import { parseHash, rememberNav, routed } from "./router.js";
import { refreshNetworks } from "./store.js";
import { $, $$ } from "./util.js";
import networks from "./views/networks.js";
import network from "./views/network.js";
import compare from "./views/compare.js";
import flatness from "./views/flatness.js";
import map from "./views/map.js";
import plane from "./views/plane.js";
import slice from "./views/slice.js";
import jobs from "./views/jobs.js";

const VIEWS = { networks, network, compare, flatness, map, plane, slice, jobs };
const NAV_OF = { network: "networks" };
let current = null;

async function route(ev) {
  // hashchange and popstate both fire on Back: route once per address (a forced re-route comes as toroid:reroute)
  if (ev && ev.type !== "toroid:reroute" && location.hash === routed.hash) return;
  routed.hash = location.hash;
  const { view, params } = parseHash();
  const next = VIEWS[view];
  $$(".view").forEach((s) => { s.hidden = true; });
  $$("[data-nav]").forEach((a) => {
    const on = a.dataset.nav === (NAV_OF[view] || view);
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  if (current && current !== next && current.leave) current.leave();
  if (!next) { $("#view-missing").hidden = false; current = null; return; }
  rememberNav(view, location.hash || `#/${view}`);
  const section = $(`#view-${view}`);
  if (!section.dataset.ready) { next.init(section); section.dataset.ready = "1"; }
  section.hidden = false;
  current = next;
  document.title = `Toroid — ${section.getAttribute("aria-label")}`;
  try {
    await next.enter(params);
  } catch (e) {
    console.warn("view failed to open", e);  // each view shows its own errors in words
  }
}

// ---- sign-in (shared servers): a 401 anywhere opens the box; the token is kept in localStorage ----
function showSignedIn() {
  $("#signed-in").hidden = !getToken();
}

function askForToken(reason) {
  const dialog = $("#signin");
  $("#signin-reason").textContent = reason || "This server requires an API token.";
  if (!dialog.open) {
    $("#signin-token").value = "";
    dialog.showModal();
  }
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $("#signin-token").value.trim();
  if (!token) return;
  setToken(token);
  try {
    await api("/networks?limit=1");
  } catch (e) {
    setToken("");
    $("#signin-error").textContent = `That token was refused: ${e.message}`;
    $("#signin-error").hidden = false;
    return;
  }
  $("#signin-error").hidden = true;
  $("#signin").close();
  showSignedIn();
  await refreshNetworks();
  route();
}

function signOut() {
  setToken("");
  showSignedIn();
  location.reload();
}

// ---- a small badge with the number of unfinished jobs, on every view ----
async function jobsBadge() {
  try {
    const [queued, running] = await Promise.all([listJobs({ status: "queued", limit: 500 }), listJobs({ status: "running", limit: 500 })]);
    const active = queued.length + running.length;
    const badge = $("#jobs-badge");
    badge.textContent = String(active);
    badge.hidden = active === 0;
    badge.title = `${active} unfinished job(s)`;
  } catch (_) { /* shown by the views */ }
}

document.addEventListener("DOMContentLoaded", async () => {
  window.addEventListener("toroid:auth-required", (ev) => askForToken(ev.detail));
  $("#signin-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", signOut);
  showSignedIn();
  window.addEventListener("hashchange", route);
  window.addEventListener("popstate", route);
  window.addEventListener("toroid:reroute", route);
  api("/health").then((h) => { $("#health").textContent = `service ${h.status} · science ${h.science_version}`; })
    .catch((e) => { $("#health").textContent = `service unreachable: ${e.message}`; $("#health").classList.add("error"); });
  await refreshNetworks();
  route();
  jobsBadge();
  setInterval(() => { if (!document.hidden) jobsBadge(); }, 4000);
});
