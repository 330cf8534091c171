"""Many networks at once (issue 16): groups by sampler / seed / tag with mean ± spread (flatness curves
with bands, barriers and distances by pair type from a matrix job), A against several Bs, the Networks
table's numeric filters, hyper-parameter columns and notes. Numbers are checked against the API's.
"""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import numpy as np
import pytest

from .test_dashboard_support import hash_of, job_of, plot_data, seeded, shot, wait_done, wait_plot

pytestmark = pytest.mark.browser


def test_flatness_grouped_by_sampler_mean_and_band_over_networks(server, page):
    s = seeded(server)
    client, ids = s["client"], s["ids"]
    page.goto(f"{server['url']}/#/flatness?nets={','.join(map(str, ids))}&sigmas=0.1,0.3&draws=2&group=sampler")
    for i in ids:
        wait_done(page, f"#flat-table tr[data-id='{i}'] a[data-job]", "#flat-table td.error, #flat-error")
    page.wait_for_function("() => (document.getElementById('flat-curves').data || []).some(t => String(t.meta).startsWith('group:'))")
    plotted = plot_data(page, "flat-curves")
    results = {i: client.job(job_of(page, f"#flat-table tr[data-id='{i}'] a[data-job]"))["result"] for i in ids}
    groups = defaultdict(list)
    for i in ids:
        groups[client.network(i)["source"]["optimizer"]].append(i)
    means = {t["meta"][len("group:"):]: t for t in plotted if str(t["meta"]).startswith("group:")}
    assert set(means) == set(groups)  # sgd (2 networks), adam, rsgd
    for g, members in groups.items():
        curves = np.array([[100 * v for v in results[i]["delta_mean"]] for i in members])
        assert means[g]["x"] == pytest.approx(results[members[0]]["sigma"])
        assert means[g]["y"] == pytest.approx(curves.mean(0).tolist())
        assert means[g]["name"] == f"{g} (n = {len(members)})"
        band = next(t for t in plotted if t["fill"] == "toself" and t["name"] == f"± std · {g}")
        upper, lower = curves.mean(0) + curves.std(0), curves.mean(0) - curves.std(0)
        assert band["y"] == pytest.approx(upper.tolist() + lower[::-1].tolist())
    assert "group=sampler" in hash_of(page)
    # regrouping redraws without new jobs
    page.select_option("#flat-group", "")
    page.wait_for_function(f"() => document.getElementById('flat-curves').data.filter(t => typeof t.meta === 'number').length === {len(ids)}")
    shot(page, "flatness-ungrouped")
    page.select_option("#flat-group", "sampler")
    page.wait_for_function("() => document.getElementById('flat-curves').data.some(t => String(t.meta).startsWith('group:'))")
    page.wait_for_timeout(500)  # the legend's margin is fitted after the draw
    shot(page, "flatness-groups")


def test_map_barriers_and_distances_by_pair_type(server, page):
    s = seeded(server)
    client, ids = s["client"], s["ids"]
    # (dist=geodesic: a distance chosen in the address is kept; without it ticked barriers are shown first)
    page.goto(f"{server['url']}/#/map?nets={','.join(map(str, ids))}&barriers=1&points=5&dist=geodesic")
    wait_done(page, "#map-note[data-job]", "#map-error", timeout=240_000)
    wait_plot(page, "map-pairs", 1)
    r = client.job(int(page.get_attribute("#map-note", "data-job")))["result"]
    sampler = {i: client.network(i)["source"]["optimizer"] for i in ids}

    def by_type(matrix, scale=1.0):
        out = defaultdict(list)
        for (i, a), (j, b) in combinations(enumerate(r["networks"]), 2):
            out["–".join(sorted([sampler[a], sampler[b]]))].append(scale * matrix[i][j])
        return out

    expected = by_type(r["distances"]["geodesic"])
    shown = {t["meta"]: t["y"] for t in plot_data(page, "map-pairs")}
    assert set(shown) == set(expected) and "sgd–sgd" in shown and "adam–sgd" in shown
    for k, values in expected.items():
        assert sorted(shown[k]) == pytest.approx(sorted(values))
        cell = page.get_attribute(f"#map-pairs-table tr[data-pair='{k}'] td:nth-child(3)", "data-value")
        assert float(cell) == pytest.approx(np.mean(values))
    # the barriers (the paper's barrier figure), in percent
    page.select_option("#map-dist", "barriers")
    page.wait_for_function("() => document.getElementById('map-pairs').layout.title.text.startsWith('geodesic barrier')")
    expected = by_type(r["barriers"], 100.0)
    shown = {t["meta"]: t["y"] for t in plot_data(page, "map-pairs")}
    for k, values in expected.items():
        assert sorted(shown[k]) == pytest.approx(sorted(values))
        std = page.get_attribute(f"#map-pairs-table tr[data-pair='{k}'] td:nth-child(4)", "data-value")
        assert float(std) == pytest.approx(np.std(values))
    shot(page, "map-pairs")


def test_compare_a_with_several_bs(server, page):
    s = seeded(server)
    client, ids = s["client"], s["ids"]
    a, bs = ids[0], ids[1:]
    page.goto(f"{server['url']}/#/compare?a={a}&bs={','.join(map(str, bs))}&btype=linear&bpoints=5")
    for b in bs:
        wait_done(page, f"#many-table tr[data-b='{b}'] a[data-job]", "#many-table td.error, #many-error")
    wait_plot(page, "many-plot", len(bs))
    plotted = {t["meta"]: t for t in plot_data(page, "many-plot")}
    for b in bs:
        job = client.job(job_of(page, f"#many-table tr[data-b='{b}'] a[data-job]"))
        assert job["params"]["a"] == a and job["params"]["b"] == b and job["params"]["type"] == "linear"
        assert plotted[b]["x"] == job["result"]["t"] and len(job["result"]["t"]) == 5
        assert plotted[b]["y"] == pytest.approx([100 * v for v in job["result"]["train_error"]])
        assert float(page.get_attribute(f"#many-table tr[data-b='{b}'] td.barrier", "data-value")) == job["result"]["barrier"]
    # the groups of the Bs: sgd, adam, rsgd, one pair each here
    groups = page.eval_on_selector_all("#many-groups tbody tr", "rows => rows.map(r => r.dataset.group)")
    assert sorted(groups) == sorted({client.network(b)["source"]["optimizer"] for b in bs})
    assert f"bs={','.join(map(str, bs))}" in hash_of(page)
    shot(page, "compare-many")


