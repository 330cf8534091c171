"""Planes through three networks: the grid holds the three networks, their values are their own errors."""
from __future__ import annotations

import pytest
import torch

from workers.landscape import plane, symmetry
from workers.landscape.groups import compared_names
from workers.landscape.paths import PathError, linear_path, per_parameter_distance

from .legacy_symmetry import unit_structure
from .test_flatness import digits_nets  # noqa: F401  (a fixture)
from .test_nets import plain_error, trained_pair


def at(res, i, split="train"):
    """The grid's value at network i's coordinates."""
    p = res["points"][i]
    return res[f"{split}_error"][res["y"].index(p["y"])][res["x"].index(p["x"])]


@pytest.mark.parametrize("mode", ["aligned", "raw"])
def test_the_grid_at_the_three_networks_equals_their_own_errors(mode):
    spec, ds, states = digits_nets()
    res = plane.plane_result(spec, ds, states, grid=6, mode=mode, dtype=torch.float64)
    assert res["mode"] == mode and res["bn"] is None
    nx, ny = len(res["x"]), len(res["y"])
    assert 6 <= nx <= 9 and 6 <= ny <= 8 and res["x"] == sorted(res["x"]) and res["y"] == sorted(res["y"])
    for split in ("train", "test"):
        for key in (f"{split}_error", f"{split}_loss"):
            assert len(res[key]) == ny and all(len(row) == nx for row in res[key])
    assert res["points"][0] == {"x": 0.0, "y": 0.0} and res["points"][1]["y"] == 0.0 and res["points"][2]["y"] > 0
    for i, s in enumerate(states):
        assert at(res, i) == plain_error(spec, ds, s)
        assert at(res, i, "test") == plain_error(spec, ds, s, "test")
    # the margin: the grid reaches beyond the networks on every side
    xs, ys = [p["x"] for p in res["points"]], [p["y"] for p in res["points"]]
    assert res["x"][0] < min(xs) and res["x"][-1] > max(xs) and res["y"][0] < min(ys) and res["y"][-1] > max(ys)
    flat = [v for row in res["train_error"] for v in row]
    assert max(flat) > max(at(res, i) for i in range(3))  # the landscape around them is not flat


def test_raw_coordinates_are_euclidean_distances():
    spec, ds, (a, b, c) = digits_nets()
    res = plane.plane_result(spec, ds, [a, b, c], grid=3, mode="raw", dtype=torch.float64)
    n = sum(a[k].numel() for k in compared_names(spec, a))
    assert res["points"][1]["x"] == pytest.approx(per_parameter_distance(spec, a, b) * n**0.5)
    assert res["distances"]["ac"] == pytest.approx((res["points"][2]["x"] ** 2 + res["points"][2]["y"] ** 2) ** 0.5)
    assert res["distances"]["bc"] == pytest.approx(per_parameter_distance(spec, b, c) * n**0.5)


@pytest.mark.parametrize("name", ["mlp_bn", "lenet_bn"])
def test_batchnorm_planes(name):
    spec, data, a, b = trained_pair(name)
    c = {k: (v + 0.2 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2), dtype=v.dtype)
             if v.is_floating_point() and not k.endswith(("running_mean", "running_var")) else v) for k, v in a.items()}
    from workers.landscape.evaluate import recalibrate_states
    from workers.landscape import nets
    c = recalibrate_states(nets.build(spec, data.input_shape, data.n_classes).double(), [c], data.x_train)[0]
    for bn in ("recompute", "interpolate"):
        res = plane.plane_result(spec, data, [a, b, c], grid=4, bn=bn, dtype=torch.float64)
        assert res["bn"] == bn
        for i, s in enumerate((a, b, c)):
            assert at(res, i) == plain_error(spec, data, s), (bn, i)


