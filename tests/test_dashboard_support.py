"""Helpers of the dashboard's browser tests (no tests here): seeded networks, plots, screenshots.

The `server` fixture is shared by every browser test of the session, so each helper works on networks
tagged with a tag of its own and never assumes an empty database.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

from .conftest import ARTIFACTS

SHOTS = ARTIFACTS / "screenshots"
SPEC = {"kind": "mlp", "hidden": [16]}
_SEEDED: dict[str, dict] = {}


def seeded(server) -> dict:
    """Four small trained networks (SGD twice, Adam, RSGD) on digits, made once per server."""
    from backend.client import Client

    url = server["url"]
    if url not in _SEEDED:
        tag = f"dash{uuid.uuid4().hex[:6]}"
        client = Client(url)
        recipes = [("sgd", 0, {}), ("sgd", 1, {}), ("adam", 0, {}), ("rsgd", 0, {"replicas": 3})]
        jobs = [client.submit("train", architecture=SPEC, dataset="digits", optimizer=opt, epochs=4, seed=seed,
                              name=f"{tag}-{opt}-{seed}", tags=[tag], **extra) for opt, seed, extra in recipes]
        ids = [client.wait(j, timeout=180)["result"]["network_id"] for j in jobs]
        _SEEDED[url] = {"tag": tag, "client": client, "ids": ids, "nets": [client.network(i) for i in ids]}
    return _SEEDED[url]


def shot(page, view: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{view}.png"), full_page=True)


def wait_plot(page, plot_id: str, n_traces: int = 1, timeout: float = 90_000) -> None:
    page.wait_for_function(
        "([id, n]) => { const d = document.getElementById(id); return !!d && !d.hidden && !!d.data && d.data.length >= n; }",
        arg=[plot_id, n_traces], timeout=timeout)


def wait_done(page, done_selector: str, error_selector: str, timeout: float = 150_000) -> None:
    """Wait until `done_selector` shows up, or fail at once with the words of an error the page shows."""
    page.wait_for_function(
        """([done, err]) => !!document.querySelector(done) ||
            Array.from(document.querySelectorAll(err)).some(e => !e.hidden && e.textContent.trim())""",
        arg=[done_selector, error_selector], timeout=timeout)
    errors = page.eval_on_selector_all(error_selector, "els => els.filter(e => !e.hidden && e.textContent.trim()).map(e => e.textContent.trim())")
    assert not errors, f"the page shows an error: {errors}"


def plot_data(page, plot_id: str) -> list[dict]:
    """What Plotly drew: the traces of a plot div, as plain JSON."""
    return page.evaluate("""id => document.getElementById(id).data.map(t => ({
        name: t.name, type: t.type || 'scatter', x: t.x, y: t.y, z: t.z, text: t.text, customdata: t.customdata,
        color: t.marker ? t.marker.color : null, fill: t.fill || null, meta: t.meta ?? null }))""", plot_id)


def trace(traces: list[dict], name: str) -> dict:
    found = [t for t in traces if t["name"] == name]
    assert len(found) == 1, f"no single trace named {name!r} in {[t['name'] for t in traces]}"
    return found[0]


def job_of(page, selector: str) -> int:
    return int(page.get_attribute(selector, "data-job"))


def wait_until(fn, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"{what} not met within {timeout} s")


def pct(v: float) -> str:
    """The dashboard's percentage format."""
    return f"{100 * v:.2f}%"


def hash_of(page) -> str:
    return page.evaluate("() => location.hash")


def read_download(download) -> str:
    return Path(download.path()).read_text()


def run_plane(page, server, s: dict, nets: tuple[int, int, int], grid: int, mode: str | None = None) -> None:
    """The Plane view's form filled in and run: the search with the seeded tag, A, B, C, the grid (and mode)."""
    page.goto(f"{server['url']}/#/plane")
    page.fill("#plane-search", s["tag"])
    for slot, net in zip("abc", nets):
        page.select_option(f"#plane-{slot}", str(net))
    page.fill("#plane-grid", str(grid))
    if mode is not None:
        page.select_option("#plane-mode", mode)
    page.click("#run-plane")
