"""Every view at 390, 900 and 1280 px on the demo's nine networks (issue 25): each plot's title clear of the
toolbar and inside the figure, a plotting area at least 250 px high, axis titles and every named point's
label inside the figure and apart, tick labels apart, colour bars next to their plot; the Map names all nine
points and shows ticked barriers; Compare's barrier line names every path; the Plane's networks in their
samplers' colours; the Jobs table inside its frame. Screenshots: test-artifacts/screenshots/screen-VIEW-WIDTH.png.
"""
from __future__ import annotations

import shutil

import pytest

from .conftest import start_serve, stop, wait_for_log
from .layout_probe import PROBE, problems
from .test_dashboard_support import SHOTS, wait_done

pytestmark = pytest.mark.browser
NETS = ",".join(map(str, range(1, 10)))  # the demo's networks: 1-3 RSGD, 4-6 SGD, 7-9 ADV
VIEWS = [  # view, address, what shows it is done, where its errors are
    ("networks", "#/networks", "#networks-table tbody tr[data-id='9']", "#networks-error"),
    ("network", "#/network?id=7", "#history-plot .main-svg", "#network-error"),
    ("compare", "#/compare?a=1&b=4&types=linear,linear_aligned,geodesic,bend&points=7&epochs=3",
     "#path-summary tr[data-type='bend'] a[data-job]", "#path-summary td.error, #path-error"),
    ("flatness", f"#/flatness?nets={NETS}&sigmas=0.1,0.5&draws=2", "#flat-table tr[data-id='9'] a[data-job]",
     "#flat-table td.error, #flat-error"),
    ("map", f"#/map?nets={NETS}&barriers=1&points=3", "#map-note[data-job]", "#map-error"),
    ("plane", "#/plane?nets=1,4,7&grid=5", "#plane-note[data-job]", "#plane-error"),
    ("slice", "#/slice?network=1&dims=2&points=5", "#slice-note[data-job]", "#slice-error"),
    ("jobs", "#/jobs?cached=1", "#jobs-table tbody tr[data-job]", "#jobs-error"),
]


@pytest.fixture(scope="module")
def demo(browser):
    url, home, log, proc, env = start_serve("--demo", prefix="toroid-screens-")
    from backend.client import Client

    try:
        Client(url).wait_ready(timeout=90, alive=lambda: proc.poll() is None)
        wait_for_log(home / "worker.log", "ready.", proc)
        yield url
    finally:
        stop(proc)
        shutil.rmtree(home, ignore_errors=True)


def plots_of(page, view: str) -> list[dict]:
    ids = page.eval_on_selector_all(f"#view-{view} .plot:not([hidden])", "ds => ds.map(d => d.id)")
    return [page.evaluate(PROBE, i) for i in ids]


@pytest.mark.parametrize("width", [1280, 900, 390])
def test_every_view_at_every_width(demo, browser, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    found: list[str] = []
    try:
        for view, address, done, error in VIEWS:
            page.goto(f"{demo}/{address}")
            wait_done(page, done, error, timeout=300_000)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)  # the fitting after the last drawing (labels, margins)
            plots = plots_of(page, view)
            for p in plots:
                found += [f"{width} px, {view}: {x}" for x in problems(p)]
            if view == "map":
                mds = next(p for p in plots if p["id"] == "map-mds")
                names = sorted(b["text"] for b in mds["labels"])
                assert len(names) == 9 and all(f"#{i}" in " ".join(names) for i in range(1, 10)), names
                heat = next(p for p in plots if p["id"] == "map-heatmap")
                assert "barrier" in heat["title"]["text"]  # ticked barriers are what the heatmap shows
                assert page.input_value("#map-dist") == "barriers"
            if view == "compare":
                line = page.evaluate("() => document.getElementById('path-plot').layout.annotations.find(a => a.name === 'barriers').text")
                for label in ("linear", "linear-aligned", "geodesic-aligned", "single bend"):
                    assert f">{label} " in line, line
                assert next(p for p in plots if p["id"] == "path-plot")["labels"], "the barrier line is drawn"
            if view == "plane":
                colours = page.evaluate("""async () => { const u = await import('/js/util.js');
                    const d = document.getElementById('plane-plot'); const pts = d.data.find(t => t.name === 'networks');
                    return { shown: pts.marker.color, samplers: ['rsgd', 'sgd', 'adv'].map(u.colorOf) }; }""")
                assert colours["shown"] == colours["samplers"], colours
            if view == "jobs":
                fit = page.evaluate("""() => { const w = document.querySelector('#view-jobs .table-wrap'), t = document.getElementById('jobs-table');
                    return { table: t.getBoundingClientRect().width, wrap: w.clientWidth, scroll: getComputedStyle(w).overflowX,
                             page: document.documentElement.scrollWidth, win: window.innerWidth }; }""")
                assert fit["page"] <= fit["win"], fit  # nothing sticks out of the page
                if width >= 1280:
                    assert fit["table"] <= fit["wrap"] + 0.5, fit  # the whole table in its frame
                else:
                    assert fit["scroll"] == "auto", fit  # on a phone it scrolls inside its frame: nothing is cut
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"screen-{view}-{width}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, errors
    assert not found, "\n".join(found)
