"""The Slice view: its form is the slice kind's declaration (GET /api/job-kinds), the job it submits has
the form's values, and the contour, surface and 1-D curves draw the API's numbers."""
from __future__ import annotations

import numpy as np
import pytest

from .test_dashboard_support import hash_of, plot_data, seeded, shot, wait_done, wait_plot

pytestmark = pytest.mark.browser


def test_slice_form_from_the_catalogue_contour_surface_and_line(server, page):
    s = seeded(server)
    client, net = s["client"], s["ids"][0]
    kinds = {k["kind"]: k for k in client._call("GET", "/job-kinds")}
    page.goto(f"{server['url']}/#/slice")
    page.wait_for_selector("#slice-params [data-param]")
    # one field per declared parameter, with the declared default; bn only for BatchNorm networks
    fields = page.eval_on_selector_all("#slice-params [data-param]", "els => els.map(e => [e.dataset.param, e.value])")
    declared = kinds["slice"]["params"]
    assert [f for f, _ in fields] == list(declared)
    for name, value in fields:
        assert float(value) == declared[name]["default"] if declared[name]["type"] in ("int", "float") else value == declared[name]["default"], name
    page.fill("#slice-search", s["tag"])
    page.select_option("#slice-network", str(net))
    assert page.is_hidden("label[for='slice-bn']")  # an MLP without BatchNorm: the field does not apply
    page.fill("#slice-points", "5")
    page.fill("#slice-span", "0.6")
    page.select_option("#slice-mode", "canonical")
    page.fill("#slice-seed", "3")
    page.click("#run-slice")
    wait_done(page, "#slice-note[data-job]", "#slice-error")
    wait_plot(page, "slice-contour", 2)
    wait_plot(page, "slice-surface", 1)
    job = client.job(int(page.get_attribute("#slice-note", "data-job")))
    assert job["kind"] == "slice" and job["params"]["network"] == net
    assert {k: job["params"][k] for k in ("dims", "points", "span", "mode", "seed")} == \
        {"dims": 2, "points": 5, "span": 0.6, "mode": "canonical", "seed": 3}
    r = job["result"]
    contour, star = plot_data(page, "slice-contour")
    assert contour["type"] == "contour" and contour["x"] == pytest.approx(r["x"]) and contour["y"] == pytest.approx(r["y"])
    assert np.allclose(np.array(contour["z"], dtype=float), 100 * np.array(r["train_error"]))
    assert star["x"] == [0] and star["y"] == [0]
    # the section fills its frame: the axes span the grid exactly (before: x ran past it, its zero line too)
    axes = page.evaluate("() => { const l = document.getElementById('slice-contour')._fullLayout; "
                         "return [l.xaxis.range, l.yaxis.range, l.xaxis.zeroline, l.yaxis.zeroline]; }")
    assert axes[0] == pytest.approx([r["x"][0], r["x"][-1]]) and axes[1] == pytest.approx([r["y"][0], r["y"][-1]])
    assert axes[2] is False and axes[3] is False
    surface = plot_data(page, "slice-surface")[0]
    assert surface["type"] == "surface" and np.allclose(np.array(surface["z"], dtype=float), 100 * np.array(r["train_error"]))
    # the network's own errors at the origin
    assert r["center"]["train_error"] == pytest.approx(client.network(net)["train_error"])
    # the same numbers as a script computing the slice itself on the downloaded weights (before: the worker
    # drew the directions in the order the weights file was read back, another on every read)
    from workers.landscape import data as datasets
    from workers.landscape import slice as slices

    mine = slices.slice_result({"kind": "mlp", "hidden": [16]}, datasets.load_dataset("digits", {}), client.weights(net),
                               dims=2, points=5, span=0.6, mode="canonical", seed=3)
    one = 1 / len(datasets.load_dataset("digits", {}).y_train)
    assert np.allclose(np.array(mine["train_error"]), np.array(r["train_error"]), rtol=0, atol=one + 1e-12)
    h = hash_of(page)
    assert f"network={net}" in h and "mode=canonical" in h and "points=5" in h
    page.select_option("#slice-show", "test_loss")
    page.wait_for_function("() => document.getElementById('slice-contour').data[0].name === 'test loss'")
    assert np.allclose(np.array(plot_data(page, "slice-contour")[0]["z"], dtype=float), np.array(r["test_loss"]))
    page.select_option("#slice-show", "train_error")
    shot(page, "slice")

    # 1-D: the line along the first direction, train and test error
    page.fill("#slice-dims", "1")
    page.fill("#slice-points", "9")
    page.click("#run-slice")
    page.wait_for_function("() => (document.getElementById('slice-contour').data || [])[0] && document.getElementById('slice-contour').data[0].type !== 'contour'")
    wait_done(page, "#slice-note[data-job]", "#slice-error")
    page.wait_for_function(f"() => document.getElementById('slice-note').dataset.job !== '{job['id']}'")
    line = client.job(int(page.get_attribute("#slice-note", "data-job")))
    assert line["params"]["dims"] == 1 and len(line["result"]["x"]) == 9
    traces = {t["name"]: t for t in plot_data(page, "slice-contour")}
    assert traces["train error"]["y"] == pytest.approx([100 * v for v in line["result"]["train_error"]])
    assert page.is_hidden("#slice-surface")
    shot(page, "slice-1d")


