"""The defects a new user saw (issue 16), each checked where it showed: geometry read from the page
(boxes of the legend, ticks, titles, labels and table cells in a real Chromium), and the small
server-side ones (offline /docs, ANSI codes in an upload error).
"""
from __future__ import annotations

import io
import json

import pytest
import torch

from .helpers import random_state
from .test_dashboard_support import SHOTS, SPEC, seeded, shot, wait_done, wait_plot

browser = pytest.mark.browser

# boxes of the elements matching a selector (inside an element), as {left, right, top, bottom}
BOXES = """([root, sel]) => Array.from((typeof root === 'string' ? document.querySelector(root) : root).querySelectorAll(sel))
    .map(e => e.getBoundingClientRect()).filter(b => b.width > 0 && b.height > 0)
    .map(b => ({left: b.left, right: b.right, top: b.top, bottom: b.bottom}))"""


def boxes(page, root: str, sel: str) -> list[dict]:
    return page.evaluate(BOXES, [root, sel])


def intersect(a: dict, b: dict, slack: float = 0.5) -> bool:
    return (a["left"] + slack < b["right"] and b["left"] + slack < a["right"]
            and a["top"] + slack < b["bottom"] and b["top"] + slack < a["bottom"])


def assert_apart(first: list[dict], second: list[dict], what: str) -> None:
    assert first and second, f"nothing to compare for {what}"
    hits = [(a, b) for a in first for b in second if intersect(a, b)]
    assert not hits, f"{what} overlap: {hits[:3]}"


def run_paths(page, server, a: int, b: int, types: list[str], points: int = 5) -> None:
    page.goto(f"{server['url']}/#/compare?a={a}&b={b}&types={','.join(types)}&points={points}")
    for t in types:
        wait_done(page, f"#path-summary tr[data-type='{t}'] a[data-job]", "#path-summary td.error, #path-error")
    wait_plot(page, "path-plot", 3 * len(types))
    page.wait_for_selector("#distances [data-job]", timeout=60_000)
    page.wait_for_timeout(300)  # the legend's margin is fitted after the first draw


def check_legend_clear_of_axis(page, root) -> None:
    legend = boxes(page, root, ".legend .bg")
    ticks = boxes(page, root, ".xtick text")
    title = boxes(page, root, ".g-xtitle text")
    plot_area = boxes(page, root, ".bglayer .bg, .nsewdrag")
    assert len(legend) == 1 and ticks and title and plot_area
    assert_apart(legend, ticks, "legend and x-axis tick labels")
    assert_apart(legend, title, "legend and x-axis title")
    # the axis title sits under the plotting area, not on the data
    assert title[0]["top"] >= max(b["bottom"] for b in plot_area) - 0.5
    assert_apart(title, ticks, "x-axis title and tick labels")


