"""Random-direction slices around one network: the origin is the network, directions are
filter-normalised (and tangent to the spheres in canonical coordinates), canonical points stay on the
product of spheres, and the batched engine agrees with a plain loop, point by point."""
from __future__ import annotations

import math

import pytest
import torch

from workers.landscape import nets, slice as slices

from . import legacy_symmetry
from .legacy_symmetry import unit_structure
from .test_flatness import digits_nets  # noqa: F401
from .test_nets import CASES, plain_error, trained_pair

REAL_CASES = ["mlp", "mlp_nobias", "mlp_bn", "lenet", "lenet_bn"]


def rows(t: torch.Tensor, per_row: bool) -> torch.Tensor:
    return t.reshape(t.shape[0], -1) if per_row else t.reshape(1, -1)


@pytest.mark.parametrize("name", REAL_CASES)
def test_filter_directions_have_each_units_norm_and_leave_biases_alone(name):
    spec, _, state, _ = trained_pair(name)
    theta = slices.center(spec, state, "filter")
    d1, d2 = slices.directions(spec, theta, "filter", seed=3, count=2)
    for k, t in theta.items():
        if not t.is_floating_point():
            assert k not in d1
            continue
        if t.dim() >= 2:
            for d in (d1, d2):
                assert torch.allclose(rows(d[k], True).norm(dim=1), rows(t, True).norm(dim=1), rtol=1e-12, atol=1e-12)
            assert not torch.equal(d1[k], d2[k])
        else:  # biases, BatchNorm gamma / beta and statistics
            assert torch.count_nonzero(d1[k]) == 0 and torch.count_nonzero(d2[k]) == 0
    # the same seed, the same directions; another seed, others
    again = slices.directions(spec, theta, "filter", seed=3, count=2)
    assert all(torch.equal(again[0][k], d1[k]) for k in d1)
    other = slices.directions(spec, theta, "filter", seed=4, count=1)[0]
    assert any(not torch.equal(other[k], d1[k]) for k in d1 if d1[k].abs().sum() > 0)


def _canonical_case(name):
    """(spec, canonical centre) for a trained catalogue network or a random residual / GELU network."""
    from .test_groups import NEW

    if name in NEW:
        spec, shape, classes = NEW[name]
        torch.manual_seed(0)
        model = nets.build(spec, shape, classes).double()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):  # statistics and gammas of a trained net
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(-2, 2)
        state = model.state_dict()
    else:
        spec, _, state, _ = trained_pair(name)
    return spec, slices.center(spec, state, "canonical")


@pytest.mark.parametrize("name", REAL_CASES + ["resnet8", "graph_mlp_gelu_residual", "graph_conv_shortcut",
                                  "resnet8_option_a", "graph_pad_shortcut"])
def test_canonical_directions_are_tangent_and_points_stay_on_the_spheres(name):
    """Spheres are the canonical form's (groups.py): a residual stream channel's sphere spans the gammas of
    every BatchNorm writing into it; a BatchNorm unit's gamma (+1) has no tangent and stays."""
    spec, theta = _canonical_case(name)
    spheres = slices.spheres(spec)
    dirs = slices.directions(spec, theta, "canonical", seed=1, count=2)
    if name == "resnet8":
        assert any(len(sph.names) > 1 for sph in spheres)  # the streams: several tensors, one sphere per channel
    moved = set()
    for sph in spheres:
        u = sph.rows(theta)
        radius = u.norm(dim=1)
        for d in dirs:
            v = sph.rows(d)
            assert torch.allclose((v * u).sum(1), torch.zeros_like(radius), atol=1e-10)  # tangent
            if u.shape[1] == 1:  # a 0-sphere (one gamma): nothing to move along
                assert torch.count_nonzero(v) == 0
            else:
                assert torch.allclose(v.norm(dim=1), radius, rtol=1e-12)  # filter-normalised on the sphere
                moved |= set(sph.names)
        for coords in ((0.7, -0.4), (1.5, 0.5), (0.0, 0.0)):  # |v| / R <= 2 < pi: no wrapping around
            p = slices.point(spec, theta, dirs, coords, "canonical")
            assert torch.allclose(sph.rows(p).norm(dim=1), radius, rtol=1e-12)  # exactly on the sphere
            # the great-circle angle from theta is |v| / R (the exponential map)
            v = sph.rows({n: coords[0] * dirs[0][n] + coords[1] * dirs[1][n] for n in sph.names})
            cos = (sph.rows(p) * u).sum(1) / radius**2
            assert torch.allclose(torch.acos(cos.clamp(-1, 1)), v.norm(dim=1) / radius, atol=1e-6)
    # off the spheres: weights (units before a GELU) move along filter-normalised lines, nothing else moves
    on = {n for sph in spheres for n in sph.names}
    p = slices.point(spec, theta, dirs, (1.0, 1.0), "canonical")
    linear = [k for k in theta if k not in on and theta[k].dim() >= 2]
    assert bool(linear) == (name == "graph_mlp_gelu_residual")
    for k, t in theta.items():
        if k in linear:
            torch.testing.assert_close(p[k], t + (dirs[0][k] + dirs[1][k]), rtol=0, atol=1e-12)
            assert torch.allclose(rows(dirs[0][k], True).norm(dim=1), rows(t, True).norm(dim=1), rtol=1e-12)
        elif k not in on:
            assert torch.equal(p[k], t), k
    assert moved


