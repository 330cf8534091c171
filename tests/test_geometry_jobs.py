"""Symmetry removal and geometry as jobs through the worker: canonicalize, distance, matrix, path types."""
from __future__ import annotations

import torch
from safetensors.torch import load

from workers.landscape import data as datasets
from workers.landscape import nets, symmetry

from .helpers import plain_error, upload

SPEC = nets.normalize_spec({"kind": "mlp", "hidden": [16, 12]})
TRAIN = {"architecture": SPEC, "dataset": "digits", "optimizer": "sgd", "epochs": 10}


def trained_pair(live, seed: int) -> tuple[dict, dict, dict]:
    """A trained network, and an upload of a randomly permuted and rescaled copy of it."""
    job = live.run("train", **TRAIN, seed=seed, name=f"geo-{seed}")
    a = live.client.get(f"/api/networks/{job['result']['network_id']}").json()
    state = load(live.client.get(f"/api/networks/{a['id']}/weights").content)
    twin_state = symmetry.random_symmetry(SPEC, state, seed=seed + 100)
    twin = upload(live.client, twin_state, spec=SPEC, name=f"geo-{seed}-twin").json()
    return a, twin, state


def test_symmetric_copy_has_distance_zero_and_a_flat_geodesic(live):
    a, twin, state = trained_pair(live, seed=1)
    d = live.run("distance", a=a["id"], b=twin["id"])["result"]
    assert d["geodesic"] < 1e-5 and d["normalized_aligned"] < 1e-6
    assert d["raw"] > 1e-3 and d["normalized"] > 1e-3  # the copy really is permuted and rescaled
    r = live.run("path", a=a["id"], b=twin["id"], type="geodesic", points=5)["result"]
    assert max(r["train_error"]) - min(r["train_error"]) <= 1 / 1347
    digits = datasets.load_dataset("digits")
    assert abs(r["train_error"][0] - plain_error(SPEC, state, digits.x_train, digits.y_train)) <= 1 / 1347
    assert r["distances"]["geodesic"] < 1e-5


def test_canonical_form_is_stored_and_computes_the_same_function(live):
    job = live.run("train", **TRAIN, seed=2, name="geo-canon")
    nid = job["result"]["network_id"]
    canon = live.run("canonicalize", network=nid)["result"]
    out = live.client.get(f"/api/networks/{canon['network_id']}").json()
    assert out["source"] == {"kind": "canonicalize", "from": nid, "job_id": out["source"]["job_id"]}
    original = live.client.get(f"/api/networks/{nid}").json()
    assert out["train_error"] == original["train_error"] and out["test_error"] == original["test_error"]
    w = load(live.client.get(f"/api/networks/{out['id']}/weights").content)
    for name in ("fc1.weight", "fc2.weight"):
        assert torch.allclose(w[name].norm(dim=1), torch.ones(w[name].shape[0]), atol=1e-5)
    assert abs(w["out.weight"].norm().item() - 10 ** 0.5) < 1e-4
    # canonicalising the canonical form changes nothing (the cache key differs: new weights)
    again = live.run("canonicalize", network=out["id"])["result"]
    w2 = load(live.client.get(f"/api/networks/{again['network_id']}/weights").content)
    assert all(torch.allclose(w[k], w2[k], atol=1e-6) for k in w)


def test_matrix_of_distances_and_barriers(live):
    ids = [live.run("train", **TRAIN, seed=s, name=f"geo-m{s}")["result"]["network_id"] for s in (3, 4, 5)]
    r = live.run("matrix", networks=ids, barriers=True, points=3)["result"]
    assert r["networks"] == ids and len(r["names"]) == 3
    for key in ("raw", "aligned", "normalized", "normalized_aligned", "geodesic"):
        m = r["distances"][key]
        assert all(m[i][i] == 0 for i in range(3)) and all(m[i][j] == m[j][i] for i in range(3) for j in range(3))
        assert all(m[i][j] > 0 for i in range(3) for j in range(3) if i != j)
    # aligning can only bring normalised networks closer
    assert all(r["distances"]["normalized_aligned"][i][j] <= r["distances"]["normalized"][i][j] + 1e-9
               for i in range(3) for j in range(3))
    single = live.run("distance", a=ids[0], b=ids[2])["result"]
    assert abs(single["geodesic"] - r["distances"]["geodesic"][0][2]) < 1e-9
    b = r["barriers"]
    assert b[0][1] == b[1][0] and b[0][0] == 0 and 0 <= b[0][1] <= 1


def test_linear_aligned_path_ends_at_the_networks(live):
    a, twin, state = trained_pair(live, seed=6)
    r = live.run("path", a=a["id"], b=twin["id"], type="linear_aligned", points=3)["result"]
    digits = datasets.load_dataset("digits")
    own = plain_error(SPEC, state, digits.x_train, digits.y_train)
    assert abs(r["train_error"][0] - own) <= 1 / 1347 and abs(r["train_error"][-1] - own) <= 1 / 1347


