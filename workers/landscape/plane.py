"""2-D sections: error and loss on the plane through three networks (docs/science.md section 3, "Planes"; Garipov et al.).

mode "aligned" (default): a = canonical(n0), b = canonical(align(n0, n1)), c = canonical(align(n0, n2));
mode "raw": the three networks as given. Coordinates: Gram-Schmidt on the parameter vectors (the tensors
of ``groups.compared_names``: weights, biases, BatchNorm gamma and beta; not the running statistics),
u = (b - a) / |b - a|, v = the part of c - a orthogonal to u, normalised; a sits at (0, 0), b at
(|b - a|, 0), c at ((c - a).u, (c - a).v), in units of the parameter space's Euclidean norm.

Grid [ours]: ``grid`` nodes per axis spanning the three networks plus ``margin`` times the larger of the
two extents on each side (one scale for both axes, so a thin triangle still gets a square-ish window);
then the node nearest to each network's coordinate is moved onto it (a node is inserted instead when
that nearest node already holds another network's coordinate), so the three networks lie exactly on grid
nodes and the grid's values there are their own errors. Axes may therefore be slightly non-uniform.

A grid point (x, y) is the affine combination la*a + lb*b + lc*c (la + lb + lc = 1) of the three states
with the barycentric weights of (x, y) in the triangle, applied to every float tensor: for the
parameters this is exactly a + x u + y v; the weights are exactly 1 and 0 at the three networks, so
those grid points are the networks themselves. BatchNorm statistics: bn="recompute" (default) on the
training inputs at every grid point; bn="interpolate" takes the same affine combination of the
three networks' statistics. Outside the triangle that combination can make a running variance smaller
than any of the three (even negative, which BatchNorm cannot evaluate), so there it is kept at least the
smallest of the three networks' values for that unit [ours]; inside the triangle and at the three nodes
nothing is clamped, so each network evaluates exactly as itself (a canonical form legitimately holds a
small negative running variance, running_var' = c^2 (running_var + eps) - eps >= -eps).
The first layer of every grid point is a combination of the three networks' first layers, so the
engine computes it from three products with the data (evaluate.Combination).
"""
from __future__ import annotations

from typing import Any, Callable, Collection, Iterator

import torch

from . import nets, symmetry
from .evaluate import Combination, evaluate_states, has_batchnorm
from .groups import compared_names, first_weight, prepare, tensors
from .paths import BN_MODES, PathError, setup

State = dict[str, torch.Tensor]
Progress = Callable[[float, str], None]
MODES = ("aligned", "raw")
MIN_GRID, MAX_GRID = 2, 101
MAX_MARGIN = 10.0


class PlaneError(PathError):
    """Inputs a plane cannot be computed for; the message says why."""


def _axis(lo: float, hi: float, n: int, exact: list[float]) -> list[float]:
    """``n`` evenly spaced nodes on [lo, hi]; the nearest interior node is moved onto each value of ``exact``
    (the two ends stay: they hold the margin), or a node is added when that one is taken already."""
    nodes = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    moved: dict[int, float] = {}
    extra = []
    for value in sorted(set(exact) - {lo, hi}):
        i = min(range(1, n - 1), key=lambda j: abs(nodes[j] - value), default=None)
        if i is None or i in moved:
            extra.append(value)
        else:
            moved[i] = value
    for i, value in moved.items():
        nodes[i] = value
    return sorted(set(nodes) | set(extra))


def _vector(state: State, names: list[str]) -> torch.Tensor:
    return torch.cat([state[k].double().reshape(-1) for k in names])


def plane_states(a: State, b: State, c: State, weights: list[tuple[float, float, float]],
                 variances: Collection[str], clamp_var: bool = True) -> Iterator[State]:
    """la*a + lb*b + lc*c on every float tensor for each (la, lb, lc); integer buffers from a; the running
    variances (``variances``: their names, groups.tensors) kept at least the three networks' smallest value
    (only ever binding outside the triangle)."""
    floor = {k: torch.minimum(torch.minimum(a[k], b[k]), c[k]).double() for k in a if k in variances}
    for la, lb, lc in weights:
        point = {}
        for k, va in a.items():
            if not va.is_floating_point():
                point[k] = va.clone()
                continue
            t = la * va.double() + lb * b[k].double() + lc * c[k].double()
            point[k] = (torch.maximum(t, floor[k]) if clamp_var and k in floor else t).to(va.dtype)
        yield point