@pytest.mark.parametrize("mode", ["filter", "canonical"])
def test_the_origin_is_the_network_and_the_engine_matches_a_plain_loop(mode):
    spec, ds, (state, *_) = digits_nets(count=1, hidden=(24,), epochs=6)
    res = slices.slice_result(spec, ds, state, dims=2, points=6, span=0.8, mode=mode, seed=7, dtype=torch.float64)
    assert res["x"] == res["y"] and 0.0 in res["x"] and len(res["x"]) == 7  # 6 nodes and the origin
    assert res["x"] == [-v for v in reversed(res["x"])] and res["x"][0] == -0.8
    assert len(res["train_error"]) == 7 and all(len(r) == 7 for r in res["train_error"])
    # the origin: the network itself (canonical: the same function, so the same errors)
    assert res["center"]["train_error"] == plain_error(spec, ds, state)
    assert res["center"]["test_error"] == plain_error(spec, ds, state, "test")
    i0 = res["x"].index(0.0)
    assert res["train_error"][i0][i0] == res["center"]["train_error"]
    # every grid point against an independent loop
    theta = slices.center(spec, state, mode)
    dirs = slices.directions(spec, theta, mode, 7, 2)
    for iy in (0, 2, 6):
        for ix in (0, 3, 5):
            p = slices.point(spec, theta, dirs, (res["x"][ix], res["y"][iy]), mode)
            assert res["train_error"][iy][ix] == plain_error(spec, ds, p)
            assert res["test_error"][iy][ix] == plain_error(spec, ds, p, "test")
    flat = [v for r in res["train_error"] for v in r]
    assert max(flat) > res["center"]["train_error"]  # the landscape around a minimizer rises
    assert res["direction_norms"][0] == pytest.approx(
        math.sqrt(sum(float((sph.rows(theta).norm(dim=1) ** 2).sum()) for sph in slices.spheres(spec))), rel=1e-9) \
        if mode == "canonical" else res["direction_norms"][0] > 0


@pytest.mark.parametrize("name", ["resnet8", "resnet8_option_a"])
def test_a_canonical_slice_of_a_resnet_runs_and_its_points_match_a_plain_loop(name):
    """Before: a canonical slice of any residual or graph network failed (its spheres were read from a
    per-layer description that only the layer-by-layer architectures had). Option A: the padded stream's
    spheres share the BatchNorms' rows with the old stream's."""
    from .test_groups import NEW
    from .test_nets import make_data, train_steps

    spec, shape, classes = NEW[name]
    data = make_data(shape, classes, n_train=64, n_test=32)
    torch.manual_seed(2)
    model = nets.build(spec, shape, classes).double()
    train_steps(model, data, steps=6)
    state = model.state_dict()
    res = slices.slice_result(spec, data, state, dims=1, points=5, span=0.5, mode="canonical", seed=3, bn="keep",
                              dtype=torch.float64)
    assert res["center"]["train_error"] == plain_error(spec, data, state)
    theta = slices.center(spec, state, "canonical")
    dirs = slices.directions(spec, theta, "canonical", 3, 1)
    for i in (0, 1, 4):
        assert res["train_error"][i] == plain_error(spec, data, slices.point(spec, theta, dirs, (res["x"][i],), "canonical"))


