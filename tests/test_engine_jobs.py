"""Flatness, 2-D sections and single-bend paths as jobs through the worker."""
from __future__ import annotations

from safetensors.torch import load

from workers.landscape import data as datasets
from workers.landscape import nets

from .helpers import plain_error

SPEC = nets.normalize_spec({"kind": "mlp", "hidden": [24]})
TRAIN = {"architecture": SPEC, "dataset": "digits", "optimizer": "sgd", "epochs": 12}


def trained(live, seed: int) -> dict:
    job = live.run("train", **TRAIN, seed=seed, name=f"engine-{seed}")
    return live.client.get(f"/api/networks/{job['result']['network_id']}").json()


def test_flatness_is_zero_at_sigma_zero_and_grows(live):
    net = trained(live, 1)
    r = live.run("flatness", network=net["id"], sigmas=[0.0, 0.1, 0.3, 0.6], draws=4)["result"]
    assert r["sigma"] == [0.0, 0.1, 0.3, 0.6] and r["draws"] == 4
    assert r["delta_mean"][0] == 0 and r["delta_std"][0] == 0
    assert r["delta_mean"][-1] > r["delta_mean"][1] >= 0 and r["delta_mean"][-1] > 0.01
    assert len(r["delta_sem"]) == 4 and all(s >= 0 for s in r["delta_sem"])
    assert abs(r["base_train_error"] - net["train_error"]) <= 1 / 1347


def test_plane_grid_at_the_three_networks_equals_their_errors(live):
    three = [trained(live, s) for s in (2, 3, 4)]
    r = live.run("plane", networks=[n["id"] for n in three], grid=5, mode="raw")["result"]
    assert len(r["train_error"]) == len(r["y"]) and all(len(row) == len(r["x"]) for row in r["train_error"])
    for net, point in zip(three, r["points"]):
        i, j = r["y"].index(point["y"]), r["x"].index(point["x"])
        assert abs(r["train_error"][i][j] - net["train_error"]) <= 1 / 1347
        assert abs(r["test_error"][i][j] - net["test_error"]) <= 1 / 450
    aligned = live.run("plane", networks=[n["id"] for n in three], grid=5, mode="aligned")["result"]
    for net, point in zip(three, aligned["points"]):  # canonical forms compute the same functions
        i, j = aligned["y"].index(point["y"]), aligned["x"].index(point["x"])
        assert abs(aligned["train_error"][i][j] - net["train_error"]) <= 1 / 1347


def test_bend_path_ends_at_the_networks_and_stores_its_midpoint(live):
    a, b = trained(live, 5), trained(live, 6)
    r = live.run("path", a=a["id"], b=b["id"], type="bend", points=5, epochs=5)["result"]
    digits = datasets.load_dataset("digits")
    for net, k in ((a, 0), (b, -1)):
        state = load(live.client.get(f"/api/networks/{net['id']}/weights").content)
        own = plain_error(SPEC, state, digits.x_train, digits.y_train)
        assert abs(r["train_error"][k] - own) <= 1 / 1347
    assert r["t"][0] == 0.0 and r["t"][-1] == 1.0 and r["barrier"] == max(r["train_error"])
    mid = live.client.get(f"/api/networks/{r['midpoint_network_id']}").json()
    assert mid["source"]["kind"] == "bend" and mid["source"]["from"] == [a["id"], b["id"]]
    # its own provenance and tags: not counted as a network of A's sampler
    assert mid["tags"] == ["bend"] and "optimizer" not in mid["source"] and mid["source"]["params"]["epochs"] == 5
    assert mid["train_error"] < 0.1
    assert mid["train_error"] == r["midpoint_train_error"] or abs(mid["train_error"] - r["midpoint_train_error"]) <= 1 / 1347


def test_bad_engine_parameters_are_refused(api):
    from .helpers import upload

    net = upload(api, name="engine-bad").json()
    for kind, params, words in (
        ("flatness", {"network": net["id"], "sigmas": [-1]}, "sigmas"),
        ("flatness", {"network": net["id"], "draws": 0}, "draws"),
        ("plane", {"networks": [net["id"], net["id"], net["id"]]}, "three distinct"),
        ("path", {"a": net["id"], "b": net["id"], "type": "bend", "variant": "zigzag"}, "variant"),
    ):
        r = api.post("/api/jobs", json={"kind": kind, "params": params})
        assert r.status_code == 400 and words in r.json()["detail"], (kind, r.text)
