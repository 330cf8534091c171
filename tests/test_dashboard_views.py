"""Each view of the dashboard used as a person would (click, choose, submit, wait), and what it draws
compared with the API's numbers (Plotly's data, read from the plot div). Screenshots of every view go to
test-artifacts/screenshots/<view>.png.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from safetensors.torch import save_file
from scipy.stats import spearmanr

from .helpers import random_state
from .test_dashboard_support import (SPEC, hash_of, job_of, pct, plot_data, run_plane, seeded, shot, trace, wait_done,
                                     wait_plot, wait_until)

pytestmark = pytest.mark.browser


# ---- Networks --------------------------------------------------------------------------------------

def row_ids(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all("#networks-table tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")]


def test_networks_train_upload_filter_sort_open_and_delete(server, page, tmp_path):
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    page.goto(f"{server['url']}/#/networks")

    # train through the form: architecture, data set and sampler fields come from the catalogues
    page.fill("#train-name", f"{tag}-form")
    page.fill("#train-tags", f"{tag}, form")
    page.select_option("#train-kind", "mlp")
    page.fill("#train-arch-hidden", "12")
    page.select_option("#train-dataset", "digits")
    page.select_option("#train-optimizer", "sgd")
    assert page.input_value("#train-opt-lr") == "0.02"  # the sampler's default, from /api/optimizers
    page.fill("#train-opt-epochs", "3")
    page.click("#train-submit")
    page.wait_for_selector("#train-done a", timeout=90_000)
    trained = next(n for n in client.networks(tag=tag) if n["name"] == f"{tag}-form")
    assert trained["architecture"]["hidden"] == [12] and trained["source"]["optimizer"] == "sgd"
    assert sorted(trained["tags"]) == sorted([tag, "form"]) and "history" not in trained  # lists are summaries
    trained = client.network(trained["id"])
    assert len(trained["history"]) == 3

    # upload through the form
    weights = tmp_path / "uploaded.safetensors"
    save_file({k: v.contiguous() for k, v in random_state(SPEC, seed=77).items()}, str(weights))
    page.set_input_files("#upload-file", str(weights))
    page.fill("#upload-name", f"{tag}-upload")
    page.fill("#upload-tags", tag)
    page.select_option("#upload-kind", "mlp")
    page.fill("#upload-arch-hidden", "16")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-done a")
    uploaded = next(n for n in client.networks(tag=tag) if n["name"] == f"{tag}-upload")
    assert uploaded["source"]["kind"] == "uploaded" and uploaded["architecture"]["hidden"] == [16]
    wait_until(lambda: client.network(uploaded["id"])["test_error"] is not None, what="the upload's evaluation")

    # filter by the tag: exactly this test's networks, with the API's numbers
    page.click("#refresh-networks")
    page.fill("#network-filter", tag)
    mine = {n["id"]: n for n in client.networks(tag=tag)}
    page.wait_for_function(f"() => document.querySelectorAll('#networks-table tbody tr[data-id]').length === {len(mine)}")
    page.wait_for_function(f"() => document.querySelector(\"tr[data-id='{uploaded['id']}'] td:nth-child(8)\").textContent !== '–'")
    assert set(row_ids(page)) == set(mine)
    for net in mine.values():
        cells = page.eval_on_selector_all(f"tr[data-id='{net['id']}'] td", "tds => tds.map(td => td.textContent.trim())")
        assert cells[2] == net["name"] and cells[4] == "digits"
        assert cells[6] == pct(net["train_error"]) and cells[7] == pct(net["test_error"])
        assert cells[5] == (net["source"].get("optimizer") or net["source"]["kind"])
    assert f"q={tag}" in hash_of(page)

    # sort by test error, both ways (a real button in each header)
    page.click("button[data-sort='test_error']")
    assert [mine[i]["test_error"] for i in row_ids(page)] == sorted(n["test_error"] for n in mine.values())
    assert page.get_attribute("th:has(button[data-sort='test_error'])", "aria-sort") == "ascending"
    page.click("button[data-sort='test_error']")
    assert [mine[i]["test_error"] for i in row_ids(page)] == sorted((n["test_error"] for n in mine.values()), reverse=True)
    page.click("button[data-sort='name']")
    assert [mine[i]["name"].lower() for i in row_ids(page)] == sorted(n["name"].lower() for n in mine.values())
    # filter by sampler
    page.select_option("#network-sampler", "uploaded")
    # the uploads among this server's tagged networks (other browser tests upload with the same tag too)
    uploads = sorted(i for i, n in mine.items() if not n["source"].get("optimizer") and n["source"]["kind"] == "uploaded")
    assert uploaded["id"] in uploads and len(uploads) < len(mine)
    page.wait_for_function(f"() => document.querySelectorAll('#networks-table tbody tr[data-id]').length === {len(uploads)}")
    assert sorted(row_ids(page)) == uploads
    page.select_option("#network-sampler", "")
    shot(page, "networks")

    # delete, with a confirmation in the row ("Keep" changes nothing)
    page.click(f"[data-delete='{uploaded['id']}']")
    page.click(f"[data-keep='{uploaded['id']}']")
    assert page.is_visible(f"tr[data-id='{uploaded['id']}']")
    page.click(f"[data-delete='{uploaded['id']}']")
    assert "Delete “" in page.inner_text(f"[data-actions='{uploaded['id']}']")
    page.click(f"[data-confirm-delete='{uploaded['id']}']")
    page.wait_for_selector(f"tr[data-id='{uploaded['id']}']", state="detached")
    assert all(n["id"] != uploaded["id"] for n in client.networks(tag=tag))

    # the network's page: metadata and its training curve
    page.click(f"tr[data-id='{trained['id']}'] a.net-link")
    page.wait_for_selector("#view-network:not([hidden])")
    wait_plot(page, "history-plot", 2)
    assert page.inner_text("#network-title") == f"{tag}-form (#{trained['id']})"
    meta = page.inner_text("#network-meta")
    assert "mlp 12" in meta and "sgd" in meta and pct(trained["test_error"]) in meta
    reached = client.network(trained["id"])["source"]["reached_target"]  # whether the training reached 1%, in words
    assert "minimizer" in meta and ("yes: training error ≤ 1.00%" if reached else "no: training error") in meta, meta
    history = trained["history"]
    plotted = plot_data(page, "history-plot")
    train, test = trace(plotted, "train error"), trace(plotted, "test error")
    assert train["x"] == [h["epoch"] for h in history]
    assert train["y"] == pytest.approx([100 * h["train_error"] for h in history])
    assert test["y"] == pytest.approx([100 * h["test_error"] for h in history])
    assert trace(plotted, "train loss")["y"] == pytest.approx([h["train_loss"] for h in history])
    shot(page, "network")

    # rename and re-tag it from its page (PATCH)
    page.fill("#network-tags", f"{tag}, form, renamed")
    page.click("#network-edit button[type='submit']")
    page.wait_for_function("() => document.getElementById('network-saved').textContent === 'Saved.'")
    assert "renamed" in client.network(trained["id"])["tags"]


# ---- Compare ---------------------------------------------------------------------------------------

def run_compare(page, server, s, a: int, b: int, types: list[str], points: int) -> None:
    page.goto(f"{server['url']}/#/compare")
    page.fill("#compare-search", s["tag"])
    page.select_option("#compare-a", str(a))
    page.select_option("#compare-b", str(b))
    for box in page.query_selector_all("input[name='path-type']"):
        if not box.is_disabled():
            box.set_checked(box.get_attribute("value") in types)
    page.fill("#path-points", str(points))
    page.click("#run-path")
    for t in types:
        wait_done(page, f"#path-summary tr[data-type='{t}'] a[data-job]", f"#path-summary tr[data-type='{t}'] td.error, #path-error")
    page.wait_for_selector("#distances [data-job]", timeout=60_000)


def check_paths(page, client, types: list[str], labels: dict[str, str]) -> dict:
    plotted = plot_data(page, "path-plot")
    results = {}
    for t in types:
        job = client.job(job_of(page, f"#path-summary tr[data-type='{t}'] a[data-job]"))
        r = results[t] = job["result"]
        assert job["params"]["type"] == t
        train, test = trace(plotted, f"train error · {labels[t]}"), trace(plotted, f"test error · {labels[t]}")
        assert train["x"] == r["t"] and test["x"] == r["t"]
        assert train["y"] == pytest.approx([100 * v for v in r["train_error"]], abs=1e-9)
        assert test["y"] == pytest.approx([100 * v for v in r["test_error"]], abs=1e-9)
        star = trace(plotted, f"barrier · {labels[t]}")
        assert star["y"] == pytest.approx([100 * r["barrier"]]) and star["x"][0] == r["t"][int(np.argmax(r["train_error"]))]
        cell = f"#path-summary tr[data-type='{t}'] td"
        assert float(page.get_attribute(f"{cell}.barrier", "data-value")) == r["barrier"]
        assert page.inner_text(f"{cell}.barrier") == pct(r["barrier"])
    return results


def test_compare_overlays_every_path_type_and_lists_the_distances(server, page):
    s = seeded(server)
    client = s["client"]
    a, b = s["ids"][0], s["ids"][3]
    types = ["linear", "linear_aligned", "geodesic"]
    run_compare(page, server, s, a, b, types, points=9)
    wait_plot(page, "path-plot", 9)
    check_paths(page, client, types, {"linear": "linear", "linear_aligned": "linear-aligned", "geodesic": "geodesic-aligned"})

    distance = client.job(job_of(page, "#distances [data-job]"))
    assert distance["kind"] == "distance" and distance["params"] == {"a": a, "b": b}
    for key in ("raw", "aligned", "normalized", "normalized_aligned", "geodesic", "n_parameters"):
        assert float(page.get_attribute(f"#distances tr[data-distance='{key}'] td", "data-value")) == pytest.approx(distance["result"][key])
    # hover text carries the values
    hover = page.evaluate("() => document.getElementById('path-plot').data[0].hovertemplate")
    assert "%{y" in hover and "t = %{x" in hover
    # the state is in the address, so the link can be sent
    h = hash_of(page)
    assert f"a={a}" in h and f"b={b}" in h and "types=linear,linear_aligned,geodesic" in h and "points=9" in h
    # hamming is for binary networks only
    assert page.is_disabled("input[name='path-type'][value='hamming']")
    shot(page, "compare")


def test_compare_single_bend_path(server, page):
    s = seeded(server)
    client = s["client"]
    a, b = s["ids"][0], s["ids"][1]
    page.goto(f"{server['url']}/#/compare")
    page.fill("#compare-search", s["tag"])
    page.select_option("#compare-a", str(a))
    page.select_option("#compare-b", str(b))
    page.uncheck("input[name='path-type'][value='geodesic']")
    page.check("input[name='path-type'][value='bend']")
    page.select_option("#bend-variant", "geodesic")
    page.fill("#path-points", "7")
    page.click("#run-path")
    wait_done(page, "#path-summary tr[data-type='bend'] a[data-job]", "#path-summary td.error, #path-error")
    wait_plot(page, "path-plot", 6)
    results = check_paths(page, client, ["linear", "bend"], {"linear": "linear", "bend": "single bend"})
    mid = results["bend"].get("midpoint_network_id")
    if mid:
        assert page.is_visible(f"#path-summary a[href='#/network?id={mid}']")
    assert "bend" in hash_of(page)
    shot(page, "compare-bend")


# ---- Flatness --------------------------------------------------------------------------------------

def test_flatness_curves_scatter_and_spearman(server, page):
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    page.goto(f"{server['url']}/#/flatness")
    page.fill("#flat-nets-search", tag)
    for i in s["ids"]:
        page.check(f"#flat-picker input[value='{i}']")
    page.fill("#flat-sigmas", "0.05, 0.1, 0.2")
    page.fill("#flat-draws", "4")
    page.click("#run-flatness")
    for i in s["ids"]:
        wait_done(page, f"#flat-table tr[data-id='{i}'] a[data-job]", "#flat-table td.error, #flat-error")
    wait_plot(page, "flat-curves", 2 * len(s["ids"]))
    wait_plot(page, "flat-scatter", 1)

    plotted = plot_data(page, "flat-curves")
    nets = {n["id"]: n for n in client.networks(tag=tag)}
    flat, test_err = [], []
    for i in s["ids"]:
        job = client.job(job_of(page, f"#flat-table tr[data-id='{i}'] a[data-job]"))
        assert job["kind"] == "flatness" and job["params"]["network"] == i
        assert job["params"]["sigmas"] == pytest.approx([0.05, 0.1, 0.2])
        r = job["result"]
        mean = next(t for t in plotted if t["meta"] == i)
        assert mean["x"] == pytest.approx(r["sigma"])
        assert mean["y"] == pytest.approx([100 * v for v in r["delta_mean"]])
        band = next(t for t in plotted if t["fill"] == "toself" and t["name"].endswith(f"(#{i})"))
        upper = [100 * (m + d) for m, d in zip(r["delta_mean"], r["delta_std"])]
        lower = [100 * (m - d) for m, d in zip(r["delta_mean"], r["delta_std"])]
        assert band["y"] == pytest.approx(upper + lower[::-1])
        flat.append(r["delta_mean"][-1])
        test_err.append(nets[i]["test_error"])

    scatter = plot_data(page, "flat-scatter")
    xs = sorted(x for t in scatter for x in t["x"])
    assert xs == pytest.approx(sorted(100 * v for v in flat))
    assert {t["name"] for t in scatter} == {nets[i]["source"]["optimizer"] for i in s["ids"]}
    rho = spearmanr(flat, test_err).statistic
    shown = page.get_attribute("#flat-spearman", "data-rho")
    if np.isnan(rho):
        assert shown == ""
    else:
        assert float(shown) == pytest.approx(rho, abs=1e-12)
        assert f"ρ = {rho:.3f}" in page.inner_text("#flat-spearman")
    assert f"nets={','.join(map(str, s['ids']))}" in hash_of(page)
    shot(page, "flatness")
    # the Hessian beside the local energy: a hessian job per network, its numbers in the table and by sampler
    page.check("#flat-hessian")
    page.click("#run-flatness")
    for i in s["ids"]:
        wait_done(page, f"#flat-table tr[data-id='{i}'] a[data-hessian-job]", "#flat-table td.error, #flat-error")
    assert "hessian=1" in hash_of(page)
    for i in s["ids"]:
        row = f"#flat-table tr[data-id='{i}']"
        job = client.job(int(page.get_attribute(f"{row} a[data-hessian-job]", "data-hessian-job")))
        assert job["kind"] == "hessian" and job["params"]["network"] == i
        for part, key in (("raw", "raw"), ("canonical", "canonical")):
            shown = float(page.get_attribute(f"{row} td[data-hessian='{key}']", "data-value"))
            assert shown == pytest.approx(job["result"][part]["eigenvalues"][0], rel=1e-12)
        assert float(page.get_attribute(f"{row} td[data-hessian='trace']", "data-value")) == pytest.approx(job["result"]["canonical"]["trace"])
    summary = page.inner_text("#flat-by-sampler")
    assert "λmax canonical" in summary and all(nets[i]["source"]["optimizer"] in summary for i in s["ids"])
    # the Networks table now shows the flatness summary
    page.goto(f"{server['url']}/#/networks?q={tag}")
    i = s["ids"][0]
    page.wait_for_function(f"() => !document.querySelector(\"tr[data-id='{i}'] td:nth-child(9)\").textContent.includes('–')")
    assert page.inner_text(f"tr[data-id='{i}'] td:nth-child(9)") == pct(flat[0])


# ---- Map -------------------------------------------------------------------------------------------

def classical_mds(d: np.ndarray) -> np.ndarray:
    n = len(d)
    j = np.eye(n) - np.ones((n, n)) / n
    b = -0.5 * j @ (d ** 2) @ j
    values, vectors = np.linalg.eigh(b)
    top = np.argsort(values)[::-1][:2]
    return vectors[:, top] * np.sqrt(np.maximum(values[top], 0))


def pairwise(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)


def gflop_text(flops: float) -> str:
    """The dashboard's figure (forms.js estimateText): 0 decimals from 100, 1 from 10, else 2 significant digits."""
    v = flops / 1e9
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.{max(0, 1 - math.floor(math.log10(v)))}f}"


