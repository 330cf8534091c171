"""Architectures built from a JSON spec.

A spec is a small dict such as ``{"kind": "mlp", "hidden": [64, 64]}``. ``normalize_spec`` validates
it and fills in defaults (so that two specs that build the same network compare equal; the layer-by-layer
kinds by params.validate_params reading their tables in ``ARCHITECTURES``, graphs.py's by its rules), ``build``
turns it into a ``torch.nn.Module`` for a data set's input shape and number of classes. Residual
networks, torchvision's layouts and declarative layer graphs are built in graphs.py. The symmetries of
every network, binary ones included, are derived from its traced module (groups.py), never written here.

Every architecture is first written as a *layer plan*: a list of layers with weights (``_Layer``) and of
weightless stages ("flatten", "gap", "vote", "two_class"), which ``build`` reads, so each architecture is
described exactly once.

Choices the paper leaves open [ours]:
- LeNet: each conv is followed by ReLU and a 2x2 max-pool (Caffe's LeNet layout), padding 2 by
  default ("same" for 5x5) so that 8x8 digits work; max-pools use ``ceil_mode`` so that a 1x1 map
  stays 1x1. VGG: BatchNorm after every conv, convs without bias (BatchNorm absorbs it), global
  average pooling and one linear layer on top, so any input size from 1x1 up builds.
- Binary nets have no biases and no BatchNorm. Forward weights are sign(latent) with sign(0) = +1,
  so they are always +-1; activations are ``torch.sign`` (sign(0) = 0, which keeps the flip symmetry
  exact). Pre-activations are divided by sqrt(fan_in) (a positive factor, so no sign changes) to keep
  them O(1) for the straight-through estimator (gradient of sign(x) taken as 1 for |x| <= 1, of the
  weight binarisation as 1). Layers with latent weights carry ``is_binary = True``.
- Committee machine: K hidden sign units, output weights fixed to 1 (no tensor at all), score
  s = sum_k sign(h_k) / sqrt(K), logits [-s, s] (class 1 when a majority of units says +1; a tie
  s = 0 predicts class 0). Only for 2 classes.
- Perceptron: for 2 classes one binary unit with score s = sign(w).x / sqrt(d) and logits [-s, s],
  as in the paper; for C > 2 classes C binary units (one score per class).
"""
from __future__ import annotations

import copy
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from . import graphs
from .params import validate_params


class SpecError(ValueError):
    """An architecture spec that cannot be built; the message says what is wrong."""


class WeightsError(ValueError):
    """Weights that do not fit an architecture, or that hold NaN / infinite values."""


BN_EPS = 1e-5  # epsilon of every BatchNorm built here (symmetry.py needs it to rescale running_var exactly)

VGG_CONFIGS = {  # channels of each conv; "M" = 2x2 max-pool
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}

