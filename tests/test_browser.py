"""The dashboard in a real browser (Debian's Chromium via Playwright) against `toroid serve`."""
from __future__ import annotations

import httpx
import pytest

from .conftest import ARTIFACTS
from .helpers import random_state

pytestmark = pytest.mark.browser


def test_pick_two_networks_run_a_path_and_see_the_api_numbers(server, page):
    from backend.client import Client

    client = Client(server["url"])
    spec = {"kind": "mlp", "hidden": [16]}
    a = client.upload(random_state(spec, seed=21), name="browser-a", architecture=spec)
    b = client.upload(random_state(spec, seed=22), name="browser-b", architecture=spec)

    page.goto(server["url"])
    page.wait_for_selector(f"tr[data-id='{b['id']}']")
    page.check(f"tr[data-id='{a['id']}'] input[name='pick-a']")
    page.check(f"tr[data-id='{b['id']}'] input[name='pick-b']")
    assert page.inner_text("#pick-a").startswith("browser-a")
    page.fill("#path-points", "6")
    page.click("#run-path")
    page.wait_for_function("() => document.getElementById('path-plot').data !== undefined", timeout=60_000)

    plotted = page.evaluate("() => document.getElementById('path-plot').data.map(t => ({x: t.x, y: t.y, name: t.name}))")
    jobs = [j for j in client.jobs() if j["kind"] == "path" and j["params"]["a"] == a["id"] and j["params"]["b"] == b["id"]]
    assert len(jobs) == 1 and jobs[0]["params"]["points"] == 6
    result = client.job(jobs[0]["id"])["result"]
    train, test = plotted[0], plotted[1]
    assert train["x"] == result["t"] and test["x"] == result["t"]
    assert train["y"] == pytest.approx([100 * v for v in result["train_error"]], abs=1e-9)
    assert test["y"] == pytest.approx([100 * v for v in result["test_error"]], abs=1e-9)
    assert f"{100 * result['barrier']:.2f}%" in page.inner_text("#path-summary")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "screenshots").mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "screenshots" / "compare.png"), full_page=True)


def test_api_errors_are_shown_in_words(server, page):
    page.goto(server["url"])
    page.wait_for_selector("#train-form")
    page.fill("#train-form input[name='hidden']", "0")  # no valid width: the API refuses it
    page.click("#train-form button[type='submit']")
    page.wait_for_function("() => document.getElementById('train-error').textContent.length > 0")
    assert "hidden" in page.inner_text("#train-error")
