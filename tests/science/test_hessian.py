"""The `hessian` kind's science (issue 24): top eigenvalues and trace of the training loss's Hessian against an
independent full Hessian (torch.autograd.functional.hessian on a hand-written forward pass, then power
iteration), raw and restricted to the tangent space of the spheres; rescaling changes the raw numbers only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workers.landscape import hessian, nets, symmetry

from .test_nets import make_data, train_steps

SPEC = {"kind": "mlp", "hidden": [6, 5]}
SHAPE, CLASSES = (8,), 3
NAMES = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "out.weight", "out.bias"]


def trained_mlp():
    data = make_data(SHAPE, CLASSES, n_train=80, n_test=16)
    torch.manual_seed(3)
    model = nets.build(SPEC, SHAPE, CLASSES).double()
    train_steps(model, data, steps=40, seed=3)
    return data, {k: v.detach().clone() for k, v in model.state_dict().items()}


def full_hessian(state, x, y):
    """The Hessian of the mean cross-entropy over every parameter, flattened in NAMES order (plain PyTorch)."""
    shapes = [state[n].shape for n in NAMES]
    sizes = [state[n].numel() for n in NAMES]

    def loss(theta):
        w1, b1, w2, b2, w3, b3 = (t.view(s) for t, s in zip(torch.split(theta, sizes), shapes))
        h = torch.relu(x.double() @ w1.T + b1)
        h = torch.relu(h @ w2.T + b2)
        return F.cross_entropy(h @ w3.T + b3, y)

    theta = torch.cat([state[n].double().reshape(-1) for n in NAMES])
    return torch.autograd.functional.hessian(loss, theta)


def power_iteration(m: torch.Tensor, steps: int = 20000, seed: int = 0) -> float:
    """Largest eigenvalue of a symmetric matrix (shifted to be positive semi-definite, so the largest algebraic
    one dominates)."""
    shift = float(m.abs().sum(dim=1).max())  # >= the spectral radius
    a = m + shift * torch.eye(len(m), dtype=m.dtype)
    v = torch.randn(len(m), generator=torch.Generator().manual_seed(seed), dtype=m.dtype)
    for _ in range(steps):
        v = a @ v
        v = v / v.norm()
    return float(v @ a @ v) - shift


def projection_matrix(state) -> torch.Tensor:
    """P on the flat parameters: one unit sphere per hidden unit's incoming weights (fc1, fc2 rows), one for the
    whole output weight matrix; biases free."""
    blocks, offset = [], 0
    n = sum(state[k].numel() for k in NAMES)
    p = torch.eye(n, dtype=torch.float64)
    for name in NAMES:
        t = state[name].double()
        if name.endswith("weight"):
            rows = [t.reshape(-1)] if name == "out.weight" else list(t)
            width = rows[0].numel()
            for r, row in enumerate(rows):
                u = torch.zeros(n, dtype=torch.float64)
                u[offset + r * width: offset + (r + 1) * width] = row / row.norm()
                blocks.append(u)
        offset += t.numel()
    for u in blocks:
        p = p - torch.outer(u, u)
    return p


def test_top_eigenvalue_and_trace_agree_with_an_independent_full_hessian():
    data, state = trained_mlp()
    out = hessian.hessian_result(SPEC, data, state, k=3, probes=200, samples=1000, seed=0)
    assert out["samples"] == 80
    h = full_hessian(state, data.x_train, data.y_train)
    top = power_iteration(h)
    exact = sorted(torch.linalg.eigvalsh(h).tolist(), reverse=True)
    print(f"raw top eigenvalue: service {out['raw']['eigenvalues'][0]:.6g}, power iteration {top:.6g}")
    assert out["raw"]["converged"]
    assert abs(out["raw"]["eigenvalues"][0] - top) <= 1e-3 * abs(top)
    np.testing.assert_allclose(out["raw"]["eigenvalues"], exact[:3], rtol=1e-3)
    trace = float(torch.trace(h))
    assert abs(out["raw"]["trace"] - trace) < 4 * out["raw"]["trace_sem"]
    assert out["raw"]["trace_sem"] < 0.2 * abs(trace)

    canon = symmetry.canonical_form(SPEC, state)
    hc = full_hessian(canon, data.x_train, data.y_train)
    p = projection_matrix(canon)
    php = p @ hc @ p
    top_c = power_iteration(php)
    print(f"canonical top eigenvalue: service {out['canonical']['eigenvalues'][0]:.6g}, power iteration {top_c:.6g}")
    assert abs(out["canonical"]["eigenvalues"][0] - top_c) <= 1e-3 * abs(top_c)
    assert abs(out["canonical"]["trace"] - float(torch.trace(php))) < 4 * out["canonical"]["trace_sem"]
    assert out["tangent_dimension"] == len(p) - (6 + 5 + 1) == round(float(torch.trace(p)))


def test_a_rescaled_copy_changes_the_raw_top_eigenvalue_and_not_the_canonical_one():
    data, state = trained_mlp()
    copy = {k: v.clone() for k, v in state.items()}  # hidden units positively rescaled: the same function and loss
    c1, c2 = torch.linspace(0.3, 3.0, 6, dtype=torch.float64), torch.linspace(2.5, 0.4, 5, dtype=torch.float64)
    copy["fc1.weight"] *= c1[:, None]
    copy["fc1.bias"] *= c1
    copy["fc2.weight"] *= c2[:, None] / c1[None, :]
    copy["fc2.bias"] *= c2
    copy["out.weight"] /= c2[None, :]
    a = hessian.hessian_result(SPEC, data, state, k=1, probes=20, seed=0)
    b = hessian.hessian_result(SPEC, data, copy, k=1, probes=20, seed=0)
    raw_a, raw_b = a["raw"]["eigenvalues"][0], b["raw"]["eigenvalues"][0]
    can_a, can_b = a["canonical"]["eigenvalues"][0], b["canonical"]["eigenvalues"][0]
    print(f"raw top eigenvalue: {raw_a:.6g} vs rescaled copy {raw_b:.6g}; canonical: {can_a:.6g} vs {can_b:.6g}")
    assert abs(a["loss"] - b["loss"]) < 1e-12 and abs(a["loss_canonical"] - b["loss_canonical"]) < 1e-12
    assert abs(raw_a - raw_b) > 0.05 * abs(raw_a)
    assert abs(can_a - can_b) <= 1e-6 * abs(can_a)


def test_binary_networks_and_bad_parameters_are_refused():
    with pytest.raises(hessian.HessianError, match="real-valued"):
        hessian.check({"kind": "binary_mlp", "hidden": [8]})
    data, state = trained_mlp()
    with pytest.raises(hessian.HessianError, match="'k'"):
        hessian.hessian_result(SPEC, data, state, k=0)
