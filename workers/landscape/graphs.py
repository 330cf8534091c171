"""Residual networks and declarative layer graphs (issue 15: bring your own network).

Three families, each built as an ``nn.Sequential`` whose children are named so that the state_dict
keys are those a lab already has:
- ``resnet`` (CIFAR-style, He et al. 2016 section 4.2): depth 6n+2, a 3x3 stem conv of 16w channels,
  three stages of n basic blocks with 16w, 32w, 64w channels (stride 2 at the start of stages 2 and 3),
  global average pooling, one linear layer. Shortcuts that change the shape are a 1x1 conv + BatchNorm
  (``"shortcut": "B"``, the default: the "option B" of the mode-connectivity and re-basin code) or He et al.'s
  option A (``"shortcut": "A"``: every second pixel, zero channels padded on both sides, no parameters: the
  public CIFAR ResNet-20/32/56 checkpoints); the others are identities.
  Names follow torchvision's ResNet: conv1, bn1, layer1.0.conv1, ..., layer3.2.downsample.0, fc.
- ``resnet50`` / ``wide_resnet50_2``: the same with torchvision's Bottleneck blocks (ResNet v1.5), the wide one
  twice as wide inside each bottleneck.
- ``resnet18`` / ``resnet34``: torchvision's layout exactly (7x7 stride-2 stem, 3x3 stride-2 max-pool,
  four stages of basic blocks, adaptive average pooling, fc), so that ``torch.save(model.state_dict())``
  of ``torchvision.models.resnet18(num_classes=C)`` (its first conv replaced for other input channels)
  loads as it is. ``width`` multiplies every channel count (1.0 = torchvision's).
- ``vgg11_bn`` / ``vgg13_bn`` / ``vgg16_bn`` / ``vgg19_bn``: torchvision's VGG with BatchNorm exactly (``features.<i>``: conv with bias,
  BatchNorm, ReLU, 2x2 max-pools; ``avgpool`` to 7x7; ``classifier.0/3/6``: 4096-4096-classes with ReLU
  and dropout), so that a state_dict of ``torchvision.models.vgg16_bn(num_classes=C)`` loads as it is;
  ``width`` multiplies the conv channels, ``hidden`` is the classifier's width. (The service's own ``vgg``
  kind, conv without bias, global pooling and one linear layer, is a different network.)
- ``graph``: a JSON list of layers (``LAYER_TYPES``) built into a module of the service's own; no code
  is ever uploaded or run. Children are named by their index, as ``nn.Sequential`` names them, so a
  lab's plain ``nn.Sequential`` of the same layers has the same state_dict keys; a residual block
  ``{"type": "add", "branch": [...], "shortcut": "identity" | "conv_bn" | "pad"}`` holds ``branch.<i>`` and
  ``shortcut.0`` (1x1 conv, no bias) / ``shortcut.1`` (BatchNorm); "pad" is option A (``PadShortcut``: every
  ``stride``-th pixel, the missing channels as zeros on both sides; no parameters).
Every BatchNorm uses nets.BN_EPS. The symmetries of all of them are derived from the traced module
(groups.py); nothing here describes units.
"""
from __future__ import annotations

from collections import OrderedDict
from math import prod
from typing import Any

import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5  # the same as nets.BN_EPS (nets imports this module)

CIFAR_DEPTHS = tuple(6 * n + 2 for n in range(1, 19))  # 8, 14, 20, ..., 110
TORCHVISION_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3),
                      "wide_resnet50_2": (3, 4, 6, 3)}