def test_every_views_job_form_reads_the_catalogue(server, page):
    """Bounds, defaults and choices of the job forms come from GET /api/job-kinds, not from the page."""
    from backend.client import Client

    kinds = {k["kind"]: k for k in Client(server["url"])._call("GET", "/job-kinds")}
    page.goto(f"{server['url']}/#/compare")
    path = kinds["path"]["params"]
    # the declared help is on the fields (the page's own markup has none)
    page.wait_for_function("help => { const e = document.querySelector('#path-points'); return !!e && e.closest('label').title === help; }",
                           arg=path["points"]["help"])
    assert page.get_attribute("label:has(#bend-epochs)", "title") == path["epochs"]["help"]
    assert page.get_attribute("#bend-epochs", "placeholder") == str(path["epochs"]["default"])
    assert page.get_attribute("#path-points", "max") == str(path["points"]["max"])
    assert page.eval_on_selector_all("#bend-variant option", "os => os.map(o => o.value)") == path["variant"]["choices"]
    assert page.eval_on_selector_all("#path-bn option", "os => os.map(o => o.value)") == path["bn"]["choices"]
    page.goto(f"{server['url']}/#/plane")
    page.wait_for_selector("#plane-params [data-param]")
    plane = kinds["plane"]["params"]
    assert page.eval_on_selector_all("#plane-params [data-param]", "els => els.map(e => e.dataset.param)") == list(plane)
    assert page.get_attribute("#plane-grid", "min") == str(plane["grid"]["min"])
    assert page.eval_on_selector_all("#plane-mode option", "os => os.map(o => o.textContent)") == plane["mode"]["choices"]
    page.goto(f"{server['url']}/#/flatness")
    page.wait_for_selector("#flat-params-fields [data-param]")
    flat = kinds["flatness"]["params"]
    assert page.eval_on_selector_all("#flat-params-fields [data-param]", "els => els.map(e => e.dataset.param)") == list(flat)
    assert page.get_attribute("#flat-draws", "max") == str(flat["draws"]["max"])
    page.goto(f"{server['url']}/#/map")
    page.wait_for_selector("#map-params [data-param]")
    # points and bn matter only with barriers (their `when`): hidden until the box is ticked
    assert page.is_hidden("label[for='map-points']")
    page.check("#map-barriers")
    assert page.is_visible("label[for='map-points']")
    assert page.get_attribute("#map-points", "max") == str(kinds["matrix"]["params"]["points"]["max"])
