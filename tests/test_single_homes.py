"""Rules written once (issue 21, item 2): real-valued-only computations and binary variants, the tensor-shape
check of an upload and of a loaded state, short architecture names, distance labels. Each test holds every
user of a rule to its one home."""
from __future__ import annotations

import pytest
import torch

from workers.landscape import bend, data, flatness, kinds, nets, paths, plane, symmetry
from workers.landscape import slice as slices

from .helpers import SPEC, random_state, upload

BINARY = {"kind": "binary_mlp", "hidden": [8]}


def _facts(spec, i=1):
    return kinds.NetworkFacts(i, nets.normalize_spec(spec), "digits", {}, 100)


@pytest.mark.parametrize("what,kind,params,inputs", [
    ("bend", "path", {"type": "bend"}, ("a", "b")),
    ("plane", "plane", {}, ("networks",)),
    ("slice", "slice", {}, ("network",)),
])
def test_the_api_and_the_science_refuse_binary_networks_in_the_same_words(what, kind, params, inputs):
    k = kinds.KINDS[kind]
    p = {**{name: ([1, 2, 3] if name == "networks" else 1) for name in inputs}, **params}
    _, normal, ids = kinds.shape(kind, p)
    networks = {key: [_facts(BINARY, i) for i in v] for key, v in ids.items()}
    with pytest.raises(kinds.KindError) as api:
        kinds.complete(k, normal, networks, kinds.Limits())
    assert str(api.value) == nets.REAL_ONLY[what]
    digits = data.load_dataset("digits", {"n_train": 64, "n_test": 32})
    model = nets.build(BINARY, digits.input_shape, digits.n_classes)
    state = model.state_dict()
    with pytest.raises(paths.PathError) as science:
        if what == "bend":
            bend.bend_result(BINARY, digits, state, state, points=3, epochs=1)
        elif what == "plane":
            plane.plane_result(BINARY, digits, [state, state, state], grid=3)
        else:
            slices.slice_result(BINARY, digits, state, dims=1, points=3)
    assert str(science.value) == nets.REAL_ONLY[what]


def test_binary_variants_come_from_one_table():
    assert nets.variant(BINARY, "barrier") == "hamming" and nets.variant(SPEC, "barrier") == "geodesic"
    assert nets.variant(True, "noise") == "flip" and nets.variant(False, "noise") == "multiplicative"
    with pytest.raises(paths.PathError, match="no geodesic"):
        paths.check_path_type(BINARY, "geodesic")
    with pytest.raises(paths.PathError) as exc:
        paths.geodesic_distance(BINARY, {}, {})
    assert str(exc.value) == nets.REAL_ONLY["geodesic distance"]
    # the flatness kind's sigma bound follows the variant (binary: flipped fractions)
    net = _facts(BINARY)
    _, normal, _ids = kinds.shape("flatness", {"network": 1, "sigmas": [2.0]})
    with pytest.raises(kinds.KindError, match="flipped fractions"):
        kinds.complete(kinds.KINDS["flatness"], normal, {"network": [net]}, kinds.Limits())
    assert flatness.MAX_SIGMA[nets.variant(True, "noise")] < 2.0 < flatness.MAX_SIGMA[nets.variant(False, "noise")]