BOTTLENECK_BASE = {"resnet50": 64, "wide_resnet50_2": 128}  # torchvision's width_per_group (bottleneck layouts)
TORCHVISION_VGG = {  # torchvision's cfgs "A", "B", "D" and "E"; "M" = 2x2 max-pool
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13_bn": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
TORCHVISION_NATIVE = (*TORCHVISION_BLOCKS, *TORCHVISION_VGG)  # what {"kind": "torchvision", "name": ...} becomes
MAX_LAYERS = 400
MAX_NESTING = 4

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet": {
        "description": "CIFAR-style ResNet (depth 6n+2: 20, 32, 56, ...): 3x3 stem conv, three stages of basic "
        "blocks (conv-BN-ReLU-conv-BN, add, ReLU) with 16w, 32w, 64w channels, 1x1 conv+BN shortcuts where the "
        "shape changes, global average pooling, linear output. torchvision's state_dict names.",
        "params": {
            "depth": {"type": "int", "default": 20, "choices": list(CIFAR_DEPTHS),
                      "help": "number of layers with weights, 6n+2 (20, 32, 56 are the literature's)"},
            "width": {"type": "float", "default": 1.0, "min": 0.0625, "max": 16,
                      "help": "multiplier of every stage's channels (16, 32, 64 at width 1)"},
            "shortcut": {"type": "str", "default": "B", "choices": ["A", "B"], "default_omitted": True,
                         "help": "where the shape changes: B, a 1x1 conv + BatchNorm (downsample.0/1); A, He et al.'s "
                                 "parameter-free subsampling with zero channels padded on both sides (the public "
                                 "CIFAR ResNet-20/32/56 checkpoints)"},
        },
        "example": {"kind": "resnet", "depth": 20, "width": 1.0},
    },
    "resnet18": {
        "description": "torchvision's resnet18 layout and state_dict names (7x7 stride-2 stem, max-pool, four "
        "stages of two basic blocks, adaptive average pooling, fc): a state_dict of torchvision.models.resnet18"
        "(num_classes=C) uploads as it is.",
        "params": {
            "width": {"type": "float", "default": 1.0, "min": 0.0625, "max": 4,
                      "help": "multiplier of every channel count (1 = torchvision's 64 ... 512)"},
        },
        "example": {"kind": "resnet18", "width": 1.0},
    },
    "resnet34": {
        "description": "torchvision's resnet34 layout and state_dict names (stages of 3, 4, 6, 3 basic blocks).",
        "params": {
            "width": {"type": "float", "default": 1.0, "min": 0.0625, "max": 4,
                      "help": "multiplier of every channel count (1 = torchvision's 64 ... 512)"},
        },
        "example": {"kind": "resnet34", "width": 1.0},
    },
    "resnet50": {
        "description": "torchvision's resnet50 layout and state_dict names (stages of 3, 4, 6, 3 bottleneck blocks: "
        "1x1, 3x3 with the stride, 1x1 with 4x the channels; 1x1 conv + BatchNorm downsample; fc on 2048): a "
        "state_dict of torchvision.models.resnet50(num_classes=C) uploads as it is.",
        "params": {
            "width": {"type": "float", "default": 1.0, "min": 0.0625, "max": 4,
                      "help": "multiplier of every channel count (1 = torchvision's 64 ... 2048)"},
        },
        "example": {"kind": "resnet50", "width": 0.25},
    },
    "wide_resnet50_2": {
        "description": "torchvision's wide_resnet50_2: resnet50 with bottlenecks twice as wide inside (width_per_group "
        "128): a state_dict of torchvision.models.wide_resnet50_2(num_classes=C) uploads as it is.",
        "params": {
            "width": {"type": "float", "default": 1.0, "min": 0.0625, "max": 4,
                      "help": "multiplier of every channel count (1 = torchvision's)"},
        },
        "example": {"kind": "wide_resnet50_2", "width": 0.125},
    },
    **{kind: {
        "description": f"torchvision's {kind} layout and state_dict names (features.<i>: conv with bias, BatchNorm, "
        "ReLU, max-pools; adaptive average pooling to 7x7; classifier of two hidden linear layers with ReLU and "
        f"dropout): a state_dict of torchvision.models.{kind}(num_classes=C) uploads as it is. Needs inputs of at "
        "least 32x32.",
        "params": {
            "width": {"type": "float", "default": 1.0, "min": 0.0625, "max": 4,
                      "help": "multiplier of every conv's channels (1 = torchvision's 64 ... 512)"},
            "hidden": {"type": "int", "default": 4096, "min": 1, "max": 65536,
                       "help": "width of the classifier's two hidden layers (torchvision: 4096)"},
        },
        "example": {"kind": kind, "width": 0.25, "hidden": 256},
    } for kind in TORCHVISION_VGG},
    "torchvision": {
        "description": "A torchvision classifier by its name in torchvision.models: the layouts the service "
        "rebuilds exactly (resnet18, resnet34, resnet50, wide_resnet50_2, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn) "
        "become that kind at torchvision's widths; any other is built by torchvision.models.get_model, traced, and "
        "refused with the operation whose symmetries are not derived (MobileNet's ReLU6 and depthwise convs, "
        "EfficientNet's SiLU, ...).",
        "params": {
            "name": {"type": "str", "default": "resnet18",
                     "help": "the model's name in torchvision.models, e.g. resnet50 or vgg16_bn"},
        },
        "example": {"kind": "torchvision", "name": "resnet18"},
    },
    "graph": {
        "description": "Your own CNN or MLP as a JSON list of layers: linear, conv, batchnorm, relu, gelu "
        "(permutations only), maxpool, avgpool, adaptive_avgpool, flatten, dropout, and residual 'add' blocks "
        "(a branch plus an identity or 1x1 conv+BatchNorm shortcut). The last layer is a linear without 'out' "
        "(one output per class). State_dict names are the layer indices, as nn.Sequential's.",
        "params": {
            "layers": {"type": "json", "default": None,  # filled in below: the example's layers
                       "help": "list of layer objects, e.g. {\"type\": \"conv\", \"out\": 16, \"kernel\": 3, "
                               "\"padding\": 1}; see the README's 'Bring your own network'"},
        },
        "example": {"kind": "graph", "layers": [
            {"type": "conv", "out": 16, "kernel": 3, "padding": 1, "bias": False}, {"type": "batchnorm"},
            {"type": "relu"},
            {"type": "add", "branch": [
                {"type": "conv", "out": 16, "kernel": 3, "padding": 1, "bias": False}, {"type": "batchnorm"},
                {"type": "relu"},
                {"type": "conv", "out": 16, "kernel": 3, "padding": 1, "bias": False}, {"type": "batchnorm"}],
             "shortcut": "identity"},
            {"type": "relu"}, {"type": "adaptive_avgpool"}, {"type": "flatten"}, {"type": "linear"}]},
    },
}

