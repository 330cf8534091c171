"""Error and loss of networks on a data set held as tensors.

``error_and_loss`` is the plain reference evaluation of one model. ``evaluate_states`` evaluates many
parameter points (state dicts) of one architecture.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

Progress = Callable[[float, str], None]


@torch.no_grad()
def error_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> tuple[float, float]:
    """0-1 error and mean cross-entropy of ``model`` in eval mode on (x, y)."""
    model.eval()
    wrong, loss_sum = 0, 0.0
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size])
        target = y[i : i + batch_size]
        wrong += int((logits.argmax(dim=1) != target).sum())
        loss_sum += float(F.cross_entropy(logits.double(), target, reduction="sum"))
    n = max(len(y), 1)
    return wrong / n, loss_sum / n


@torch.no_grad()
def evaluate_states(
    model: nn.Module,
    states: Iterable[dict[str, torch.Tensor]],
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    progress: Progress | None = None,
    total: int | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Error and loss of each state on each named split: ``{split: {"error": [...], "loss": [...]}}``."""
    out = {name: {"error": [], "loss": []} for name in splits}
    for k, state in enumerate(states):
        model.load_state_dict(state)
        for name, (x, y) in splits.items():
            err, loss = error_and_loss(model, x, y)
            out[name]["error"].append(err)
            out[name]["loss"].append(loss)
        if progress is not None and total:
            progress((k + 1) / total, f"evaluated point {k + 1} of {total}")
    return out
