"""The demo: the shipped minimizers load in seconds and show the paper's findings through the API.

The orderings asserted here are properties of the shipped data (backend/demo/networks, made by
`python -m backend.demo.make`), measured through the service's own jobs with their default parameters,
as the dashboard's views would run them.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import statistics
import time

import numpy as np
import pytest
from scipy.stats import spearmanr

from backend import demo

from .conftest import close_stack, make_stack, start_serve, stop


@pytest.fixture(scope="module")
def demo_stack():
    s = make_stack("demo", with_worker=True, backend="embedded")
    started = time.perf_counter()
    ids = demo.load_demo()
    s.extra["load_seconds"] = time.perf_counter() - started
    s.extra["ids"] = ids
    yield s
    close_stack(s)


@pytest.fixture
def shipped(demo_stack):
    demo_stack.activate()
    nets = [demo_stack.client.get(f"/api/networks/{i}").json() for i in demo_stack.extra["ids"]]
    return demo_stack, nets


def sampler(net: dict) -> str:
    return net["source"]["optimizer"]


def test_loading_trains_nothing_and_records_the_provenance(shipped):
    stack, nets = shipped
    assert len(nets) == 9 and stack.extra["load_seconds"] < 10
    assert stack.client.get("/api/jobs").json() == []  # no train job, no job at all
    assert sorted(sampler(n) for n in nets) == ["adv"] * 3 + ["rsgd"] * 3 + ["sgd"] * 3
    manifest = demo.read_manifest()
    for net, entry in zip(nets, manifest["networks"]):
        assert net["name"] == entry["name"] and "demo" in net["tags"]
        assert net["train_error"] < 0.01  # the paper's stopping rule
        weights = stack.client.get(f"/api/networks/{net['id']}/weights").content
        assert hashlib.sha256(weights).hexdigest() == entry["sha256"]  # exactly the shipped file
        assert net["source"]["params"]["epochs"] == demo.EPOCHS and net["source"]["demo"]["file"] == entry["file"]
        assert len(net["history"]) == len(entry["history"]["epoch"]) > 0
    # independent initialisations, also across samplers that share a data-order seed
    assert len({n["source"]["params"]["init_seed"] for n in nets}) == 9
    for net in nets:
        pre = net["source"]["pretraining"]
        if sampler(net) == "adv":  # the random labels were fitted before the clean phase
            assert pre["fitted"] is True and pre["error"] <= 0.05
        else:
            assert pre is None
        if sampler(net) == "rsgd":  # gamma and the replicas' distance to their centre, per epoch
            h = net["history"]
            assert h[-1]["gamma"] > h[0]["gamma"] and h[-1]["replica_distance"] < 1e-3 * h[0]["replica_distance"]
    assert demo.load_demo() == []  # loading twice adds nothing


def test_the_shipped_set_shows_the_papers_findings(shipped):
    stack, nets = shipped
    ids = [n["id"] for n in nets]
    by = {n["id"]: sampler(n) for n in nets}

    # flatness: RSGD <= SGD < ADV at the largest sigma, and flatness follows test error
    delta = {}
    for jid in [stack.submit("flatness", network=i)["id"] for i in ids]:
        job = stack.wait(jid)
        assert job["status"] == "succeeded", job
        delta[job["params"]["network"]] = job["result"]["delta_mean"][-1]
    mean = {s: statistics.mean(delta[i] for i in ids if by[i] == s) for s in ("rsgd", "sgd", "adv")}
    assert mean["rsgd"] <= mean["sgd"] < mean["adv"], mean
    assert max(delta[i] for i in ids if by[i] != "adv") < min(delta[i] for i in ids if by[i] == "adv")
    rho = spearmanr([delta[i] for i in ids], [n["test_error"] for n in nets]).statistic
    assert rho > 0.3, rho

    # geodesic barriers: small between RSGD/SGD pairs, large with ADV
    m = stack.run("matrix", networks=ids, barriers=True)["result"]
    barrier = {}
    for a, b in itertools.combinations(range(len(ids)), 2):
        barrier.setdefault("adv" if "adv" in (by[ids[a]], by[ids[b]]) else "flat", []).append(m["barriers"][a][b])
    assert max(barrier["flat"]) < 0.01, barrier
    assert min(barrier["adv"]) > 3 * max(barrier["flat"]) and statistics.mean(barrier["adv"]) > 0.03, barrier

    # the map (classical MDS of the geodesic distances, as the map view draws it) separates ADV: along its
    # leading axis the ADV networks lie on one side of every other network
    d = np.array(m["distances"]["geodesic"])
    j = np.eye(len(ids)) - 1 / len(ids)
    values, vectors = np.linalg.eigh(-0.5 * j @ (d**2) @ j)
    axis = vectors[:, -1] * np.sqrt(max(values[-1], 0))
    is_adv = np.array([by[i] == "adv" for i in ids])
    assert axis[is_adv].max() < axis[~is_adv].min() or axis[is_adv].min() > axis[~is_adv].max(), axis
    # and the paper's distance order (Fig. 5): flatter minimizers are closer to each other
    mean_d = {}
    for a, b in itertools.combinations(range(len(ids)), 2):
        mean_d.setdefault(tuple(sorted((by[ids[a]], by[ids[b]]), key=("rsgd", "sgd", "adv").index)), []).append(d[a][b])
    mean_d = {k: statistics.mean(v) for k, v in mean_d.items()}
    with_adv = [v for k, v in mean_d.items() if "adv" in k]
    assert mean_d[("rsgd", "rsgd")] < mean_d[("rsgd", "sgd")] < mean_d[("sgd", "sgd")] < min(with_adv), mean_d

    # single-bend paths: barriers near 0 (measured: RSGD-SGD 0%, ADV-ADV 1.8% where its geodesic's is ~35%)
    flat_pair = (next(i for i in ids if by[i] == "rsgd"), next(i for i in ids if by[i] == "sgd"))
    adv_pair = tuple(i for i in ids if by[i] == "adv")[:2]
    bend = {pair: max(stack.run("path", a=pair[0], b=pair[1], type="bend")["result"]["train_error"])
            for pair in (flat_pair, adv_pair)}
    assert bend[flat_pair] < 0.01, bend
    geodesic_adv = m["barriers"][ids.index(adv_pair[0])][ids.index(adv_pair[1])]
    assert bend[adv_pair] < 0.03 and bend[adv_pair] < 0.2 * geodesic_adv, (bend, geodesic_adv)
    print(f"demo: flatness {mean}, rho {rho:.2f}, geodesic barriers max without ADV {max(barrier['flat']):.4f}, "
          f"min with ADV {min(barrier['adv']):.4f}, distances {mean_d}, bend {list(bend.values())} "
          f"(ADV-ADV geodesic {geodesic_adv:.3f})")


def serve(*args: str):
    """`toroid serve --port P ARGS` in a fresh home; (url, home, log, process)."""
    return start_serve(*args, prefix="toroid-demo-serve-")[:4]


def test_toroid_serve_demo_shows_the_networks_as_soon_as_it_answers():
    """`toroid serve --demo`: the networks are there at the first answer, no job runs."""
    url, home, log, proc = serve("--demo", "--no-worker")
    from backend.client import Client

    try:
        started = time.perf_counter()
        Client(url).wait_ready(timeout=90, alive=lambda: proc.poll() is None)
        ready = time.perf_counter() - started
        import httpx

        nets = httpx.get(f"{url}/api/networks").json()
        jobs = httpx.get(f"{url}/api/jobs").json()
        assert len(nets) == 9 and {n["name"] for n in nets} == {r["name"] for r in demo.RUNS}
        assert jobs == []
        assert "demo: loaded 9 shipped networks" in log.read_text()
        print(f"toroid serve --demo answered with 9 networks after {ready:.1f} s")
    finally:
        stop(proc)
        shutil.rmtree(home, ignore_errors=True)


def test_the_networks_view_shows_a_training_demo_with_its_progress(browser):
    """`--demo train` before any network exists: the Networks view says the demo is training, never
    "No networks yet" (no worker here, so the nine jobs stay queued at 0%)."""
    url, home, log, proc = serve("--demo", "train", "--no-worker")
    from backend.client import Client

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        Client(url).wait_ready(timeout=90, alive=lambda: proc.poll() is None)
        page = context.new_page()
        page.add_init_script("""
          window.sawNoNetworks = false;  // "No networks yet" shown at any moment, even briefly
          new MutationObserver(() => {
            const e = document.getElementById("networks-empty");
            if (e && !e.hidden && e.textContent.includes("No networks yet")) window.sawNoNetworks = true;
          }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
        """)
        page.goto(url)
        page.wait_for_selector("#demo-status:not([hidden])", timeout=30_000)
        page.wait_for_timeout(2500)  # one more poll of the demo's jobs
        assert "The demo is training its networks: 0 of 9 done (0%)" in page.inner_text("#demo-status")
        assert page.locator("#demo-status progress").count() == 1
        empty = page.inner_text("#networks-empty")
        assert "being trained" in empty and "No networks yet" not in empty
        assert page.evaluate("window.sawNoNetworks") is False
    finally:
        context.close()
        stop(proc)
        shutil.rmtree(home, ignore_errors=True)


def test_demo_train_submits_the_same_runs_as_jobs(api_stack):
    api_stack.activate()
    ids = demo.submit_training()
    jobs = [api_stack.client.get(f"/api/jobs/{i}").json() for i in ids]
    assert [j["params"]["name"] for j in jobs] == [r["name"] for r in demo.RUNS]
    for job, run in zip(jobs, demo.RUNS):
        assert job["kind"] == "train" and "demo" in job["params"]["tags"]
        assert {k: job["params"][k] for k in ("optimizer", "epochs", "seed")} == {k: run[k] for k in ("optimizer", "epochs", "seed")}
    assert demo.submit_training() == []  # once
    for i in ids:  # no worker here: cancel them, so other tests of this stack see no queue
        api_stack.client.delete(f"/api/jobs/{i}")


def test_a_damaged_demo_file_loads_nothing(demo_stack, monkeypatch, tmp_path):
    demo_stack.activate()
    manifest = demo.read_manifest()
    for entry in manifest["networks"]:
        shutil.copy(demo.NETWORKS / entry["file"], tmp_path / entry["file"])
    (tmp_path / manifest["networks"][3]["file"]).write_bytes(b"not the weights")
    monkeypatch.setattr(demo, "NETWORKS", tmp_path)
    with pytest.raises(demo.DemoError, match="missing or damaged"):
        demo.load_demo()
    assert json.loads(json.dumps(manifest)) == demo.read_manifest()