# layer type -> {field: (kind, default, lo, hi)}; kind "int" | "float" | "bool"; default None = required
LAYER_TYPES: dict[str, dict[str, tuple]] = {
    "linear": {"out": ("int", None, 1, 65536), "bias": ("bool", True, None, None)},
    "conv": {"out": ("int", None, 1, 65536), "kernel": ("int", 3, 1, 15), "stride": ("int", 1, 1, 8),
             "padding": ("int", 0, 0, 15), "bias": ("bool", True, None, None)},
    "batchnorm": {},
    "relu": {},
    "gelu": {},
    "maxpool": {"kernel": ("int", 2, 1, 15), "stride": ("int", None, 1, 15), "padding": ("int", 0, 0, 7)},
    "avgpool": {"kernel": ("int", 2, 1, 15), "stride": ("int", None, 1, 15), "padding": ("int", 0, 0, 7)},
    "adaptive_avgpool": {"size": ("int", 1, 1, 64)},
    "flatten": {},
    "dropout": {"p": ("float", 0.5, 0.0, 0.99)},
    "add": {"stride": ("int", 1, 1, 8)},  # plus "branch" (a list of layers) and "shortcut"
}
REFUSED = {  # layer types asked for that have symmetries the service does not remove exactly
    "tanh": "tanh is odd (tanh(-x) = -tanh(x)): each unit has a sign flip besides its permutation, which the "
            "canonical form does not remove yet; use relu or gelu",
    "sigmoid": "sigmoid(-x) = 1 - sigmoid(x) gives each unit a sign flip with a shift of the next layer's bias, "
               "which the canonical form does not remove; use relu or gelu",
    "layernorm": "LayerNorm couples every channel of a sample (it is invariant to one scale and one shift of "
                 "the whole layer, not per unit); its symmetries are not handled, so it is refused",
    "groupnorm": "GroupNorm couples the channels of a group; its symmetries are not handled, so it is refused",
    "relu6": "relu6 is not positively homogeneous (it saturates at 6), so a unit's scale is not a symmetry and "
             "its canonical form would need a different treatment; use relu, or gelu (permutations only)",
}


class GraphSpecError(ValueError):
    """A layer graph that cannot be built; nets re-raises it as SpecError."""


# --------------------------------------------------------------------------------------------------
# Validation


def _field(layer: dict, where: str, name: str, kind: str, default: Any, lo: Any, hi: Any) -> Any:
    value = layer.get(name, default)
    if value is None:
        raise GraphSpecError(f"{where}: '{name}' is required")
    if kind == "bool":
        if not isinstance(value, bool):
            raise GraphSpecError(f"{where}: '{name}' must be true or false, got {value!r}")
        return value
    ok = isinstance(value, (int, float)) if kind == "float" else isinstance(value, int)
    if not ok or isinstance(value, bool) or not lo <= value <= hi:
        what = "a number" if kind == "float" else "an integer"
        raise GraphSpecError(f"{where}: '{name}' must be {what} between {lo} and {hi}, got {value!r}")
    return float(value) if kind == "float" else value