def test_flatness_form_shows_the_estimate_before_run(server, page):
    """Issue 26: the form shows what its jobs would cost (dry runs) before Run, and follows the fields."""
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    before = [j["id"] for j in client.jobs(limit=1000)]
    page.goto(f"{server['url']}/#/flatness")
    page.fill("#flat-nets-search", tag)
    first, second = s["ids"][:2]
    page.check(f"#flat-picker input[value='{first}']")
    page.fill("#flat-draws", "4")
    page.fill("#flat-sigmas", "0.1, 0.2")
    want = client.estimate("flatness", network=first, draws=4, sigmas=[0.1, 0.2])
    text = wait_until(lambda: (t := page.text_content("#flat-estimate") or "")
                      and f"≈ {gflop_text(want['cost_flops'])} GFLOP" in t and t, what="the estimate of one job")
    assert text.startswith("≈ ") and f"{want['memory_bytes'] / 2**20:.1f} MiB" in text
    assert ("time unknown" in text) if want["estimated_seconds"] is None else (" s" in text and "~" in text)
    page.check(f"#flat-picker input[value='{second}']")  # two jobs now: the sum
    wait_until(lambda: "for 2 jobs" in (page.text_content("#flat-estimate") or ""), what="the estimate of two jobs")
    page.fill("#flat-draws", "40")  # ten times the draws: about ten times the FLOPs
    big = client.estimate("flatness", network=first, draws=40, sigmas=[0.1, 0.2])["cost_flops"]
    big += client.estimate("flatness", network=second, draws=40, sigmas=[0.1, 0.2])["cost_flops"]
    wait_until(lambda: f"≈ {gflop_text(big)} GFLOP" in (page.text_content("#flat-estimate") or ""),
               what="the estimate to follow")
    assert [j["id"] for j in client.jobs(limit=1000)] == before  # estimating submitted nothing
    shot(page, "flatness-estimate")