def test_incompatible_pairs_get_a_clear_answer_and_no_job(api):
    real = upload(api, name="real").json()
    binary_spec = {"kind": "binary_mlp", "hidden": [8]}
    torch.manual_seed(0)
    bstate = nets.build(binary_spec, (1, 8, 8), 10).state_dict()
    binary = upload(api, bstate, spec=binary_spec, name="binary").json()
    before = len(api.get("/api/jobs").json())
    for kind, params in (("distance", {"a": real["id"], "b": binary["id"]}),
                         ("path", {"a": real["id"], "b": binary["id"], "type": "linear"}),
                         ("matrix", {"networks": [real["id"], binary["id"]]})):
        r = api.post("/api/jobs", json={"kind": kind, "params": params})
        assert r.status_code == 400 and "binary" in r.json()["detail"], (kind, r.text)
    r = api.post("/api/jobs", json={"kind": "path", "params": {"a": binary["id"], "b": binary["id"], "type": "geodesic"}})
    assert r.status_code == 400 and "hamming" in r.json()["detail"]
    r = api.post("/api/jobs", json={"kind": "path", "params": {"a": real["id"], "b": real["id"], "type": "hamming"}})
    assert r.status_code == 400
    r = api.post("/api/jobs", json={"kind": "path", "params": {"a": real["id"], "b": real["id"], "type": "zigzag"}})
    assert r.status_code == 400 and "geodesic" in r.json()["detail"]
    r = api.post("/api/jobs", json={"kind": "matrix", "params": {"networks": [real["id"]]}})
    assert r.status_code == 400 and "2 to" in r.json()["detail"]
    assert len(api.get("/api/jobs").json()) == before


def test_a_bend_whose_midpoint_was_deleted_is_computed_again(live):
    """The cache answers a job only while every network its result names exists: a bend path names its
    stored midpoint, so once that midpoint is deleted the same job computes (and stores) a new one instead
    of answering with the deleted network's id."""
    from .helpers import random_state

    spec = {"kind": "mlp", "hidden": [16]}
    a, b = (upload(live.client, random_state(spec, seed=s), spec=spec, name=f"bend-{s}").json() for s in (4101, 4102))
    params = dict(a=a["id"], b=b["id"], type="bend", points=3, epochs=1)
    first = live.run("path", **params)
    mid = first["result"]["midpoint_network_id"]
    assert live.client.get(f"/api/networks/{mid}").status_code == 200
    cached = live.run("path", **params)  # while the midpoint exists, the cache answers
    assert cached["cached"] and cached["result"]["midpoint_network_id"] == mid
    assert live.client.delete(f"/api/networks/{mid}").status_code in (200, 204)
    again = live.run("path", **params)
    assert not again["cached"] and again["result_id"] != first["result_id"]
    new_mid = again["result"]["midpoint_network_id"]  # (SQLite may give the new row the freed id)
    assert live.client.get(f"/api/networks/{new_mid}").json()["source"]["job_id"] == again["id"]


def test_hessian_job_gives_the_same_canonical_sharpness_for_a_symmetric_copy(live):
    a, twin, _ = trained_pair(live, seed=7)
    params = {"k": 2, "iterations": 200, "probes": 10, "samples": 300}
    ra = live.run("hessian", network=a["id"], **params)["result"]
    rb = live.run("hessian", network=twin["id"], **params)["result"]
    assert ra["network_id"] == a["id"] and ra["samples"] == 300 and len(ra["raw"]["eigenvalues"]) == 2
    assert ra["raw"]["eigenvalues"][0] >= ra["raw"]["eigenvalues"][1] > 0
    assert ra["raw"]["trace_sem"] > 0 and ra["canonical"]["n_parameters"] == ra["raw"]["n_parameters"]
    # the copy is permuted and rescaled (and its output layer scaled: a different loss), its canonical form is a's
    assert abs(ra["raw"]["eigenvalues"][0] - rb["raw"]["eigenvalues"][0]) > 1e-3 * ra["raw"]["eigenvalues"][0]
    assert abs(ra["canonical"]["eigenvalues"][0] - rb["canonical"]["eigenvalues"][0]) <= 1e-4 * ra["canonical"]["eigenvalues"][0]


def test_hessian_job_refuses_binary_networks_and_bad_parameters(api):
    binary_spec = {"kind": "binary_mlp", "hidden": [8]}
    torch.manual_seed(0)
    binary = upload(api, nets.build(binary_spec, (1, 8, 8), 10).state_dict(), spec=binary_spec, name="binary").json()
    r = api.post("/api/jobs", json={"kind": "hessian", "params": {"network": binary["id"]}})
    assert r.status_code == 400 and "real-valued" in r.json()["detail"]
    real = upload(api, name="real").json()
    r = api.post("/api/jobs", json={"kind": "hessian", "params": {"network": real["id"], "k": 0}})
    assert r.status_code == 400 and "'k'" in r.json()["detail"]