def _normalize_layers(layers: Any, where: str, depth: int, count: list[int], last_is_output: bool) -> list[dict]:
    if not isinstance(layers, list) or not layers:
        raise GraphSpecError(f"{where} must be a non-empty list of layer objects, got {layers!r}")
    out = []
    for i, layer in enumerate(layers):
        here = f"{where}[{i}]"
        count[0] += 1
        if count[0] > MAX_LAYERS:
            raise GraphSpecError(f"a layer graph holds at most {MAX_LAYERS} layers")
        if not isinstance(layer, dict) or not isinstance(layer.get("type"), str):
            raise GraphSpecError(f"{here} must be an object with a 'type', got {layer!r}")
        kind = layer["type"].lower()
        if kind in REFUSED:
            raise GraphSpecError(f"{here}: layer type {kind!r} is refused: {REFUSED[kind]}")
        if kind not in LAYER_TYPES:
            raise GraphSpecError(f"{here}: unknown layer type {layer['type']!r}; known: {', '.join(LAYER_TYPES)}")
        fields = LAYER_TYPES[kind]
        extra = {"branch", "shortcut"} if kind == "add" else set()
        unknown = sorted(set(layer) - set(fields) - extra - {"type"})
        if unknown:
            raise GraphSpecError(f"{here}: unknown field(s) {unknown} for a {kind!r} layer; allowed: {sorted(set(fields) | extra)}")
        norm: dict[str, Any] = {"type": kind}
        is_output = last_is_output and i == len(layers) - 1
        for name, (fk, default, lo, hi) in fields.items():
            if kind == "linear" and name == "out" and is_output:
                if layer.get("out") is not None:
                    raise GraphSpecError(f"{here}: the last layer is the output layer; leave out 'out' (it has one "
                                         "output per class of the data set)")
                continue
            if name == "stride" and kind in ("maxpool", "avgpool") and layer.get("stride") is None:
                norm["stride"] = norm["kernel"]  # PyTorch's default: stride = kernel
                continue
            norm[name] = _field(layer, here, name, fk, default, lo, hi)
        if kind == "add":
            if depth >= MAX_NESTING:
                raise GraphSpecError(f"{here}: residual blocks nest at most {MAX_NESTING} deep")
            norm["branch"] = _normalize_layers(layer.get("branch"), f"{here}.branch", depth + 1, count, False)
            shortcut = layer.get("shortcut", "identity")
            if shortcut not in ("identity", "conv_bn", "pad"):
                raise GraphSpecError(f"{here}: 'shortcut' must be \"identity\", \"conv_bn\" (a 1x1 conv + BatchNorm) "
                                     f"or \"pad\" (every stride-th pixel, zero channels on both sides), got {shortcut!r}")
            norm["shortcut"] = shortcut
        out.append(norm)
    if last_is_output and out[-1]["type"] != "linear":
        raise GraphSpecError(f"{where}: the last layer must be a 'linear' layer without 'out' (the output layer), "
                             f"got {out[-1]['type']!r}")
    return out


def _check_activations(layers: list[dict], pending: str | None, where: str) -> str | None:
    """Raise when two layers with weights have no nonlinearity between them (their product has every
    invertible mixing of the units as a symmetry, not only permutations and scales). ``pending``: the
    place of a layer with weights whose output has seen no nonlinearity yet, or None."""
    for i, layer in enumerate(layers):
        here = f"{where}[{i}]"
        kind = layer["type"]
        if kind in ("linear", "conv"):
            if pending is not None:
                raise GraphSpecError(f"{here}: no activation (relu, gelu or a max-pool) between the layer at {pending} "
                                     f"and this {kind} layer: two linear maps in a row have more symmetries than "
                                     "permutations and scales (any invertible mixing), which the service does not "
                                     "remove; put a relu between them")
            pending = here
        elif kind in ("relu", "gelu", "maxpool"):
            pending = None
        elif kind == "add":
            in_branch = _check_activations(layer["branch"], pending, f"{here}.branch")
            in_shortcut = f"{here}.shortcut" if layer["shortcut"] == "conv_bn" else pending
            if layer["shortcut"] == "conv_bn" and pending is not None:
                raise GraphSpecError(f"{here}: no activation between the layer at {pending} and the shortcut's 1x1 conv; "
                                     "put a relu before the residual block")
            pending = in_branch if (in_branch is not None and in_shortcut is not None) else None
    return pending


