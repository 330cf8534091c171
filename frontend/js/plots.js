// Plotly with the same look and the same exports everywhere: PNG and SVG from the modebar (and from
// buttons under the plot), the plotted data as CSV and JSON from download links under the plot.
import { dataURL, esc } from "./util.js";

const BASE_LAYOUT = {
  margin: { t: 40, r: 30, b: 100, l: 60 },
  font: { family: "system-ui, -apple-system, 'Segoe UI', sans-serif", size: 12 },
  // the legend sits at the bottom of the figure, under the x axis title (not over it)
  legend: { orientation: "h", yref: "container", y: 0.01, yanchor: "bottom", x: 0, xanchor: "left" },
  hoverlabel: { namelength: -1 },
  paper_bgcolor: "white",
  plot_bgcolor: "white",
};

// buttons a narrow plot does without (a phone zooms with its fingers; PNG and SVG stay, and are under the plot too)
const NARROW_REMOVED = ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d", "hoverClosestCartesian", "hoverCompareCartesian",
  "toggleSpikelines", "zoom3d", "pan3d", "orbitRotation", "tableRotation", "resetCameraLastSave3d", "hoverClosest3d"];

function config(filename, width) {
  return {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: width && width < 600 ? NARROW_REMOVED : [],
    toImageButtonOptions: { format: "png", filename, scale: 2 },
    modeBarButtonsToAdd: [{
      name: "downloadSvg",
      title: "Download plot as SVG",
      icon: Plotly.Icons.disk,
      click: (gd) => Plotly.downloadImage(gd, { format: "svg", filename }),
    }],
  };
}

const AXES = ["xaxis", "yaxis", "yaxis2"];
const boxes = (root, sel) => Array.from(root.querySelectorAll(sel)).map((e) => e.getBoundingClientRect()).filter((b) => b.width > 0 && b.height > 0);
const across = (a, b) => a.left < b.right && b.left < a.right;

// How many pixels the legend (at the bottom of the figure) climbs over the x axis' tick labels and title.
export function legendOverlap(root) {
  const legend = boxes(root, ".legend .bg")[0];
  if (!legend) return 0;
  const axis = boxes(root, ".xtick text, .g-xtitle text");
  return Math.max(0, ...axis.filter((b) => across(b, legend)).map((b) => b.bottom - legend.top));
}

// A legend of many entries wraps into rows that grow upwards from the bottom of the figure: give the
// bottom margin their height, so that the legend sits under the axis title, in the page and in the
// exported images (they are drawn from the same layout).
async function fitLegend(div) {
  for (let i = 0; i < 4; i++) {
    const over = legendOverlap(div);
    if (over <= 0) return;
    await Plotly.relayout(div, { "margin.b": div._fullLayout.margin.b + Math.ceil(over) + 8 });
  }
}

// A title longer than the plot is wide is broken into lines at spaces (a narrow screen clipped it), and the
// top margin grows by a line for each. Plotly's own markup (<br>, <span ...>) stays whole.
let ruler;
function textWidth(text, size) {
  ruler = ruler || document.createElement("canvas").getContext("2d");
  ruler.font = `${size}px ${BASE_LAYOUT.font.family}`;
  return ruler.measureText(text).width;
}

function wrapTitle(layout, width) {
  const title = layout.title && layout.title.text;
  if (!title || !width) return layout;
  const size = (layout.title.font && layout.title.font.size) || 1.4 * BASE_LAYOUT.font.size;  // Plotly's title size
  const plain = (t) => t.replace(/<[^>]*>/g, "").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  const room = width - 24;
  const lines = [""];
  for (const w of title.split(" ")) {
    const line = lines[lines.length - 1];
    if (line && textWidth(plain(`${line} ${w}`), size) > room && !/<[^>]*$/.test(line)) lines.push(w);
    else lines[lines.length - 1] = line ? `${line} ${w}` : w;
  }
  if (lines.length === 1) return layout;
  const margin = { ...BASE_LAYOUT.margin, ...(layout.margin || {}) };
  const extra = Math.ceil(1.25 * size) * (lines.length - 1);
  const out = { ...layout.title, text: lines.join("<br>") };
  return { ...layout, title: out, margin: { ...margin, t: margin.t + extra } };
}