def test_shapes_are_checked_by_one_function_for_files_and_tensors(api):
    model = nets.build(SPEC, (64,), 10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc1.weight"] = torch.zeros(16, 63)
    state["extra.weight"] = torch.zeros(2)
    del state["out.bias"]
    with pytest.raises(nets.WeightsError) as loaded:
        nets.check_state_dict(model, state)
    r = upload(api, state)
    problems = "; ".join(nets.shape_problems(
        {k: tuple(v.shape) for k, v in model.state_dict().items()}, {k: tuple(v.shape) for k, v in state.items()}))
    assert str(loaded.value) == "weights do not fit the architecture: " + problems
    # the upload's refusal names the architecture it was given, then the same problems (one function wrote both)
    assert r.status_code == 400 and r.json()["detail"].endswith("does not match the file: " + problems)


SHORT = [
    ({"kind": "mlp", "hidden": [64, 64], "batchnorm": True}, "mlp 64-64 bn"),
    ({"kind": "lenet", "channels": [6, 16], "dense": [120, 84]}, "lenet c6-16 d120-84"),
    ({"kind": "vgg", "config": "vgg11", "width": 0.25}, "vgg11 ×0.25"),
    ({"kind": "binary_mlp", "hidden": [8]}, "binary mlp 8"),
    ({"kind": "committee", "hidden": 11}, "committee K=11"),
    ({"kind": "resnet", "depth": 20, "width": 1}, "resnet20 ×1"),
    ({"kind": "resnet18", "width": 0.5}, "resnet18 ×0.5"),
    ({"kind": "graph", "layers": [{"type": "linear", "out": 8}, {"type": "relu"}, {"type": "linear"}]},
     "graph (3 layers)"),
    ({"kind": "perceptron"}, "perceptron"),
]


@pytest.mark.parametrize("spec,name", SHORT)
def test_short_architecture_names(spec, name):
    assert nets.short_name(spec) == name


def test_the_api_serves_the_short_name_and_the_cli_prints_it(api, monkeypatch, capsys):
    spec = {"kind": "graph", "layers": [{"type": "flatten"}, {"type": "linear", "out": 8}, {"type": "relu"},
                                        {"type": "linear"}]}
    net = upload(api, random_state(spec), spec=spec, name="short-name").json()
    assert net["architecture_label"] == nets.short_name(net["architecture"]) == "graph (4 layers)"
    listed = [n for n in api.get("/api/networks").json() if n["id"] == net["id"]]
    assert listed[0]["architecture_label"] == "graph (4 layers)"
    from backend import cli

    class Served:
        def networks(self):
            return listed + [{**listed[0], "id": 99, "architecture": {"kind": "resnet", "depth": 20, "width": 1},
                              "architecture_label": "resnet20 ×1"}]

    monkeypatch.setattr(cli, "_client", lambda args: Served())
    assert cli.main(["networks"]) == 0
    out = capsys.readouterr().out
    assert "graph (4 layers)" in out and "resnet20 ×1" in out


def test_a_train_job_carries_its_architectures_short_name(api):
    r = api.post("/api/jobs", json={"kind": "train", "params": {
        "architecture": {"kind": "mlp", "hidden": [7]}, "epochs": 1, "seed": 777}})
    assert r.status_code == 202 and r.json()["architecture_label"] == "mlp 7"
    other = api.get("/api/jobs?kind=evaluate&limit=1").json()
    assert all(j["architecture_label"] is None for j in other)


def test_distance_labels_are_served_for_every_distance_the_science_reports(api):
    catalogue = {k["kind"]: k for k in api.get("/api/job-kinds").json()}
    served = catalogue["distance"]["results"]["distances"]
    assert served == paths.DISTANCES == catalogue["matrix"]["results"]["distances"]
    real = paths.distances(SPEC, random_state(SPEC, seed=1), random_state(SPEC, seed=2))
    binary = nets.build(BINARY, (64,), 10).state_dict()
    flipped = symmetry.random_symmetry(BINARY, binary, seed=3)
    keys = set(real) | set(paths.distances(BINARY, binary, flipped))
    assert keys == set(served), keys ^ set(served)
    assert all(v["label"] and v["help"] for v in served.values())


def test_the_dashboard_writes_no_architecture_name_or_distance_label_of_its_own():
    from pathlib import Path

    js = "\n".join(p.read_text() for p in (Path(__file__).resolve().parents[1] / "frontend" / "js").rglob("*.js"))
    for word in ("normalised-aligned", "hamming (unaligned)", "binary conv c", "committee K="):
        assert word not in js, word
