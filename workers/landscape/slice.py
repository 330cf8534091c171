"""Random-direction sections of the landscape around one network, 1-D and 2-D (Li et al. 2018,
"Visualizing the loss landscape of neural nets", as in the loss-landscape and loss-landscapes
packages), taken in two coordinate systems.

mode "filter" (Li et al.): the network theta as stored. A direction d holds, for every weight tensor
(dense rows and conv filters: the incoming weights of one unit each, axis 0), a Gaussian draw rescaled
unit by unit to the norm of that unit's weights in theta, d[k] <- z[k] ||theta[k]|| / ||z[k]|| (filter
normalisation: the section looks the same whatever the scale of each unit). Biases and BatchNorm's
gamma and beta do not move [ours; Li et al.'s ``ignore="biasbn"``]. A point of a 2-D slice is
theta + x d1 + y d2, of a 1-D slice theta + x d1, with x, y on a grid over [-span, span].

mode "canonical": theta is first put into canonical form (symmetry.canonical_form: the incoming
weights of every hidden unit of norm 1, the output matrix of norm sqrt(H_L)), so that it lies on the
paper's product of spheres (the same function as theta). Each sphere is one channel of a scale segment
(groups.py: a hidden unit's incoming weights; a residual stream channel's concatenated gammas), or the
whole output matrix. A direction is a Gaussian draw projected, sphere by sphere, onto
the tangent space at theta, z - (z . u) u with u the unit vector of theta's row, and rescaled to the
sphere's radius R = ||theta[k]|| (the same filter normalisation). A point at (x, y) is the exponential
map of the tangent vector v = x d1 + y d2, per sphere

    theta[k] cos(|v[k]| / R) + v[k] R sin(|v[k]| / R) / |v[k]|,

which stays exactly on the product of spheres (the great circle from theta along v[k] has length
|v[k]| there): a section of the landscape the paper's geometry lives on, free of the scale symmetry
that makes raw-coordinate sections depend on each unit's norm. Biases, BatchNorm parameters and
statistics keep their canonical values [ours] (a BatchNorm unit's gamma, +1 on its own 0-sphere, has no
tangent to move along); weights on no sphere (units before a GELU, which has no scale symmetry) move
linearly with filter-normalised directions [ours].

Directions: one torch.Generator seeded with ``seed`` draws z for every floating tensor in the order of
the module's state_dict (whatever order the given dict holds them in: a weights file read back gives its
keys in an order that differs from process to process), d1 first, then d2, in float64 on the CPU (the same seed gives the same directions on any
device; the 1-D slice with a seed is the y = 0 line of the 2-D slice with that seed). They are not
orthogonalised [as Li et al.: two high-dimensional Gaussian draws are nearly orthogonal].
Grid [ours]: ``points`` evenly spaced values on [-span, span] per axis, and 0 added when it is not one
of them, so that the network itself is a grid point and its values there are its own errors.
BatchNorm statistics: bn="recompute" (default) on the training inputs at every point, or "keep" the
network's (canonical: the canonical form's) statistics.
The first layer of every point is a per-unit combination of theta's, d1's and d2's first layers (the
exponential map's coefficients differ from unit to unit), so the engine computes it from three
products with the data (evaluate.Combination).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from . import nets, symmetry
from .evaluate import Combination, evaluate_states, has_batchnorm
from .groups import Slots, compared_names, first_weight, in_module_order, prepare
from .params import MAX_SEED
from .paths import PathError, setup
from .symmetry import on_slots, take

State = dict[str, torch.Tensor]
Progress = Callable[[float, str], None]
MODES = ("filter", "canonical")
BN_MODES = ("recompute", "keep")
MAX_POINTS = {1: 401, 2: 101}
# The slice's parameter table: the slice job kind serves and validates it (kinds.py), ``check`` holds a direct
# call to the same bounds, so what the API accepts is what ``slice_result`` runs with.
PARAMS: dict[str, dict[str, Any]] = {
    "dims": {"type": "int", "default": 2, "min": 1, "max": 2,
             "help": "1: a line through the network along one random direction; 2: a plane along two"},
    "points": {"type": "int", "default": 21, "min": 3, "max": MAX_POINTS[1],
               "help": "grid nodes per axis on [-span, span] (the network itself is added when it is not one; "
                       f"2-D: at most {MAX_POINTS[2]})"},
    "span": {"type": "float", "default": 1.0, "min": 0.01, "max": 10.0,
             "help": "half-width of the grid, in units of the filter-normalised directions"},
    "mode": {"type": "str", "default": "filter", "choices": list(MODES),
             "help": "filter: the network as stored, filter-normalised Gaussian directions (Li et al.); "
                     "canonical: in canonical form on the product of spheres, tangent directions, the exponential map"},
    "seed": {"type": "int", "default": 0, "min": 0, "max": MAX_SEED, "help": "seed of the random directions"},
    "bn": {"type": "str", "default": "recompute", "choices": list(BN_MODES), "applies_to": ["batchnorm"],
           "help": "BatchNorm statistics at each point: recomputed on the training inputs, or the network's"},
}


class SliceError(PathError):
    """Inputs a slice cannot be computed for; the message says why."""


def _float64(state: State) -> State:
    return {k: v.detach().double() if v.is_floating_point() else v.clone() for k, v in state.items()}


@dataclass(frozen=True)
class Sphere:
    """Tensors whose rows (axis 0, one per channel) are concatenated into the coordinates of spheres:
    one sphere per channel (``per_row``), or the whole concatenation one sphere (the output layer)."""

    names: tuple[str, ...]
    per_row: bool
    slots: tuple[Slots | None, ...] = ()  # beside names: the rows of each tensor on these spheres (empty: all)

    def slot(self, i: int) -> Slots | None:
        return self.slots[i] if self.slots else None

    def rows(self, state: State) -> torch.Tensor:
        parts = [take(state[n], 0, self.slot(i)) for i, n in enumerate(self.names)]
        rows = torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)
        return rows if self.per_row else rows.reshape(1, -1)

    def split(self, rows: torch.Tensor, like: State, into: State | None = None) -> State:
        """``rows`` (as ``rows`` gives them) back into tensors shaped as in ``like``; a tensor whose rows hold
        other spheres' channels too (a zero-padded shortcut's stream) gets only its own rows replaced, in its
        value in ``into`` (or ``like``)."""
        first = self.slot(0)
        rows = rows.reshape(len(first.positions) if first else like[self.names[0]].shape[0], -1)
        widths = [like[n][0].numel() for n in self.names]
        out: State = {}
        for i, (n, r) in enumerate(zip(self.names, rows.split(widths, dim=1))):
            piece = r.reshape((r.shape[0], *like[n].shape[1:]))
            s = self.slot(i)
            out[n] = piece if s is None else on_slots((into or {}).get(n, like[n]), 0, s, lambda _, p=piece: p)
        return out


def spheres(spec: dict[str, Any]) -> list[Sphere]:
    """The spheres of the canonical form (groups.unit_groups): every scaled segment's channels (its writers'
    vectors concatenated: a unit's incoming weights, a residual stream channel's gammas) and the output
    layer's weights as one sphere."""
    g = prepare(spec).groups
    out = []
    for seg in g.spheres():
        slots = tuple(w.slots for w in seg.writers)
        out.append(Sphere(tuple(seg.vectors()), True, slots if any(x is not None for x in slots) else ()))
    if g.output is not None:
        out.append(Sphere(tuple(g.output.vectors()), False))
    return out