def test_map_heatmap_mds_and_click_two_points_to_compare(server, page):
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    page.goto(f"{server['url']}/#/map")
    page.fill("#map-nets-search", tag)
    for i in s["ids"]:
        page.check(f"#map-picker input[value='{i}']")
    page.check("#map-barriers")
    page.fill("#map-points", "5")
    page.click("#run-map")
    wait_done(page, "#map-note[data-job]", "#map-error")
    wait_plot(page, "map-heatmap", 1)
    wait_plot(page, "map-mds", 1)
    job = client.job(int(page.get_attribute("#map-note", "data-job")))
    r = job["result"]
    assert job["kind"] == "matrix" and r["networks"] == s["ids"] and job["params"]["barriers"] and job["params"]["points"] == 5

    heat = plot_data(page, "map-heatmap")[0]
    assert heat["type"] == "heatmap"
    # barriers ticked and computed: the heatmap shows them, in percent (issue 25: they were one choice away)
    assert page.input_value("#map-dist") == "barriers" and "dist=barriers" in hash_of(page)
    assert np.allclose(np.array(heat["z"], dtype=float), 100 * np.array(r["barriers"], dtype=float), equal_nan=True)
    page.select_option("#map-dist", "geodesic")
    page.wait_for_function("() => document.getElementById('map-heatmap').layout.title.text.startsWith('geodesic')")
    heat = plot_data(page, "map-heatmap")[0]
    assert np.allclose(np.array(heat["z"], dtype=float), np.array(r["distances"]["geodesic"]))
    page.select_option("#map-dist", "raw")
    page.wait_for_function("() => document.getElementById('map-heatmap').layout.title.text.startsWith('raw')")
    assert np.allclose(np.array(plot_data(page, "map-heatmap")[0]["z"], dtype=float), np.array(r["distances"]["raw"]))
    assert "dist=raw" in hash_of(page) and "barriers=1" in hash_of(page)
    page.select_option("#map-dist", "barriers")
    page.wait_for_function("() => document.getElementById('map-heatmap').layout.title.text.startsWith('geodesic barrier')")
    barriers = np.array([[np.nan if v is None else 100 * v for v in row] for row in r["barriers"]])
    shown = np.array([[np.nan if v is None else v for v in row] for row in plot_data(page, "map-heatmap")[0]["z"]], dtype=float)
    assert np.allclose(shown, barriers, equal_nan=True)
    page.select_option("#map-dist", "geodesic")

    # classical MDS computed in the page equals numpy's (up to reflections: compare pairwise distances)
    mds = plot_data(page, "map-mds")
    coords = {c[0]: (x, y) for t in mds for x, y, c in zip(t["x"], t["y"], t["customdata"])}
    mine = np.array([coords[i] for i in r["networks"]])
    ref = classical_mds(np.array(r["distances"]["geodesic"]))
    assert np.allclose(pairwise(mine), pairwise(ref), atol=1e-6 * max(1.0, float(pairwise(ref).max())))
    samplers = {t["name"] for t in mds}
    assert samplers == set(r["optimizer"]) if r.get("optimizer") else samplers == {"sgd", "adam", "rsgd"}
    # colour by test error: one trace, coloured by the API's test errors
    page.select_option("#map-color", "test_error")
    page.wait_for_function("() => document.getElementById('map-mds').data[0].name === 'networks'")
    coloured = plot_data(page, "map-mds")[0]
    errors = {n["id"]: n["test_error"] for n in client.networks(tag=tag)}
    assert coloured["color"] == pytest.approx([100 * errors[c[0]] for c in coloured["customdata"]])
    assert "color=test_error" in hash_of(page)
    shot(page, "map")

    # click two points of the map: Compare opens with them
    def click_point(network_id):
        xy = page.evaluate("""id => {
            const gd = document.getElementById('map-mds');
            const t = gd.data[0]; const i = t.customdata.findIndex(c => c[0] === id);
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
            return [box.left + xa._offset + xa.l2p(t.x[i]), box.top + ya._offset + ya.l2p(t.y[i])];
        }""", network_id)
        page.mouse.move(xy[0], xy[1])
        page.mouse.click(xy[0], xy[1])

    a, b = s["ids"][1], s["ids"][2]
    click_point(a)
    page.wait_for_function("() => document.getElementById('map-pick').textContent.includes('A =')")
    click_point(b)
    page.wait_for_function("() => location.hash.startsWith('#/compare')")
    assert f"a={a}" in hash_of(page) and f"b={b}" in hash_of(page)
    wait_plot(page, "path-plot", 2)