def plane_result(
    spec: dict[str, Any],
    data: Any,
    states: list[State],
    grid: int = 11,
    mode: str = "aligned",
    margin: float = 0.2,
    bn: str = "recompute",
    progress: Progress | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
    bn_samples: int | None = None,
    memory_mb: float | None = None,
) -> dict[str, Any]:
    """Train/test error and loss on the plane through three real-valued networks (module docstring).

    Returns {"x": [...], "y": [...], "train_error": rows, "test_error", "train_loss", "test_loss" (each a
    list of len(y) rows of len(x) values: value [i][j] at (x[j], y[i])), "points": [{"x", "y"} of the
    three networks, in the given order], "mode", "bn" (None without BatchNorm), "margin",
    "distances": {"ab", "ac", "bc"} (Euclidean, parameter space, after the mode's normalisation)}.
    Raises ``PlaneError`` for bad parameters, binary networks or three (nearly) collinear networks.
    """
    spec = prepare(spec)
    nets.require_real(spec.binary, "plane", PlaneError)
    if mode not in MODES:
        raise PlaneError(f"unknown plane mode {mode!r}; known: {', '.join(MODES)}")
    if bn not in BN_MODES:
        raise PlaneError(f"unknown BatchNorm mode {bn!r}; known: {', '.join(BN_MODES)}")
    if not isinstance(states, (list, tuple)) or len(states) != 3:
        raise PlaneError("a plane needs exactly three networks")
    if not isinstance(grid, int) or isinstance(grid, bool) or not MIN_GRID <= grid <= MAX_GRID:
        raise PlaneError(f"'grid' must be an integer between {MIN_GRID} and {MAX_GRID}, got {grid!r}")
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0 <= margin <= MAX_MARGIN:
        raise PlaneError(f"'margin' must be a number between 0 and {MAX_MARGIN}, got {margin!r}")
    model, splits, bn_data = setup(spec, data, list(states), dtype, device, bn, bn_samples)

    # 1. the three networks and the plane's orthonormal basis (float64)
    n0, n1, n2 = ({k: v.detach().double() if v.is_floating_point() else v for k, v in s.items()} for s in states)
    if mode == "aligned":
        a, b, c = (symmetry.canonical_form(spec, n) for n in (n0, symmetry.align(spec, n0, n1), symmetry.align(spec, n0, n2)))
    else:
        a, b, c = n0, n1, n2
    names = compared_names(spec, a)
    va, vb, vc = (_vector(s, names) for s in (a, b, c))
    ab, ac = vb - va, vc - va
    xb = float(ab.norm())
    u = ab / xb if xb > 0 else ab
    xc = float(ac @ u)
    ortho = ac - xc * u
    yc = float(ortho.norm())
    if xb <= 1e-12 * max(float(va.norm()), 1.0) or yc <= 1e-9 * max(xb, float(ac.norm())):
        raise PlaneError("the three networks are (nearly) collinear or equal: they span no plane"
                         + (" (in aligned mode, symmetric copies of one network coincide)" if mode == "aligned" else ""))

    # 2. the grid, with the three networks on nodes
    xs_, ys_ = [0.0, xb, xc], [0.0, 0.0, yc]
    scale = max(max(xs_) - min(xs_), max(ys_) - min(ys_))
    xs = _axis(min(xs_) - margin * scale, max(xs_) + margin * scale, grid, xs_)
    ys = _axis(min(ys_) - margin * scale, max(ys_) + margin * scale, grid, ys_)
    weights = []  # barycentric (la, lb, lc) of each node, row by row (y outer)
    for y in ys:
        lc = y / yc
        for x in xs:
            lb = (x - lc * xc) / xb
            weights.append((1.0 - lb - lc, lb, lc))

    # 3. evaluation by the engine, the first layer as a combination of the three
    name = first_weight(spec)
    h = a[name].shape[0]
    coef = torch.tensor(weights, dtype=torch.float64)[:, :, None].expand(len(weights), 3, h)
    first = Combination(name, [a[name], b[name], c[name]], coef)
    with_bn = has_batchnorm(model)

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message.replace("point", "grid point"))

    points = plane_states(a, b, c, weights, tensors(spec).variances)
    res = evaluate_states(model, points, splits, progress=report, total=len(weights),
                          bn_data=bn_data, first=first, memory_mb=memory_mb)
    out: dict[str, Any] = {"x": xs, "y": ys, "mode": mode, "bn": bn if with_bn else None, "margin": margin}
    for split in ("train", "test"):
        for what in ("error", "loss"):
            flat = res[split][what]
            out[f"{split}_{what}"] = [flat[i * len(xs) : (i + 1) * len(xs)] for i in range(len(ys))]
    out["points"] = [{"x": x, "y": y} for x, y in zip(xs_, ys_)]
    out["distances"] = {"ab": xb, "ac": float(ac.norm()), "bc": float((vc - vb).norm())}
    return out