MAX_WIDTH, MAX_KERNEL = 65536, 15
_WIDTHS = {"min": 1, "max": MAX_WIDTH, "must": f"a non-empty list of positive integers (at most {MAX_WIDTH})"}
_DENSE = {**_WIDTHS, "min_items": 0, "must": f"a list of positive integers (at most {MAX_WIDTH})"}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mlp": {
        "description": "Fully connected ReLU network; linear output layer.",
        "params": {
            "hidden": {"type": "list[int]", "default": [64, 64], **_WIDTHS, "help": "hidden layer widths"},
            "batchnorm": {"type": "bool", "default": False, "help": "BatchNorm after each hidden layer"},
            "bias": {"type": "bool", "default": True, "help": "biases in every layer"},
        },
        "example": {"kind": "mlp", "hidden": [64, 64]},
    },
    "lenet": {
        "description": "LeNet-like convnet (paper: conv 20 5x5, conv 50 5x5, each with ReLU and 2x2 max-pool, "
        "dense 500, linear output). Needs image inputs (channels, height, width).",
        "params": {
            "channels": {"type": "list[int]", "default": [20, 50], **_WIDTHS,
                         "help": "output channels of each conv layer"},
            "dense": {"type": "list[int]", "default": [500], **_DENSE, "help": "widths of the hidden dense layers"},
            "kernel": {"type": "int", "default": 5, "min": 1, "max": MAX_KERNEL, "help": "conv kernel size"},
            "padding": {"type": "int", "default": 2, "min": 0, "max": MAX_KERNEL,
                        "help": "conv zero padding (2 keeps 5x5 convs 'same', so 8x8 inputs work), at most the kernel"},
            "batchnorm": {"type": "bool", "default": False, "help": "BatchNorm after each hidden layer"},
            "bias": {"type": "bool", "default": True, "help": "biases in every layer"},
        },
        "example": {"kind": "lenet", "channels": [20, 50], "dense": [500]},
    },
    "vgg": {
        "description": "VGG with BatchNorm (conv-BN-ReLU blocks, 2x2 max-pools), global average pooling and a "
        "linear output layer. Made for 32x32 images; builds for any image size.",
        "params": {
            "config": {"type": "str", "default": "vgg16", "choices": list(VGG_CONFIGS),
                       "help": "one of " + ", ".join(VGG_CONFIGS)},
            "width": {"type": "float", "default": 1.0, "min": 0, "max": 4, "must": "a number in (0, 4]",
                      "help": "multiplier of every conv's channels (e.g. 0.0625 for a tiny net), above 0"},
        },
        "example": {"kind": "vgg", "config": "vgg16", "width": 0.25},
    },
    "binary_mlp": {
        "description": "Fully connected network with +-1 weights and sign activations (BinaryNet training: "
        "latent real weights, straight-through estimator); binary output layer, no biases.",
        "params": {
            "hidden": {"type": "list[int]", "default": [1001, 1001, 1001], **_WIDTHS, "help": "hidden layer widths"},
        },
        "example": {"kind": "binary_mlp", "hidden": [256, 256]},
    },
    "binary_conv": {
        "description": "Binary convnet: binary convs, each followed by 2x2 max-pool and sign, then binary dense "
        "sign layers and a binary output layer; no biases. Needs image inputs.",
        "params": {
            "channels": {"type": "list[int]", "default": [20, 50], **_WIDTHS,
                         "help": "output channels of each conv layer"},
            "dense": {"type": "list[int]", "default": [2001, 2001, 2001], **_DENSE,
                      "help": "widths of the hidden dense layers"},
            "kernel": {"type": "int", "default": 5, "min": 1, "max": MAX_KERNEL, "help": "conv kernel size"},
            "padding": {"type": "int", "default": 2, "min": 0, "max": MAX_KERNEL,
                        "help": "conv zero padding, at most the kernel size"},
        },
        "example": {"kind": "binary_conv", "channels": [20, 50], "dense": [501, 501]},
    },
    "committee": {
        "description": "Committee machine: one hidden layer of K binary sign units whose votes are summed with "
        "output weights fixed to 1; logits [-s, s] with s = sum of votes / sqrt(K). Two classes only.",
        "params": {
            "hidden": {"type": "int", "default": 101, "min": 1, "max": MAX_WIDTH,
                       "help": "number K of hidden units (odd avoids ties)"},
        },
        "example": {"kind": "committee", "hidden": 101},
    },
    "perceptron": {
        "description": "Binary perceptron: a single layer of +-1 weights, no bias. Two classes: one unit, logits "
        "[-s, s]; more classes: one unit per class.",
        "params": {},
        "example": {"kind": "perceptron"},
    },
}
ARCHITECTURES.update(graphs.ARCHITECTURES)  # residual networks and layer graphs (graphs.py)


# --------------------------------------------------------------------------------------------------
# Spec validation


_MEMO_SIZE = 256  # specs whose normalised form and sizes each process keeps (the most recently used)
_normalized: OrderedDict[str, dict[str, Any]] = OrderedDict()
_sizes: OrderedDict[tuple, tuple[int, int]] = OrderedDict()
_memo_lock = threading.Lock()


