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

// Draw `traces` into the element with id `id`. exports: {name, csv: string, json: object} (the data, as drawn).
export function drawPlot(id, traces, layout, exports = {}) {
  const div = document.getElementById(id);
  const name = exports.name || id;
  div.hidden = false;
  const merged = { ...BASE_LAYOUT, ...layout };
  const done = Plotly.react(div, traces, merged, config(name));
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
