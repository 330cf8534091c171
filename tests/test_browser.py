"""The dashboard in a real browser (Debian's Chromium via Playwright) against `toroid serve`.

Core flows: pick two networks in the table and compare them, API errors in words, links that reopen the
same view, signing in on a server that wants a token, every view without console errors and with labelled
controls. The per-view tests are in test_dashboard_views.py; helpers in test_dashboard_support.py.
"""
from __future__ import annotations

import csv
import io
import re

import pytest

from .test_dashboard_support import hash_of, job_of, pct, plot_data, read_download, seeded, shot, trace, wait_plot

pytestmark = pytest.mark.browser


def path_result(client, page, path_type: str) -> dict:
    return client.job(job_of(page, f"#path-summary tr[data-type='{path_type}'] a[data-job]"))


def test_pick_two_networks_in_the_table_run_a_path_and_see_the_api_numbers(server, page):
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    a, b = s["ids"][0], s["ids"][1]

    page.goto(server["url"])
    page.fill("#network-filter", tag)
    page.check(f"tr[data-id='{a}'] input[name='choose']")
    page.check(f"tr[data-id='{b}'] input[name='choose']")
    assert f"{s['nets'][0]['name']}" in page.inner_text("#selection-text")
    page.click("#sel-compare")
    # the view opens with A and B chosen and draws the default paths (linear and geodesic) at once
    page.wait_for_function("() => location.hash.startsWith('#/compare')")
    assert page.input_value("#compare-a") == str(a) and page.input_value("#compare-b") == str(b)

    # now only the linear path, with 6 points
    page.wait_for_selector("#path-summary tr[data-type='geodesic'] a[data-job]", timeout=90_000)
    page.uncheck("input[name='path-type'][value='geodesic']")
    page.fill("#path-points", "6")
    page.click("#run-path")
    page.wait_for_selector("#path-summary tr[data-type='linear'] a[data-job]", timeout=90_000)
    wait_plot(page, "path-plot", 2)

    job = path_result(client, page, "linear")
    assert job["kind"] == "path" and job["params"]["a"] == a and job["params"]["b"] == b
    assert job["params"]["points"] == 6 and job["params"]["type"] == "linear"
    result = job["result"]
    plotted = plot_data(page, "path-plot")
    assert [t["name"] for t in plotted if not t["name"].startswith("barrier")] == ["train error · linear", "test error · linear"]
    train, test = plotted[0], plotted[1]
    assert train["x"] == result["t"] and test["x"] == result["t"]
    assert train["y"] == pytest.approx([100 * v for v in result["train_error"]], abs=1e-9)
    assert test["y"] == pytest.approx([100 * v for v in result["test_error"]], abs=1e-9)
    barrier = trace(plotted, "barrier · linear")
    assert barrier["y"] == pytest.approx([100 * result["barrier"]])
    assert float(page.get_attribute("#path-summary tr[data-type='linear'] .barrier", "data-value")) == result["barrier"]
    assert pct(result["barrier"]) in page.inner_text("#path-summary")
    assert "types=linear" in hash_of(page) and "points=6" in hash_of(page)


def test_api_errors_are_shown_in_words_next_to_their_cause(server, page):
    page.goto(server["url"])
    page.fill("#train-arch-hidden", "0")  # no valid width: the API refuses it
    page.click("#train-submit")
    page.wait_for_selector("#train-error:not([hidden])")
    assert "hidden" in page.inner_text("#train-error")

    # a form value that cannot be read is explained before anything is sent
    page.fill("#train-arch-hidden", "16, x")
    page.click("#train-submit")
    page.wait_for_function("() => document.getElementById('train-error').textContent.includes(\"'x' is not a number\")")

    # upload without a file, then with a file the API refuses
    page.click("#upload-submit")
    assert "weights file" in page.inner_text("#upload-error")
    page.set_input_files("#upload-file", files=[{"name": "w.safetensors", "mimeType": "application/octet-stream", "buffer": b"not weights"}])
    page.fill("#upload-name", "broken-upload")
    page.click("#upload-submit")
    page.wait_for_function("() => !document.getElementById('upload-error').hidden && document.getElementById('upload-error').textContent.length > 10")
    assert "safetensors" in page.inner_text("#upload-error").lower()

    # a network that does not exist, opened from a link
    page.goto(f"{server['url']}/#/network?id=999999")
    page.wait_for_selector("#network-error:not([hidden])")
    assert "999999" in page.inner_text("#network-error") and "does not exist" in page.inner_text("#network-error")