def _spec_key(spec: Any) -> str | None:
    try:
        return json.dumps(spec, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


def _remember(memo: OrderedDict, key: Any, value: Any) -> None:
    with _memo_lock:
        memo[key] = value
        memo.move_to_end(key)
        while len(memo) > _MEMO_SIZE:
            memo.popitem(last=False)


def remember(spec: Any, normal: dict[str, Any], input_shape: tuple[int, ...] | None = None,
             n_classes: int | None = None, sizes: tuple[int, int] | None = None) -> None:
    """Note what another process found (``normalize_spec(spec)`` is ``normal``; ``spec_size`` of it for
    that data shape is ``sizes``), so that this one does not work it out again."""
    for key in {_spec_key(spec), _spec_key(normal)} - {None}:
        _remember(_normalized, key, copy.deepcopy(normal))
    if sizes is not None and input_shape is not None and (key := _spec_key(normal)) is not None:
        _remember(_sizes, (key, tuple(input_shape), n_classes), tuple(sizes))


class Prepared(dict):
    """A network's architecture prepared once per job: its spec as ``normalize_spec`` returns it (a dict,
    equal to the plain normalised spec, read-only), with the facts derived from it once (groups.prepare
    builds it): ``groups`` (its unit groups), ``tensors`` (what its state dict's tensors are), ``binary``,
    ``batchnorm``. Every science function takes one where it takes a spec, and never normalises or derives
    it again; a plain spec is prepared on entry (groups.prepare: the same object back for a prepared one)."""

    __slots__ = ("groups", "tensors", "binary", "batchnorm")

    def __init__(self, spec: dict[str, Any], *, groups: Any, tensors: Any, binary: bool, batchnorm: bool):
        super().__init__(spec)
        for name, value in (("groups", groups), ("tensors", tensors), ("binary", binary), ("batchnorm", batchnorm)):
            object.__setattr__(self, name, value)

    def _frozen(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a prepared network is read-only; copy it (dict(spec)) to change it")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _frozen
    clear = pop = popitem = setdefault = update = __ior__ = _frozen  # type: ignore[assignment]

    def __reduce__(self):  # pickled (or deep-copied) as the plain normalised spec it is
        return dict, (dict(self),)


def normal(spec: Any) -> dict[str, Any]:
    """``spec`` normalised: a prepared network as it is (normalised once already), else ``normalize_spec``."""
    return spec if isinstance(spec, Prepared) else normalize_spec(spec)


def _torchvision(name: Any) -> dict[str, Any]:
    """``{"kind": "torchvision", "name": name}``: the service's own kind of that name at torchvision's widths, or a
    refusal that names the first operation of torchvision's model whose symmetries are not derived."""
    if not isinstance(name, str) or not name or len(name) > 100:
        raise SpecError(f"'name' of a torchvision architecture must be a model name such as 'resnet50', got {name!r}")
    if name in graphs.TORCHVISION_NATIVE:
        return normalize_spec({"kind": name})
    import torchvision

    known = set(torchvision.models.list_models(module=torchvision.models))
    if name not in known:
        raise SpecError(f"torchvision has no classifier named {name!r}; the service takes "
                        f"{', '.join(graphs.TORCHVISION_NATIVE)} (other torchvision classifiers are refused with the "
                        "reason)")
    from . import groups

    try:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, weights=None, num_classes=10)
    except Exception as exc:  # noqa: BLE001 - any construction failure is the same answer for the caller
        raise SpecError(f"torchvision's {name} cannot be built here: {exc}") from None
    try:
        groups.explain_module(model)
    except groups.GroupError as exc:
        raise SpecError(f"torchvision's {name} is refused: {exc}") from None
    raise SpecError(f"torchvision's {name} derives, but the service does not rebuild it yet; it takes "
                    f"{', '.join(graphs.TORCHVISION_NATIVE)}")


def normalize_spec(spec: Any) -> dict[str, Any]:
    """Validate an architecture spec and return it with every default filled in. A spec seen lately is
    answered from a small per-process memo (a layer graph's check traces it: a fraction of a second
    for hundreds of layers), as a fresh copy."""
    key = _spec_key(spec)
    with _memo_lock:
        known = _normalized.get(key) if key is not None else None
    if known is not None:
        return copy.deepcopy(known)
    out = _normalize_spec(spec)
    if key is not None:
        _remember(_normalized, key, copy.deepcopy(out))
        _remember(_normalized, _spec_key(out), copy.deepcopy(out))  # normalising a normal form gives it again
    return out


def _normalize_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise SpecError(f"an architecture spec must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in ARCHITECTURES:
        raise SpecError(f"unknown architecture kind {kind!r}; known kinds: {', '.join(sorted(ARCHITECTURES))}")
    params = ARCHITECTURES[kind]["params"]
    unknown = sorted(set(spec) - set(params) - {"kind"})
    if unknown:
        raise SpecError(f"unknown parameter(s) {unknown} for architecture {kind!r}; allowed: {sorted(params)}")
    if kind == "torchvision":
        return _torchvision(spec.get("name", params["name"]["default"]))
    if kind in graphs.ARCHITECTURES:
        get = lambda name: spec.get(name, params[name]["default"])  # noqa: E731
        try:
            out = graphs.normalize(kind, spec, get)
        except graphs.GraphSpecError as exc:
            raise SpecError(str(exc)) from None
        if kind == "graph":  # its symmetries must be derivable exactly (groups.GroupError is a SpecError)
            from . import groups

            groups.check(out)
        return out
    what = f"architecture {kind!r}"
    out = {"kind": kind, **validate_params(params, {k: v for k, v in spec.items() if k != "kind"}, what, SpecError)}
    if "padding" in out and out["padding"] > out["kernel"]:
        raise SpecError(f"parameter 'padding' of {what} must be an integer in [0, {out['kernel']}] (at most the "
                        f"kernel size), got {out['padding']!r}")
    if "width" in out and not out["width"] > 0:
        raise SpecError(f"parameter 'width' of {what} must be a number in (0, 4], got {spec['width']!r}")
    return out


# --------------------------------------------------------------------------------------------------
# Layer plans: each architecture written once


@dataclass
class _Layer:
    """One layer with weights in a plan. ``act is None`` marks the (linear) output layer."""

    name: str  # module name = state_dict prefix
    kind: str  # "conv" | "dense"
    width: int  # output units (a conv's output channels); 0 = n_classes, filled in by build
    act: str | None  # "relu" | "sign" | None
    bias: bool = True
    bn: str | None = None  # name of the BatchNorm module after the layer
    binary: bool = False
    pool: bool = False  # 2x2 max-pool after the activation
    kernel: int = 0
    padding: int = 0


def _layer_plan(spec: dict[str, Any], n_classes: int | None = None) -> list[_Layer | str]:
    """The architecture as a list of layers and weightless stages; n_classes=None for names only."""
    kind = spec["kind"]
    plan: list[_Layer | str] = []
    if kind in ("mlp", "binary_mlp"):
        binary = kind == "binary_mlp"
        plan.append("flatten")
        for i, h in enumerate(spec["hidden"], start=1):
            plan.append(_Layer(f"fc{i}", "dense", h, "sign" if binary else "relu", bias=spec.get("bias", False),
                               bn=f"bn{i}" if spec.get("batchnorm") else None, binary=binary))
        plan.append(_Layer("out", "dense", 0, None, bias=spec.get("bias", False), binary=binary))
    elif kind in ("lenet", "binary_conv"):
        binary = kind == "binary_conv"
        act, bias, bn = ("sign", False, False) if binary else ("relu", spec["bias"], spec["batchnorm"])
        for i, c in enumerate(spec["channels"], start=1):
            plan.append(_Layer(f"conv{i}", "conv", c, act, bias=bias, bn=f"conv{i}_bn" if bn else None,
                               binary=binary, pool=True, kernel=spec["kernel"], padding=spec["padding"]))
        plan.append("flatten")
        for i, h in enumerate(spec["dense"], start=1):
            plan.append(_Layer(f"fc{i}", "dense", h, act, bias=bias, bn=f"fc{i}_bn" if bn else None, binary=binary))
        plan.append(_Layer("out", "dense", 0, None, bias=bias, binary=binary))
    elif kind == "vgg":
        i = 0
        for item in VGG_CONFIGS[spec["config"]]:
            if item == "M":
                plan[-1].pool = True  # type: ignore[union-attr]
                continue
            i += 1
            plan.append(_Layer(f"conv{i}", "conv", max(1, round(item * spec["width"])), "relu", bias=False,
                               bn=f"bn{i}", kernel=3, padding=1))
        plan += ["gap", "flatten", _Layer("out", "dense", 0, None)]
    elif kind == "committee":
        if n_classes is not None and n_classes != 2:
            raise SpecError(f"a committee machine classifies 2 classes; this data set has {n_classes}")
        plan += ["flatten", _Layer("hidden", "dense", spec["hidden"], "sign", bias=False, binary=True), "vote", "two_class"]
    elif kind == "perceptron":
        plan += ["flatten", _Layer("out", "dense", 1 if n_classes == 2 else 0, None, bias=False, binary=True)]
        if n_classes == 2:
            plan.append("two_class")
    return plan


# --------------------------------------------------------------------------------------------------
# Binary layers


class _SignWeight(torch.autograd.Function):
    """+-1 weights (sign(0) = +1); straight-through gradient (identity)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(w):
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


class _SignAct(torch.autograd.Function):
    """torch.sign forward; straight-through gradient 1 for |x| <= 1 (hardtanh), 0 elsewhere."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sign(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def binarize(w: torch.Tensor) -> torch.Tensor:
    """The +-1 weights a binary layer uses in its forward pass."""
    return _SignWeight.apply(w)


class BinaryLinear(nn.Linear):
    is_binary = True  # train.py clamps the latent weights of such modules to [-1, 1]

    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out, bias=False)

    def forward(self, x):
        return F.linear(x, binarize(self.weight)) / math.sqrt(self.in_features)


class BinaryConv2d(nn.Conv2d):
    is_binary = True

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int):
        super().__init__(c_in, c_out, kernel, padding=padding, bias=False)

    def forward(self, x):
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return self._conv_forward(x, binarize(self.weight), None) / math.sqrt(fan_in)


