"""Samplers: each one fits the digits; RSGD's replicas collapse onto their centre; ADV pre-trains on
randomly labelled, partly zeroed copies; BinaryNet clamping; early stop; determinism; cancel; errors."""
from __future__ import annotations

import pytest
import torch

from workers.landscape import data as D
from workers.landscape import nets, train as T
from workers.landscape.evaluate import error_and_loss


@pytest.fixture(scope="module")
def digits():
    return D.load_dataset("digits")


def mlp(ds, hidden=(64,), seed=0):
    torch.manual_seed(seed)
    return nets.build({"kind": "mlp", "hidden": list(hidden)}, ds.input_shape, ds.n_classes)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("optimizer", sorted(T.OPTIMIZERS))
def test_every_sampler_fits_the_digits(digits, optimizer):
    model = mlp(digits)
    start = error_and_loss(model, digits.x_train, digits.y_train)[0]
    history = T.train(model, digits, optimizer, epochs=100, batch_size=32, target_error=0.005)
    final = error_and_loss(model, digits.x_train, digits.y_train)[0]
    assert start > 0.5 and final < 0.01, (optimizer, start, final)  # the paper's stopping rule, when asked
    assert history[-1]["train_error"] == final  # the stored model is the one evaluated last
    assert history[-1]["phase"] == "train" and history[-1]["epoch"] < 100  # stopped early at the target
    # ADV's minima generalise badly by design (its pre-training fits random labels first, issue 14)
    assert history[-1]["test_error"] < (0.5 if optimizer == "adv" else 0.1)


def test_history_without_target_runs_all_epochs(digits):
    model = mlp(digits)
    history = T.train(model, digits, epochs=3)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) >= {"epoch", "train_error", "train_loss", "test_error", "test_loss", "lr"}
    assert history[0]["lr"] == pytest.approx(0.02) and history[1]["lr"] < history[0]["lr"]  # cosine


def test_rsgd_replicas_collapse_onto_the_centre(digits):
    """Independent initialisations (the group's code): the replicas start far apart and the growing coupling
    gamma = 1e-3 (1.1)^(t 200 / epochs) (the schedule of 200 epochs, scaled to the run) brings them onto their
    centre; the history records both per epoch."""
    coupled = T.train(mlp(digits), digits, "rsgd", epochs=120)
    dist = [h["replica_distance"] for h in coupled]
    assert dist[0] > 1.0  # independent initial weights: far apart from the start
    assert dist[-1] < 0.02 * max(dist)
    steps = -(-len(digits.y_train) // 128)  # per epoch
    assert coupled[-1]["gamma"] == pytest.approx(1e-3 * 1.1 ** ((120 * steps - 1) / steps * 200 / 120), rel=1e-12)
    assert all(a["gamma"] < b["gamma"] for a, b in zip(coupled, coupled[1:]))
    messages = []
    T.train(mlp(digits), digits, "rsgd", epochs=2, progress=lambda f, m: messages.append(m))
    gamma = f"{1e-3 * 1.1 ** ((2 * steps - 1) / steps * 100):.3g}"  # at the epoch's last step
    assert any("epoch 2/2" in m and f"from their centre (gamma {gamma})" in m for m in messages), messages
    # control: without coupling nothing pulls them back
    free = [h["replica_distance"] for h in T.train(mlp(digits), digits, "rsgd", epochs=30, gamma0=0.0)]
    assert free[-1] > 0.5 * max(free) and free[-1] > 20 * dist[-1]


def test_rsgd_replicas_start_from_their_own_initialisations_unless_shared(digits):
    # (the per-epoch schedule: scaled to one epoch, the coupling would merge them within it)
    independent = T.train(mlp(digits), digits, "rsgd", epochs=1, replicas=3, coupling_epochs=None)
    shared = T.train(mlp(digits), digits, "rsgd", epochs=1, replicas=3, replica_init="shared", coupling_epochs=None)
    assert shared[0]["replica_distance"] < 0.2 * independent[0]["replica_distance"]
    again = mlp(digits)
    T.train(again, digits, "rsgd", epochs=1, replicas=3)
    first = mlp(digits)
    T.train(first, digits, "rsgd", epochs=1, replicas=3)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())  # seeded
    other = mlp(digits)
    T.train(other, digits, "rsgd", epochs=1, replicas=3, init_seed=7)  # other replica initialisations
    assert not torch.equal(other.fc1.weight, first.fc1.weight)


