"""Error and loss of networks on a data set held as tensors.

``error_and_loss`` is the plain reference evaluation of one model. ``evaluate_states`` evaluates many
parameter points (state dicts) of one architecture by loading each into the same model (no copy
per point). ``recalibrate_bn`` recomputes BatchNorm running statistics on training data, as needed at
every point of a path (SCIENCE.md section 3: stale statistics give wrong errors).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

Progress = Callable[[float, str], None]


def _dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.get_default_dtype()


@torch.no_grad()
def error_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> tuple[float, float]:
    """0-1 error and mean cross-entropy of ``model`` in eval mode on (x, y) (x cast to the model's dtype)."""
    model.eval()
    dtype = _dtype(model)
    wrong, loss_sum = 0, 0.0
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size].to(dtype))
        target = y[i : i + batch_size]
        wrong += int((logits.argmax(dim=1) != target).sum())
        loss_sum += float(F.cross_entropy(logits.double(), target, reduction="sum"))
    n = max(len(y), 1)
    return wrong / n, loss_sum / n


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance on inputs ``x``; leaves the model in eval mode.

    One pass over ``x`` in batches, with ``momentum=None`` (cumulative average of the batch statistics,
    as ``torch.optim.swa_utils.update_bn``). With a single batch (len(x) <= batch_size) the statistics
    are exactly the data's mean and unbiased variance of each unit's pre-activation; with several,
    the mean is still exact for equal batches and the variance is the average within-batch variance
    [ours]. No-op for a model without BatchNorm.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    dtype = _dtype(model)
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size].to(dtype))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return model.eval()


@torch.no_grad()
def evaluate_states(
    model: nn.Module,
    states: Iterable[dict[str, torch.Tensor]],
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    progress: Progress | None = None,
    total: int | None = None,
    bn_data: torch.Tensor | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Error and loss of each state on each named split: ``{split: {"error": [...], "loss": [...]}}``.

    ``bn_data``: when given (training inputs), BatchNorm statistics are recomputed on it at every state.
    ``progress(fraction, message)`` is called after each state; an exception it raises propagates.
    """
    out = {name: {"error": [], "loss": []} for name in splits}
    recompute = bn_data is not None and has_batchnorm(model)
    for k, state in enumerate(states):
        model.load_state_dict(state)
        if recompute:
            recalibrate_bn(model, bn_data)
        for name, (x, y) in splits.items():
            err, loss = error_and_loss(model, x, y)
            out[name]["error"].append(err)
            out[name]["loss"].append(loss)
        if progress is not None and total:
            progress((k + 1) / total, f"evaluated point {k + 1} of {total}")
    return out