class Sign(nn.Module):
    def forward(self, x):
        return _SignAct.apply(x)


class Vote(nn.Module):
    """Committee output with weights fixed to 1: (n, K) signs -> (n, 1) score sum / sqrt(K)."""

    def forward(self, x):
        return x.sum(dim=1, keepdim=True) / math.sqrt(x.shape[1])


class TwoClass(nn.Module):
    """(n, 1) score s -> (n, 2) logits [-s, s]."""

    def forward(self, s):
        return torch.cat([-s, s], dim=1)


# --------------------------------------------------------------------------------------------------
# Building


def build(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build the network of ``spec`` for inputs of ``input_shape`` (no batch axis) and ``n_classes`` outputs."""
    return build_normalized(normal(spec), input_shape, n_classes)


def build_normalized(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``build`` for a spec that ``normalize_spec`` returned (groups.py builds on the meta device with it)."""
    input_shape = tuple(int(s) for s in input_shape)
    if not isinstance(n_classes, int) or n_classes < 2:
        raise SpecError(f"a classifier needs at least 2 classes, got {n_classes!r}")
    if spec["kind"] in graphs.ARCHITECTURES:
        try:
            return graphs.build(spec, input_shape, n_classes)
        except graphs.GraphSpecError as exc:
            raise SpecError(str(exc)) from None
    plan = _layer_plan(spec, n_classes)
    if any(isinstance(s, _Layer) and s.kind == "conv" for s in plan) and len(input_shape) != 3:
        raise SpecError(f"architecture {spec['kind']!r} needs image inputs (channels, height, width); "
                        f"this data set's inputs have shape {list(input_shape)}")
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    shape = input_shape  # shape of the activations flowing through, no batch axis
    for step in plan:
        if step == "flatten":
            modules["flatten"], shape = nn.Flatten(), (prod(shape),)
        elif step == "gap":
            modules["gap"], shape = nn.AdaptiveAvgPool2d(1), (shape[0], 1, 1)
        elif step == "vote":
            modules["vote"], shape = Vote(), (1,)
        elif step == "two_class":
            modules["two_class"], shape = TwoClass(), (2,)
        elif step.kind == "conv":
            c, h, w = shape
            k, p = step.kernel, step.padding
            h, w = h + 2 * p - k + 1, w + 2 * p - k + 1
            if h < 1 or w < 1:
                raise SpecError(f"input of shape {list(input_shape)} is too small for layer {step.name} "
                                f"(kernel {k}, padding {p}); use more padding or fewer conv layers")
            conv = BinaryConv2d(c, step.width, k, p) if step.binary else nn.Conv2d(c, step.width, k, padding=p, bias=step.bias)
            modules[step.name], shape = conv, (step.width, h, w)
            _add_activation(modules, step)
            if step.pool:
                modules[f"{step.name}_pool"] = nn.MaxPool2d(2, ceil_mode=True)
                shape = (step.width, -(-h // 2), -(-w // 2))
            if step.binary and step.act:  # binary convs: max-pool then sign
                modules[f"{step.name}_act"] = Sign()
        else:  # dense
            width = step.width or n_classes
            modules[step.name] = BinaryLinear(shape[0], width) if step.binary else nn.Linear(shape[0], width, bias=step.bias)
            shape = (width,)
            _add_activation(modules, step)
            if step.binary and step.act:
                modules[f"{step.name}_act"] = Sign()
    return nn.Sequential(modules)


def _add_activation(modules: OrderedDict[str, nn.Module], step: _Layer) -> None:
    """BatchNorm and ReLU of a real layer (binary layers add their sign after pooling)."""
    if step.bn:
        modules[step.bn] = (nn.BatchNorm2d if step.kind == "conv" else nn.BatchNorm1d)(step.width, eps=BN_EPS)
    if step.act == "relu":
        modules[step.name.replace("fc", "act") if step.name.startswith("fc") else f"{step.name}_act"] = nn.ReLU()


def is_binary(spec: dict[str, Any]) -> bool:
    """Whether ``spec``'s network has binary layers (+-1 forward weights)."""
    if isinstance(spec, Prepared):
        return spec.binary
    return binary_normalized(normalize_spec(spec))


def binary_normalized(spec: dict[str, Any]) -> bool:
    """``is_binary`` for a spec that ``normalize_spec`` returned."""
    return spec["kind"] not in graphs.ARCHITECTURES and any(
        isinstance(step, _Layer) and step.binary for step in _layer_plan(spec))


def short_name(spec: dict[str, Any]) -> str:
    """A short name for an architecture, the one the dashboard, the CLI and the API (``architecture_label``)
    show: ``mlp 64-64 bn``, ``lenet c6-16 d120-84``, ``vgg16 ×1``, ``resnet20 ×1``, ``graph (7 layers)``.
    Read from the spec as given (a stored network's spec is normalised already); never raises."""
    if not isinstance(spec, dict):
        return "?"
    dash = lambda v: "-".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    kind = str(spec.get("kind", "?"))
    bn = " bn" if spec.get("batchnorm") else ""
    if kind == "mlp":
        return f"mlp {dash(spec.get('hidden', []))}{bn}{' nobias' if spec.get('bias') is False else ''}"
    if kind == "lenet":
        return f"lenet c{dash(spec.get('channels', []))} d{dash(spec.get('dense', []))}{bn}"
    if kind == "vgg":
        return f"{spec.get('config') or 'vgg'} ×{spec.get('width', 1)}"
    if kind == "binary_mlp":
        return f"binary mlp {dash(spec.get('hidden', []))}"
    if kind == "binary_conv":
        return f"binary conv c{dash(spec.get('channels', []))} d{dash(spec.get('dense', []))}"
    if kind == "committee":
        return f"committee K={spec.get('hidden')}"
    if kind == "resnet":
        return f"resnet{spec.get('depth', '')} ×{spec.get('width', 1)}"
    if kind == "graph":
        layers = spec.get("layers")
        return f"graph ({len(layers) if isinstance(layers, list) else 0} layers)"
    width = spec.get("width")
    return f"{kind} ×{width}" if width is not None and width != 1 else kind


# What being binary decides, written once. A binary network's weights are +-1: it has no sphere to move on,
# so some computations need real-valued networks (REAL_ONLY: the one message of each), and others take
# their binary variant (VARIANTS: real, binary).
REAL_ONLY = {
    "bend": "single-bend paths are for real-valued networks (a binary network cannot be trained along a "
            "continuous bend); binary networks have 'hamming' paths",
    "geodesic": "a binary network has no geodesic path (its weights are +-1); use the 'hamming' path type",
    "geodesic distance": "geodesic distances are defined for real-valued networks only (binary networks: the "
                         "Hamming distance)",
    "plane": "planes are for real-valued networks (binary weights are +-1, not a plane; binary networks live "
             "on the hypercube)",
    "slice": "slices are for real-valued networks (binary weights are +-1: no direction to move along; "
             "see flatness for binary networks)",
}
VARIANTS = {
    "barrier": ("geodesic", "hamming"),  # the path type of a matrix job's barriers
    "noise": ("multiplicative", "flip"),  # flatness: Gaussian noise on the weights, or flipped fractions
}


def require_real(spec: dict[str, Any] | bool, what: str, error: type[Exception] = SpecError) -> None:
    """Raise ``error`` with ``REAL_ONLY[what]`` when ``spec`` (or the flag ``binary``) is binary."""
    if spec if isinstance(spec, bool) else is_binary(spec):
        raise error(REAL_ONLY[what])


def variant(spec: dict[str, Any] | bool, what: str) -> str:
    """``VARIANTS[what]``'s entry for ``spec``'s network (or for the flag ``binary``)."""
    return VARIANTS[what][int(spec if isinstance(spec, bool) else is_binary(spec))]


# --------------------------------------------------------------------------------------------------
# Weights


def shape_problems(expected: dict[str, tuple[int, ...]], shapes: dict[str, Any]) -> list[str]:
    """What keeps tensors of these names and ``shapes`` (None: not a tensor) from fitting a module whose
    state_dict has the ``expected`` shapes: missing, unexpected (the first 20 named) and mis-shaped tensors.
    The one check of names and shapes: an upload's file header before any tensor is made, and
    ``check_state_dict`` on tensors."""
    problems: list[str] = []
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(n[:100] for n in unexpected[:20])}"
                        + (f" and {len(unexpected) - 20} more" if len(unexpected) > 20 else ""))
    for name in sorted(set(expected) & set(shapes)):
        if shapes[name] is None:
            problems.append(f"{name} is not a tensor")
        elif tuple(shapes[name]) != tuple(expected[name]):
            problems.append(f"{name} has shape {list(shapes[name])}, expected {list(expected[name])}")
    return problems


def check_shapes(expected: dict[str, tuple[int, ...]], shapes: dict[str, Any], architecture: str = "") -> None:
    """Raise ``WeightsError`` naming every missing, unexpected or mis-shaped tensor (``shape_problems``);
    with ``architecture`` (the spec as given, in words) the message says that it does not match the file."""
    problems = shape_problems(expected, shapes)
    if problems:
        head = (f"the architecture given ({architecture}) does not match the file: " if architecture
                else "weights do not fit the architecture: ")
        raise WeightsError(head + "; ".join(problems))


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise ``WeightsError`` naming every missing, unexpected, mis-shaped or non-finite tensor."""
    expected = model.state_dict()
    problems = shape_problems({k: tuple(v.shape) for k, v in expected.items()},
                              {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()})
    for name in sorted(set(expected) & set(state)):
        want, got = expected[name], state[name]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            continue  # (said above)
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            problems.append(f"{name} holds NaN or infinite values")
        elif want.is_floating_point() != got.is_floating_point():
            problems.append(f"{name} has dtype {got.dtype}, expected a {'float' if want.is_floating_point() else 'integer'} tensor")
    if problems:
        raise WeightsError("weights do not fit the architecture: " + "; ".join(problems))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Check ``state`` against ``model`` and load it (converted to the model's dtypes)."""
    check_state_dict(model, state)
    ref = model.state_dict()
    model.load_state_dict({k: v.to(ref[k].dtype) for k, v in state.items()})
    return model


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------
# Size of a spec, before anything is allocated


def meta_model(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The network of ``spec`` built on the ``meta`` device: shapes and dtypes, no memory, no init work."""
    with torch.device("meta"):
        return build(spec, input_shape, n_classes)


def spec_size(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> tuple[int, int]:
    """(parameters, bytes of the state dict including buffers) of ``spec``'s network, from the spec alone
    (remembered per process, as ``normalize_spec``)."""
    key = (_spec_key(spec), tuple(input_shape), n_classes)
    with _memo_lock:
        known = _sizes.get(key) if key[0] is not None else None
    if known is not None:
        return known
    model = meta_model(spec, input_shape, n_classes)
    state = model.state_dict()
    out = n_parameters(model), sum(t.numel() * t.element_size() for t in state.values())
    if key[0] is not None:
        _remember(_sizes, key, out)
    return out


def check_size(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int, max_parameters: int,
               max_activation_bytes: int | None = None) -> int:
    """Raise ``SpecError`` naming the count and the limit when ``spec`` has more than ``max_parameters``
    parameters, or keeps more than ``max_activation_bytes`` of activations per sample in a training step
    (cost.py, from the spec on the meta device); returns the count."""
    n, _ = spec_size(spec, input_shape, n_classes)
    if n > max_parameters:
        raise SpecError(f"this architecture has {n} parameters, over the server's limit of {max_parameters} "
                        "(TOROID_MAX_PARAMETERS); choose a smaller one")
    if max_activation_bytes is not None:
        from . import cost

        p = cost.profile(spec, input_shape, n_classes)
        if p.train_bytes > max_activation_bytes:
            raise SpecError(
                f"this architecture needs {p.train_bytes:,} bytes ({p.train_bytes / 2**20:,.1f} MiB) of activations "
                f"per sample in a training step ({p.forward_bytes:,} bytes in evaluation; {p.flops:,} FLOPs per sample "
                f"forward), over the server's limit of {max_activation_bytes:,} bytes per sample "
                "(TOROID_MAX_ACTIVATION_BYTES); choose one with smaller activations (less padding, fewer or "
                "narrower layers, more pooling)")
    return n
