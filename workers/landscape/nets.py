"""Architectures built from a JSON spec.

A spec is a small dict such as ``{"kind": "mlp", "hidden": [64, 64]}``. ``normalize_spec`` validates
it and fills in defaults (so that two specs that build the same network compare equal), ``build``
turns it into a ``torch.nn.Module`` for a data set's input shape and number of classes.
"""
from __future__ import annotations

from collections import OrderedDict
from math import prod
from typing import Any

import torch
from torch import nn


class SpecError(ValueError):
    """An architecture spec that cannot be built; the message says what is wrong."""


ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mlp": {
        "description": "Fully connected ReLU network; linear output layer.",
        "params": {
            "hidden": {"type": "list[int]", "default": [64, 64], "help": "hidden layer widths"},
            "batchnorm": {"type": "bool", "default": False, "help": "BatchNorm after each hidden layer"},
            "bias": {"type": "bool", "default": True, "help": "biases in every layer"},
        },
        "example": {"kind": "mlp", "hidden": [64, 64]},
    },
}


def _positive_int_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in value
    ):
        raise SpecError(f"'{name}' must be a non-empty list of positive integers (at most 65536), got {value!r}")
    return list(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"'{name}' must be true or false, got {value!r}")
    return value


def normalize_spec(spec: Any) -> dict[str, Any]:
    """Validate an architecture spec and return it with every default filled in."""
    if not isinstance(spec, dict):
        raise SpecError(f"an architecture spec must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in ARCHITECTURES:
        raise SpecError(f"unknown architecture kind {kind!r}; known kinds: {', '.join(sorted(ARCHITECTURES))}")
    allowed = set(ARCHITECTURES[kind]["params"]) | {"kind"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SpecError(f"unknown parameter(s) {unknown} for architecture {kind!r}; allowed: {sorted(allowed - {'kind'})}")
    out: dict[str, Any] = {"kind": kind}
    params = ARCHITECTURES[kind]["params"]
    if kind == "mlp":
        out["hidden"] = _positive_int_list(spec.get("hidden", params["hidden"]["default"]), "hidden")
        out["batchnorm"] = _bool(spec.get("batchnorm", False), "batchnorm")
        out["bias"] = _bool(spec.get("bias", True), "bias")
    return out


def build(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build the network of ``spec`` for inputs of ``input_shape`` (no batch axis) and ``n_classes`` outputs."""
    spec = normalize_spec(spec)
    if spec["kind"] == "mlp":
        return _mlp(spec, int(prod(input_shape)), n_classes)
    raise SpecError(f"no builder for {spec['kind']!r}")  # pragma: no cover - normalize_spec guards


def _mlp(spec: dict[str, Any], n_in: int, n_classes: int) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = n_in
    for i, h in enumerate(spec["hidden"], start=1):
        layers[f"fc{i}"] = nn.Linear(width, h, bias=spec["bias"])
        if spec["batchnorm"]:
            layers[f"bn{i}"] = nn.BatchNorm1d(h)
        layers[f"act{i}"] = nn.ReLU()
        width = h
    layers["out"] = nn.Linear(width, n_classes, bias=spec["bias"])
    return nn.Sequential(layers)


class WeightsError(ValueError):
    """Weights that do not fit an architecture, or that hold NaN / infinite values."""


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise ``WeightsError`` naming every missing, unexpected, mis-shaped or non-finite tensor."""
    expected = model.state_dict()
    problems: list[str] = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    for name in sorted(set(expected) & set(state)):
        want, got = expected[name], state[name]
        if not isinstance(got, torch.Tensor):
            problems.append(f"{name} is not a tensor")
            continue
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"{name} has shape {list(got.shape)}, expected {list(want.shape)}")
        elif got.is_floating_point() and not bool(torch.isfinite(got).all()):
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