def test_a_shared_link_reopens_the_same_view(server, page):
    s = seeded(server)
    client, tag = s["client"], s["tag"]
    a, b = s["ids"][0], s["ids"][2]

    # Compare: a colleague opens the link; the same paths are drawn (answered from the cache)
    link = f"{server['url']}/#/compare?a={a}&b={b}&types=linear,linear_aligned&points=7"
    page.goto(link)
    page.wait_for_selector("#path-summary tr[data-type='linear_aligned'] a[data-job]", timeout=90_000)
    first = {t: path_result(client, page, t)["result"] for t in ("linear", "linear_aligned")}
    page.goto("about:blank")
    page.goto(link)
    page.wait_for_selector("#path-summary tr[data-type='linear_aligned'] a[data-job]", timeout=30_000)
    wait_plot(page, "path-plot", 6)
    assert page.input_value("#compare-a") == str(a) and page.input_value("#compare-b") == str(b)
    assert page.is_checked("input[name='path-type'][value='linear']") and page.is_checked("input[name='path-type'][value='linear_aligned']")
    assert not page.is_checked("input[name='path-type'][value='geodesic']")
    assert page.input_value("#path-points") == "7"
    again = path_result(client, page, "linear_aligned")
    assert again["cached"], "reopening the link should be answered from the cache"
    plotted = plot_data(page, "path-plot")
    for t, label in (("linear", "linear"), ("linear_aligned", "linear-aligned")):
        assert trace(plotted, f"train error · {label}")["y"] == pytest.approx([100 * v for v in first[t]["train_error"]])
    assert "cached" in page.inner_text("#path-summary")

    # Networks: filter, sort and chosen rows come back from the link
    page.goto(f"{server['url']}/#/networks?q={tag}&sort=test_error&dir=desc&sel={a},{b}")
    page.wait_for_selector(f"tr[data-id='{a}']")
    assert page.input_value("#network-filter") == tag
    assert page.get_attribute("th:has(button[data-sort='test_error'])", "aria-sort") == "descending"
    assert page.is_checked(f"tr[data-id='{a}'] input[name='choose']") and page.is_checked(f"tr[data-id='{b}'] input[name='choose']")
    ids = [int(x) for x in page.eval_on_selector_all("#networks-table tbody tr", "rows => rows.map(r => r.dataset.id)")]
    errors = {n["id"]: n["test_error"] for n in client.networks(tag=tag)}
    assert set(ids) == set(errors)
    assert [errors[i] for i in ids] == sorted(errors.values(), reverse=True)

    # Jobs: the filter is in the link
    page.goto(f"{server['url']}/#/jobs?kind=path&status=succeeded")
    page.wait_for_selector("#jobs-table tbody tr[data-job]")
    kinds = page.eval_on_selector_all("#jobs-table tbody tr[data-job] td:nth-child(2)", "cells => cells.map(c => c.textContent)")
    assert kinds and set(kinds) == {"path"}
    assert page.input_value("#jobs-kind") == "path" and page.input_value("#jobs-status") == "succeeded"


def test_sign_in_when_the_server_wants_a_token(server, page):
    """A 401 opens a sign-in box; the token is kept in localStorage and sent with every request."""
    token = "lab-token-123"
    seen: list[tuple[str, str | None]] = []

    def gate(route):
        req = route.request
        auth = req.headers.get("authorization")
        seen.append((req.url, auth))
        public = any(req.url.endswith(f"/api/{p}") for p in ("health", "architectures", "datasets", "optimizers"))
        if public or auth == f"Bearer {token}":
            headers = {k: v for k, v in req.headers.items() if k.lower() != "authorization"}
            route.continue_(headers=headers)  # this test server itself wants no token
        else:
            route.fulfill(status=401, headers={"WWW-Authenticate": "Bearer"}, json={
                "detail": "this server requires an API token: send 'Authorization: Bearer <token>'" if not auth
                else "unknown or revoked API token"})

    page.route(re.compile(r".*/api/.*"), gate)
    page.goto(server["url"])
    page.wait_for_selector("#signin[open]")
    assert "requires an API token" in page.inner_text("#signin-reason")
    page.fill("#signin-token", "wrong")
    page.click("#signin-submit")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "unknown or revoked" in page.inner_text("#signin-error")
    page.fill("#signin-token", token)
    page.click("#signin-submit")
    page.wait_for_selector("#signin:not([open])", state="attached")
    page.wait_for_selector("#networks-table tbody tr[data-id]")
    assert page.evaluate("() => localStorage.getItem('toroid.token')") == token
    assert page.is_visible("#sign-out")
    shot(page, "signed-in")

    # after a reload the token is still there and goes with every API request
    seen.clear()
    page.reload()
    page.wait_for_selector("#networks-table tbody tr[data-id]")
    page.click("nav a[data-nav='jobs']")
    page.wait_for_selector("#jobs-table tbody tr[data-job]")
    assert not page.is_visible("#signin")
    api_calls = [(u, h) for u, h in seen if "/api/networks" in u or "/api/jobs" in u]
    assert api_calls and all(h == f"Bearer {token}" for _, h in api_calls), api_calls

    page.click("#sign-out")
    page.wait_for_selector("#signin[open]")
    assert page.evaluate("() => localStorage.getItem('toroid.token')") is None


