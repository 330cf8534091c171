"""Single-bend paths (docs/science.md section 3): a trained midpoint joined to both ends by geodesics (the
paper), or Garipov et al.'s polychain with a bend trained on the path-averaged loss (real-valued networks).

``PARAMS`` is the bend's parameter table (the path job kind reads it, so what the API accepts is what
``bend_result`` runs with).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from . import nets, symmetry, train
from .data import Dataset
from .groups import prepare
from .evaluate import bn_inputs, error_and_loss, evaluate_states, has_batchnorm, recalibrate_bn
from .params import MAX_SEED, check_value
from .paths import (PathError, Progress, State, add_barrier, _check_bn, _float64, _geodesic_ends, check_points, setup,
                    distances, end_errors, geodesic_distance, path_points, positions)



def _mean(a: State, b: State) -> State:
    """(a + b) / 2 for float tensors (BN statistics included), integer buffers from a."""
    return {k: (v + b[k].to(v.dtype)) / 2 if v.is_floating_point() else v.clone() for k, v in a.items()}


def _train_polychain(model: nn.Module, data: Dataset, a: State, b: State, bend: State, epochs: int, lr: float,
                     batch_size: int, seed: int, report: Progress) -> State:
    """Garipov et al.'s one-bend polychain: the bend theta minimises E_t L(phi_theta(t)), t ~ U[0, 1] drawn
    once per minibatch, phi = (1 - 2t) a + 2t theta on [0, 1/2], (2 - 2t) theta + (2t - 1) b on [1/2, 1];
    SGD with Nesterov momentum 0.9, learning rate cosine-annealed per epoch. BatchNorm layers normalise with
    batch statistics while training; the bend's running statistics are recomputed afterwards."""
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    names = [k for k, _ in model.named_parameters()]
    on = lambda st: {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in st.items()}  # noqa: E731
    a, b, bend = on(a), on(b), on(bend)
    theta = {k: bend[k].clone().requires_grad_(True) for k in names}
    buffers = {k: v.clone() for k, v in bend.items() if k not in theta}
    opt = torch.optim.SGD(list(theta.values()), lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train.to(device, dtype), data.y_train.to(device)
    model.train()
    for epoch in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            t = float(torch.rand((), generator=gen))
            if t < 0.5:
                point = {k: (1 - 2 * t) * a[k] + 2 * t * theta[k] for k in names}
            else:
                point = {k: (2 - 2 * t) * theta[k] + (2 * t - 1) * b[k] for k in names}
            idx = idx.to(device)
            loss = F.cross_entropy(functional_call(model, {**point, **buffers}, (x[idx],)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        report((epoch + 1) / epochs, f"training the bend: epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.4f}")
    model.eval()
    return {**{k: v.detach().clone() for k, v in theta.items()}, **buffers}


VARIANTS: dict[str, str] = {
    "geodesic": "the paper's: a midpoint trained to low training error, joined to both ends by geodesics",
    "garipov": "Garipov et al.'s polychain: the bend trained on the loss averaged along two linear segments",
}
PARAMS: dict[str, dict[str, Any]] = {
    "variant": {"type": "str", "choices": list(VARIANTS), "default": "geodesic",
                "help": "geodesic: the paper's trained midpoint; garipov: Garipov et al.'s polychain"},
    "epochs": {"type": "int", "default": 20, "min": 1, "max": 100_000, "help": "epochs that train the bend"},
    "lr": {"type": "float", "default": 0.02, "min": 1e-6, "max": 100.0,
           "help": "learning rate of the bend's training (cosine-annealed)"},
    "seed": {"type": "int", "default": 0, "min": 0, "max": MAX_SEED, "help": "seed of the bend's minibatches"},
}


def bend_result(
    spec: dict[str, Any],
    data: Dataset,
    state_a: State,
    state_b: State,
    points: int = 11,
    variant: str = "geodesic",
    epochs: int = 20,
    lr: float = 0.02,
    seed: int = 0,
    bn: str = "recompute",
    progress: Progress | None = None,
    *,
    batch_size: int = 128,
    target_error: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
    bn_samples: int | None = None,
) -> tuple[dict[str, Any], State]:
    """Error along a single-bend path between two real-valued networks; returns (result, midpoint state).

    variant "geodesic" (the paper): a = canonical(a), b = canonical(align(a, b)); the midpoint starts at
    (a + b) / 2 and is trained with SGD (train.train: Nesterov momentum 0.9, ``lr`` cosine-annealed over
    ``epochs``, minibatches of ``batch_size``) until its training error is at most ``target_error``
    (default [ours]: the larger of the two ends' training errors) or ``epochs`` are done; then the path is
    the geodesic a -> midpoint for t in [0, 1/2] and midpoint -> b for t in [1/2, 1] (each geodesic_path:
    the midpoint normalised and aligned to that end). variant "garipov": ends a and align(a, b) with raw
    scales, the bend started at their mean and trained on the loss averaged along the polychain
    (``_train_polychain``; always ``epochs`` epochs), linear segments. t = 1/2 is always on the grid
    (added to ``positions(points)`` when ``points`` is even). The barrier is the maximum over both halves.

    The result has the keys of ``path_result`` (type "bend") plus "variant", "midpoint_train_error",
    "midpoint_test_error", "epochs" (epochs the midpoint trained) and "midpoint_distances" (geodesic
    distances a-midpoint and midpoint-b, after alignment). The midpoint state is returned as trained, its
    BatchNorm statistics recomputed on the training inputs.
    """
    spec = prepare(spec)
    nets.require_real(spec.binary, "bend", PathError)
    if not spec.groups.spheres():
        raise PathError("a single-bend path needs a network with at least one hidden layer")
    for key, value in (("variant", variant), ("epochs", epochs), ("lr", lr), ("seed", seed)):
        check_value(key, PARAMS[key], value, "a single-bend path", PathError)
    _check_bn(bn)
    check_points(points)
    ts = sorted(set(positions(points)) | {0.5})
    model, splits, bn_data = setup(spec, data, [state_a, state_b], dtype, device, bn, bn_samples)
    report = progress or (lambda f, m: None)
    train_inputs = bn_inputs(data.x_train, bn_samples)

    # 1. the bend
    if variant == "geodesic":
        a, b = _geodesic_ends(spec, state_a, state_b)
        if target_error is None:
            ends = evaluate_states(model, [a, b], {"train": splits["train"]}, bn_data=bn_data)
            target_error = max(ends["train"]["error"])
        model.load_state_dict(_mean(a, b))
        history = train.train(model, data, "sgd", epochs=epochs, lr=float(lr), batch_size=batch_size, seed=seed,
                              target_error=target_error, progress=lambda f, m: report(0.8 * f, f"midpoint: {m}"))
        epochs_run = len(history)
        mid = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        a, b = state_a, symmetry.align(spec, state_a, state_b)
        mid = _train_polychain(model, data, a, b, _mean(a, b), epochs, float(lr), batch_size, seed,
                               lambda f, m: report(0.8 * f, m))
        epochs_run = epochs
    model.load_state_dict(mid)
    recalibrate_bn(model, train_inputs.to(splits["train"][0].device))
    mid = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mid_train, _ = error_and_loss(model, *splits["train"])
    mid_test, _ = error_and_loss(model, *splits["test"])

    # 2. the two halves, evaluated by the engine
    first_ts, second_ts = [t for t in ts if t <= 0.5], [t for t in ts if t > 0.5]
    if variant == "geodesic":
        halves = [path_points(spec, state_a, mid, "geodesic", [2 * t for t in first_ts]),
                  path_points(spec, state_b, mid, "geodesic", [2 - 2 * t for t in second_ts])]
    else:
        halves = [path_points(spec, a, mid, "linear", [2 * t for t in first_ts]),
                  path_points(spec, mid, b, "linear", [2 * t - 1 for t in second_ts])]
    curves = []
    for h, ((states, first), half_ts) in enumerate(zip(halves, (first_ts, second_ts))):
        offset = len(first_ts) if h else 0

        def half_report(f: float, m: str, n: int = len(half_ts), offset: int = offset) -> None:
            report(0.8 + 0.2 * (offset + f * n) / len(ts), m)

        curves.append(evaluate_states(model, states, splits, progress=half_report, total=len(half_ts),
                                      bn_data=bn_data, first=first))
    out: dict[str, Any] = {"type": "bend", "variant": variant, "t": ts,
                           "bn": bn if has_batchnorm(model) else None}
    for split in ("train", "test"):
        for what in ("error", "loss"):
            out[f"{split}_{what}"] = curves[0][split][what] + curves[1][split][what]
    add_barrier(out)
    out["distances"] = distances(spec, state_a, state_b)
    out["ends"] = end_errors(model, data, state_a, state_b)
    out.update(midpoint_train_error=mid_train, midpoint_test_error=mid_test, epochs=epochs_run,
               midpoint_distances={"a": aligned_geodesic_distance(spec, state_a, mid),
                                   "b": aligned_geodesic_distance(spec, mid, state_b)})
    return out, mid


def aligned_geodesic_distance(spec: dict[str, Any], state_a: State, state_b: State) -> float:
    """Geodesic distance D between canonical(a) and canonical(align(a, b)) (real-valued networks); compare
    ``paths.geodesic_distance``, which aligns nothing."""
    a, b = _geodesic_ends(spec, _float64(state_a), _float64(state_b))
    return geodesic_distance(spec, a, b)
