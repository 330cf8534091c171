"""Architectures from specs, their layer plans, and shared helpers for the science tests.

The helpers (CASES, trained_pair, plain_error) are imported by test_symmetry, test_paths and
test_evaluate: tiny networks of every architecture, a few SGD steps on small random data, float64.
"""
from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch
from torch.nn import functional as F

from workers.landscape import graphs, nets
from workers.landscape.data import Dataset
from workers.landscape.evaluate import recalibrate_bn

from .legacy_symmetry import unit_structure

# name -> (spec, input shape, number of classes)
CASES = {
    "mlp": ({"kind": "mlp", "hidden": [12, 10]}, (1, 8, 8), 4),
    "mlp_nobias": ({"kind": "mlp", "hidden": [12, 10], "bias": False}, (1, 8, 8), 4),
    "mlp_bn": ({"kind": "mlp", "hidden": [12, 10], "batchnorm": True}, (1, 8, 8), 4),
    "lenet": ({"kind": "lenet", "channels": [4, 6], "dense": [12]}, (1, 8, 8), 4),
    "lenet_bn": ({"kind": "lenet", "channels": [4, 6], "dense": [12], "batchnorm": True}, (1, 8, 8), 4),
    "vgg11": ({"kind": "vgg", "config": "vgg11", "width": 1 / 16}, (3, 32, 32), 4),
    "vgg16_8x8": ({"kind": "vgg", "config": "vgg16", "width": 1 / 16}, (1, 8, 8), 4),
    "binary_mlp": ({"kind": "binary_mlp", "hidden": [16, 12]}, (1, 8, 8), 4),
    "binary_conv": ({"kind": "binary_conv", "channels": [4, 6], "dense": [16, 12]}, (1, 8, 8), 4),
    "committee": ({"kind": "committee", "hidden": 7}, (20,), 2),
    "perceptron": ({"kind": "perceptron"}, (20,), 2),
    "perceptron3": ({"kind": "perceptron"}, (20,), 3),
}
REAL = [k for k, (spec, _, _) in CASES.items() if not nets.is_binary(spec)]
BINARY = [k for k in CASES if k not in REAL]
# every case whose built network holds a BatchNorm (found from the module, so a new architecture joins by itself)
BATCHNORM = [k for k, (spec, shape, n) in CASES.items()
             if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in nets.build(spec, shape, n).modules())]


