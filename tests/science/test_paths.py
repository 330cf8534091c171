"""Distances and paths, for every architecture (float64, tiny trained networks)."""
from __future__ import annotations

import math

import pytest
import torch

from workers.landscape import nets, paths, symmetry

from .legacy_symmetry import unit_structure
from .test_nets import BATCHNORM, BINARY, CASES, REAL, plain_error, trained_pair

TYPES = {name: (["linear", "linear_aligned", "hamming"] if name in BINARY else ["linear", "linear_aligned", "geodesic"])
         for name in CASES}


def test_positions_and_linear_path_ends():
    assert paths.positions(3) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        paths.positions(1)
    a = {"w": torch.randn(4, 3), "n": torch.tensor(7)}
    b = {"w": torch.randn(4, 3), "n": torch.tensor(9)}
    p0, p_mid, p1 = paths.linear_path(a, b, [0.0, 0.5, 1.0])
    assert torch.equal(p0["w"], a["w"]) and torch.equal(p1["w"], b["w"]) and int(p1["n"]) == 7
    torch.testing.assert_close(p_mid["w"], (a["w"] + b["w"]) / 2)


@pytest.mark.parametrize("name", sorted(CASES))
def test_errors_at_the_ends_of_every_path_equal_the_networks_errors(name):
    spec, data, a, b = trained_pair(name)
    n_train, n_test = len(data.y_train), len(data.y_test)
    ref = {"train": (plain_error(spec, data, a), plain_error(spec, data, b)),
           "test": (plain_error(spec, data, a, "test"), plain_error(spec, data, b, "test"))}
    assert ref["train"][0] < 0.8  # trained a little: not every sample wrong (4 classes)
    for type in TYPES[name]:
        for bn in (["recompute", "interpolate"] if name in BATCHNORM else ["recompute"]):
            res = paths.path_result(spec, data, a, b, type=type, points=3, bn=bn, orders=2, dtype=torch.float64)
            assert res["t"] == [0.0, 0.5, 1.0] and res["type"] == type
            assert res["bn"] == (bn if name in BATCHNORM else None)
            for split, n in (("train", n_train), ("test", n_test)):
                got = res[f"{split}_error"]
                assert len(got) == 3 and len(res[f"{split}_loss"]) == 3
                assert abs(got[0] - ref[split][0]) <= 1 / n + 1e-12, (type, bn, split)
                assert abs(got[-1] - ref[split][1]) <= 1 / n + 1e-12, (type, bn, split)
            assert res["barrier"] == max(res["train_error"])
            assert math.isclose(res["barrier_excess"], res["barrier"] - (res["train_error"][0] + res["train_error"][-1]) / 2)
            assert set(res["distances"]) >= {"raw", "aligned", "normalized", "normalized_aligned", "geodesic"}


def test_default_float32_evaluation_agrees_within_one_sample():
    spec, data, a, b = trained_pair("lenet_bn")
    res = paths.path_result(spec, data, a, b, type="geodesic", points=2)
    assert abs(res["train_error"][0] - plain_error(spec, data, a)) <= 1 / len(data.y_train) + 1e-12
    assert abs(res["test_error"][1] - plain_error(spec, data, b, "test")) <= 1 / len(data.y_test) + 1e-12


@pytest.mark.parametrize("name", REAL)
def test_geodesic_ends_norms_and_midpoint(name):
    spec, _, a, b = trained_pair(name)
    s = unit_structure(spec)
    p0, mid, p1 = paths.geodesic_path(spec, a, b, [0.0, 0.5, 1.0])
    ca = symmetry.canonical_form(spec, a)
    cb = symmetry.canonical_form(spec, symmetry.align(spec, a, b))
    for k in ca:
        assert torch.equal(p0[k], ca[k]) and torch.equal(p1[k], cb[k]), k
    d = paths.distances(spec, a, b)["geodesic"]
    ts = [0.0, 0.2, 0.5, 0.9, 1.0]
    for t, point in zip(ts, paths.geodesic_path(spec, a, b, ts)):
        assert math.isclose(paths.geodesic_distance(spec, p0, point), t * d, rel_tol=1e-9, abs_tol=1e-12)
        for layer in s.hidden:
            rows = point[layer.weight].flatten(1).norm(dim=1)
            torch.testing.assert_close(rows, torch.ones_like(rows), rtol=1e-12, atol=1e-12)
        w = point[s.output.weight]
        assert math.isclose(float(w.norm()), math.sqrt(w.shape[0]), rel_tol=1e-12)
    assert d > 0.1
    assert math.isclose(paths.geodesic_distance(spec, p0, p1), d, rel_tol=1e-9)
    assert math.isclose(paths.geodesic_distance(spec, p0, mid), d / 2, rel_tol=1e-9)
    assert math.isclose(paths.geodesic_distance(spec, mid, p1), d / 2, rel_tol=1e-9)
    assert math.isclose(paths.distances(spec, mid, a)["geodesic"], d / 2, rel_tol=1e-6)  # alignment finds the identity


@pytest.mark.parametrize("name", sorted(CASES))
def test_paths_to_a_symmetric_copy_have_constant_error(name):
    spec, data, a, _ = trained_pair(name)
    b = symmetry.random_symmetry(spec, a, seed=7)
    type = "hamming" if name in BINARY else "geodesic"
    res = paths.path_result(spec, data, a, b, type=type, points=5, bn="interpolate", dtype=torch.float64)
    assert len(set(res["train_error"])) == 1 and len(set(res["test_error"])) == 1
    assert res["barrier_excess"] == 0.0
    assert res["train_error"][0] == plain_error(spec, data, a)
    key = "hamming" if name in BINARY else "geodesic"
    assert res["distances"][key] < 1e-5
    if name in BINARY:
        assert res["train_error_std"] == [0.0] * 5