# ---- Plane -----------------------------------------------------------------------------------------

def test_plane_through_three_networks(server, page):
    s = seeded(server)
    client = s["client"]
    a, b, c = s["ids"][0], s["ids"][1], s["ids"][3]
    run_plane(page, server, s, (a, b, c), 7, "aligned")
    wait_done(page, "#plane-note[data-job]", "#plane-error")
    wait_plot(page, "plane-plot", 2)
    job = client.job(int(page.get_attribute("#plane-note", "data-job")))
    assert job["kind"] == "plane" and job["params"]["networks"] == [a, b, c]
    r = job["result"]
    contour, marks = plot_data(page, "plane-plot")
    assert contour["type"] == "contour"
    assert contour["x"] == pytest.approx(r["x"]) and contour["y"] == pytest.approx(r["y"])
    assert np.allclose(np.array(contour["z"], dtype=float), 100 * np.array(r["train_error"], dtype=float))
    assert marks["x"] == pytest.approx([p["x"] for p in r["points"]]) and marks["y"] == pytest.approx([p["y"] for p in r["points"]])
    assert len(marks["text"]) == 3
    page.select_option("#plane-show", "test")
    page.wait_for_function("() => document.getElementById('plane-plot').data[0].name === 'test error'")
    assert np.allclose(np.array(plot_data(page, "plane-plot")[0]["z"], dtype=float), 100 * np.array(r["test_error"], dtype=float))
    h = hash_of(page)
    assert f"nets={a},{b},{c}" in h and "grid=7" in h and "show=test" in h
    shot(page, "plane")