def test_init_seed_depends_on_the_sampler_unless_given(digits):
    spec = {"kind": "mlp", "hidden": [16]}
    seeds = {o: T.initial_seed(o, {"seed": 3}) for o in T.OPTIMIZERS}
    assert len(set(seeds.values())) == len(seeds)  # same seed, different samplers: different initialisations
    assert T.initial_seed("sgd", {"seed": 3}) == seeds["sgd"] != T.initial_seed("sgd", {"seed": 4})
    assert T.initial_seed("sgd", {"seed": 3, "init_seed": 11}) == T.initial_seed("rsgd", {"init_seed": 11}) == 11
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = T.initial_model(spec, digits, "sgd", {"seed": 3})
    assert torch.equal(torch.random.get_rng_state(), before)  # the global random state is left alone
    b = T.initial_model(spec, digits, "sgd", {"seed": 3})
    c = T.initial_model(spec, digits, "rsgd", {"seed": 3})
    d = T.initial_model(spec, digits, "rsgd", {"seed": 3, "init_seed": seeds["sgd"]})
    assert torch.equal(a.fc1.weight, b.fc1.weight) and torch.equal(a.fc1.weight, d.fc1.weight)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    help_ = {k: T.OPTIMIZERS["sgd"]["params"][k]["help"] for k in ("seed", "init_seed")}
    assert "minibatch" in help_["seed"] and "initial weights" in help_["init_seed"]


def test_rsgd_result_is_the_centre_of_the_replicas(digits):
    """With y = 2 replicas at distance d from their mean, the model is their centre; the history evaluates it."""
    model = mlp(digits)
    history = T.train(model, digits, "rsgd", epochs=2, replicas=2, gamma0=0.0)
    assert history[-1]["replica_distance"] > 0
    assert error_and_loss(model, digits.x_train, digits.y_train)[0] == history[-1]["train_error"]


def test_adversarial_set_has_random_labels_and_zeroed_pixels(digits):
    x, y = T.adversarial_set(digits, copies=2, zero_fraction=0.1, seed=0)
    n = len(digits.y_train)
    assert len(y) == 3 * n
    assert torch.equal(x[:n], digits.x_train) and torch.equal(y[:n], digits.y_train)
    clean = digits.x_train != 0
    for c in (1, 2):
        xc, yc = x[c * n : (c + 1) * n], y[c * n : (c + 1) * n]
        changed = float((yc != digits.y_train).float().mean())
        assert abs(changed - (1 - 1 / digits.n_classes)) < 0.04
        assert torch.bincount(yc, minlength=10).min() > 0.06 * n  # uniform over the 10 classes
        zeroed = float(((xc == 0) & clean).sum() / clean.sum())
        assert 0.08 < zeroed < 0.12
        untouched = xc != 0
        assert torch.equal(xc[untouched], digits.x_train[untouched])
    assert not torch.equal(y[n : 2 * n], y[2 * n :])  # copies differ


def test_adv_pretrains_on_the_random_labels(digits, monkeypatch):
    seen = {}
    real = T.adversarial_set

    def spy(data, **kw):
        seen["x"], seen["y"] = real(data, **kw)
        seen["kw"] = kw
        return seen["x"], seen["y"]

    monkeypatch.setattr(T, "adversarial_set", spy)
    model = mlp(digits)
    history = T.train(model, digits, "adv", epochs=2, pretrain_epochs=3)  # a cap of 3: not fitted
    n = len(digits.y_train)
    assert seen["kw"] == {"copies": 1, "zero_fraction": 0.1, "seed": 0}
    assert len(seen["y"]) == 2 * n
    assert float((seen["y"][n:] != digits.y_train).float().mean()) > 0.85
    assert [h["phase"] for h in history] == ["pretrain"] * 3 + ["train"] * 2
    # a network pre-trained on half-random labels errs on the adversarial set far more than on the clean one
    pre = history[2]
    assert pre["adversarial_error"] > pre["train_error"] + 0.2
    assert pre["pretrain_fitted"] is False and "cap of 3 epochs" in pre["note"] and "not learned" in pre["note"]
    summary = T.pretraining(history)
    assert summary == {"epochs": 3, "error": pre["adversarial_error"], "fitted": False, "note": pre["note"]}
    assert T.pretraining(history[3:]) is None


