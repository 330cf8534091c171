"""Plain evaluation, evaluation of many states, BatchNorm recalibration."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from workers.landscape import nets
from workers.landscape.evaluate import error_and_loss, evaluate_states, has_batchnorm, recalibrate_bn

from .test_nets import model_of, plain_error, trained_pair


def test_error_and_loss_is_the_plain_reference():
    spec, data, a, _ = trained_pair("lenet")
    model = model_of(spec, data, a)
    err, loss = error_and_loss(model, data.x_train, data.y_train, batch_size=7)
    assert err == plain_error(spec, data, a)
    with torch.no_grad():
        expected = F.cross_entropy(model(data.x_train.double()), data.y_train).item()
    assert abs(loss - expected) < 1e-10


def test_evaluate_states_equals_one_evaluation_per_state():
    spec, data, a, b = trained_pair("mlp")
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    seen = []
    out = evaluate_states(model, [a, b, a], {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)},
                          progress=lambda f, m: seen.append(f), total=3)
    assert out["train"]["error"] == [plain_error(spec, data, s) for s in (a, b, a)]
    assert out["test"]["error"] == [plain_error(spec, data, s, "test") for s in (a, b, a)]
    assert out["train"]["loss"][0] == out["train"]["loss"][2] != out["train"]["loss"][1]
    assert seen == [1 / 3, 2 / 3, 1.0]


def test_recalibrate_bn_gives_the_data_statistics():
    spec, data, a, _ = trained_pair("mlp_bn")
    model = model_of(spec, data, a)
    with torch.no_grad():
        model.bn1.running_mean.fill_(5.0)
        model.bn1.running_var.fill_(9.0)
    weights_before = {k: v.clone() for k, v in model.named_parameters()}
    recalibrate_bn(model, data.x_train)
    assert not model.training and model.bn1.momentum == 0.1
    with torch.no_grad():
        z = model.fc1(model.flatten(data.x_train.double()))  # (n, 12) pre-BN activations
    torch.testing.assert_close(model.bn1.running_mean, z.mean(dim=0))
    torch.testing.assert_close(model.bn1.running_var, z.var(dim=0, unbiased=True))
    for k, v in model.named_parameters():
        assert torch.equal(v, weights_before[k])
    # several batches: the mean of equal batches' means is still exact
    recalibrate_bn(model, data.x_train, batch_size=32)
    torch.testing.assert_close(model.bn1.running_mean, z.mean(dim=0))


def test_evaluate_states_recomputes_stale_batchnorm_statistics():
    spec, data, a, _ = trained_pair("mlp_bn")
    stale = dict(a)
    stale["bn1.running_mean"] = a["bn1.running_mean"] + 3.0
    stale["bn2.running_var"] = a["bn2.running_var"] * 50
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    assert has_batchnorm(model) and not has_batchnorm(nets.build({"kind": "mlp"}, (4,), 2))
    splits = {"train": (data.x_train, data.y_train)}
    plain = evaluate_states(model, [stale], splits)["train"]["error"][0]
    recomputed = evaluate_states(model, [stale], splits, bn_data=data.x_train)["train"]["error"][0]
    assert recomputed == plain_error(spec, data, a)  # a's statistics are the recomputed ones
    assert plain != recomputed


def test_progress_exception_propagates():
    spec, data, a, b = trained_pair("mlp")
    model = nets.build(spec, data.input_shape, data.n_classes)

    def stop(fraction, message):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_states(model, [a, b], {"train": (data.x_train, data.y_train)}, progress=stop, total=2)
