"""The batched engine (evaluate.evaluate_states) against the plain loop, for every architecture (float64)."""
from __future__ import annotations

import pytest
import torch

from workers.landscape import nets, paths
from workers.landscape.evaluate import (Combination, bn_inputs, evaluate_states, evaluate_states_loop,
                                        recalibrate_bn, recalibrate_states, stack_states, unstack)

from .test_nets import BATCHNORM, BINARY, CASES, model_of, plain_error, trained_pair


def some_points(name):
    """Five different points of CASES[name]: the two networks, a path point, a noisy copy, a path point."""
    spec, data, a, b = trained_pair(name)
    if name in BINARY:  # a, b and a with 10%, 25%, 50% of its latent weights' signs flipped
        gen = torch.Generator().manual_seed(0)
        flips = [{k: torch.where(torch.rand(v.shape, generator=gen) < p, -v, v) if k.endswith("weight") else v
                  for k, v in a.items()} for p in (0.1, 0.25, 0.5)]
        return spec, data, [a, b, *flips]
    states = list(paths.path_states(spec, a, b, "geodesic", [0.0, 0.4, 1.0]))
    gen = torch.Generator().manual_seed(1)
    noisy = {k: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=v.dtype) * v if v.is_floating_point() else v
             for k, v in a.items()}
    linear = next(paths.linear_path(a, b, [0.7]))
    return spec, data, [a, b, states[1], noisy, linear]


def splits_of(data):
    return {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}


def test_the_cases_cover_every_architecture():
    from .test_groups import NEW  # residual networks and layer graphs (issue 15) have their own cases

    covered = {spec["kind"] for spec, _, _ in [*CASES.values(), *NEW.values()]}
    # {"kind": "torchvision", "name": N} is no network of its own: it becomes the service's kind N (or is refused)
    assert nets.normalize_spec({"kind": "torchvision", "name": "vgg13_bn"})["kind"] == "vgg13_bn"
    assert covered == set(nets.ARCHITECTURES) - {"torchvision"}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("recompute", [False, True])
def test_batched_evaluation_equals_the_plain_loop(name, recompute):
    spec, data, states = some_points(name)
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    bn_data = data.x_train if recompute else None
    ref = evaluate_states_loop(model, states, splits_of(data), bn_data=bn_data)
    # one chunk of all points; then one point per chunk and data chunks of 7 inputs
    for kwargs in ({}, {"memory_mb": 1e-6, "chunk": 7, "bn_batch": 4096}):
        got = evaluate_states(model, iter(states), splits_of(data), bn_data=bn_data, **kwargs)
        for split in ("train", "test"):
            assert got[split]["error"] == ref[split]["error"], (split, kwargs)
            torch.testing.assert_close(torch.tensor(got[split]["loss"]), torch.tensor(ref[split]["loss"]),
                                       rtol=1e-10, atol=1e-12)
    # the points differ, and stale statistics would matter: the comparison is not vacuous
    assert len(set(ref["train"]["loss"])) >= 4
    if recompute and name in BATCHNORM:
        stale = evaluate_states(model, states, splits_of(data))["train"]["loss"]
        assert stale[2:] != ref["train"]["loss"][2:]