def test_compare_every_pair_of_a_selection(server, page):
    """All pairs of A and the Bs along one path type (before: only A against each B; all pairs only as a
    matrix job on the Map), each curve its own job, barriers by pair type of the samplers."""
    s = seeded(server)
    client, ids = s["client"], s["ids"]
    chosen = ids[:4]
    a, bs = chosen[0], chosen[1:]
    page.goto(f"{server['url']}/#/compare?a={a}&bs={','.join(map(str, bs))}&btype=linear&bpoints=5&bpairs=all")
    pairs = list(combinations(chosen, 2))
    for x, y in pairs:
        wait_done(page, f"#many-table tr[data-b='{x}-{y}'] a[data-job]", "#many-table td.error, #many-error")
    wait_plot(page, "many-plot", len(pairs))
    plotted = {t["meta"]: t for t in plot_data(page, "many-plot")}
    assert set(plotted) == {f"{x}-{y}" for x, y in pairs}
    sampler = {i: client.network(i)["source"]["optimizer"] for i in chosen}
    barriers = defaultdict(list)
    for x, y in pairs:
        job = client.job(job_of(page, f"#many-table tr[data-b='{x}-{y}'] a[data-job]"))
        assert (job["params"]["a"], job["params"]["b"], job["params"]["type"]) == (x, y, "linear")
        assert plotted[f"{x}-{y}"]["y"] == pytest.approx([100 * v for v in job["result"]["train_error"]])
        barriers["–".join(sorted([sampler[x], sampler[y]]))].append(job["result"]["barrier"])
    shown = {r: float(page.get_attribute(f"#many-groups tr[data-group='{r}'] td:nth-child(3)", "data-value"))
             for r in page.eval_on_selector_all("#many-groups tbody tr", "rows => rows.map(r => r.dataset.group)")}
    assert set(shown) == set(barriers) and "sgd–sgd" in shown
    for k, values in barriers.items():
        assert shown[k] == pytest.approx(np.mean(values))
    assert "bpairs=all" in hash_of(page) and page.input_value("#many-pairs") == "all"
    shot(page, "compare-all-pairs")


def test_networks_numeric_filters_hyper_parameters_and_notes(server, page):
    s = seeded(server)
    client, tag, ids = s["client"], s["tag"], s["ids"]
    nets = {i: client.network(i) for i in ids}
    page.goto(f"{server['url']}/#/networks?q={tag}")
    page.wait_for_selector(f"#networks-table tr[data-id='{ids[0]}']")

    def shown():
        return sorted(int(x) for x in page.eval_on_selector_all("#networks-table tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)"))

    assert set(ids) <= set(shown())
    # hyper-parameter columns from the provenance
    for i in ids:
        p = nets[i]["source"]["params"]
        assert page.inner_text(f"tr[data-id='{i}'] td[data-hyper='epochs']") == str(p["epochs"])
        assert page.inner_text(f"tr[data-id='{i}'] td[data-hyper='seed']") == str(p["seed"])
        assert page.inner_text(f"tr[data-id='{i}'] td[data-hyper='lr']") == str(p["lr"])
    # test error at most x %
    errors = sorted(nets[i]["test_error"] for i in ids)
    limit = 100 * (errors[1] + errors[2]) / 2
    page.fill("#network-maxtest", f"{limit:.6f}")
    expected = sorted(i for i in ids if 100 * nets[i]["test_error"] <= limit)
    assert [i for i in shown() if i in ids] == expected and len(expected) == 2
    assert "maxtest=" in hash_of(page)
    page.fill("#network-maxtest", "")
    # epochs at least n (the seeded networks have 4: none has 5)
    page.fill("#network-epochs", "5")
    assert not [i for i in shown() if i in ids]
    page.fill("#network-epochs", "4")
    assert [i for i in shown() if i in ids] == sorted(ids)
    page.fill("#network-epochs", "")
    # created since: tomorrow hides them all
    page.fill("#network-since", "2999-01-01")
    assert not [i for i in shown() if i in ids]
    page.fill("#network-since", "")
    shot(page, "networks-filters")

    # a note, written on the network's page, kept by the API and shown in the table
    i = ids[2]
    page.goto(f"{server['url']}/#/network?id={i}")
    page.wait_for_selector("#network-note")
    note = "adam baseline <b>not bold</b>\nsecond line"
    page.fill("#network-note", note)
    page.click("#network-edit button[type='submit']")
    page.wait_for_function("() => document.getElementById('network-saved').textContent === 'Saved.'")
    assert client.network(i)["note"] == note
    assert page.inner_text("#network-note-text") == note  # as text, on two lines
    r = client.http.patch(f"/api/networks/{i}", json={"note": "x" * 4001})
    assert r.status_code == 422 and "note" in r.json()["detail"]
    page.goto(f"{server['url']}/#/networks?q={tag}")
    page.wait_for_selector(f"tr[data-id='{i}'] td.note-cell")
    assert page.inner_text(f"tr[data-id='{i}'] td.note-cell").startswith("adam baseline <b>not bold</b>")
