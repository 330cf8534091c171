"""Canonical form and alignment, for every architecture (float64, tiny trained networks)."""
from __future__ import annotations

import math

import pytest
import torch

from workers.landscape import paths, symmetry
from workers.landscape.evaluate import error_and_loss

from .legacy_symmetry import unit_structure
from .test_nets import BATCHNORM, BINARY, CASES, REAL, logits_of, model_of, trained_pair


def assert_same_function(spec, data, state, other, positive_factor: bool):
    """Logits equal up to one positive factor (exactly equal if not positive_factor), same predictions."""
    y0, y1 = logits_of(spec, data, state), logits_of(spec, data, other)
    factor = float(y1.norm() / y0.norm()) if positive_factor else 1.0
    torch.testing.assert_close(y1, factor * y0, rtol=1e-9, atol=1e-9 * float(y1.abs().max()))
    assert torch.equal(y0.argmax(dim=1), y1.argmax(dim=1))


def assert_states_close(a, b, tol=1e-9):
    assert set(a) == set(b)
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", sorted(CASES))
def test_canonical_form_computes_the_same_function_and_is_idempotent(name):
    spec, data, a, _ = trained_pair(name)
    c = symmetry.canonical_form(spec, a)
    assert_same_function(spec, data, a, c, positive_factor=name in REAL)
    assert_states_close(symmetry.canonical_form(spec, c), c, tol=1e-12)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # it did change something


@pytest.mark.parametrize("name", REAL)
def test_canonical_form_has_unit_norm_hidden_units_and_output_norm_sqrt_h(name):
    spec, _, a, _ = trained_pair(name)
    c = symmetry.canonical_form(spec, a)
    s = unit_structure(spec)
    for layer in s.hidden:
        torch.testing.assert_close(c[layer.weight].flatten(1).norm(dim=1), torch.ones(c[layer.weight].shape[0], dtype=torch.float64))
        if layer.bn:
            assert torch.equal(c[f"{layer.bn}.weight"], torch.ones_like(c[f"{layer.bn}.weight"]))  # +1, not -1
            if layer.bias:
                assert torch.equal(c[layer.bias], torch.zeros_like(c[layer.bias]))
    w = c[s.output.weight]
    assert math.isclose(float(w.norm()), math.sqrt(w.shape[0]), rel_tol=1e-12)


@pytest.mark.parametrize("name", BINARY)
def test_binary_canonical_form_is_signs_with_first_weight_positive(name):
    spec, _, a, _ = trained_pair(name)
    c = symmetry.canonical_form(spec, a)
    s = unit_structure(spec)
    for layer in [*s.hidden, *([s.output] if s.output else [])]:
        assert set(c[layer.weight].unique().tolist()) <= {-1.0, 1.0}
        if layer.flip:
            assert (c[layer.weight].flatten(1)[:, 0] == 1).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_random_symmetry_keeps_the_function_and_canonical_form_is_unique(name):
    spec, data, a, _ = trained_pair(name)
    b = symmetry.random_symmetry(spec, a, seed=3)
    assert paths.per_parameter_distance(spec, a, b) > 1e-3  # the copy really differs
    assert_same_function(spec, data, a, b, positive_factor=name in REAL)
    # unique: the canonical form of the copy, aligned, is the canonical form of the original
    ca = symmetry.canonical_form(spec, a)
    cb = symmetry.canonical_form(spec, symmetry.align(spec, a, b))
    assert_states_close(cb, ca, tol=1e-9)


@pytest.mark.parametrize("name", BATCHNORM)
def test_batchnorm_canonical_form_is_exact_in_eval_mode(name):
    spec, data, a, _ = trained_pair(name)
    a = dict(a)
    s = unit_structure(spec)
    layer = s.hidden[0]
    a[f"{layer.bn}.running_var"] = a[f"{layer.bn}.running_var"] * 1e-4  # small variances: eps matters
    c = symmetry.canonical_form(spec, a)
    assert_same_function(spec, data, a, c, positive_factor=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_align_recovers_a_permuted_rescaled_flipped_copy(name):
    spec, _, a, _ = trained_pair(name)
    b = symmetry.random_symmetry(spec, a, seed=5)
    d = paths.distances(spec, a, b)
    assert d["normalized_aligned"] < 1e-9
    if name in REAL:
        assert d["geodesic"] < 1e-5 and d["normalized"] > 1e-3
    else:
        assert d["hamming"] == 0.0 and d["geodesic"] is None
        if unit_structure(spec).hidden:
            assert d["hamming_unaligned"] > 0.05


@pytest.mark.parametrize("name", sorted(CASES))
def test_align_keeps_the_function_and_never_permutes_the_output(name):
    spec, data, a, b = trained_pair(name)
    b_al = symmetry.align(spec, a, b)
    assert_same_function(spec, data, b, b_al, positive_factor=False)
    s = unit_structure(spec)
    if s.output is not None and s.output.bias:
        assert torch.equal(b_al[s.output.bias], b[s.output.bias])
    assert_states_close(symmetry.align(spec, a, a), a, tol=0)


def test_align_matches_units_by_cosine_not_by_position():
    spec = {"kind": "mlp", "hidden": [3], "bias": False}
    a = {"fc1.weight": torch.eye(3, dtype=torch.float64), "out.weight": torch.arange(6.0, dtype=torch.float64).view(2, 3)}
    perm = torch.tensor([2, 0, 1])
    b = {"fc1.weight": 5 * torch.eye(3, dtype=torch.float64)[perm], "out.weight": a["out.weight"][:, perm] / 5}
    b_al = symmetry.align(spec, a, b)
    torch.testing.assert_close(b_al["fc1.weight"], 5 * torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(b_al["out.weight"], a["out.weight"] / 5)


def test_binary_align_flips_units_with_negative_cosine():
    spec = {"kind": "binary_mlp", "hidden": [2]}
    w = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0]], dtype=torch.float64)
    out = torch.tensor([[1.0, -1.0]], dtype=torch.float64).repeat(3, 1)
    a = {"fc1.weight": w, "out.weight": out}
    b = {"fc1.weight": -0.5 * w.flip(0), "out.weight": -out.flip(1)}
    b_al = symmetry.align(spec, a, b)
    torch.testing.assert_close(b_al["fc1.weight"], 0.5 * w)
    torch.testing.assert_close(b_al["out.weight"], out)


