"""Views against the API contract with the answers stubbed in the browser (page.route): flatness, plane and
bent paths with numbers chosen here (so that e.g. Spearman's rho is never degenerate), a variant and a
failed job that the real backend would not produce in a short test. The same views against the real
backend are tested in test_dashboard_views.py.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy.stats import spearmanr

from .test_dashboard_support import hash_of, plot_data, run_plane, seeded, trace, wait_plot

pytestmark = pytest.mark.browser


class FakeJobs:
    """Answers POST /api/jobs for some kinds with a finished job (as a cached answer would come)."""

    def __init__(self, page, kinds, make_result):
        self.kinds, self.make_result, self.submitted, self.next_id = kinds, make_result, [], 900_000
        page.route(re.compile(r".*/api/jobs$"), self.handle)

    def handle(self, route):
        req = route.request
        body = json.loads(req.post_data or "{}") if req.method == "POST" else {}
        kind, params = body.get("kind"), body.get("params", {})
        if req.method != "POST" or not self.matches(kind, params):
            route.continue_()
            return
        self.next_id += 1
        self.submitted.append((kind, params))
        job = {"id": self.next_id, "kind": kind, "params": params, "inputs": [], "status": "succeeded", "progress": 1.0,
               "message": "done", "error": None, "owner": "local", "visibility": "lab", "cached": False, "cached_from": None,
               "result_id": self.next_id, "result": self.make_result(kind, params), "created_at": "2026-01-01T00:00:00",
               "started_at": "2026-01-01T00:00:00", "finished_at": "2026-01-01T00:00:01"}
        route.fulfill(status=202, json=job)

    def matches(self, kind, params):
        return kind in self.kinds or (kind == "path" and params.get("type") in self.kinds)


def flatness_result(network_id: int) -> dict:
    sigma = [0.05, 0.1, 0.2, 0.4]
    scale = 0.01 * (1 + network_id % 7)
    mean = [scale * s * 10 for s in sigma]
    std = [0.2 * m + 0.001 for m in mean]
    return {"sigma": sigma, "delta_mean": mean, "delta_std": std, "delta_sem": [v / 2 for v in std],
            "base_train_error": 0.05, "draws": 8, "kind": "gaussian"}


def test_flatness_view_draws_delta_e_bands_scatter_and_spearman(server, page):
    s = seeded(server)
    nets = {n["id"]: n for n in s["client"].networks(tag=s["tag"])}
    fake = FakeJobs(page, {"flatness"}, lambda kind, p: flatness_result(p["network"]))
    ids = s["ids"]
    page.goto(f"{server['url']}/#/flatness?nets={','.join(map(str, ids))}&sigmas=0.05,0.1,0.2,0.4&draws=8")
    wait_plot(page, "flat-curves", 2 * len(ids))
    wait_plot(page, "flat-scatter", 1)
    assert sorted(p["network"] for _, p in fake.submitted) == sorted(ids)
    assert all(p["sigmas"] == [0.05, 0.1, 0.2, 0.4] and p["draws"] == 8 for _, p in fake.submitted)

    curves = plot_data(page, "flat-curves")
    for i in ids:
        r = flatness_result(i)
        mean = next(t for t in curves if t["meta"] == i)
        assert mean["x"] == r["sigma"] and mean["y"] == pytest.approx([100 * v for v in r["delta_mean"]])
        band = next(t for t in curves if t["fill"] == "toself" and t["name"].endswith(f"(#{i})"))
        upper = [100 * (m + d) for m, d in zip(r["delta_mean"], r["delta_std"])]
        lower = [100 * (m - d) for m, d in zip(r["delta_mean"], r["delta_std"])]
        assert band["x"] == r["sigma"] + r["sigma"][::-1] and band["y"] == pytest.approx(upper + lower[::-1])

    flat = [flatness_result(i)["delta_mean"][-1] for i in ids]
    test_err = [nets[i]["test_error"] for i in ids]
    scatter = plot_data(page, "flat-scatter")
    assert {t["name"] for t in scatter} == {nets[i]["source"]["optimizer"] for i in ids}
    for t in scatter:  # coloured by sampler: each trace holds that sampler's networks
        for x, y, net_id in zip(t["x"], t["y"], t["customdata"]):
            assert nets[net_id]["source"]["optimizer"] == t["name"]
            assert x == pytest.approx(100 * flatness_result(net_id)["delta_mean"][-1]) and y == pytest.approx(100 * nets[net_id]["test_error"])
    rho = spearmanr(flat, test_err).statistic
    assert not math.isnan(rho)
    assert float(page.get_attribute("#flat-spearman", "data-rho")) == pytest.approx(rho, abs=1e-12)
    assert f"ρ = {rho:.3f}" in page.inner_text("#flat-spearman")


def plane_result(grid: int) -> dict:
    x = list(np.linspace(-0.5, 1.5, grid))
    y = list(np.linspace(-0.5, 1.5, grid))
    train = [[min(1.0, 0.1 + 0.3 * ((xi - 0.5) ** 2 + (yi - 0.4) ** 2)) for xi in x] for yi in y]
    test = [[min(1.0, v + 0.05) for v in row] for row in train]
    return {"x": x, "y": y, "train_error": train, "test_error": test,
            "points": [{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 0.0}, {"x": 0.3, "y": 0.9}], "mode": "aligned"}


def test_plane_view_draws_the_error_surface_with_the_three_networks(server, page):
    s = seeded(server)
    a, b, c = s["ids"][0], s["ids"][1], s["ids"][2]
    fake = FakeJobs(page, {"plane"}, lambda kind, p: plane_result(p["grid"]))
    run_plane(page, server, s, (a, b, c), 9)
    wait_plot(page, "plane-plot", 2)
    assert fake.submitted == [("plane", {"networks": [a, b, c], "grid": 9, "mode": "aligned"})]
    r = plane_result(9)
    contour, marks = plot_data(page, "plane-plot")
    assert contour["type"] == "contour" and contour["x"] == pytest.approx(r["x"]) and contour["y"] == pytest.approx(r["y"])
    assert np.allclose(np.array(contour["z"]), 100 * np.array(r["train_error"]))
    assert marks["x"] == [0.0, 1.0, 0.3] and marks["y"] == [0.0, 0.0, 0.9]
    assert all(f"#{i}" in t for i, t in zip((a, b, c), marks["text"]))
    page.select_option("#plane-show", "test")
    page.wait_for_function("() => document.getElementById('plane-plot').data[0].name === 'test error'")
    assert np.allclose(np.array(plot_data(page, "plane-plot")[0]["z"]), 100 * np.array(r["test_error"]))
    assert f"nets={a},{b},{c}" in hash_of(page) and "show=test" in hash_of(page)


def test_plane_names_at_the_grid_edges_stay_inside_the_plot(server, page):
    """Before: a network on the grid's edge (margin 0 puts two of them there) had its name cut by the plot's
    edge. Names are placed towards the inside, and never clipped by the axes."""
    s = seeded(server)
    a, b, c = s["ids"][0], s["ids"][1], s["ids"][2]

    def edge_plane(kind, p):
        r = plane_result(p["grid"])
        r["points"] = [{"x": r["x"][0], "y": r["y"][0]}, {"x": r["x"][-1], "y": r["y"][0]},
                       {"x": r["x"][len(r["x"]) // 2], "y": r["y"][-1]}]
        return r

    FakeJobs(page, {"plane"}, edge_plane)
    for width in (900, 390):  # a desktop window, then a phone (names there: ids only, listed under the plot)
        page.set_viewport_size({"width": width, "height": 900})
        run_plane(page, server, s, (a, b, c), 5)
        wait_plot(page, "plane-plot", 2)
        page.wait_for_timeout(300)
        area = page.evaluate("() => { const b = document.querySelector('#plane-plot .nsewdrag').getBoundingClientRect(); "
                             "return {left: b.left, right: b.right, top: b.top, bottom: b.bottom}; }")
        labels = page.evaluate("() => [...document.querySelectorAll('#plane-plot .scatterlayer .textpoint text')].map(e => {"
                               " const b = e.getBoundingClientRect(); return {text: e.textContent, left: b.left, right: b.right,"
                               " top: b.top, bottom: b.bottom}; })")
        assert len(labels) == 3 and all(f"#{i}" in t["text"] for i, t in zip((a, b, c), labels))
        for box in labels:
            assert box["left"] >= area["left"] - 1 and box["right"] <= area["right"] + 1, (width, box, area)
            assert box["top"] >= area["top"] - 1 and box["bottom"] <= area["bottom"] + 1, (width, box, area)
        for i in range(3):  # and never on each other
            for j in range(i + 1, 3):
                p, q = labels[i], labels[j]
                apart = p["right"] <= q["left"] or q["right"] <= p["left"] or p["bottom"] <= q["top"] or q["bottom"] <= p["top"]
                assert apart, (width, p, q)
        page.goto("about:blank")


def bend_result(params: dict) -> dict:
    n = params["points"]
    t = [i / (n - 1) for i in range(n)]
    train = [0.05 + 0.02 * math.sin(math.pi * v) for v in t]
    test = [v + 0.03 for v in train]
    return {"type": "bend", "variant": params.get("variant"), "t": t, "train_error": train, "test_error": test,
            "train_loss": [0.2] * n, "test_loss": [0.3] * n, "barrier": max(train), "barrier_excess": max(train) - 0.05,
            "distances": {}, "bn": params.get("bn"), "midpoint_network_id": 424242}


def test_compare_draws_a_bent_path_with_its_midpoint(server, page):
    s = seeded(server)
    a, b = s["ids"][0], s["ids"][1]
    fake = FakeJobs(page, {"bend"}, lambda kind, p: bend_result(p))
    page.goto(f"{server['url']}/#/compare?a={a}&b={b}&types=bend&points=9&variant=garipov")
    page.wait_for_selector("#path-summary tr[data-type='bend'] a[data-job]")
    assert fake.submitted[0][1]["variant"] == "garipov" and fake.submitted[0][1]["points"] == 9
    assert page.is_checked("input[name='path-type'][value='bend']") and page.input_value("#bend-variant") == "garipov"
    r = bend_result(fake.submitted[0][1])
    plotted = plot_data(page, "path-plot")
    assert trace(plotted, "train error · single bend")["y"] == pytest.approx([100 * v for v in r["train_error"]])
    assert trace(plotted, "barrier · single bend")["y"] == pytest.approx([100 * r["barrier"]])
    assert page.is_visible("#path-summary a[href='#/network?id=424242']")


def test_jobs_view_shows_a_failed_jobs_error_in_words(server, page):
    failed = {"id": 990001, "kind": "path", "params": {"a": 1, "b": 2, "type": "geodesic", "points": 11, "bn": "recompute"},
              "inputs": [1, 2], "status": "failed", "progress": 0.4, "message": "evaluating point 5/11",
              "error": "the worker ran out of memory evaluating 11 points; use fewer points", "owner": "local",
              "visibility": "lab", "cached": False, "cached_from": None, "result_id": None, "result": None,
              "created_at": "2026-01-01T00:00:00", "started_at": "2026-01-01T00:00:01", "finished_at": "2026-01-01T00:00:09"}

    def listing(route):
        if route.request.method == "GET" and "kind=path" in route.request.url:
            route.fulfill(status=200, json=[failed])
        else:
            route.continue_()

    page.route(re.compile(r".*/api/jobs\?.*"), listing)
    page.goto(f"{server['url']}/#/jobs?kind=path")
    row = "#jobs-table tr[data-job='990001']"
    page.wait_for_selector(row)
    assert page.inner_text(f"{row} .status-failed") == "failed"
    assert page.inner_text(f"{row} td.message .error") == failed["error"]
    assert page.inner_text(f"{row} td:nth-child(9)") == "8.0 s"
    assert page.is_visible(f"{row} [data-rerun]") and not page.query_selector(f"{row} [data-cancel]")
