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

function config(filename) {
  return {
    responsive: true,
    displaylogo: false,
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

// The title (perhaps on several lines) keeps clear of the labels in the top margin and of the plotting area,
// and inside the figure: the top margin grows until it does.
async function fitTitle(div) {
  for (let i = 0; i < 4; i++) {
    const title = boxes(div, ".gtitle")[0];
    const svg = boxes(div, ".main-svg")[0];
    if (!title || !svg) return;
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

// Draw `traces` into the element with id `id`. exports: {name, csv: string, json: object} (the data, as drawn).
export function drawPlot(id, traces, layout, exports = {}) {
  const div = document.getElementById(id);
  const name = exports.name || id;
  div.hidden = false;
  const merged = { ...BASE_LAYOUT, ...wrapTitle(layout, div.clientWidth) };
  // axis titles and tick labels take the room they need (a title never sits on the ticks)
  for (const axis of AXES) if (merged[axis]) merged[axis] = { automargin: true, ...merged[axis] };
  div.dataset.marginB = String((merged.margin || BASE_LAYOUT.margin).b);
  const done = Plotly.react(div, traces, merged, config(name)).then(() => fitTitle(div))
    .then(() => (merged.showlegend === false ? div : fitLegend(div).then(() => div)));
  if (!div.dataset.fits) {  // the window was resized (responsive plots): the legend's rows changed, fit again
    div.dataset.fits = "1";
    div.on("plotly_relayout", (ev) => {
      if (ev && ev.autosize) Plotly.relayout(div, { "margin.b": Number(div.dataset.marginB) }).then(() => fitLegend(div));
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