def test_axis_puts_the_networks_on_nodes():
    nodes = plane._axis(-1.0, 11.0, 7, [0.0, 10.0, 0.3])
    assert {0.0, 10.0, 0.3} <= set(nodes) and nodes == sorted(nodes) and len(nodes) == 8  # 0.0 and 0.3 share a node
    assert plane._axis(0.0, 1.0, 5, [0.0, 1.0]) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_degenerate_planes_and_bad_parameters():
    spec, ds, (a, b, c) = digits_nets()
    mid = next(linear_path(a, b, [0.5]))
    with pytest.raises(plane.PlaneError, match="collinear"):
        plane.plane_result(spec, ds, [a, b, mid], mode="raw")
    with pytest.raises(plane.PlaneError, match="collinear"):  # a symmetric copy of a is a itself once aligned
        plane.plane_result(spec, ds, [a, symmetry.random_symmetry(spec, a, seed=3), b])
    for bad in ({"grid": 1}, {"mode": "twisted"}, {"margin": -1}, {"bn": "stale"}):
        with pytest.raises(plane.PlaneError):
            plane.plane_result(spec, ds, [a, b, c], **bad)
    with pytest.raises(plane.PlaneError, match="three"):
        plane.plane_result(spec, ds, [a, b])
    bspec, bdata, ba, bb = trained_pair("binary_mlp")
    with pytest.raises(PathError, match="real-valued"):
        plane.plane_result(bspec, bdata, [ba, bb, ba])
    seen = []
    plane.plane_result(spec, ds, [a, b, c], grid=2, margin=0.0, progress=lambda f, m: seen.append((f, m)))
    assert seen[-1][0] == 1.0 and "grid point" in seen[-1][1]


def test_interpolated_batchnorm_statistics_leave_the_three_networks_exactly_themselves():
    """A canonical form holds running_var' = c^2 (running_var + eps) - eps, legitimately below 0: in
    bn="interpolate" mode each node must evaluate exactly as its network (no clamping there)."""
    from torch.nn import functional as F

    from .test_nets import model_of

    spec, data, a, b = trained_pair("mlp_bn")
    s = unit_structure(spec)
    bn = s.hidden[0].bn
    a = dict(a)
    a[f"{bn}.running_var"] = a[f"{bn}.running_var"].clone()
    a[f"{bn}.running_var"][:3] = 0.0  # units whose pre-BN output was constant on the calibration data
    a[s.hidden[0].weight] = a[s.hidden[0].weight] * 3.0
    c = symmetry.random_symmetry(spec, b, seed=4)
    c = {k: v + 0.3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(5), dtype=v.dtype)
         if k.endswith(("weight", "bias")) else v for k, v in c.items()}
    ca = symmetry.canonical_form(spec, a)
    assert bool((ca[f"{bn}.running_var"] < 0).any())  # the case of the issue
    res = plane.plane_result(spec, data, [a, b, c], grid=4, bn="interpolate", dtype=torch.float64)
    p = res["points"][0]
    node_loss = res["train_loss"][res["y"].index(p["y"])][res["x"].index(p["x"])]
    with torch.no_grad():
        own = float(F.cross_entropy(model_of(spec, data, ca)(data.x_train.double()), data.y_train))
    assert node_loss == pytest.approx(own, rel=1e-9)
    assert at(res, 0) == plain_error(spec, data, a)


def test_plane_states_keep_running_variances_at_least_the_smallest_of_the_three_outside():
    a = {"bn.running_var": torch.tensor([1.0, -1e-6]), "w": torch.tensor([1.0, 2.0])}
    b = {"bn.running_var": torch.tensor([2.0, 0.5]), "w": torch.tensor([0.0, 0.0])}
    c = {"bn.running_var": torch.tensor([3.0, 0.5]), "w": torch.tensor([5.0, 5.0])}
    inside, node, outside = plane.plane_states(a, b, c, [(0.2, 0.3, 0.5), (1.0, 0.0, 0.0), (2.0, -1.0, 0.0)],
                                               {"bn.running_var"})
    assert torch.allclose(inside["bn.running_var"], torch.tensor([2.3, 0.3999998]))
    assert torch.equal(node["bn.running_var"], a["bn.running_var"])  # -1e-6 kept: the network itself
    assert torch.equal(outside["bn.running_var"], torch.tensor([1.0, -1e-6]))  # 2*1-2 = 0 -> 1; 2*(-1e-6)-0.5 -> -1e-6
    assert torch.equal(outside["w"], torch.tensor([2.0, 4.0]))  # parameters are never clamped