@browser
def test_compare_three_path_types_legend_labels_and_summary(server, page):
    s = seeded(server)
    a, b = s["ids"][0], s["ids"][2]
    run_paths(page, server, a, b, ["linear", "linear_aligned", "geodesic"])
    # in the page: six legend entries wrap into rows; they stay under the axis title, at any width
    check_legend_clear_of_axis(page, "#path-plot")
    page.set_viewport_size({"width": 560, "height": 900})  # three or more rows of legend
    page.wait_for_function("() => document.querySelector('#path-plot .main-svg').getBoundingClientRect().width < 560")
    page.wait_for_timeout(800)
    assert page.evaluate("() => document.getElementById('path-plot')._fullLayout.legend._height") > 50
    check_legend_clear_of_axis(page, "#path-plot")
    # in the exported image: the same figure drawn off-screen by Plotly (its PNG is this SVG, rasterised)
    page.evaluate("""async () => {
        const url = await Plotly.toImage(document.getElementById('path-plot'), { format: 'svg' });
        const holder = document.createElement('div'); holder.id = 'exported'; holder.style.position = 'absolute'; holder.style.left = '0'; holder.style.top = '0';
        holder.innerHTML = decodeURIComponent(url.slice(url.indexOf(',') + 1));
        document.body.appendChild(holder);
    }""")
    legend = boxes(page, "#exported", ".legend .bg")
    assert legend, "the exported image has no legend"
    assert_apart(legend, boxes(page, "#exported", ".xtick text"), "exported legend and tick labels")
    assert_apart(legend, boxes(page, "#exported", ".g-xtitle text"), "exported legend and axis title")
    page.evaluate("() => document.getElementById('exported').remove()")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.wait_for_timeout(800)

    # barrier labels: no two overlap, and none sits on the plotting area (where the curves are)
    labels = boxes(page, "#path-plot", ".annotation")
    area = boxes(page, "#path-plot", ".nsewdrag")
    assert labels and area
    for i, x in enumerate(labels):
        for y in labels[i + 1:]:
            assert not intersect(x, y), "two labels of the plot overlap"
    assert_apart(labels, area, "barrier labels and the curves' area")
    text = " ".join(page.eval_on_selector_all("#path-plot .annotation", "els => els.map(e => e.textContent)"))
    for t, label in (("linear", "linear"), ("linear_aligned", "linear-aligned"), ("geodesic", "geodesic-aligned")):
        assert f"{label} {page.inner_text(f'#path-summary tr[data-type={t}] td.barrier')}" in text

    # the summary table: nothing clipped, the job links inside the visible box
    box = page.evaluate("""() => { const s = document.getElementById('path-summary');
        return { scroll: s.scrollWidth, client: s.clientWidth, right: s.getBoundingClientRect().right }; }""")
    assert box["scroll"] <= box["client"], box
    for link in boxes(page, "#path-summary", "a[data-job]"):
        assert link["right"] <= box["right"] + 0.5
    shot(page, "compare-three-paths")


def text_edges(page, selector: str) -> list[dict]:
    """For each cell matched: the right edge of its text and of the cell, and its column index."""
    return page.evaluate("""sel => Array.from(document.querySelectorAll(sel)).map(c => {
        const r = document.createRange(); r.selectNodeContents(c); const t = r.getBoundingClientRect(), b = c.getBoundingClientRect();
        return { col: c.cellIndex, text_left: t.left, text_right: t.right, cell_left: b.left, cell_right: b.right, text: c.textContent.trim() };
    })""", selector)


def check_numeric_columns(page, table: str) -> int:
    """Every numeric heading's text ends where its column's numbers end (all right-aligned)."""
    heads = [h for h in text_edges(page, f"{table} thead th.num") if h["text"]]
    cells = [c for c in text_edges(page, f"{table} tbody td.num") if c["text"]]
    assert heads and cells
    checked = 0
    for h in heads:
        column = [c for c in cells if c["col"] == h["col"]]
        for c in column:
            # right-aligned: both end at the same padding from the column's right edge
            assert abs(h["text_right"] - c["text_right"]) < 2.5, (h, c)
            assert c["text_left"] >= c["cell_left"] - 0.5 and c["text_right"] <= c["cell_right"] + 0.5
            checked += 1
    assert checked
    return checked


@browser
def test_tables_align_numbers_under_their_headings(server, page):
    s = seeded(server)
    ids = s["ids"][:2]
    page.goto(f"{server['url']}/#/flatness?nets={','.join(map(str, ids))}&sigmas=0.1,0.2&draws=2")
    for i in ids:
        wait_done(page, f"#flat-table tr[data-id='{i}'] a[data-job]", "#flat-table td.error, #flat-error")
    check_numeric_columns(page, "#flat-table")
    # the ΔE heading sits over the ΔE numbers, not over the train-error column
    delta = next(h for h in text_edges(page, "#flat-table thead th") if h["text"].startswith("ΔE"))
    train = next(h for h in text_edges(page, "#flat-table thead th") if h["text"] == "train error")
    numbers = [c for c in text_edges(page, "#flat-table tbody td") if c["col"] == delta["col"]]
    assert all(delta["cell_left"] <= c["text_left"] and c["text_right"] <= delta["cell_right"] for c in numbers)
    assert delta["text_right"] < train["cell_left"]
    page.goto(f"{server['url']}/#/networks?q={s['tag']}")
    page.wait_for_selector(f"#networks-table tr[data-id='{ids[0]}']")
    check_numeric_columns(page, "#networks-table")
    # computed style, for every numeric cell of the dashboard's tables
    aligns = page.evaluate("() => Array.from(document.querySelectorAll('table.data td.num')).map(c => getComputedStyle(c).textAlign)")
    assert aligns and set(aligns) == {"right"}