def test_adv_pretrains_until_the_random_labels_are_fitted(digits):
    """Issue 14: a pre-training left at 46% error gave minima flatter than SGD's; it now runs to the target."""
    messages = []
    model = mlp(digits, hidden=(128, 128))
    history = T.train(model, digits, "adv", epochs=5, progress=lambda f, m: messages.append(m))
    pre = [h for h in history if h["phase"] == "pretrain"]
    assert 5 < len(pre) < 500  # stopped by the target, not by the cap
    assert pre[-1]["adversarial_error"] <= 0.05 < pre[-2]["adversarial_error"]
    assert pre[-1]["pretrain_fitted"] is True and "note" not in pre[-1]
    assert any("pre-training fitted after" in m for m in messages)
    assert T.pretraining(history)["fitted"] is True
    assert [h["phase"] for h in history[len(pre):]] == ["train"] * 5

def test_binary_network_latent_weights_are_clamped(digits):
    ds = D.load_dataset("digits", {"labels": "parity"})
    for optimizer in ("sgd", "adam"):
        torch.manual_seed(0)
        model = nets.build({"kind": "binary_mlp", "hidden": [128]}, ds.input_shape, ds.n_classes)
        binary = [m.weight.detach() for m in model.modules() if getattr(m, "is_binary", False)]
        assert binary
        start = error_and_loss(model, ds.x_train, ds.y_train)[0]
        T.train(model, ds, optimizer, epochs=10, batch_size=32, lr=5.0 if optimizer == "sgd" else 0.05)
        assert all(float(w.abs().max()) <= 1.0 for w in binary)
        assert all(float((w.abs() == 1).float().mean()) > 0.01 for w in binary)  # the clamp was needed
        final = error_and_loss(model, ds.x_train, ds.y_train)[0]
        assert start > 0.3 and final < 0.03, (optimizer, start, final)


@pytest.mark.parametrize("optimizer", ["sgd", "rsgd", "entropy_sgd", "sam"])
def test_frozen_parameters_are_left_alone(digits, optimizer):
    model = mlp(digits)
    model.fc1.weight.requires_grad_(False)
    frozen = model.fc1.weight.clone()
    bias = model.fc1.bias.clone()
    T.train(model, digits, optimizer, epochs=2)
    assert torch.equal(model.fc1.weight, frozen)
    assert not torch.equal(model.fc1.bias, bias)