# ---- Jobs ------------------------------------------------------------------------------------------

def test_jobs_live_progress_cancel_and_rerun(server, page):
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    slow = client.submit("train", architecture={"kind": "mlp", "hidden": [64, 64]}, dataset="digits", optimizer="sgd",
                         epochs=300, batch_size=16, seed=5, name=f"{tag}-slow", tags=[tag])
    page.goto(f"{server['url']}/#/jobs")
    row = f"#jobs-table tr[data-job='{slow['id']}']"
    page.wait_for_selector(row)
    # live: the row moves to running and its bar grows, without reloading the page
    page.wait_for_function(f"""() => {{ const r = document.querySelector("{row}");
        return r && r.querySelector('.status-running') && Number(r.querySelector('[role=progressbar]').getAttribute('aria-valuenow')) > 0; }}""",
                           timeout=90_000)
    shot(page, "jobs")
    page.click(f"{row} [data-cancel]")
    page.wait_for_selector(f"{row} .status-cancelled", timeout=30_000)
    assert client.job(slow["id"])["status"] == "cancelled"
    assert f"Job {slow['id']} cancelled" in page.inner_text("#jobs-note")

    # re-run a finished job: the same kind and params again, answered at once from the cache
    done = client.jobs(kind="train", status="succeeded", limit=1000)
    first = next(j for j in done if j["params"]["name"] == f"{tag}-sgd-0" and not j["cached"])
    page.select_option("#jobs-kind", "train")
    page.click(f"#jobs-table tr[data-job='{first['id']}'] [data-rerun]")
    page.wait_for_function("() => document.getElementById('jobs-note').textContent.includes('re-submitted')")
    note = page.inner_text("#jobs-note")
    new_id = int(note.split("as job ")[1].split(",")[0].rstrip("."))
    again = client.job(new_id)
    assert again["kind"] == "train" and again["params"] == first["params"] and again["cached"]
    assert "from the cache" in note
    page.wait_for_selector(f"#jobs-table tr[data-job='{new_id}'] .pill")
    assert "kind=train" in hash_of(page)