@pytest.mark.parametrize("name", BINARY)
def test_hamming_path_flips_one_differing_weight_set_at_a_time(name):
    spec, _, a, b = trained_pair(name)
    ts = paths.positions(5)
    pts = list(paths.hamming_path(spec, a, b, ts, torch.Generator().manual_seed(0)))
    names = [k for k in pts[0] if k.endswith("weight")]
    vec = [torch.cat([p[k].reshape(-1) for k in names]) for p in pts]
    m = int((vec[0] != vec[-1]).sum())
    assert m == round(paths.distances(spec, a, b)["hamming"] * len(vec[0]))
    for t, v in zip(ts, vec):
        assert set(v.unique().tolist()) <= {-1.0, 1.0}
        assert int((v != vec[0]).sum()) == round(t * m)  # on a shortest path
        assert int((v != vec[0]).sum()) + int((v != vec[-1]).sum()) == m


def test_distances_count_parameters_not_batchnorm_statistics():
    spec, data, a, b = trained_pair("mlp_bn")
    model = nets.build(spec, data.input_shape, data.n_classes)
    d = paths.distances(spec, a, b)
    assert d["n_parameters"] == nets.n_parameters(model)
    b2 = dict(a)
    b2["bn1.running_var"] = a["bn1.running_var"] * 3
    assert paths.distances(spec, a, b2)["raw"] == 0.0
    same = paths.distances(spec, a, a)
    assert [same[k] for k in ("raw", "aligned", "normalized", "normalized_aligned", "geodesic")] == [0.0] * 5
    assert d["raw"] > 0.01 and d["geodesic"] > 0.1


def test_geodesic_distance_formula_on_a_hand_made_pair():
    spec = {"kind": "mlp", "hidden": [2], "bias": False}
    a = {"fc1.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
         "out.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)}
    b = {"fc1.weight": torch.tensor([[1.0, 1.0], [0.0, 2.0]], dtype=torch.float64),  # unit 0 turned by pi/4
         "out.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)}
    # b's unit 0 has norm sqrt(2): its outgoing column grows by sqrt(2) in the canonical form
    out_b = torch.tensor([[math.sqrt(2), 0.0], [0.0, 2.0]], dtype=torch.float64)
    phi_out = math.acos(float((a["out.weight"] * out_b).sum() / (a["out.weight"].norm() * out_b.norm())))
    expected = math.sqrt((math.pi / 4) ** 2 + 2 * phi_out**2)
    assert math.isclose(paths.geodesic_distance(spec, a, b), expected, rel_tol=1e-9)


def test_tiny_angles_are_accurate():
    v1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    v2 = torch.tensor([[math.cos(1e-9), math.sin(1e-9)]], dtype=torch.float64)
    assert math.isclose(float(paths.angles(v1, v2)), 1e-9, rel_tol=1e-6)
    mid = paths.slerp_rows(v1, v2, 0.5)
    assert math.isclose(float(mid.norm()), 1.0, rel_tol=1e-15)


def test_incompatible_inputs_raise_clear_errors():
    spec, data, a, b = trained_pair("mlp")
    bspec, bdata, ba, bb = trained_pair("binary_mlp")
    with pytest.raises(paths.IncompatibleError, match="binary network .* real-valued"):
        paths.compatible(spec, bspec)
    with pytest.raises(paths.IncompatibleError, match="different architectures 'mlp' and 'lenet'"):
        paths.compatible(spec, {"kind": "lenet"})
    with pytest.raises(paths.IncompatibleError, match="hidden"):
        paths.compatible(spec, {"kind": "mlp", "hidden": [3]})
    assert paths.compatible(spec, {**spec, "bias": True}) == nets.normalize_spec(spec)
    with pytest.raises(paths.PathError, match="hamming"):
        paths.path_result(bspec, bdata, ba, bb, type="geodesic")
    with pytest.raises(paths.PathError, match="binary networks"):
        paths.path_result(spec, data, a, b, type="hamming")
    with pytest.raises(paths.PathError, match="unknown path type"):
        paths.path_result(spec, data, a, b, type="curved")
    with pytest.raises(paths.PathError, match="BatchNorm mode"):
        paths.path_result(spec, data, a, b, bn="stale")
    with pytest.raises(paths.PathError, match="at least 2"):
        paths.path_result(spec, data, a, b, points=1)
    with pytest.raises(paths.PathError, match="no geodesic"):
        paths.check_path_type({"kind": "perceptron"}, "geodesic")
    with pytest.raises(nets.WeightsError):
        paths.path_result(spec, data, a, ba, type="linear")
    assert all(issubclass(e, ValueError) for e in (paths.PathError, paths.IncompatibleError))


def test_progress_is_reported_and_can_cancel():
    spec, data, a, b = trained_pair("binary_mlp")
    seen = []
    paths.path_result(spec, data, a, b, type="hamming", points=3, orders=2, progress=lambda f, m: seen.append((f, m)))
    assert len(seen) == 6 and seen[-1][0] == 1.0 and all(x[0] <= y[0] for x, y in zip(seen, seen[1:]))

    class Cancelled(Exception):
        pass

    def cancel(fraction, message):
        raise Cancelled

    with pytest.raises(Cancelled):
        paths.path_result(spec, data, a, b, type="linear", points=3, progress=cancel)