def test_seeded_and_deterministic(digits):
    runs = []
    for seed in (0, 0, 1):
        model = mlp(digits)
        T.train(model, digits, "entropy_sgd", epochs=2, seed=seed)
        runs.append(state(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


@pytest.mark.parametrize("optimizer", ["sgd", "rsgd", "adv"])
def test_cancel_stops_at_once_and_restores_the_weights(digits, optimizer):
    model = mlp(digits)
    initial = state(model)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    calls = []

    class Cancelled(Exception):
        pass

    def progress(fraction, message):
        calls.append((fraction, message))
        if len(calls) == 3:  # the second epoch has just ended
            calls.append(len(forwards))
            raise Cancelled("job cancelled")

    with pytest.raises(Cancelled):
        T.train(model, digits, optimizer, epochs=50, progress=progress)
    assert len(forwards) == calls[-1]  # not one more forward pass after the exception
    assert calls[0] == (0.0, f"starting {optimizer}") and "epoch 2/" in calls[2][1]
    assert 0 < calls[1][0] < calls[2][0] < 0.1
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())  # nothing half-done is left


def test_unknown_optimizer_and_bad_parameters(digits):
    with pytest.raises(T.TrainError, match="unknown optimizer 'lbfgs'.*known: adam, adv, entropy_sgd, rsgd, sam, sgd"):
        T.normalize_params("lbfgs", {})
    for optimizer, params, word in [("sgd", {"lr": -1}, "'lr'"), ("sgd", {"rho": 0.1}, "rho"),
                                    ("rsgd", {"replicas": 1}, "'replicas'"), ("sgd", {"epochs": "10"}, "'epochs'"),
                                    ("sam", {"target_error": 2}, "'target_error'"), ("adam", {"beta2": 1.0}, "beta2")]:
        with pytest.raises(T.TrainError, match=word):
            T.normalize_params(optimizer, params)
    assert issubclass(T.TrainError, ValueError)
    p = T.normalize_params("rsgd", {"epochs": 3})
    assert p["epochs"] == 3 and p["lr"] == 0.05 and p["replicas"] == 5 and p["batch_size"] == 128
    assert p["target_error"] is None
    model = mlp(digits)
    before = state(model)
    with pytest.raises(T.TrainError, match="momentun"):
        T.train(model, digits, "sgd", momentun=0.9)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for name, entry in T.OPTIMIZERS.items():  # every parameter is described with a default
        assert entry["description"]
        assert all({"type", "default", "help"} <= set(p) for p in entry["params"].values()), name
        assert T.normalize_params(name, None) == {k: v["default"] for k, v in entry["params"].items()}


# --------------------------------------------------------------------------------------------------
# Issue 24: defaults that reach a minimizer at the job's default budget, and a training that says when not


def test_rsgd_defaults_reach_a_minimizer_in_20_epochs_flatter_than_sgd(digits):
    """Digits MLP (64, 64), every default, 20 epochs: RSGD ended at 89% training error (replicas never merged:
    the coupling grew 1.1 per epoch from 1e-3); its schedule is now the 200-epoch one scaled to the run."""
    from workers.landscape import flatness
    spec = {"kind": "mlp", "hidden": [64, 64]}
    out = {}
    for optimizer in ("rsgd", "sgd"):
        model = T.initial_model(spec, digits, optimizer, {"seed": 1})
        history = T.train(model, digits, optimizer, seed=1)  # the default 20 epochs
        err = error_and_loss(model, digits.x_train, digits.y_train)[0]
        flat = flatness.flatness_result(spec, digits, state(model), sigmas=[0.5], draws=20, seed=0)
        out[optimizer] = (err, flat["delta_mean"][-1], flat["delta_sem"][-1], T.outcome(model, history, optimizer, {}, err))
        print(optimizer, f"train error {100 * err:.2f}%, local energy {100 * flat['delta_mean'][-1]:.2f} "
                         f"+- {100 * flat['delta_sem'][-1]:.2f}%", history[-1].get("replica_distance"))
    (r_err, r_de, r_sem, r_out), (s_err, s_de, s_sem, _) = out["rsgd"], out["sgd"]
    assert r_err < 0.02 and r_out["replica_distance"] < 1e-3 and "did not merge" not in (r_out["warning"] or "")
    assert s_de - r_de > (r_sem ** 2 + s_sem ** 2) ** 0.5  # RSGD flatter by more than the combined SEM


def test_a_training_that_misses_its_target_or_whose_replicas_never_merge_says_so(digits):
    model = mlp(digits)
    history = T.train(model, digits, "sgd", epochs=2)
    err = error_and_loss(model, digits.x_train, digits.y_train)[0]
    o = T.outcome(model, history, "sgd", {"epochs": 2}, err)
    assert o["target_error"] == 0.01 and o["reached_target"] is False and "above the target 1.00%" in o["warning"]
    assert T.outcome(model, history, "sgd", {"target_error": 0.99}, err) == {
        "target_error": 0.99, "reached_target": True, "warning": None}
    model = mlp(digits)  # RSGD with the old per-epoch schedule at 5 epochs: the replicas stay apart
    history = T.train(model, digits, "rsgd", epochs=5, coupling_epochs=None)
    o = T.outcome(model, history, "rsgd", {"epochs": 5, "coupling_epochs": None},
                  error_and_loss(model, digits.x_train, digits.y_train)[0])
    assert not o["reached_target"] and o["replica_distance"] > 1.0
    assert "replicas did not merge" in o["warning"] and f"{o['replica_distance']:.3g}" in o["warning"]


def test_entropy_sgd_defaults_make_several_updates_per_epoch_and_reach_the_target_on_digits(digits, monkeypatch):
    """Digits has 11 minibatches of 128: with L = 20 every Langevin loop was cut short by the epoch's end, one
    weight update per epoch (20 in a 20-epoch run, 1.41% training error). Now L = 5: 3 updates per epoch."""
    p = T.normalize_params("entropy_sgd", {})
    assert p["L"] is None and T.langevin_steps(p, len(digits.y_train)) == 5
    assert T.langevin_steps(p, 60000) == 20 and T.langevin_steps({**p, "L": 7}, 100) == 7  # MNIST, or as given
    spec = {"kind": "mlp", "hidden": [64, 64]}
    model = T.initial_model(spec, digits, "entropy_sgd", {"seed": 1})
    history = T.train(model, digits, "entropy_sgd", seed=1)  # every default: 20 epochs
    err = error_and_loss(model, digits.x_train, digits.y_train)[0]
    assert err < 0.01 and T.outcome(model, history, "entropy_sgd", {}, err)["reached_target"]
    from workers.landscape import flatness  # reported, not asserted: on digits it comes out sharper than SGD
    de = flatness.flatness_result(spec, digits, state(model), sigmas=[0.5], draws=20, seed=0)
    print(f"entropy_sgd: train error {100 * err:.2f}%, local energy {100 * de['delta_mean'][-1]:.2f} "
          f"+- {100 * de['delta_sem'][-1]:.2f}%")
