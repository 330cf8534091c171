"""Unit groups derived from the graph (issue 15): every architecture of the catalogue, random layer graphs,
the derivation against today's per-architecture implementation, and refusals (float64, tiny networks)."""
from __future__ import annotations

import random
from functools import lru_cache

import pytest
import torch

from workers.landscape import evaluate, groups, nets, paths, symmetry

from . import legacy_symmetry
from .legacy_symmetry import unit_structure
from .test_nets import BINARY, CASES, REAL, make_data, train_steps
from .test_symmetry import assert_same_function, assert_states_close

STEM = [{"type": "conv", "out": 4, "kernel": 3, "padding": 1, "bias": False}, {"type": "batchnorm"}, {"type": "relu"}]
NEW = {  # name -> (spec, input shape, classes)
    "resnet8": ({"kind": "resnet", "depth": 8, "width": 0.25}, (3, 8, 8), 4),
    "resnet14_narrow": ({"kind": "resnet", "depth": 14, "width": 0.125}, (3, 8, 8), 3),
    "resnet8_option_a": ({"kind": "resnet", "depth": 8, "width": 0.25, "shortcut": "A"}, (3, 8, 8), 4),
    "resnet14_option_a": ({"kind": "resnet", "depth": 14, "width": 0.375, "shortcut": "A"}, (3, 8, 8), 3),
    "graph_pad_shortcut": ({"kind": "graph", "layers": STEM + [
        {"type": "add", "branch": [
            {"type": "conv", "out": 7, "kernel": 3, "stride": 2, "padding": 1, "bias": False}, {"type": "batchnorm"},
            {"type": "relu"}, {"type": "conv", "out": 7, "kernel": 3, "padding": 1}, {"type": "batchnorm"}],
         "shortcut": "pad", "stride": 2},
        {"type": "relu"},
        {"type": "add", "branch": [
            {"type": "conv", "out": 7, "kernel": 3, "padding": 1, "bias": False}, {"type": "batchnorm"},
            {"type": "relu"}, {"type": "conv", "out": 7, "kernel": 3, "padding": 1}, {"type": "batchnorm"}],
         "shortcut": "identity"},
        {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out": 5}, {"type": "relu"}, {"type": "linear"}]},
        (3, 8, 8), 3),
    "resnet18": ({"kind": "resnet18", "width": 0.0625}, (3, 16, 16), 4),
    "resnet50": ({"kind": "resnet50", "width": 0.0625}, (3, 16, 16), 3),
    "resnet34": ({"kind": "resnet34", "width": 0.0625}, (1, 16, 16), 3),
    "vgg11_bn": ({"kind": "vgg11_bn", "width": 0.0625, "hidden": 8}, (3, 32, 32), 3),
    "vgg16_bn": ({"kind": "vgg16_bn", "width": 0.0625, "hidden": 6}, (1, 32, 32), 3),
    "vgg13_bn": ({"kind": "vgg13_bn", "width": 0.0625, "hidden": 5}, (3, 32, 32), 3),
    "vgg19_bn": ({"kind": "vgg19_bn", "width": 0.0625, "hidden": 4}, (1, 32, 32), 3),
    "wide_resnet50_2": ({"kind": "wide_resnet50_2", "width": 0.0625}, (3, 16, 16), 3),
    "graph_example": (nets.ARCHITECTURES["graph"]["example"], (3, 8, 8), 4),
    "graph_conv_shortcut": ({"kind": "graph", "layers": STEM + [
        {"type": "add", "branch": [
            {"type": "conv", "out": 6, "kernel": 3, "stride": 2, "padding": 1}, {"type": "batchnorm"}, {"type": "relu"},
            {"type": "conv", "out": 6, "kernel": 3, "padding": 1}, {"type": "batchnorm"}],
         "shortcut": "conv_bn", "stride": 2},
        {"type": "relu"}, {"type": "maxpool"}, {"type": "flatten"}, {"type": "dropout", "p": 0.2},
        {"type": "linear", "out": 7}, {"type": "relu"}, {"type": "linear"}]}, (3, 8, 8), 4),
    "graph_mlp_gelu_residual": ({"kind": "graph", "layers": [
        {"type": "flatten"}, {"type": "linear", "out": 9}, {"type": "gelu"}, {"type": "linear", "out": 8},
        {"type": "batchnorm"}, {"type": "relu"},
        {"type": "add", "branch": [{"type": "linear", "out": 8}, {"type": "batchnorm"}, {"type": "relu"},
                                   {"type": "linear", "out": 8}, {"type": "batchnorm"}]},
        {"type": "relu"}, {"type": "linear"}]}, (2, 3, 3), 3),
    "graph_residual_first": ({"kind": "graph", "layers": [
        {"type": "avgpool", "kernel": 2},
        {"type": "add", "branch": [{"type": "conv", "out": 3, "kernel": 3, "padding": 1}, {"type": "relu"},
                                   {"type": "conv", "out": 3, "kernel": 1}, {"type": "batchnorm"}]},
        {"type": "relu"}, {"type": "conv", "out": 5, "kernel": 3, "padding": 1}, {"type": "relu"},
        {"type": "adaptive_avgpool"}, {"type": "flatten"}, {"type": "linear"}]}, (3, 8, 8), 3),
}


def random_graph(seed: int) -> dict:
    """A random valid small layer graph: stem, 1-3 random blocks, a head."""
    rng = random.Random(seed)
    c = rng.choice([3, 4, 5])
    layers = [{"type": "conv", "out": c, "kernel": 3, "padding": 1, "bias": rng.random() < 0.5}]
    layers += [{"type": "batchnorm"}] if rng.random() < 0.7 else []
    layers += [{"type": "relu"}]
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["plain", "identity", "conv_bn", "pool", "gelu"])
        if kind == "plain":
            c = rng.choice([3, 4, 6])
            layers += [{"type": "conv", "out": c, "kernel": rng.choice([1, 3]), "padding": 1},
                       {"type": "batchnorm"}, {"type": "relu"}]
        elif kind in ("identity", "conv_bn"):
            out = c if kind == "identity" else rng.choice([4, 6])
            stride = 1 if kind == "identity" else rng.choice([1, 2])
            layers += [{"type": "add", "branch": [
                {"type": "conv", "out": out, "kernel": 3, "stride": stride, "padding": 1, "bias": False},
                {"type": "batchnorm"}, {"type": "relu"},
                {"type": "conv", "out": out, "kernel": 3, "padding": 1, "bias": rng.random() < 0.5},
                {"type": "batchnorm"}], "shortcut": kind, "stride": stride}, {"type": "relu"}]
            c = out
        elif kind == "pool":
            layers += [{"type": rng.choice(["maxpool", "avgpool"]), "kernel": 2}]
        else:
            layers += [{"type": "conv", "out": c, "kernel": 3, "padding": 1}, {"type": "gelu"}]
    if rng.random() < 0.5:
        layers += [{"type": "adaptive_avgpool"}, {"type": "flatten"}]
    else:
        layers += [{"type": "flatten"}, {"type": "linear", "out": rng.choice([5, 7])}, {"type": "relu"}]
    layers += [{"type": "dropout", "p": 0.1}] if rng.random() < 0.3 else []
    return {"kind": "graph", "layers": layers + [{"type": "linear"}]}


for _seed in range(6):
    NEW[f"random_graph_{_seed}"] = (random_graph(_seed), (3, 8, 8), 3)


@lru_cache(maxsize=None)
def trained(name: str):
    """(spec, data, a, b): two float64 networks of NEW[name] from different seeds, a few SGD steps, BatchNorm
    statistics recomputed on the training inputs."""
    spec, shape, n_classes = NEW[name]
    data = make_data(shape, n_classes, n_train=64, n_test=32)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = nets.build(spec, shape, n_classes).double()
        with torch.no_grad():  # non-trivial BatchNorm affine parameters, negative gammas included
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.weight.uniform_(-1.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
        train_steps(model, data, steps=4, seed=seed)
        evaluate.recalibrate_bn(model, data.x_train)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return spec, data, states[0], states[1]


ALL_NEW = sorted(NEW)


@pytest.mark.parametrize("name", ALL_NEW)
def test_random_symmetry_keeps_the_function_and_alignment_gives_the_same_canonical_form(name):
    spec, data, a, _ = trained(name)
    b = symmetry.random_symmetry(spec, a, seed=7)
    assert paths.per_parameter_distance(spec, a, b) > 1e-3
    assert_same_function(spec, data, a, b, positive_factor=True)
    ca = symmetry.canonical_form(spec, a)
    assert_same_function(spec, data, a, ca, positive_factor=True)
    assert_states_close(symmetry.canonical_form(spec, ca), ca, tol=1e-12)
    assert_states_close(symmetry.canonical_form(spec, symmetry.align(spec, a, b)), ca, tol=1e-9)
    d = paths.distances(spec, a, b)
    assert d["normalized_aligned"] < 1e-9 and d["geodesic"] < 1e-5 and d["normalized"] > 1e-3


@pytest.mark.parametrize("name", ALL_NEW)
def test_canonical_batchnorm_units_have_gamma_plus_one_and_streams_unit_norm(name):
    spec, _, a, _ = trained(name)
    c = symmetry.canonical_form(spec, a)
    g = groups.unit_groups(spec)
    for seg in g.segments:
        if seg.flip:  # BatchNorm units: unit pre-BN weights, gamma of the BN made +1 by its scale and flip
            torch.testing.assert_close(symmetry.segment_rows(c, seg).norm(dim=1), torch.ones(len(c[seg.bns[0] + ".weight"]), dtype=torch.float64))
        if seg.scaled and all(w.bn for w in seg.writers):
            rows = symmetry.segment_rows(c, seg)
            torch.testing.assert_close(rows.norm(dim=1), torch.ones(len(rows), dtype=torch.float64))
            if len(seg.writers) == 1:
                assert torch.equal(rows.flatten(), torch.ones(len(rows), dtype=torch.float64))


@pytest.mark.parametrize("name", ALL_NEW)
def test_path_ends_equal_the_networks_and_the_engine_equals_the_loop(name):
    spec, data, a, b = trained(name)
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    splits = {"train": (data.x_train.double(), data.y_train)}
    ca, cb = symmetry.canonical_form(spec, a), symmetry.canonical_form(spec, symmetry.align(spec, a, b))
    for type, (start, end) in {"linear": (a, b), "linear_aligned": (a, symmetry.align(spec, a, b)),
                               "geodesic": (ca, cb)}.items():
        states, first = paths.path_points(spec, a, b, type, [0.0, 0.5, 1.0])
        states = list(states)
        assert_states_close(states[0], start, tol=1e-12)
        assert_states_close(states[-1], end, tol=1e-12)
        engine = evaluate.evaluate_states(model, states, splits, bn_data=data.x_train.double(), first=first)
        loop = evaluate.evaluate_states_loop(model, states, splits, bn_data=data.x_train.double())
        assert engine["train"]["error"] == loop["train"]["error"], type
        torch.testing.assert_close(torch.tensor(engine["train"]["loss"]), torch.tensor(loop["train"]["loss"]))


@pytest.mark.parametrize("name", REAL)
def test_existing_architectures_keep_their_canonical_form_and_alignment(name):
    """Today's per-layer implementation (tests/science/legacy_symmetry.py, the code before issue 15) plus the
    BatchNorm sign flip (gamma = +1) gives the groups' canonical form, tensor by tensor; alignments agree (plus
    the flips of b's BatchNorm units to a's gamma signs, issue 24)."""
    from .test_nets import trained_pair

    spec, _, a, b = trained_pair(name)
    old = legacy_symmetry.canonical_form(spec, a)
    for layer in unit_structure(spec).hidden:
        if layer.bn:
            signs = torch.where(old[f"{layer.bn}.weight"] >= 0, 1.0, -1.0).double()
            for t in [layer.weight, layer.bias, f"{layer.bn}.running_mean", f"{layer.bn}.weight"]:
                if t:
                    old[t] = legacy_symmetry.scale_axis(old[t], 0, signs)
    assert_states_close(symmetry.canonical_form(spec, a), old, tol=1e-12)
    expected = legacy_symmetry.align(spec, a, b)  # plus the BatchNorm units flipped to a's gamma signs
    for layer in unit_structure(spec).hidden:
        if layer.bn:
            signs = torch.where((expected[f"{layer.bn}.weight"] < 0) != (a[f"{layer.bn}.weight"] < 0), -1.0, 1.0).double()
            for t in [layer.weight, layer.bias, f"{layer.bn}.running_mean", f"{layer.bn}.weight"]:
                if t:
                    expected[t] = legacy_symmetry.scale_axis(expected[t], 0, signs)
    assert_states_close(symmetry.align(spec, a, b), expected, tol=0)


@pytest.mark.parametrize("name", BINARY)
def test_binary_networks_keep_their_canonical_form_and_alignment(name):
    """Binary nets on the derived groups: the per-layer code's canonical form (signs, flippable units with
    their first weight +1) and alignment (permutations and flips), tensor by tensor, exactly."""
    from .test_nets import trained_pair

    spec, _, a, b = trained_pair(name)
    assert_states_close(symmetry.canonical_form(spec, a), legacy_symmetry.canonical_form(spec, a), tol=0)
    assert_states_close(symmetry.align(spec, a, b), legacy_symmetry.align(spec, a, b), tol=0)
    assert_states_close(symmetry.binarized(spec, b), legacy_symmetry.binarized(spec, b), tol=0)


@pytest.mark.parametrize("name", BINARY)
def test_binary_flips_are_found_where_the_per_layer_description_had_them(name):
    """A unit is sign-flippable exactly where it was written by hand: sign units read by a next layer with
    weights and no max-pool between (not a binary conv's units, not a committee's, which its vote reads
    with fixed weights); every weight is binary, and the groups permute the same tensors and axes."""
    spec = CASES[name][0]
    g, s = groups.unit_groups(spec), unit_structure(spec)
    flippable = {w.vector for seg in g.segments if seg.negate for w in seg.writers}
    assert flippable == {layer.weight for layer in s.hidden if layer.flip}
    assert g.binary == g.weights == tuple(s.weights())
    assert not any(seg.scaled or seg.flip for seg in g.segments)
    by_layer = [{(n, 0) for n in [layer.weight]} | set(layer.outgoing) for layer in s.hidden]
    assert [set(grp.axes) for grp in g.groups] == by_layer
    for seg in g.segments:
        if seg.negate:
            layer = next(layer for layer in s.hidden if layer.weight == seg.vectors()[0])
            assert seg.readers == tuple(n for n, _ in layer.outgoing)


def test_a_flipped_binary_unit_computes_the_same_function_and_a_pooled_one_does_not():
    """The flip that the derivation allows is a real symmetry, and the one it refuses (a binary conv's unit,
    before its max-pool) is not: written here from the definition, not with symmetry.py."""
    spec = {"kind": "binary_conv", "channels": [4], "dense": [6]}
    torch.manual_seed(0)
    model = nets.build(spec, (1, 8, 8), 3).double()
    x = torch.randn(64, 1, 8, 8, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def out(st):
        model.load_state_dict(st)
        with torch.no_grad():
            return model(x)

    base = out(state)
    dense = dict(state, **{"fc1.weight": state["fc1.weight"].clone(), "out.weight": state["out.weight"].clone()})
    dense["fc1.weight"][2] *= -1
    dense["out.weight"][:, 2] *= -1
    torch.testing.assert_close(out(dense), base, rtol=0, atol=0)
    conv = dict(state, **{"conv1.weight": state["conv1.weight"].clone(), "fc1.weight": state["fc1.weight"].clone()})
    conv["conv1.weight"][1] *= -1
    block = conv["fc1.weight"].shape[1] // 4
    conv["fc1.weight"][:, block:2 * block] *= -1
    assert not torch.equal(out(conv), base)
    negating = {seg.vectors()[0]: seg.negate for seg in groups.unit_groups(spec).segments}
    assert negating == {"conv1.weight": False, "fc1.weight": True}


def test_resnet_streams_are_one_group_with_every_writer_and_reader():
    g = groups.unit_groups({"kind": "resnet", "depth": 8, "width": 0.25})
    assert len(g.groups) == 6  # 3 stream groups + 3 blocks' internal channels
    streams = [s for s in g.segments if len(s.writers) > 1 or s.vectors() == ["bn1.weight", "layer1.0.bn2.weight"]]
    assert [s.vectors() for s in streams] == [
        ["bn1.weight", "layer1.0.bn2.weight"],
        ["layer2.0.bn2.weight", "layer2.0.downsample.1.weight"],
        ["layer3.0.bn2.weight", "layer3.0.downsample.1.weight"]]
    assert streams[0].readers == ("layer1.0.conv1.weight", "layer2.0.conv1.weight", "layer2.0.downsample.0.weight")
    assert streams[2].readers == ("fc.weight",)
    assert all(s.scaled and not s.flip for s in streams)
    pre_bn = [s for s in g.segments if s.flip]
    assert len(pre_bn) == 1 + 3 * 2 + 2  # stem, two convs per block, two shortcut convs
    assert g.output.vectors() == ["fc.weight"] and g.weights[0] == "conv1.weight"


def test_gelu_units_keep_permutations_only():
    spec = NEW["graph_mlp_gelu_residual"][0]
    g = groups.unit_groups(spec)
    before_gelu = next(s for s in g.segments if s.vectors() == ["1.weight"])
    assert not before_gelu.scaled and not before_gelu.flip
    assert any(("1.weight", 0) in grp.axes for grp in g.groups)  # still permuted


@pytest.mark.parametrize("layers, message", [
    ([{"type": "conv", "out": 4}, {"type": "tanh"}, {"type": "flatten"}, {"type": "linear"}], "sign flip"),
    ([{"type": "flatten"}, {"type": "linear", "out": 4}, {"type": "layernorm"}, {"type": "linear"}], "LayerNorm"),
    ([{"type": "conv", "out": 4}, {"type": "batchnorm"}, {"type": "conv", "out": 4}, {"type": "flatten"},
      {"type": "linear"}], "no activation"),
    ([{"type": "conv", "out": 4, "padding": 1}, {"type": "relu"},
      {"type": "add", "branch": [{"type": "conv", "out": 4, "padding": 1}, {"type": "relu"},
                                 {"type": "conv", "out": 4, "padding": 1}]}, {"type": "relu"}, {"type": "flatten"},
      {"type": "linear"}], "no BatchNorm"),
    ([{"type": "conv", "out": 4}, {"type": "relu"}, {"type": "linear"}], "put a 'flatten' before it"),
    ([{"type": "conv", "out": 4}, {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out": 3}], "leave out 'out'"),
    ([{"type": "conv", "out": 4, "padding": 1}, {"type": "relu"},
      {"type": "add", "branch": [{"type": "conv", "out": 6, "padding": 1}, {"type": "batchnorm"}]},
      {"type": "flatten"}, {"type": "linear"}], "use shortcut \"conv_bn\""),
])
def test_layer_graphs_with_unhandled_symmetries_are_refused_with_a_reason(layers, message):
    with pytest.raises(nets.SpecError, match=message.replace("(", r"\(")):
        spec = nets.normalize_spec({"kind": "graph", "layers": layers})
        nets.build(spec, (3, 8, 8), 3)


def test_torchvision_state_dicts_load_into_the_same_names():
    import torchvision
    tv = torchvision.models.resnet18(num_classes=5)
    tv.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # the first conv set for 1-channel inputs
    model = nets.build({"kind": "resnet18"}, (1, 16, 16), 5)
    nets.load_weights(model, tv.state_dict())
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(model.eval()(x), tv.eval()(x), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# Every computation runs on the new networks (float32, as the workers run them)


@pytest.mark.parametrize("name", ["resnet8", "graph_conv_shortcut"])
def test_training_with_every_optimizer_and_every_computation_run_on_new_networks(name):
    from workers.landscape import bend, flatness, plane, train

    spec, shape, n_classes = NEW[name]
    data = make_data(shape, n_classes, n_train=48, n_test=16)
    states = []
    for i, optimizer in enumerate(sorted(train.OPTIMIZERS)):
        torch.manual_seed(i)
        model = nets.build(spec, shape, n_classes)
        extra = {"pretrain_epochs": 1} if optimizer == "adv" else {"replicas": 2} if optimizer == "rsgd" else {}
        history = train.train(model, data, optimizer, epochs=1, batch_size=16, seed=i, **extra)
        assert history[-1]["epoch"] == 1 and all(torch.isfinite(v).all() for v in model.state_dict().values()
                                          if v.is_floating_point()), optimizer
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    a, b, c = states[:3]
    model = nets.build(spec, shape, n_classes)
    plain = evaluate.evaluate_states_loop(model, [a], {"train": (data.x_train, data.y_train)},
                                          bn_data=data.x_train)["train"]["error"][0]

    flat = flatness.flatness_result(spec, data, a, sigmas=[0.0, 0.05], draws=2)
    assert flat["base_train_error"] == plain and flat["delta_mean"][0] == 0.0 and flat["bn"] == "recompute"

    grid = plane.plane_result(spec, data, [a, b, c], grid=3)
    j = grid["x"].index(grid["points"][0]["x"])
    i = grid["y"].index(grid["points"][0]["y"])
    ca = symmetry.canonical_form(spec, a)
    own = evaluate.evaluate_states_loop(model, [ca], {"train": (data.x_train, data.y_train)},
                                        bn_data=data.x_train)["train"]["error"][0]
    assert grid["train_error"][i][j] == own  # the first network lies on the grid

    for variant in ("geodesic", "garipov"):
        bend_, mid = bend.bend_result(spec, data, a, b, points=3, variant=variant, epochs=1, batch_size=16)
        assert bend_["t"] == [0.0, 0.5, 1.0] and set(mid) == set(a)
        assert bend_["barrier"] == max(bend_["train_error"])
    for type in ("linear", "linear_aligned", "geodesic"):
        for bn in ("recompute", "interpolate"):
            res = paths.path_result(spec, data, a, b, type=type, points=3, bn=bn)
            assert res["bn"] == bn and len(res["train_error"]) == 3
            if type == "linear" and bn == "recompute":
                assert res["train_error"][0] == plain


def test_torchvision_vgg_bn_state_dicts_load_into_the_same_names():
    from torchvision.models import vgg

    tv = vgg.VGG(vgg.make_layers(vgg.cfgs["A"], batch_norm=True), num_classes=3)  # torchvision's vgg11_bn
    tv.classifier[0], tv.classifier[3], tv.classifier[6] = (torch.nn.Linear(512 * 49, 8), torch.nn.Linear(8, 8),
                                                            torch.nn.Linear(8, 3))  # a small classifier
    model = nets.build({"kind": "vgg11_bn", "hidden": 8}, (3, 32, 32), 3)
    nets.load_weights(model, tv.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), tv.eval()(x), rtol=0, atol=0)
    with pytest.raises(nets.SpecError, match="at least 32x32"):
        nets.build({"kind": "vgg16_bn"}, (1, 8, 8), 3)


@pytest.mark.parametrize("kind", ["vgg13_bn", "vgg19_bn", "resnet50", "wide_resnet50_2"])
def test_more_torchvision_state_dicts_load_into_the_same_names_and_compute_the_same_function(kind):
    """torchvision's own constructor (the VGGs with a small classifier: their 4096-wide one is 100M weights);
    the service's module loads its state_dict by name and shape and gives the same logits, bit for bit."""
    import torchvision

    torch.manual_seed(0)
    tv = getattr(torchvision.models, kind)(num_classes=3)
    spec = {"kind": kind}
    if kind.startswith("vgg"):
        tv.classifier[0], tv.classifier[3], tv.classifier[6] = (torch.nn.Linear(512 * 49, 8), torch.nn.Linear(8, 8),
                                                                torch.nn.Linear(8, 3))
        spec["hidden"] = 8
    tv.train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        tv(x)  # running statistics away from (0, 1)
    model = nets.build(spec, (3, 32, 32), 3)
    nets.load_weights(model, tv.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), tv.eval()(x), rtol=0, atol=0)
    g = groups.unit_groups(spec)
    # VGG: one group per hidden layer; bottlenecks: the stem, four streams, two inner groups per block
    assert len(g.groups) == (len(g.weights) - 1 if kind.startswith("vgg") else 1 + 4 + 2 * 16)


@pytest.mark.parametrize("name, op", [("mobilenet_v2", "ReLU6"), ("mobilenet_v3_small", "Hardswish"),
                                      ("efficientnet_b0", "SiLU")])
def test_torchvision_classifiers_the_derivation_cannot_handle_are_refused_naming_the_operation(name, op):
    with pytest.raises(nets.SpecError, match=rf"torchvision's {name} is refused: layer \S+ \({op}\)"):
        nets.normalize_spec({"kind": "torchvision", "name": name})
    assert nets.normalize_spec({"kind": "torchvision", "name": "resnet50"}) == {"kind": "resnet50", "width": 1.0}
    with pytest.raises(nets.SpecError, match="no classifier named 'resnet51'"):
        nets.normalize_spec({"kind": "torchvision", "name": "resnet51"})


def test_a_depthwise_convolution_is_refused_as_such():
    from workers.landscape.groups import GroupError, explain_module

    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    with pytest.raises(GroupError, match="depthwise convolution"):
        explain_module(model)