def normalize(kind: str, spec: dict[str, Any], get) -> dict[str, Any]:
    """The normalised spec of one of this module's kinds (``get(name)`` reads a parameter or its default)."""
    out: dict[str, Any] = {"kind": kind}
    if kind in ("resnet", *TORCHVISION_BLOCKS, *TORCHVISION_VGG):
        width = get("width")
        hi = ARCHITECTURES[kind]["params"]["width"]["max"]
        if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0.0625 <= width <= hi:
            raise GraphSpecError(f"'width' must be a number between 0.0625 and {hi}, got {width!r}")
        out["width"] = float(width)
    if kind == "resnet":
        depth = get("depth")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth not in CIFAR_DEPTHS:
            raise GraphSpecError(f"'depth' of a CIFAR ResNet must be 6n+2 between 8 and 110 (20, 32, 56, ...), got {depth!r}")
        out["depth"] = depth
        shortcut = get("shortcut")
        if shortcut not in ("A", "B"):
            raise GraphSpecError(f"'shortcut' of a CIFAR ResNet must be \"A\" (zero-padded subsampling) or \"B\" "
                                 f"(1x1 conv + BatchNorm), got {shortcut!r}")
        if shortcut == "A":  # B, the default, is left out: the specs (and cache keys) of existing networks stay
            out["shortcut"] = "A"
    if kind in TORCHVISION_VGG:
        hidden = get("hidden")
        if not isinstance(hidden, int) or isinstance(hidden, bool) or not 1 <= hidden <= 65536:
            raise GraphSpecError(f"'hidden' must be an integer between 1 and 65536, got {hidden!r}")
        out["hidden"] = hidden
    if kind == "graph":
        layers = _normalize_layers(get("layers"), "layers", 0, [0], True)
        _check_activations(layers, None, "layers")
        out["layers"] = layers
    return out


# --------------------------------------------------------------------------------------------------
# Modules


