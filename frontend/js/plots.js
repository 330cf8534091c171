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

// Draw `traces` into the element with id `id`. exports: {name, csv: string, json: object} (the data, as drawn).
export function drawPlot(id, traces, layout, exports = {}) {
  const div = document.getElementById(id);
  const name = exports.name || id;
  div.hidden = false;
  const merged = { ...BASE_LAYOUT, ...layout };
  // axis titles and tick labels take the room they need (a title never sits on the ticks)
  for (const axis of AXES) if (merged[axis]) merged[axis] = { automargin: true, ...merged[axis] };
  div.dataset.marginB = String((merged.margin || BASE_LAYOUT.margin).b);
  const done = Plotly.react(div, traces, merged, config(name)).then(() => (merged.showlegend === false ? div : fitLegend(div).then(() => div)));
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