@pytest.mark.parametrize("name", ["mlp", "mlp_bn", "lenet", "lenet_bn", "vgg16_8x8"])
@pytest.mark.parametrize("type", ["linear", "linear_aligned", "geodesic"])
def test_the_first_layer_as_a_combination_of_the_ends_changes_nothing(name, type):
    spec, data, a, b = trained_pair(name)
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    ts = [0.0, 0.1, 0.35, 0.5, 0.9, 1.0]
    states, first = paths.path_points(spec, a, b, type, ts)
    states = list(states)
    assert isinstance(first, Combination) and first.coef.shape[:2] == (len(ts), 2)
    # the combination reproduces each point's first layer
    for k, s in enumerate(states):
        w = first.coef[k, 0].view(-1, *[1] * (s[first.name].dim() - 1)) * first.bases[0] \
            + first.coef[k, 1].view(-1, *[1] * (s[first.name].dim() - 1)) * first.bases[1]
        torch.testing.assert_close(w, s[first.name].double(), rtol=1e-12, atol=1e-12)
    bn_data = data.x_train if name in BATCHNORM else None
    ref = evaluate_states_loop(model, states, splits_of(data), bn_data=bn_data)
    got = evaluate_states(model, states, splits_of(data), bn_data=bn_data, first=first)
    assert got["train"]["error"] == ref["train"]["error"] and got["test"]["error"] == ref["test"]["error"]
    torch.testing.assert_close(torch.tensor(got["test"]["loss"]), torch.tensor(ref["test"]["loss"]), rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", ["mlp_bn", "lenet_bn", "vgg11"])
def test_recalibrating_many_points_equals_recalibrate_bn_on_each(name):
    spec, data, states = some_points(name)
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    x = bn_inputs(data.x_train, 40, seed=3)
    for batch in (4096, 16):  # one batch; several batches (cumulative average of batch statistics)
        got = recalibrate_states(model, states, x, batch_size=batch)
        for state, new in zip(states, got):
            ref = model_of(spec, data, state)
            recalibrate_bn(ref, x, batch_size=batch)
            for k, v in ref.state_dict().items():
                torch.testing.assert_close(new[k], v, rtol=1e-10, atol=1e-12)
                if k.endswith("running_mean"):
                    assert not torch.equal(new[k], state[k])


def test_bn_inputs_are_a_fixed_subset():
    x = torch.arange(50.0)[:, None]
    sub = bn_inputs(x, 10, seed=1)
    assert len(sub) == 10 and torch.equal(sub, bn_inputs(x, 10, seed=1))
    assert len(set(sub.flatten().tolist())) == 10 and set(sub.flatten().tolist()) <= set(range(50))
    assert bn_inputs(x, None) is x and bn_inputs(x, 80) is x


def test_float32_engine_agrees_with_the_float32_loop_within_a_sample():
    spec, data, states = some_points("lenet_bn")
    model = nets.build(spec, data.input_shape, data.n_classes)
    ref = evaluate_states_loop(model, states, splits_of(data), bn_data=data.x_train)
    got = evaluate_states(model, states, splits_of(data), bn_data=data.x_train)
    n = len(data.y_train)
    assert all(abs(g - r) <= 1 / n + 1e-12 for g, r in zip(got["train"]["error"], ref["train"]["error"]))
    torch.testing.assert_close(torch.tensor(got["train"]["loss"]), torch.tensor(ref["train"]["loss"]), rtol=1e-4, atol=1e-5)


def test_bf16_mode_runs_and_stays_close():
    spec, data, states = some_points("mlp")
    model = nets.build(spec, data.input_shape, data.n_classes)
    ref = evaluate_states(model, states, splits_of(data))
    got = evaluate_states(model, states, splits_of(data), precision="bf16")
    assert all(abs(g - r) <= 0.05 for g, r in zip(got["train"]["error"], ref["train"]["error"]))
    torch.testing.assert_close(torch.tensor(got["train"]["loss"]), torch.tensor(ref["train"]["loss"]), rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="precision"):
        evaluate_states(model, states, splits_of(data), precision="fp8")


def test_the_model_is_left_alone_and_errors_match_independent_references():
    spec, data, states = some_points("lenet_bn")
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = evaluate_states(model, states[:2], splits_of(data))
    assert got["train"]["error"] == [plain_error(spec, data, s) for s in states[:2]]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_stack_and_unstack():
    a = {"w": torch.randn(3, 2), "n": torch.tensor(4)}
    b = {"w": torch.randn(3, 2), "n": torch.tensor(5)}
    stack = stack_states([a, b], dtype=torch.float64)
    assert stack["w"].shape == (2, 3, 2) and stack["w"].dtype == torch.float64 and stack["n"].dtype == torch.int64
    assert torch.equal(unstack(stack, 1)["w"], b["w"].double()) and int(unstack(stack, 0)["n"]) == 4


def test_empty_and_unsupported_inputs():
    spec, data, states = some_points("mlp")
    model = nets.build(spec, data.input_shape, data.n_classes)
    assert evaluate_states(model, [], splits_of(data)) == {"train": {"error": [], "loss": []}, "test": {"error": [], "loss": []}}
    with pytest.raises(TypeError, match="Sequential"):
        evaluate_states(torch.nn.ModuleList([torch.nn.Linear(2, 2)]), states, splits_of(data))