class PadShortcut(nn.Module):
    """The parameter-free "option A" shortcut of He et al. (2016): every ``stride``-th pixel, then ``before`` zero
    channels in front of the ``c_in`` input channels and ``after`` behind them. The widely used public CIFAR code
    writes it ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``: the same with stride 2 and
    ``before = after = planes // 4`` (here ``before = (c_out - c_in) // 2``, ``after`` the rest, which is that
    whenever the public code runs)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if c_out < c_in:
            raise GraphSpecError(f"a zero-padded shortcut cannot go from {c_in} to fewer channels ({c_out})")
        self.c_in, self.stride = c_in, stride
        self.before = (c_out - c_in) // 2
        self.after = c_out - c_in - self.before

    def forward(self, x):
        if x.dim() == 4:
            x = x[:, :, :: self.stride, :: self.stride]
        elif self.stride != 1:
            raise ValueError("a strided zero-padded shortcut needs image activations")
        pad = (0, 0, 0, 0, self.before, self.after) if x.dim() == 4 else (self.before, self.after)
        return F.pad(x, pad)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, before={self.before}, after={self.after}"


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), same attribute names;
    ``shortcut`` "B": a 1x1 conv + BatchNorm ``downsample`` where the shape changes; "A": the parameter-free
    zero-padded subsampling (``PadShortcut``, held as ``shortcut``: no state_dict entries)."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)  # as torchvision
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            if shortcut == "A":
                self.shortcut = PadShortcut(c_in, c_out, stride)
            else:
                self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                                nn.BatchNorm2d(c_out, eps=BN_EPS))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        elif hasattr(self, "shortcut"):
            identity = self.shortcut(x)
        else:
            identity = x
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3 conv), same attribute names:
    relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)); ``inner`` channels inside, ``c_out``
    (4x the stage's planes) out."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner, eps=BN_EPS)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner, eps=BN_EPS)
        self.conv3 = nn.Conv2d(inner, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out, eps=BN_EPS))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _stage(c_in: int, c_out: int, blocks: int, stride: int, shortcut: str = "B") -> nn.Sequential:
    return nn.Sequential(*[BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, shortcut)
                           for i in range(blocks)])


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def build_resnet(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    if len(input_shape) != 3:
        raise GraphSpecError(f"architecture {spec['kind']!r} needs image inputs (channels, height, width); this data "
                             f"set's inputs have shape {list(input_shape)}")
    c_in, w = input_shape[0], spec["width"]
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    if spec["kind"] == "resnet":
        n = (spec["depth"] - 2) // 6
        widths = [_channels(c, w) for c in (16, 32, 64)]
        mods["conv1"] = nn.Conv2d(c_in, widths[0], 3, 1, 1, bias=False)
        mods["bn1"], mods["relu"] = nn.BatchNorm2d(widths[0], eps=BN_EPS), nn.ReLU()
        prev = widths[0]
        for s, c in enumerate(widths):
            mods[f"layer{s + 1}"] = _stage(prev, c, n, 1 if s == 0 else 2, spec.get("shortcut", "B"))
            prev = c
    else:
        widths = [_channels(c, w) for c in (64, 128, 256, 512)]
        mods["conv1"] = nn.Conv2d(c_in, widths[0], 7, 2, 3, bias=False)
        mods["bn1"], mods["relu"] = nn.BatchNorm2d(widths[0], eps=BN_EPS), nn.ReLU()
        mods["maxpool"] = nn.MaxPool2d(3, 2, 1)
        prev = widths[0]
        base = BOTTLENECK_BASE.get(spec["kind"])
        for s, (c, blocks) in enumerate(zip(widths, TORCHVISION_BLOCKS[spec["kind"]])):
            stride = 1 if s == 0 else 2
            if base is None:
                mods[f"layer{s + 1}"] = _stage(prev, c, blocks, stride)
                prev = c
                continue
            inner, out = int(c * base / 64), 4 * c  # torchvision: width = planes * (base_width / 64)
            layer = []
            for i in range(blocks):
                layer.append(Bottleneck(prev, inner, out, stride if i == 0 else 1))
                prev = out
            mods[f"layer{s + 1}"] = nn.Sequential(*layer)
    mods["avgpool"], mods["flatten"] = nn.AdaptiveAvgPool2d(1), nn.Flatten()
    mods["fc"] = nn.Linear(prev, n_classes)
    return nn.Sequential(mods)


class Residual(nn.Module):
    """branch(x) + shortcut(x); the shortcut is the identity or a 1x1 conv + BatchNorm."""

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module):
        super().__init__()
        self.branch, self.shortcut = branch, shortcut

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


def _layer_modules(layers: list[dict], shape: tuple[int, ...], n_classes: int, where: str,
                   top: bool) -> tuple[nn.Sequential, tuple[int, ...]]:
    """The modules of ``layers`` for inputs of ``shape`` (no batch axis), and the output shape."""
    mods: list[nn.Module] = []
    for i, layer in enumerate(layers):
        here, kind = f"{where}[{i}]", layer["type"]
        images = len(shape) == 3
        if kind in ("conv", "maxpool", "avgpool", "adaptive_avgpool") and not images:
            raise GraphSpecError(f"{here}: a {kind} layer needs image activations (channels, height, width); it gets "
                                 f"shape {list(shape)}")
        if kind == "linear":
            if len(shape) != 1:
                raise GraphSpecError(f"{here}: a linear layer needs flat inputs; it gets shape {list(shape)}: put a "
                                     "'flatten' before it")
            width = n_classes if top and i == len(layers) - 1 else layer["out"]
            mods.append(nn.Linear(shape[0], width, bias=layer["bias"]))
            shape = (width,)
        elif kind == "conv":
            k, s, p = layer["kernel"], layer["stride"], layer["padding"]
            mods.append(nn.Conv2d(shape[0], layer["out"], k, s, p, bias=layer["bias"]))
            shape = (layer["out"], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
        elif kind == "batchnorm":
            mods.append((nn.BatchNorm2d if images else nn.BatchNorm1d)(shape[0], eps=BN_EPS))
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "gelu":
            mods.append(nn.GELU())
        elif kind in ("maxpool", "avgpool"):
            k, s, p = layer["kernel"], layer["stride"], layer["padding"]
            if 2 * p > k:
                raise GraphSpecError(f"{here}: padding {p} must be at most half the kernel {k}")
            mods.append((nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(k, s, p))
            shape = (shape[0], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
        elif kind == "adaptive_avgpool":
            mods.append(nn.AdaptiveAvgPool2d(layer["size"]))
            shape = (shape[0], layer["size"], layer["size"])
        elif kind == "flatten":
            mods.append(nn.Flatten())
            shape = (prod(shape),)
        elif kind == "dropout":
            mods.append(nn.Dropout(layer["p"]))
        elif kind == "add":
            branch, out_shape = _layer_modules(layer["branch"], shape, n_classes, f"{here}.branch", False)
            if layer["shortcut"] == "conv_bn":
                if not images:
                    raise GraphSpecError(f"{here}: a conv_bn shortcut needs image activations; it gets {list(shape)}")
                st = layer["stride"]
                shortcut: nn.Module = nn.Sequential(nn.Conv2d(shape[0], out_shape[0], 1, st, bias=False),
                                                    nn.BatchNorm2d(out_shape[0], eps=BN_EPS))
                short_shape = (out_shape[0], (shape[1] - 1) // st + 1, (shape[2] - 1) // st + 1)
            elif layer["shortcut"] == "pad":
                st = layer["stride"]
                if not images and st != 1:
                    raise GraphSpecError(f"{here}: a strided pad shortcut needs image activations; it gets {list(shape)}")
                if out_shape[0] < shape[0]:
                    raise GraphSpecError(f"{here}: a pad shortcut adds zero channels: the branch must give at least the "
                                         f"{shape[0]} channels it reads, it gives {out_shape[0]}")
                shortcut = PadShortcut(shape[0], out_shape[0], st)
                short_shape = ((out_shape[0], (shape[1] - 1) // st + 1, (shape[2] - 1) // st + 1) if images
                               else (out_shape[0],))
            else:
                shortcut, short_shape = nn.Identity(), shape
            if tuple(short_shape) != tuple(out_shape):
                raise GraphSpecError(f"{here}: the branch gives shape {list(out_shape)} but the shortcut gives "
                                     f"{list(short_shape)}; use shortcut \"conv_bn\" or \"pad\" (with 'stride') "
                                     "where they differ")
            mods.append(Residual(branch, shortcut))
            shape = out_shape
        if any(d < 1 for d in shape):
            raise GraphSpecError(f"{here}: the activations shrink to shape {list(shape)}; use a larger input, more "
                                 "padding or fewer poolings")
    return nn.Sequential(*mods), shape


def build_graph(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    model, _ = _layer_modules(spec["layers"], tuple(input_shape), n_classes, "layers", True)
    return model


def build_torchvision_vgg(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    if len(input_shape) != 3:
        raise GraphSpecError(f"architecture {spec['kind']!r} needs image inputs (channels, height, width); this data "
                             f"set's inputs have shape {list(input_shape)}")
    c, h, w = input_shape
    features: list[nn.Module] = []
    for item in TORCHVISION_VGG[spec["kind"]]:
        if item == "M":
            features.append(nn.MaxPool2d(kernel_size=2, stride=2))
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise GraphSpecError(f"architecture {spec['kind']!r} needs inputs of at least 32x32 (five 2x2 max-pools); "
                                     f"this data set's are {input_shape[1]}x{input_shape[2]}")
            continue
        out = _channels(item, spec["width"])
        features += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.BatchNorm2d(out, eps=BN_EPS), nn.ReLU(inplace=True)]
        c = out
    hidden = spec["hidden"]
    classifier = nn.Sequential(nn.Linear(c * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(0.5),
                               nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(hidden, n_classes))
    return nn.Sequential(OrderedDict(features=nn.Sequential(*features), avgpool=nn.AdaptiveAvgPool2d((7, 7)),
                                     flatten=nn.Flatten(), classifier=classifier))


def build(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The module of a normalised spec of one of this module's kinds."""
    if spec["kind"] == "graph":
        return build_graph(spec, input_shape, n_classes)
    if spec["kind"] in TORCHVISION_VGG:
        return build_torchvision_vgg(spec, input_shape, n_classes)
    return build_resnet(spec, input_shape, n_classes)



# the example in normalised form (every field filled in) is also the default
ARCHITECTURES["graph"]["example"]["layers"] = _normalize_layers(ARCHITECTURES["graph"]["example"]["layers"],
                                                                "layers", 0, [0], True)
ARCHITECTURES["graph"]["params"]["layers"]["default"] = ARCHITECTURES["graph"]["example"]["layers"]
