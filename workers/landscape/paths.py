"""Paths between two networks of one architecture (SCIENCE.md section 3)."""
from __future__ import annotations

from typing import Iterator

import torch


def positions(points: int) -> list[float]:
    """``points`` evenly spaced positions in [0, 1], both ends included."""
    if points < 2:
        raise ValueError("a path needs at least 2 points")
    return [i / (points - 1) for i in range(points)]


def linear_path(
    state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], ts: list[float]
) -> Iterator[dict[str, torch.Tensor]]:
    """Straight line (1 - t) a + t b between raw parameter vectors; integer buffers are taken from a."""
    for t in ts:
        point = {}
        for name, a in state_a.items():
            b = state_b[name]
            point[name] = torch.lerp(a, b, t) if a.is_floating_point() else a.clone()
        yield point