@browser
def test_colours_are_distinct_and_map_names_do_not_overprint(server, page, tmp_path):
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    page.goto(f"{server['url']}/#/networks")
    colours = page.evaluate("""async () => { const u = await import('/js/util.js');
        const samplers = ['sgd', 'adv', 'rsgd', 'adam', 'sam', 'entropy_sgd', 'uploaded', 'bend', 'canonicalize', 'my-own', 'another'];
        return { samplers: samplers.map(u.colorOf), paths: ['linear', 'linear_aligned', 'geodesic', 'bend', 'hamming'].map(u.pathColor) }; }""")
    assert len(set(colours["samplers"])) == len(colours["samplers"]), colours  # rsgd and bend were one green
    assert len(set(colours["paths"])) == len(colours["paths"])

    # two networks with the same weights sit on one point of the map: their names must not overprint
    state = random_state(SPEC, seed=4242)
    twins = [client.upload(state, name=f"{tag}-twin-{k}", architecture=SPEC, dataset="digits", tags=[tag])["id"] for k in (1, 2)]
    nets = s["ids"] + twins
    page.goto(f"{server['url']}/#/map?nets={','.join(map(str, nets))}")
    wait_done(page, "#map-note[data-job]", "#map-error")
    wait_plot(page, "map-mds", 1)
    page.wait_for_function("() => document.querySelectorAll('#map-mds .textpoint text').length > 0 && "
                           "Array.from(document.querySelectorAll('#map-mds .textpoint text')).some(t => t.textContent)")
    page.wait_for_timeout(300)
    labels = [b for b in boxes(page, "#map-mds", ".textpoint text")]
    assert len(labels) >= 3
    for i, x in enumerate(labels):
        for y in labels[i + 1:]:
            assert not intersect(x, y, slack=1), f"two names on the map overprint: {x} {y}"
    # every trace has its own colour (one per sampler)
    mds = page.evaluate("() => document.getElementById('map-mds').data.map(t => [t.name, t.marker.color])")
    assert len({c for _, c in mds}) == len(mds), mds
    # every name is in the hover text, shown or not
    hover = page.evaluate("() => document.getElementById('map-mds').data.flatMap(t => t.customdata.map(c => c[3]))")
    assert sum(f"{tag}-twin" in h for h in hover) == 2
    # networks made after the page was opened are read when the address names them: no "?" sampler
    assert "uploaded" in {name for name, _ in mds} and "?" not in {name for name, _ in mds}
    shot(page, "map-twins")


@browser
def test_network_names_are_text_in_plots_and_axis_titles_clear(server, page):
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    name = f'<b>{tag}</b> <a href="https://example.org/">x</a>'
    a = client.upload(random_state(SPEC, seed=9001), name=name, architecture=SPEC, dataset="digits", tags=[tag])["id"]
    b = client.upload(random_state(SPEC, seed=9002), name=f"{tag}-plain", architecture=SPEC, dataset="digits", tags=[tag])["id"]
    run_paths(page, server, a, b, ["linear"], points=3)
    title = page.text_content("#path-plot .gtitle")
    assert name in title  # the tags are shown as typed
    assert page.eval_on_selector_all("#path-plot svg a", "links => links.length") == 0
    bold = page.evaluate("() => Array.from(document.querySelectorAll('#path-plot .gtitle tspan')).some(t => (t.getAttribute('style') || '').includes('bold'))")
    assert not bold

    # a network page: the loss axis title clear of its tick labels (and the error axis' too)
    net = s["ids"][0]
    page.goto(f"{server['url']}/#/network?id={net}")
    wait_plot(page, "history-plot", 4)
    page.evaluate("() => Plotly.restyle('history-plot', { visible: true })")  # show the loss curves too
    page.wait_for_timeout(300)
    assert_apart(boxes(page, "#history-plot", ".g-y2title text"), boxes(page, "#history-plot", ".y2tick text"), "loss axis title and ticks")
    assert_apart(boxes(page, "#history-plot", ".g-ytitle text"), boxes(page, "#history-plot", ".ytick text"), "error axis title and ticks")
    check_legend_clear_of_axis(page, "#history-plot")


