"""Exactness of the symmetry removal on the cases issue 24 found wrong: Linear-Aligned undoing BatchNorm's
sign flips, a conv bias shifted through a max-pool into a BatchNorm, two BatchNorms in a row, and weights
on no sphere (before a GELU) counted by the geodesic distance (float64, tiny networks)."""
from __future__ import annotations

import pytest
import torch

from workers.landscape import evaluate, nets, paths, symmetry

from .test_nets import make_data, train_steps
from .test_symmetry import assert_same_function, assert_states_close


def trained(spec, shape, n_classes, seed=1, steps=6, n_train=96):
    data = make_data(shape, n_classes, n_train=n_train, n_test=32)
    torch.manual_seed(seed)
    model = nets.build(spec, shape, n_classes).double()
    with torch.no_grad():  # BatchNorm affine parameters of both signs
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    train_steps(model, data, steps=steps, seed=seed)
    evaluate.recalibrate_bn(model, data.x_train)
    return data, {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# 2. Linear-Aligned applies BatchNorm's exact sign flips


@pytest.mark.parametrize("spec, shape", [
    ({"kind": "resnet", "depth": 20, "width": 0.25}, (3, 8, 8)),
    ({"kind": "resnet18", "width": 0.0625}, (3, 16, 16)),
])
def test_linear_aligned_barrier_to_a_sign_flipped_permuted_copy_is_zero(spec, shape):
    data, a = trained(spec, shape, 4, steps=30, n_train=64)  # (before: excess 68.8 and 50.0 points)
    b = symmetry.random_symmetry(spec, a, seed=3, max_scale=1.0)  # permutations, sign flips (and bias shifts)
    flipped = sum(int((a[k] * b[k] < 0).sum()) for k in a if k.endswith(".weight") and a[k].dim() == 1)
    assert flipped > 0  # some gammas did change sign
    assert_same_function(spec, data, a, b, positive_factor=False)
    r = paths.path_result(spec, data, a, b, type="linear_aligned", points=5, dtype=torch.float64, device="cpu",
                          with_distances=False)
    print(f"{spec['kind']}: linear-aligned barrier excess {100 * r['barrier_excess']:.2f} points")
    assert r["barrier_excess"] < 0.005 and max(r["train_error"]) == min(r["train_error"])  # one function all along
    aligned = symmetry.align(spec, a, b)
    for k in a:  # the alignment recovers a itself, biases before BatchNorm aside (shifted, then recomputed away)
        if a[k].is_floating_point() and not k.endswith("running_mean") and not k.endswith("running_var"):
            if not (k.endswith(".bias") and k.replace(".bias", ".weight") in a and a[k.replace(".bias", ".weight")].dim() > 1):
                torch.testing.assert_close(aligned[k], a[k], rtol=1e-9, atol=1e-9, msg=k)
    assert "sign" in paths.PATH_TYPES["linear_aligned"]


# --------------------------------------------------------------------------------------------------
# 3. conv with bias -> max-pool -> BatchNorm: the shift of the bias folds into the running mean

POOL_BN = {"kind": "graph", "layers": [
    {"type": "conv", "out": 5, "kernel": 3, "padding": 1, "bias": True}, {"type": "maxpool", "kernel": 2},
    {"type": "batchnorm"}, {"type": "relu"},
    {"type": "conv", "out": 4, "kernel": 3, "padding": 1, "bias": True}, {"type": "maxpool", "kernel": 2, "padding": 1},
    {"type": "batchnorm"}, {"type": "relu"}, {"type": "flatten"}, {"type": "linear"}]}


def test_a_bias_shifted_through_a_max_pool_into_batchnorm_is_removed():
    spec, shape = POOL_BN, (3, 8, 8)
    data, a = trained(spec, shape, 3)
    shifted = {k: v.clone() for k, v in a.items()}
    d = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shifted["0.bias"] += d
    shifted["2.running_mean"] += d
    assert_same_function(spec, data, a, shifted, positive_factor=False)
    assert paths.distances(spec, a, shifted)["normalized_aligned"] < 1e-9
    b = symmetry.random_symmetry(spec, a, seed=5)  # permutations, scales and shifts
    assert float((b["0.bias"].sort().values - a["0.bias"].sort().values).abs().max()) > 1e-2  # it shifted
    assert_same_function(spec, data, a, b, positive_factor=True)
    dist = paths.distances(spec, a, b)
    assert dist["normalized_aligned"] < 1e-6 and dist["geodesic"] < 1e-6
    assert_states_close(symmetry.canonical_form(spec, symmetry.align(spec, a, b)), symmetry.canonical_form(spec, a))


def test_max_pool_keeps_the_shift_but_not_the_sign_flip():
    from workers.landscape import groups
    g = groups.unit_groups(POOL_BN)
    first = next(s for s in g.segments if s.vectors() == ["0.weight"])
    assert first.fold and first.scaled and not first.flip  # max(-x) is not -max(x)


# --------------------------------------------------------------------------------------------------
# 4. Two BatchNorms in a row: both gammas +1 in the canonical form

TWO_BN = {"kind": "graph", "layers": [
    {"type": "conv", "out": 4, "kernel": 3, "padding": 1}, {"type": "batchnorm"}, {"type": "batchnorm"},
    {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out": 6}, {"type": "batchnorm"},
    {"type": "batchnorm"}, {"type": "batchnorm"}, {"type": "relu"}, {"type": "linear"}]}


def test_batchnorms_in_a_row_are_canonical_with_every_gamma_plus_one():
    spec, shape = TWO_BN, (2, 4, 4)
    data, a = trained(spec, shape, 3)
    c = symmetry.canonical_form(spec, a)
    assert_same_function(spec, data, a, c, positive_factor=True)
    for bn in ("1", "2", "6", "7", "8"):
        assert bool((c[f"{bn}.weight"] >= 0).all()), bn
    for seed in range(3):
        b = symmetry.random_symmetry(spec, a, seed=seed)
        assert_same_function(spec, data, a, b, positive_factor=True)
        dist = paths.distances(spec, a, b)
        assert dist["geodesic"] < 1e-6 and dist["normalized_aligned"] < 1e-9, dist
        assert_states_close(symmetry.canonical_form(spec, symmetry.align(spec, a, b)), c)


# --------------------------------------------------------------------------------------------------
# 5. Every weight counts in the geodesic distance, those on no sphere too

GELU_MLP = {"kind": "graph", "layers": [
    {"type": "flatten"}, {"type": "linear", "out": 8}, {"type": "gelu"}, {"type": "linear", "out": 7},
    {"type": "relu"}, {"type": "linear"}]}


def test_a_one_weight_change_before_a_gelu_moves_the_geodesic_distance():
    spec, shape = GELU_MLP, (6,)
    data, a = trained(spec, shape, 3)
    b = {k: v.clone() for k, v in a.items()}
    b["1.weight"][2, 3] += 0.05
    d = paths.distances(spec, a, b)
    assert d["geodesic"] > 0.04  # the change itself, Euclidean, off the spheres (at least, up to re-alignment)
    torch.testing.assert_close(torch.tensor(d["geodesic"]), torch.tensor(0.05), rtol=1e-6, atol=0)
    c = symmetry.random_symmetry(spec, a, seed=2)  # same function: still distance 0
    assert paths.distances(spec, a, c)["geodesic"] < 1e-6