VIEWS = ["networks", "compare", "flatness", "map", "plane", "jobs"]


def test_every_view_opens_without_console_errors_and_its_controls_are_labelled(server, page):
    s = seeded(server)
    page.goto(server["url"])
    page.wait_for_selector("#networks-table tbody tr[data-id]")
    for view in VIEWS:
        # the menu is made of links reachable from the keyboard
        page.focus(f"nav a[data-nav='{view}']")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#view-{view}:not([hidden])")
        assert page.get_attribute(f"nav a[data-nav='{view}']", "aria-current") == "page"
        unlabelled = page.evaluate("""view => Array.from(document.querySelectorAll(`#view-${view} input, #view-${view} select, #view-${view} textarea`))
            .filter(el => el.offsetParent !== null)
            .filter(el => !(el.closest('label') || el.getAttribute('aria-label') || (el.id && document.querySelector(`label[for='${el.id}']`))))
            .map(el => el.outerHTML.slice(0, 120))""", view)
        assert not unlabelled, f"controls without a label on {view}: {unlabelled}"
        not_buttons = page.evaluate("""view => Array.from(document.querySelectorAll(`#view-${view} [onclick], #view-${view} div[tabindex], #view-${view} span[tabindex]`)).length""", view)
        assert not_buttons == 0
    page.goto(f"{server['url']}/#/network?id={s['ids'][0]}")
    wait_plot(page, "history-plot", 2)
    page.goto(f"{server['url']}/#/no-such-view")
    page.wait_for_selector("#view-missing:not([hidden])")


def test_plot_data_downloads_as_csv(server, page):
    s = seeded(server)
    client = s["client"]
    a, b = s["ids"][1], s["ids"][3]
    page.goto(f"{server['url']}/#/compare?a={a}&b={b}&types=linear&points=5")
    page.wait_for_selector("#path-summary tr[data-type='linear'] a[data-job]", timeout=90_000)
    result = path_result(client, page, "linear")["result"]
    with page.expect_download() as info:
        page.click("[data-exports-for='path-plot'] a:text('CSV')")
    every = list(csv.DictReader(io.StringIO(read_download(info.value))))
    rows = [r for r in every if r["type"] == "linear"]
    stored = {r["type"][0]: r for r in every if "as stored" in r["type"]}  # the networks themselves, beside the path
    assert set(stored) == {"A", "B"} and len(every) == len(rows) + 2
    for end in "ab":
        assert float(stored[end.upper()]["train_error"]) == pytest.approx(result["ends"][end]["train_error"])
        assert float(stored[end.upper()]["test_error"]) == pytest.approx(result["ends"][end]["test_error"])
    assert pct(result["ends"]["a"]["train_error"]) in page.inner_text("#path-ends")
    assert [float(r["t"]) for r in rows] == pytest.approx(result["t"])
    assert [float(r["train_error"]) for r in rows] == pytest.approx(result["train_error"])
    assert [float(r["test_error"]) for r in rows] == pytest.approx(result["test_error"])
    with page.expect_download() as info:
        page.click("[data-exports-for='path-plot'] a:text('JSON')")
    assert info.value.suggested_filename.endswith(".json")
    # the modebar offers both PNG and SVG
    buttons = page.eval_on_selector_all("#path-plot .modebar-btn", "bs => bs.map(b => b.getAttribute('data-title'))")
    assert "Download plot as SVG" in buttons and any("png" in (t or "").lower() for t in buttons)