@browser
def test_every_view_fits_a_390_px_screen(server, browser):
    s = seeded(server)
    ids = s["ids"]
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    views = {
        "networks": f"#/networks?q={s['tag']}",
        "network": f"#/network?id={ids[0]}",
        "compare": f"#/compare?a={ids[0]}&b={ids[1]}&types=linear&points=5",
        "flatness": f"#/flatness?nets={ids[0]},{ids[1]}&sigmas=0.1,0.2&draws=2",
        "map": f"#/map?nets={','.join(map(str, ids))}",
        "plane": f"#/plane?nets={ids[0]},{ids[1]},{ids[3]}&grid=5",
        "slice": f"#/slice?network={ids[0]}&dims=2&points=5",
        "jobs": "#/jobs",
    }
    try:
        for view, address in views.items():
            page.goto(f"{server['url']}/{address}")
            page.wait_for_selector(f"#view-{view}:not([hidden])")
            page.wait_for_load_state("networkidle")
            if view in ("compare", "flatness", "map", "plane", "slice"):
                plot = {"compare": "path-plot", "flatness": "flat-curves", "map": "map-mds", "plane": "plane-plot",
                        "slice": "slice-contour"}[view]
                wait_plot(page, plot, 1, timeout=150_000)
            page.wait_for_timeout(400)
            width = page.evaluate("() => ({ doc: document.documentElement.scrollWidth, body: document.body.scrollWidth, win: window.innerWidth })")
            assert width["doc"] <= width["win"] and width["body"] <= width["win"], (view, width)
            # and no element sticks out on the right (tables scroll inside their own box)
            wide = page.evaluate("""() => Array.from(document.querySelectorAll('main *')).filter(e => {
                const b = e.getBoundingClientRect(); if (!b.width) return false;
                for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
                    const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return false; }
                return b.right > window.innerWidth + 0.5; }).map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)""")
            assert not wide, (view, wide)
            # and no plot title runs out of its figure (the SVG would clip it)
            for plot in page.eval_on_selector_all("main .plot:not([hidden])", "ds => ds.map(d => d.id)"):
                svg = boxes(page, f"#{plot}", ".main-svg")
                titles = boxes(page, f"#{plot}", ".gtitle")
                if svg and titles:
                    assert titles[0]["left"] >= svg[0]["left"] - 0.5 and titles[0]["right"] <= svg[0]["right"] + 0.5, (view, plot)
                    assert titles[0]["top"] >= svg[0]["top"] - 0.5, (view, plot, "title cut at the top")
                    labels = boxes(page, f"#{plot}", ".annotation")
                    assert not any(intersect(t, a) for t in titles for a in labels), (view, plot, "title on a label")
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"phone-{view}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, errors


@browser
def test_api_docs_work_offline(server, page):
    page.goto(f"{server['url']}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "Toroid" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag", timeout=30_000)
    assert page.eval_on_selector_all(".opblock", "ops => ops.length") > 5  # the operations are listed
    shot(page, "docs")
    # (the page fixture fails the test if any request left the machine or any asset failed)


class Pickled:
    """Any object that is not a tensor: torch.load(weights_only=True) refuses it."""


def test_pickled_upload_error_has_no_terminal_codes(api):
    buf = io.BytesIO()
    torch.save({"fc1.weight": torch.zeros(2), "other": Pickled()}, buf)
    r = api.post("/api/networks", files={"file": ("model.pt", buf.getvalue())},
                 data={"meta": json.dumps({"name": "evil", "architecture": SPEC, "dataset": "digits"})})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "weights_only" in detail and "\x1b" not in detail and "[1m" not in detail
    assert "state_dict" in detail  # still says what to do


def test_docs_assets_are_served_here(api):
    html = api.get("/docs").text
    assert "/vendor/swagger-ui/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert api.get("/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert api.get("/vendor/swagger-ui/swagger-ui.css").status_code == 200
    assert api.get("/openapi.json").status_code == 200