# --------------------------------------------------------------------------------------------------
# BatchNorm's sign symmetry (issue 14 item 1)


def bn_flipped(spec, state, seed=0):
    """A copy with about half of the BatchNorm units flipped: pre-BN weights, bias, running mean and gamma
    negated (beta and running variance kept). Written here from the definition, not with symmetry.py."""
    out = {k: v.clone() for k, v in state.items()}
    gen = torch.Generator().manual_seed(seed)
    for layer in unit_structure(spec).hidden:
        if not layer.bn:
            continue
        h = out[layer.weight].shape[0]
        signs = torch.where(torch.rand(h, generator=gen) < 0.5, -1.0, 1.0).double()
        signs[0] = -1.0  # at least one unit per layer
        for name in [layer.weight, layer.bias, f"{layer.bn}.running_mean", f"{layer.bn}.weight"]:
            if name:
                out[name] = out[name] * signs.view(-1, *([1] * (out[name].dim() - 1)))
    return out


def test_the_batchnorm_list_holds_every_batchnorm_case():
    assert {"mlp_bn", "lenet_bn", "vgg11", "vgg16_8x8"} <= set(BATCHNORM)
    assert not {"mlp", "lenet", *BINARY} & set(BATCHNORM)


@pytest.mark.parametrize("name", BATCHNORM)
def test_a_batchnorm_flip_computes_the_same_function_in_eval_and_train_mode(name):
    spec, data, a, _ = trained_pair(name)
    b = bn_flipped(spec, a)
    assert_same_function(spec, data, a, b, positive_factor=False)
    x = data.x_train[:32].double()
    ma, mb = model_of(spec, data, a).train(), model_of(spec, data, b).train()
    with torch.no_grad():
        torch.testing.assert_close(mb(x), ma(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", BATCHNORM)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_canonical_form_removes_the_batchnorm_flip_tensor_by_tensor(name, seed):
    """canonical_form(align(a, random_symmetry(a))) == canonical_form(a), tensor by tensor, with flips."""
    spec, data, a, _ = trained_pair(name)
    for b in (bn_flipped(spec, a, seed), symmetry.random_symmetry(spec, a, seed=seed)):
        flipped = [layer for layer in unit_structure(spec).hidden
                   if layer.bn and bool((b[f"{layer.bn}.weight"] < 0).any())]
        assert flipped  # the copy really holds flipped units
        ca = symmetry.canonical_form(spec, a)
        cb = symmetry.canonical_form(spec, symmetry.align(spec, a, b))
        assert_states_close(cb, ca, tol=1e-9)
        for layer in unit_structure(spec).hidden:
            if layer.bn:
                assert bool((symmetry.canonical_form(spec, b)[f"{layer.bn}.weight"] == 1).all())


@pytest.mark.parametrize("name", BATCHNORM)
def test_flipped_twins_sit_at_geodesic_distance_zero_and_the_geodesic_is_flat(name):
    """Measured before the fix: an MLP-BN and its flipped copy at geodesic distance 6.8, error rising along it."""
    spec, data, a, _ = trained_pair(name)
    b = bn_flipped(spec, a)
    d = paths.distances(spec, a, b)
    assert d["geodesic"] < 1e-6 and d["normalized_aligned"] < 1e-9
    res = paths.path_result(spec, data, a, b, type="geodesic", points=5, bn="interpolate", dtype=torch.float64)
    err_a = error_and_loss(model_of(spec, data, a), data.x_train.double(), data.y_train)[0]
    assert max(res["train_error"]) == pytest.approx(err_a, abs=1.5 / len(data.y_train))


def test_fix_bn_signs_is_a_separate_step_that_only_touches_negative_gammas():
    spec, data, a, _ = trained_pair("mlp_bn")
    b = bn_flipped(spec, a)
    assert all(bool((a[f"{layer.bn}.weight"] > 0).all()) for layer in unit_structure(spec).hidden)
    fixed = symmetry.fix_bn_signs(spec, b)
    assert_same_function(spec, data, b, fixed, positive_factor=False)
    assert_states_close(fixed, a, tol=0)  # the trained net's gammas were all positive: back to a exactly
