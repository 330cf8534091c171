"""Local energy: zero at sigma 0, growing with sigma on a trained network, invariant to per-unit rescaling,
binary flips, BatchNorm modes, parameter checks. Also home of ``digits_nets`` (trained digits MLPs)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import lru_cache

import pytest
import torch

from workers.landscape import data as D
from workers.landscape import flatness, nets, train
from workers.landscape.evaluate import recalibrate_bn

from .test_nets import plain_error, trained_pair


@lru_cache(maxsize=None)
def digits():
    return D.load_dataset("digits")


@lru_cache(maxsize=None)
def digits_nets(count: int = 3, hidden: tuple[int, ...] = (32,), batchnorm: bool = False, epochs: int = 8):
    """(spec, data, [states]): ``count`` float64 MLPs trained from different seeds on the digits with SGD
    (BatchNorm statistics recomputed on the training inputs afterwards)."""
    ds = digits()
    spec = {"kind": "mlp", "hidden": list(hidden), "batchnorm": batchnorm}
    states = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = nets.build(spec, ds.input_shape, ds.n_classes).double()
        train.train(model, ds, "sgd", epochs=epochs, batch_size=32, lr=0.05, seed=seed)
        recalibrate_bn(model, ds.x_train)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return spec, ds, states


def test_delta_is_zero_at_sigma_zero_and_grows_with_sigma():
    spec, ds, (state, *_) = digits_nets()
    res = flatness.flatness_result(spec, ds, state, draws=6, dtype=torch.float64)
    assert res["kind"] == "multiplicative" and res["draws"] == 6 and res["params"] == "weights" and res["bn"] is None
    assert res["sigma"] == flatness.default_sigmas(spec) and res["sigma"][0] == 0.0 and res["sigma"][-1] == 0.5
    assert len(res["sigma"]) == 11 and all(len(res[k]) == 11 for k in ("delta_mean", "delta_std", "delta_sem"))
    assert res["delta_mean"][0] == 0.0 and res["delta_std"][0] == 0.0
    assert res["base_train_error"] == plain_error(spec, ds, state) < 0.1  # trained
    mean = res["delta_mean"]
    assert mean[-1] > 0.05 and mean[-1] > mean[7] > mean[4] > mean[1] >= 0
    assert all(math.isclose(sem, sd / math.sqrt(6)) for sem, sd in zip(res["delta_sem"], res["delta_std"]))
    assert max(res["delta_std"]) > 0


def test_delta_is_invariant_to_rescaling_units():
    """Multiplicative noise: scaling a unit's incoming weights by c and its outgoing ones by 1/c changes
    nothing, draw by draw (same seed)."""
    spec, ds, (state, *_) = digits_nets()
    c = torch.exp(torch.randn(32, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    scaled = dict(state)
    scaled["fc1.weight"] = state["fc1.weight"] * c[:, None]
    scaled["fc1.bias"] = state["fc1.bias"] * c
    scaled["out.weight"] = state["out.weight"] / c[None, :]
    sigmas = [0.0, 0.1, 0.3]
    r1 = flatness.flatness_result(spec, ds, state, sigmas=sigmas, draws=3, dtype=torch.float64)
    r2 = flatness.flatness_result(spec, ds, scaled, sigmas=sigmas, draws=3, dtype=torch.float64)
    assert r1["delta_mean"] == r2["delta_mean"] and r1["delta_mean"][-1] > 0
    # additive noise of the same size would see the scales: check the states really differ
    assert not torch.allclose(scaled["fc1.weight"], state["fc1.weight"])


def test_which_tensors_get_noise():
    spec, data, a, _ = trained_pair("mlp_bn")
    model = nets.build(spec, data.input_shape, data.n_classes)
    weights = flatness.noised_names(spec, model, "weights")
    everything = flatness.noised_names(spec, model, "all")
    assert weights == ["fc1.weight", "fc2.weight", "out.weight"]
    assert set(everything) == {n for n, _ in model.named_parameters()} and "bn1.weight" in everything
    assert not any("running" in n for n in everything)
    (s1, s2), = [list(flatness.multiplicative_states(a, weights, [0.1, 0.2], draws=1, seed=3))]
    for k in a:
        if k in weights:
            z1, z2 = (s1[k] / a[k] - 1) / 0.1, (s2[k] / a[k] - 1) / 0.2
            torch.testing.assert_close(z1, z2)  # one z per draw, shared by the sigmas
            assert 0.5 < float(z1.std()) < 1.5
        else:
            assert torch.equal(s1[k], a[k])


def test_binary_networks_flip_a_fraction_of_their_weights():
    spec, data, a, _ = trained_pair("binary_mlp")
    from workers.landscape import symmetry
    base = symmetry.binarized(spec, a)
    names = ["fc1.weight", "fc2.weight", "out.weight"]
    pts = list(flatness.flipped_states(base, names, [0.0, 0.1, 0.3], draws=2, seed=0))
    assert len(pts) == 6
    for d in range(2):
        flipped = [{k: (pts[3 * d + i][k] != base[k]) for k in names} for i in range(3)]
        for i, eps in enumerate([0.0, 0.1, 0.3]):
            for k in names:
                assert int(flipped[i][k].sum()) == round(eps * base[k].numel())
                assert set(pts[3 * d + i][k].unique().tolist()) <= {-1.0, 1.0}
        assert all(bool((flipped[1][k] <= flipped[2][k]).all()) for k in names)  # nested
    res = flatness.flatness_result(spec, data, a, dtype=torch.float64)
    assert res["kind"] == "flip" and res["draws"] == 10 and res["sigma"] == flatness.FLIP_FRACTIONS
    assert res["delta_mean"][0] == 0.0 and res["base_train_error"] == plain_error(spec, data, a)
    assert res["delta_mean"][-1] > 0


def test_batchnorm_statistics_recomputed_per_draw_or_kept():
    spec, ds, (state, *_) = digits_nets(count=1, batchnorm=True)
    kw = dict(sigmas=[0.0, 0.3], draws=3, dtype=torch.float64)
    rec = flatness.flatness_result(spec, ds, state, **kw)
    keep = flatness.flatness_result(spec, ds, state, bn="keep", **kw)
    sub = flatness.flatness_result(spec, ds, state, bn_samples=300, **kw)
    assert rec["bn"] == "recompute" and keep["bn"] == "keep"
    assert rec["base_train_error"] == keep["base_train_error"] == plain_error(spec, ds, state)  # stored = recomputed
    assert rec["delta_mean"][1] > 0 and keep["delta_mean"][1] > 0 and rec["delta_mean"][1] != keep["delta_mean"][1]
    assert sub["delta_mean"][1] != rec["delta_mean"][1]


def test_progress_and_bad_parameters():
    spec, ds, (state, *_) = digits_nets()
    seen = []
    flatness.flatness_result(spec, ds, state, sigmas=[0.0, 0.1, 0.2], draws=2, progress=lambda f, m: seen.append((f, m)))
    assert len(seen) == 5 and seen[-1][0] == 1.0 and "noise draw" in seen[-1][1]
    for bad in ({"sigmas": [-0.1]}, {"sigmas": []}, {"sigmas": "0.1"}, {"sigmas": [float("nan")]},
                {"draws": 0}, {"draws": 2.5}, {"params": "biases"}, {"bn": "stale"}):
        with pytest.raises(flatness.FlatnessError):
            flatness.flatness_result(spec, ds, state, **bad)
    assert flatness.default_sigmas({"kind": "lenet"})[-1] == 0.25
    assert flatness.default_sigmas({"kind": "vgg"})[-1] == 0.08 and len(flatness.default_sigmas({"kind": "vgg"})) == 11


@pytest.mark.parametrize("name", ["mlp", "lenet_bn"])
def test_the_first_layer_combination_reproduces_the_noisy_states(name):
    spec, data, a, _ = trained_pair(name)
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    names = flatness.noised_names(spec, model, "all")
    sigmas = [0.1, 0.25, 0.5]
    states = [a, *flatness.multiplicative_states(a, names, sigmas, draws=3, seed=4)]
    comb = flatness.first_layer_combination(a, names, names[0], sigmas, draws=3, seed=4)
    assert len(comb) == 10 and comb.n_bases == 4 and comb.uniform()
    sel = comb.select(4, 7)  # the second draw: bases w and w * z_2 only, made for that chunk alone
    full = comb.select(0, 10)  # (an earlier draw than the last asked for: the noise stream starts again)
    assert full.coef.shape[:2] == (10, 4) and full.uniform()
    for k, s in enumerate(states):
        w = sum(full.coef[k, j, 0] * full.bases[j] for j in range(4))
        torch.testing.assert_close(w, s[comb.name], rtol=1e-12, atol=1e-12)
    assert len(sel.bases) == 2 and torch.equal(sel.bases[1], full.bases[2])
    torch.testing.assert_close(sel.coef[:, 1, 0], torch.tensor(sigmas, dtype=torch.float64))
    from workers.landscape.evaluate import evaluate_states, evaluate_states_loop
    splits = {"train": (data.x_train, data.y_train)}
    ref = evaluate_states_loop(model, states, splits, bn_data=data.x_train)
    got = evaluate_states(model, states, splits, bn_data=data.x_train, first=comb)
    assert got["train"]["error"] == ref["train"]["error"] and len(set(ref["train"]["loss"])) == 10


_BUDGET_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from workers.landscape import cost, data, flatness, nets
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
ds = data.load_dataset("digits", {})
spec = {"kind": "mlp", "hidden": [16]}
state = nets.build(spec, ds.input_shape, ds.n_classes).state_dict()
flatness.flatness_result(spec, ds, state, sigmas=[0.0, 0.1, 0.3], draws=2, device="cpu")  # warm: the baseline
base = status("VmRSS")
budget = base + int(sys.argv[2]) * 2**20
cost.set_memory_budget(budget)
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark restarts from the baseline
out = flatness.flatness_result(spec, ds, state, sigmas=[0.0, 0.1, 0.3], draws=int(sys.argv[1]), device="cpu")
print(json.dumps({"baseline": base, "budget": budget, "peak": status("VmHWM"), "draws": out["draws"]}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset the high-water mark")
def test_many_draws_stay_within_the_worker_memory_budget():
    """Issue 26: a flatness job's memory grew as ~256 B x draws^2 (a coefficient per point and draw). A process
    with a budget of its own baseline + 96 MiB evaluates 3,000 draws x 2 noise levels (6,001 points; the old
    code's coefficients alone were 6,001 x 3,001 x 16 units of float64, 2.3 GB) and its peak resident memory
    stays under the budget."""
    out = subprocess.run([sys.executable, "-c", _BUDGET_CHILD, "3000", "96"], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["draws"] == 3000
    assert r["peak"] <= r["budget"], {k: v / 2**20 for k, v in r.items()}
