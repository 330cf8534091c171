// The URL holds the view and its state: #/compare?a=3&b=5&types=linear,geodesic&points=21.
// A view writes its state with setState (no reload, no re-run); opening or sharing the link runs enter() again.

export function parseHash(hash = location.hash) {
  const text = hash.replace(/^#\/?/, "");
  const [path, query = ""] = text.split("?");
  const params = Object.fromEntries(new URLSearchParams(query));
  return { view: path || "networks", params };
}

export function hashOf(view, params = {}) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "" && !(Array.isArray(v) && v.length === 0));
  const query = entries.map(([k, v]) => `${encodeURIComponent(k)}=${Array.isArray(v) ? v.map(encodeURIComponent).join(",") : encodeURIComponent(v)}`).join("&");
  return `#/${view}${query ? `?${query}` : ""}`;
}

// Record a view's state in the address bar (a new history entry when `push`), without re-entering the view.
export const routed = { hash: null };

// The menu link of a view reopens it as it was last seen.
export function rememberNav(view, hash) {
  const link = document.querySelector(`[data-nav='${view}']`);
  if (link) link.setAttribute("href", hash);
}

export function setState(view, params, { push = false } = {}) {
  const target = hashOf(view, params);
  routed.hash = target;
  rememberNav(view, target);
  if (target === location.hash) return;
  if (push) history.pushState(null, "", target); else history.replaceState(null, "", target);
}

// Go to another view (re-enters it, as a click on a link would).
export function go(view, params = {}) {
  const target = hashOf(view, params);
  if (target === location.hash) window.dispatchEvent(new CustomEvent("toroid:reroute"));
  else location.hash = target;
}