def test_a_slice_does_not_depend_on_the_order_a_state_dict_holds_its_tensors_in():
    """Before: the directions were drawn tensor by tensor in the dict's order, and a weights file read back
    (safetensors) hands out its keys in an order that changes from call to call: the same slice job gave
    other numbers on another worker. Now the module's order is used, whatever the dict's."""
    from safetensors.torch import load, save

    spec, ds, (state, *_) = digits_nets(count=1, hidden=(16,), epochs=4)
    reference = slices.slice_result(spec, ds, state, dims=2, points=5, span=0.6, mode="canonical", seed=3)
    reordered = [dict(reversed(list(state.items()))), load(save({k: v.contiguous() for k, v in state.items()}))]
    assert list(reordered[0]) != list(state)
    for other in reordered:
        for mode in ("canonical", "filter"):
            a = slices.directions(spec, slices.center(spec, state, mode), mode, 3, 2)
            b = slices.directions(spec, slices.center(spec, other, mode), mode, 3, 2)
            assert all(torch.equal(a[i][k], b[i][k]) for i in range(2) for k in a[i]), mode
        again = slices.slice_result(spec, ds, other, dims=2, points=5, span=0.6, mode="canonical", seed=3)
        assert again["train_error"] == reference["train_error"] and again["test_loss"] == reference["test_loss"]


def test_one_d_slice_is_the_middle_line_of_the_two_d_slice():
    spec, ds, (state, *_) = digits_nets(count=1, hidden=(16,), epochs=4)
    two = slices.slice_result(spec, ds, state, dims=2, points=5, span=1.0, seed=11, dtype=torch.float64)
    one = slices.slice_result(spec, ds, state, dims=1, points=5, span=1.0, seed=11, dtype=torch.float64)
    i0 = two["y"].index(0.0)
    assert one["x"] == two["x"] and "y" not in one
    assert one["train_error"] == two["train_error"][i0] and one["test_error"] == two["test_error"][i0]
    assert one["train_loss"] == pytest.approx(two["train_loss"][i0], rel=1e-9)


def test_batchnorm_recompute_and_keep():
    spec, ds, (state, *_) = digits_nets(count=1, hidden=(16,), batchnorm=True, epochs=4)
    keep = slices.slice_result(spec, ds, state, dims=1, points=3, span=0.5, bn="keep", dtype=torch.float64)
    again = slices.slice_result(spec, ds, state, dims=1, points=3, span=0.5, bn="recompute", dtype=torch.float64)
    assert keep["bn"] == "keep" and again["bn"] == "recompute"
    # at the origin the stored statistics are the recomputed ones (digits_nets recalibrated them)
    assert keep["center"]["train_error"] == again["center"]["train_error"] == plain_error(spec, ds, state)


def test_canonical_slice_does_not_depend_on_the_scales_of_the_units():
    """Rescaling units (a symmetry: the same function) changes a filter-normalised raw slice's points,
    never the canonical one: its centre and directions are drawn from the canonical form."""
    spec, ds, (state, *_) = digits_nets(count=1, hidden=(16,), epochs=4)
    s = unit_structure(spec)
    scaled = {k: v.clone() for k, v in state.items()}
    c = torch.linspace(0.3, 3.0, scaled[s.hidden[0].weight].shape[0], dtype=torch.float64)
    legacy_symmetry._scale_outgoing(scaled, s.hidden[0], c)
    scaled[s.hidden[0].weight] = scaled[s.hidden[0].weight] / c[:, None]
    scaled[s.hidden[0].bias] = scaled[s.hidden[0].bias] / c
    assert plain_error(spec, ds, scaled) == plain_error(spec, ds, state)
    a = slices.slice_result(spec, ds, state, dims=1, points=5, span=1.0, mode="canonical", seed=2, dtype=torch.float64)
    b = slices.slice_result(spec, ds, scaled, dims=1, points=5, span=1.0, mode="canonical", seed=2, dtype=torch.float64)
    assert a["train_error"] == b["train_error"] and a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-8)


@pytest.mark.parametrize("bad, words", [
    ({"dims": 3}, "'dims' must be 1 or 2"), ({"points": 2}, "'points'"), ({"points": 200}, "between 3 and 101"),
    ({"span": 0}, "'span'"), ({"mode": "raw"}, "unknown slice mode"), ({"bn": "interpolate"}, "BatchNorm mode"),
    ({"seed": -1}, "'seed'"),
])
def test_bad_parameters_are_refused_in_words(bad, words):
    spec, ds, state, _ = trained_pair("mlp")
    with pytest.raises(slices.SliceError, match=words):
        slices.slice_result(spec, ds, state, **{"dims": 2, "points": 5, **bad})


def test_binary_networks_are_refused():
    spec, shape, n_classes = CASES["binary_mlp"]
    with pytest.raises(slices.SliceError, match="real-valued"):
        slices.check(nets.normalize_spec(spec), 2, 5, 1.0, "filter", "recompute", 0)