// The title (perhaps on several lines) keeps clear of the toolbar (modebar), of the labels in the top margin
// and of the plotting area, and inside the figure: it moves under the toolbar and the top margin grows
// until it does.
const hits = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
async function fitTitle(div) {
  for (let i = 0; i < 6; i++) {
    const title = boxes(div, ".gtitle")[0];
    const svg = boxes(div, ".main-svg")[0];
    if (!title || !svg) return;
    const bar = boxes(div, ".modebar")[0];
    if (bar && hits(title, bar)) {  // anchored at the figure's top, under the toolbar
      const t = div._fullLayout.title;
      const low = Math.ceil(bar.bottom - title.top) + 4;  // how far the title must come down
      const anchored = t.yref === "container" && t.yanchor === "top" && t.y === 1;
      // (Plotly sets a title of several lines higher than its pad says: the pad grows by what is missing)
      const pad = anchored ? ((t.pad || {}).t || 0) + low : Math.ceil(bar.bottom - svg.top) + 4;
      await Plotly.relayout(div, { "title.yref": "container", "title.y": 1, "title.yanchor": "top", "title.pad.t": pad,
        "margin.t": Math.max(div._fullLayout.margin.t + low, Math.ceil(title.bottom - title.top) + pad + 8) });
      continue;
    }
    const below = boxes(div, ".annotation, .nsewdrag").filter((b) => across(b, title) && b.bottom > title.top);
    const low = below.length ? Math.min(...below.map((b) => b.top)) : Infinity;
    const cut = svg.top - title.top;  // above the figure: a title anchored at its top moves down by its padding
    if (cut > 0) {
      const pad = ((div._fullLayout.title.pad || {}).t || 0) + Math.ceil(cut) + 2;
      await Plotly.relayout(div, { "title.pad.t": pad, "margin.t": div._fullLayout.margin.t + Math.ceil(cut) + 2 });
      continue;
    }
    const over = title.bottom + 4 - low;
    if (!(over > 0)) return;
    await Plotly.relayout(div, { "margin.t": div._fullLayout.margin.t + Math.ceil(over) + 4 });
  }
}

// The plotting area keeps at least MIN_AREA px of height, whatever the title's lines and the legend's rows
// took from the figure (a phone's Compare with four paths had 70 px left): the figure grows instead.
export const MIN_AREA = 250;
async function fitArea(div) {
  for (let i = 0; i < 3; i++) {
    const areas = boxes(div, ".draglayer .nsewdrag");
    if (!areas.length) return;
    const short = MIN_AREA - Math.max(...areas.map((b) => b.height));
    if (short <= 0) return;
    const fixedWidth = div.layout.width !== undefined;
    await Plotly.relayout(div, { height: div._fullLayout.height + Math.ceil(short) + 2 });
    // (Plotly writes the current width into the layout with a new height: the plot would stop following
    // its frame's width when the window is resized)
    if (!fixedWidth) delete div.layout.width;
  }
}

// Axis titles stay inside the figure: a y-axis title longer than the figure is high is broken into two lines.
async function fitAxisTitles(div) {
  const svg = boxes(div, ".main-svg")[0];
  if (!svg) return;
  const update = {};
  for (const axis of ["yaxis", "yaxis2"]) {
    const el = div.querySelector(`.g-${axis.replace("axis", "")}title text`);
    const full = div._fullLayout[axis];
    if (!el || !full || !full.title || !full.title.text || /<br>/.test(full.title.text)) continue;
    const b = el.getBoundingClientRect();
    if (b.top >= svg.top - 0.5 && b.bottom <= svg.bottom + 0.5) continue;
    const words = full.title.text.split(" ");
    let best = 1, cost = Infinity;  // break where the two lines are most even
    for (let k = 1; k < words.length; k++) {
      const d = Math.abs(words.slice(0, k).join(" ").length - words.slice(k).join(" ").length);
      if (d < cost) { cost = d; best = k; }
    }
    if (words.length > 1) update[`${axis}.title.text`] = `${words.slice(0, best).join(" ")}<br>${words.slice(best).join(" ")}`;
  }
  if (Object.keys(update).length) await Plotly.relayout(div, update);
}

const queues = new WeakMap();  // plot div -> its drawing in progress

// Lines of `parts` (HTML allowed: markup does not count) joined by `sep`, each at most `width` px wide.
export function wrapParts(parts, width, sep = " · ", size = BASE_LAYOUT.font.size) {
  const plain = (t) => t.replace(/<[^>]*>/g, "").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  const lines = [];
  for (const part of parts) {
    const last = lines[lines.length - 1];
    if (last !== undefined && textWidth(plain(last + sep + part), size) <= width) lines[lines.length - 1] = last + sep + part;
    else lines.push(part);
  }
  return lines;
}

