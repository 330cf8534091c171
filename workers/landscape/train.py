"""Samplers of minimizers (SCIENCE.md section 5)."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .data import Dataset
from .evaluate import error_and_loss

Progress = Callable[[float, str], None]

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {
        "description": "SGD with Nesterov momentum and a cosine-annealed learning rate (the paper's SGD).",
        "params": {
            "epochs": {"type": "int", "default": 20},
            "lr": {"type": "float", "default": 0.02},
            "momentum": {"type": "float", "default": 0.9},
            "batch_size": {"type": "int", "default": 128},
            "seed": {"type": "int", "default": 0},
        },
    },
}


def train(
    model: nn.Module,
    data: Dataset,
    optimizer: str = "sgd",
    *,
    epochs: int = 20,
    lr: float = 0.02,
    momentum: float = 0.9,
    batch_size: int = 128,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; return the training curve (one dict per epoch)."""
    if optimizer != "sgd":
        raise ValueError(f"unknown optimizer {optimizer!r}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    n = len(data.y_train)
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        train_err, train_loss = error_and_loss(model, data.x_train, data.y_train)
        test_err, test_loss = error_and_loss(model, data.x_test, data.y_test)
        history.append({"epoch": epoch + 1, "train_error": train_err, "train_loss": train_loss,
                        "test_error": test_err, "test_loss": test_loss})
        if progress is not None:
            progress((epoch + 1) / epochs,
                     f"epoch {epoch + 1}/{epochs}: train error {100 * train_err:.2f}%, test error {100 * test_err:.2f}%")
    return history