def make_data(input_shape: tuple[int, ...], n_classes: int, n_train: int = 96, n_test: int = 48, seed: int = 0) -> Dataset:
    """Gaussian inputs labelled by a random linear teacher (learnable, so training changes the error)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, *input_shape, generator=gen)
    teacher = torch.randn(math.prod(input_shape), n_classes, generator=gen)
    y = (x.flatten(1) @ teacher).argmax(dim=1)
    return Dataset("random", x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes)


def train_steps(model: torch.nn.Module, data: Dataset, steps: int = 12, seed: int = 0) -> None:
    """A few SGD steps; latent weights of binary layers clamped to [-1, 1] as the training helper does."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(data.y_train), generator=gen)[:32]
        loss = F.cross_entropy(model(data.x_train[idx].double()), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m in model.modules():
                if getattr(m, "is_binary", False):
                    m.weight.clamp_(-1, 1)
    model.eval()


@lru_cache(maxsize=None)
def trained_pair(name: str):
    """(spec, data, state_a, state_b): two float64 networks of CASES[name] trained from different seeds.
    BatchNorm statistics are recomputed on the training inputs, so stored and recomputed ones agree."""
    spec, shape, n_classes = CASES[name]
    data = make_data(shape, n_classes)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = nets.build(spec, shape, n_classes).double()
        train_steps(model, data, seed=seed)
        recalibrate_bn(model, data.x_train)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return spec, data, states[0], states[1]


def model_of(spec, data, state, dtype=torch.float64) -> torch.nn.Module:
    model = nets.build(spec, data.input_shape, data.n_classes).to(dtype)
    model.load_state_dict(state)
    return model.eval()


def plain_error(spec, data, state, split: str = "train", batch: int = 16) -> float:
    """Independent reference: a plain loop over the data, batch by batch, float64."""
    model = model_of(spec, data, state)
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            wrong += int((model(x[i : i + batch].double()).argmax(dim=1) != y[i : i + batch]).sum())
    return wrong / len(y)


def logits_of(spec, data, state) -> torch.Tensor:
    with torch.no_grad():
        return model_of(spec, data, state)(torch.cat([data.x_train, data.x_test]).double())


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(nets.ARCHITECTURES))
def test_every_architecture_is_described_and_its_example_builds(kind):
    arch = nets.ARCHITECTURES[kind]
    assert arch["description"] and isinstance(arch["params"], dict)
    for p in arch["params"].values():
        assert {"type", "default"} <= set(p)
    if kind == "torchvision":  # a name: the layouts the service rebuilds become their own kind
        assert nets.normalize_spec(arch["example"]) == nets.normalize_spec({"kind": arch["example"]["name"]})
        return
    spec = nets.normalize_spec(arch["example"])
    # a parameter added later is left out at its default (``default_omitted``): older specs keep their cache keys
    omitted = {k for k, p in arch["params"].items() if p.get("default_omitted") and spec.get(k, p["default"]) == p["default"]}
    assert spec["kind"] == kind and set(spec) == {"kind", *arch["params"]} - omitted
    assert nets.normalize_spec(spec) == spec
    assert nets.normalize_spec({"kind": kind}) == {"kind": kind, **{k: p["default"] for k, p in arch["params"].items()
                                                                    if not p.get("default_omitted")}}
    shape, n_classes = ((3, 32, 32) if kind.startswith("vgg") else (1, 8, 8)), (2 if kind in ("committee", "perceptron") else 10)
    model = nets.build(arch["example"], shape, n_classes)
    assert model(torch.randn(3, *shape)).shape == (3, n_classes)
    assert nets.n_parameters(model) > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_derived_groups_cover_the_state_dict(name):
    """Every float tensor of the built network is permuted by some group or written by the output layer,
    every group's axes split into its units, and binary layers are found from the modules themselves."""
    from workers.landscape import groups

    spec, shape, n_classes = CASES[name]
    state = nets.build(spec, shape, n_classes).state_dict()
    g = groups.unit_groups(spec)
    named = {n for grp in g.groups for n, _ in grp.axes}
    for grp in g.groups:
        n_units = state[grp.axes[0][0]].shape[grp.axes[0][1]]
        assert all(state[n].shape[axis] % n_units == 0 for n, axis in grp.axes), name
    if g.output is not None:
        named |= {x for w in g.output.writers for x in (w.vector, w.offset) if x}
    floats = {k for k, v in state.items() if v.is_floating_point()}
    assert floats <= named
    assert bool(g.binary) == (name in BINARY) == nets.is_binary(spec)


def test_conv_feeding_dense_owns_a_contiguous_block():
    spec = {"kind": "lenet", "channels": [3, 5], "dense": [7]}
    state = nets.build(spec, (1, 8, 8), 10).state_dict()
    layer = unit_structure(spec).hidden[1]
    assert layer.outgoing == (("fc1.weight", 1),)
    assert state["fc1.weight"].shape == (7, 5 * 2 * 2)  # 8x8 -> pool 4x4 -> pool 2x2: block of 4 per channel


def test_lenet_builds_for_mnist_and_digits_and_vgg_for_other_sizes():
    lenet = nets.build({"kind": "lenet"}, (1, 28, 28), 10)
    assert lenet.state_dict()["fc1.weight"].shape == (500, 50 * 7 * 7)
    assert nets.build({"kind": "lenet", "padding": 0}, (1, 28, 28), 10).state_dict()["fc1.weight"].shape == (500, 800)
    assert nets.build({"kind": "lenet"}, (1, 8, 8), 10)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    vgg = nets.build({"kind": "vgg", "config": "vgg11", "width": 0.125}, (3, 20, 20), 7)
    assert vgg(torch.randn(2, 3, 20, 20)).shape == (2, 7)
    assert vgg.state_dict()["conv1.weight"].shape == (8, 3, 3, 3)


@pytest.mark.parametrize("spec, message", [
    ({"kind": "resnet101"}, "unknown architecture kind"),
    ("mlp", "JSON object"),
    ({"kind": "mlp", "hidden": [0]}, "positive integers"),
    ({"kind": "mlp", "hidden": []}, "non-empty"),
    ({"kind": "mlp", "depth": 3}, "unknown parameter"),
    ({"kind": "mlp", "batchnorm": "yes"}, "true or false"),
    ({"kind": "lenet", "kernel": 0}, "'kernel'"),
    ({"kind": "lenet", "padding": 9}, "'padding'"),
    ({"kind": "vgg", "config": "vgg19"}, "'config'"),
    ({"kind": "vgg", "width": 0}, "'width'"),
    ({"kind": "committee", "hidden": [3]}, "'hidden'"),
])
def test_bad_specs_raise_spec_error(spec, message):
    with pytest.raises(nets.SpecError, match=message):
        nets.normalize_spec(spec)