def center(spec: dict[str, Any], state: State, mode: str) -> State:
    """The network the slice is centred on, in float64: as stored, or in canonical form."""
    state = _float64(state)
    return symmetry.canonical_form(spec, state) if mode == "canonical" else state


def _filter_normalised(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    rows, zr = t.reshape(t.shape[0], -1), z.reshape(z.shape[0], -1)
    return (zr * (rows.norm(dim=1, keepdim=True) / zr.norm(dim=1, keepdim=True).clamp_min(1e-300))).reshape(t.shape)


def directions(spec: dict[str, Any], theta: State, mode: str, seed: int, count: int) -> list[State]:
    """``count`` filter-normalised directions at ``theta`` (the centre, see ``center``); module docstring."""
    gen = torch.Generator().manual_seed(int(seed))
    weights = {k for k in compared_names(spec, theta) if theta[k].dim() >= 2}
    on_sphere = spheres(spec) if mode == "canonical" else []
    placed = {n for sph in on_sphere for n in sph.names}
    out = []
    for _ in range(count):
        z = {name: torch.randn(theta[name].shape, generator=gen, dtype=torch.float64)
             for name in in_module_order(spec, theta) if theta[name].is_floating_point()}
        d: State = {name: (_filter_normalised(theta[name], zn) if name in weights and name not in placed
                           else torch.zeros_like(zn)) for name, zn in z.items()}
        for sph in on_sphere:  # onto the tangent space of each sphere at theta, then its radius
            rows, zr = sph.rows(theta), sph.rows(z)
            u = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)
            zr = zr - (zr * u).sum(1, keepdim=True) * u
            zr = zr * (rows.norm(dim=1, keepdim=True) / zr.norm(dim=1, keepdim=True).clamp_min(1e-300))
            d.update(sph.split(zr, theta, d))
        out.append(d)
    return out