// Colour bars of contours and heatmaps: on a narrow plot (a phone) lying under it, which leaves the width to
// the plot; elsewhere right beside the plotting area, also when one scale on both axes narrowed the area
// (constrain "domain": the bar stayed at the far right of the figure, ~350 px away).
const NARROW = 500;
const COLOURED = ["contour", "heatmap"];
function colourbarsUnder(traces, width) {
  if (!(width && width < NARROW)) return traces;
  return traces.map((t) => (COLOURED.includes(t.type) && t.showscale !== false ? { ...t, colorbar: { ...(t.colorbar || {}),
    orientation: "h", yref: "container", y: 0.005, yanchor: "bottom", x: 0.5, xanchor: "center", thickness: 12, len: 0.9,
    title: { ...((t.colorbar || {}).title || {}), side: "bottom" } } } : t));
}

async function fitColourbars(div) {
  if (div.clientWidth < NARROW) return;
  const xa = div._fullLayout.xaxis;
  const which = (div.data || []).map((t, i) => (COLOURED.includes(t.type) && t.showscale !== false ? i : -1)).filter((i) => i >= 0);
  if (!xa || !which.length || xa.domain[1] > 0.97) return;
  const x = xa.domain[1] + 12 / (div._fullLayout.width - div._fullLayout.margin.l - div._fullLayout.margin.r);
  await Plotly.restyle(div, { "colorbar.x": x, "colorbar.xanchor": "left" }, which);
}

// Draw `traces` into the element with id `id`. exports: {name, csv: string, json: object} (the data, as drawn).
export function drawPlot(id, traces, layout, exports = {}) {
  const div = document.getElementById(id);
  const name = exports.name || id;
  div.hidden = false;
  traces = colourbarsUnder(traces, div.clientWidth);
  const merged = { ...BASE_LAYOUT, ...wrapTitle(layout, div.clientWidth) };
  // axis titles and tick labels take the room they need (a title never sits on the ticks)
  for (const axis of AXES) if (merged[axis]) merged[axis] = { automargin: true, ...merged[axis] };
  div.dataset.marginB = String((merged.margin || BASE_LAYOUT.margin).b);
  // one drawing of a plot at a time: a view that redraws as its jobs finish waits for the previous fitting
  // (two interleaved fittings measured each other's half-drawn figure)
  const draw = () => Plotly.react(div, traces, merged, config(name, div.clientWidth)).then(() => fitTitle(div))
    .then(() => (merged.showlegend === false ? div : fitLegend(div).then(() => div)))
    .then(() => fitArea(div)).then(() => fitAxisTitles(div)).then(() => fitColourbars(div)).then(() => div);
  // (with none in progress it starts at once: the div has Plotly's events (div.on) when this returns)
  const pending = queues.get(div);
  const done = pending ? pending.catch(() => {}).then(draw) : draw();
  queues.set(div, done);
  const settle = () => { if (queues.get(div) === done) queues.delete(div); };
  done.then(settle, settle);
  if (!div.dataset.fits) {  // the window was resized (responsive plots): the legend's rows changed, fit again
    div.dataset.fits = "1";
    div.on("plotly_relayout", (ev) => {
      if (ev && ev.autosize) Plotly.relayout(div, { "margin.b": Number(div.dataset.marginB) }).then(() => fitLegend(div)).then(() => fitArea(div));
    });
  }
  const bar = document.querySelector(`[data-exports-for='${id}']`);
  if (bar) {
    const links = [];
    if (exports.csv !== undefined) links.push(`<a class="download" download="${esc(name)}.csv" href="${dataURL(exports.csv, "text/csv")}">CSV</a>`);
    if (exports.json !== undefined) links.push(`<a class="download" download="${esc(name)}.json" href="${dataURL(JSON.stringify(exports.json, null, 1), "application/json")}">JSON</a>`);
    bar.innerHTML = `<span class="hint">Download</span> ${links.join(" ")}
      <button type="button" class="link" data-image="png">PNG</button>
      <button type="button" class="link" data-image="svg">SVG</button>`;
    bar.hidden = false;
    bar.querySelectorAll("[data-image]").forEach((b) => b.addEventListener("click", () => Plotly.downloadImage(div, { format: b.dataset.image, filename: name, scale: b.dataset.image === "png" ? 2 : 1 })));
  }
  return done;
}

export function clearPlot(id) {
  const div = document.getElementById(id);
  if (div && div.data) Plotly.purge(div);
  if (div) div.hidden = true;
  const bar = document.querySelector(`[data-exports-for='${id}']`);
  if (bar) { bar.innerHTML = ""; bar.hidden = true; }
}

// The HTML of a plot with its export bar.
export const plotBox = (id, extraClass = "") => `<figure class="plot-box ${extraClass}"><div id="${id}" class="plot" hidden></div><figcaption class="exports" data-exports-for="${id}" hidden></figcaption></figure>`;