@pytest.mark.parametrize("kind", [k for k in nets.ARCHITECTURES if k not in graphs.ARCHITECTURES])
def test_architecture_tables_are_what_normalize_spec_enforces(kind):
    """Each declared bound of a layer-by-layer architecture's table: the bound itself is accepted, one step
    past it is a SpecError naming the parameter (the tables are the validator's, not a second description)."""
    tried = 0
    for key, p in nets.ARCHITECTURES[kind]["params"].items():
        listed = p["type"].startswith("list[")
        wrap = (lambda v: [v]) if listed else (lambda v: v)  # noqa: E731
        edges = [(p[b], p[b] + step) for b, step in (("min", -1), ("max", 1)) if p.get(b) is not None]
        if p["type"] == "float":
            edges = [(4.0, 4.0 + 1e-9), (1e-9, 0.0)]  # vgg's width, in (0, 4]
        if key == "padding":  # at most the kernel
            edges = [(0, -1), (nets.ARCHITECTURES[kind]["params"]["kernel"]["default"], nets.MAX_KERNEL)]
        bad = [wrap(out) for _, out in edges] + [wrap("many" if p["type"] != "str" else "no-such")]
        if listed and p.get("min_items", 1) >= 1:
            bad.append([])
        base = {"kind": kind, "padding": 0} if key == "kernel" else {"kind": kind}  # a 1x1 kernel: no padding
        for good, _ in edges:
            assert nets.normalize_spec({**base, key: wrap(good)})[key] == wrap(good)
        for value in bad:
            with pytest.raises(nets.SpecError, match=f"'{key}'"):
                nets.normalize_spec({"kind": kind, key: value})
            tried += 1
    assert tried >= 2 * len(nets.ARCHITECTURES[kind]["params"])


def test_build_refuses_what_cannot_work():
    with pytest.raises(nets.SpecError, match="2 classes"):
        nets.build({"kind": "committee", "hidden": 5}, (20,), 3)
    with pytest.raises(nets.SpecError, match="image inputs"):
        nets.build({"kind": "lenet"}, (64,), 10)
    with pytest.raises(nets.SpecError, match="too small"):
        nets.build({"kind": "lenet", "padding": 0}, (1, 8, 8), 10)


def test_binary_layers_use_signs_and_train_through_the_straight_through_estimator():
    model = nets.build({"kind": "binary_mlp", "hidden": [6]}, (5,), 3).double()
    binary = [m for m in model.modules() if getattr(m, "is_binary", False)]
    assert [type(m).__name__ for m in binary] == ["BinaryLinear", "BinaryLinear"]
    assert not any(getattr(m, "is_binary", False) for m in nets.build({"kind": "mlp"}, (5,), 3).modules())
    x = torch.randn(4, 5, dtype=torch.float64)
    w1, w2 = (torch.where(m.weight >= 0, 1.0, -1.0).double() for m in binary)
    expected = torch.sign(x @ w1.T / math.sqrt(5)) @ w2.T / math.sqrt(6)
    torch.testing.assert_close(model(x), expected)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in binary)


def test_committee_and_perceptron_outputs():
    committee = nets.build({"kind": "committee", "hidden": 5}, (4,), 2).double()
    assert list(committee.state_dict()) == ["hidden.weight"]  # output weights fixed to 1: no tensor
    x = torch.randn(6, 4, dtype=torch.float64)
    w = torch.where(committee.hidden.weight >= 0, 1.0, -1.0).double()
    s = torch.sign(x @ w.T / 2).sum(dim=1, keepdim=True) / math.sqrt(5)
    torch.testing.assert_close(committee(x), torch.cat([-s, s], dim=1))
    perceptron = nets.build({"kind": "perceptron"}, (4,), 2).double()
    s = x @ torch.where(perceptron.out.weight >= 0, 1.0, -1.0).double().T / 2
    torch.testing.assert_close(perceptron(x), torch.cat([-s, s], dim=1))
    assert nets.build({"kind": "perceptron"}, (4,), 5).out.weight.shape == (5, 4)


def test_load_weights_checks_shapes_and_values():
    model = nets.build({"kind": "mlp", "hidden": [3]}, (4,), 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc1.weight"] = torch.full((3, 4), float("nan"))
    with pytest.raises(nets.WeightsError, match="NaN"):
        nets.load_weights(model, state)
    del state["out.bias"]
    with pytest.raises(nets.WeightsError, match="missing tensors: out.bias"):
        nets.load_weights(model, state)