def _exp_coefficients(rows: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sphere (row): (cos(|v|/R), R sin(|v|/R) / |v|), the exponential map's weights of theta and v."""
    radius = rows.norm(dim=1)
    n = v.norm(dim=1)
    angle = n / radius.clamp_min(1e-300)
    safe = torch.where(n > 0, n, torch.ones_like(n))
    scale = torch.where(n > 0, radius * torch.sin(angle) / safe, torch.ones_like(n))
    return torch.cos(angle), scale


def _on_spheres(spec: dict[str, Any], theta: State, dirs: list[State], mode: str) -> list[tuple]:
    """(sphere, theta's rows, each direction's rows) for every sphere of a canonical slice (none in filter mode):
    what each point's exponential map needs, gathered once for all the points."""
    return [(sph, sph.rows(theta), [sph.rows(d) for d in dirs]) for sph in (spheres(spec) if mode == "canonical" else [])]


def _point(theta: State, dirs: list[State], coords: tuple[float, ...], on_spheres: list[tuple]) -> State:
    placed = {n for sph, _, _ in on_spheres for n in sph.names}
    out: State = {}
    for name, t in theta.items():
        if not t.is_floating_point():
            out[name] = t.clone()
        elif name not in placed:
            out[name] = t + sum(c * d[name] for c, d in zip(coords, dirs))
    for sph, rows, drows in on_spheres:  # the exponential map instead of t + v
        v = sum(c * r for c, r in zip(coords, drows))
        c0, s = _exp_coefficients(rows, v)
        out.update(sph.split(c0[:, None] * rows + s[:, None] * v, theta, out))
    return {name: out[name] for name in theta}


def point(spec: dict[str, Any], theta: State, dirs: list[State], coords: tuple[float, ...], mode: str) -> State:
    """The state at ``coords`` (x, or x and y) of the slice through ``theta`` along ``dirs``."""
    return _point(theta, dirs, coords, _on_spheres(spec, theta, dirs, mode))


def _first_combination(spec: dict[str, Any], theta: State, dirs: list[State], grid: list[tuple[float, ...]],
                       on_spheres: list[tuple]) -> Combination:
    """The first layer of every grid point as a per-unit combination of theta's and the directions'."""
    name = first_weight(spec)
    w = theta[name]
    h = w.shape[0]
    coef = torch.zeros(len(grid), 1 + len(dirs), h, dtype=torch.float64)
    sphere = next((entry for entry in on_spheres if name in entry[0].names), None)
    for i, coords in enumerate(grid):
        if sphere is None:
            coef[i, 0] = 1.0
            for j, c in enumerate(coords):
                coef[i, 1 + j] = c
            continue
        sph, rows, drows = sphere
        c0, s = _exp_coefficients(rows, sum(c * r for c, r in zip(coords, drows)))  # (h,), or (1,) for one sphere
        slots = sph.slot(sph.names.index(name))
        if slots is not None:  # (a first layer sharing its rows with other spheres: none built here)
            raise SliceError("a canonical slice of a network whose first layer writes into a zero-padded stream is not handled")
        coef[i, 0] = c0.expand(h)
        for j, c in enumerate(coords):
            coef[i, 1 + j] = (c * s).expand(h)
    return Combination(name, [w] + [d[name] for d in dirs], coef)


def axis(span: float, points: int) -> list[float]:
    """``points`` evenly spaced values on [-span, span], with 0 among them (added when it is not)."""
    nodes = [span * (2 * i - (points - 1)) / (points - 1) for i in range(points)]  # symmetric about 0
    if min(abs(v) for v in nodes) > 1e-12 * span:
        nodes.append(0.0)
    return sorted(0.0 if abs(v) <= 1e-12 * span else v for v in nodes)


def check_points(dims: int, points: int, error: type[Exception] = SliceError) -> None:
    """The one rule that ties two parameters: a 2-D slice has at most ``MAX_POINTS[2]`` points per axis."""
    if not isinstance(points, int) or isinstance(points, bool) or not PARAMS["points"]["min"] <= points <= MAX_POINTS[dims]:
        raise error(f"'points' must be an integer between {PARAMS['points']['min']} and {MAX_POINTS[dims]} "
                    f"for a {dims}-D slice, got {points!r}")


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check(spec: dict[str, Any], dims: int, points: int, span: float, mode: str, bn: str, seed: int) -> None:
    """The parameters of a direct call, against ``PARAMS`` (the job kind's table): the same bounds in words."""
    nets.require_real(spec, "slice", SliceError)
    if mode not in PARAMS["mode"]["choices"]:
        raise SliceError(f"unknown slice mode {mode!r}; known: {', '.join(MODES)}")
    if bn not in PARAMS["bn"]["choices"]:
        raise SliceError(f"unknown BatchNorm mode {bn!r}; known: {', '.join(BN_MODES)}")
    if not _integer(dims) or not PARAMS["dims"]["min"] <= dims <= PARAMS["dims"]["max"]:
        raise SliceError(f"'dims' must be 1 or 2, got {dims!r}")
    check_points(dims, points)
    lo, hi = PARAMS["span"]["min"], PARAMS["span"]["max"]
    if not isinstance(span, (int, float)) or isinstance(span, bool) or not lo <= span <= hi:
        raise SliceError(f"'span' must be a number in [{lo}, {hi}], got {span!r}")
    lo, hi = PARAMS["seed"]["min"], PARAMS["seed"]["max"]
    if not _integer(seed) or not lo <= seed <= hi:
        raise SliceError(f"'seed' must be an integer in [{lo}, {hi}], got {seed!r}")


def slice_result(
    spec: dict[str, Any],
    data: Any,
    state: State,
    dims: int = 2,
    points: int = 21,
    span: float = 1.0,
    mode: str = "filter",
    seed: int = 0,
    bn: str = "recompute",
    progress: Progress | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
    bn_samples: int | None = None,
    memory_mb: float | None = None,
) -> dict[str, Any]:
    """Train/test error and loss on a 1-D or 2-D random-direction section around one network.

    Returns {"dims", "mode", "seed", "span", "bn" (None without BatchNorm), "x": [...], and for 2-D "y":
    [...]; "train_error", "test_error", "train_loss", "test_loss": lists over x (1-D) or len(y) rows of
    len(x) values (value [i][j] at (x[j], y[i])); "center": the four values at the origin (the network
    itself); "direction_norms": the Euclidean norm of each direction}. Raises ``SliceError`` for bad
    parameters or binary networks.
    """
    spec = prepare(spec)
    check(spec, dims, points, span, mode, bn, seed)
    model, splits, bn_data = setup(spec, data, [state], dtype, device, bn, bn_samples)

    theta = center(spec, state, mode)
    dirs = directions(spec, theta, mode, seed, dims)
    xs = axis(float(span), points)
    ys = axis(float(span), points) if dims == 2 else [0.0]
    grid = [(x,) for x in xs] if dims == 1 else [(x, y) for y in ys for x in xs]  # 2-D: row by row (y outer)

    on_spheres = _on_spheres(spec, theta, dirs, mode)

    def states() -> Iterator[State]:
        for coords in grid:
            yield _point(theta, dirs, coords, on_spheres)

    with_bn = has_batchnorm(model)

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message.replace("point", "slice point"))

    res = evaluate_states(model, states(), splits, progress=report, total=len(grid), bn_data=bn_data,
                          first=_first_combination(spec, theta, dirs, grid, on_spheres), memory_mb=memory_mb)
    out: dict[str, Any] = {"dims": dims, "mode": mode, "seed": seed, "span": float(span),
                           "bn": bn if with_bn else None, "x": xs}
    origin = grid.index((0.0,) if dims == 1 else (0.0, 0.0))
    out["center"] = {}
    for split in ("train", "test"):
        for what in ("error", "loss"):
            flat = res[split][what]
            out[f"{split}_{what}"] = flat if dims == 1 else [flat[i * len(xs):(i + 1) * len(xs)] for i in range(len(ys))]
            out["center"][f"{split}_{what}"] = flat[origin]
    if dims == 2:
        out["y"] = ys
    names = [k for k in dirs[0]]
    out["direction_norms"] = [math.sqrt(sum(float((d[k] ** 2).sum()) for k in names)) for d in dirs]
    return out
