"""Distances and paths between two networks of one architecture (docs/science.md section 3).

Path types (``PATH_TYPES``):
- "linear": (1 - t) a + t b on the raw parameters (every float tensor, BN running stats included).
- "linear_aligned": the same with b aligned to a first (symmetry.align: its units permuted, and its BatchNorm
  units sign-flipped where their gamma's sign differs from a's, both exact symmetries), raw scales kept.
- "geodesic": both canonical (symmetry.canonical_form), b aligned, slerp per hidden unit on its unit
  sphere and on the whole output weight matrix (radius sqrt(H_L)), one x for all; every other float
  tensor (biases, BN affine parameters and statistics) linear [ours]. Where an angle is below 1e-6 the
  normalised linear combination replaces the slerp. Real-valued networks only.
- "hamming" (binary networks): from sign(a) to sign(align(a, b)), flipping the differing weights in
  a random order (a shortest path in Hamming space); ``path_result`` averages ``orders`` seeded orders.
BatchNorm statistics along a path: bn="recompute" (default [ours]: recomputed on the training inputs
at every point, endpoints included) or bn="interpolate" (the path's own interpolation of them).
Single-bend paths (a trained midpoint) are in bend.py.
Evaluation: the batched engine (evaluate.evaluate_states); along linear and geodesic paths the first
layer of every point is a per-unit combination of the two ends' first layers (``path_points``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch

from . import nets, symmetry
from .data import Dataset
from .evaluate import Combination, bn_inputs, default_device, error_and_loss, evaluate_states, has_batchnorm
from .groups import compared_names, first_weight, prepare
from .params import MAX_SEED

State = dict[str, torch.Tensor]
Progress = Callable[[float, str], None]

PATH_TYPES: dict[str, str] = {
    "linear": "straight line between the raw networks",
    "linear_aligned": "straight line after aligning b's hidden units to a's: permuted, and BatchNorm units sign-flipped to a's gamma signs (both exact); raw scales kept",
    "geodesic": "geodesic on the product of spheres between the canonical forms, b aligned (real networks)",
    "hamming": "random shortest paths in Hamming space between the aligned sign patterns, averaged over orders (binary networks)",
}
# Every distance ``distances`` reports, in the order they are shown: its label and what it measures. The one
# home of these words: the distance and matrix kinds serve it (GET /api/job-kinds, "results"), the dashboard
# reads it from there.
DISTANCES: dict[str, dict[str, str]] = {
    "raw": {"label": "raw", "help": "‖θA − θB‖ / √N of the networks as stored"},
    "aligned": {"label": "aligned", "help": "B's units permuted to match A's, raw scales"},
    "normalized": {"label": "normalised",
                   "help": "both in canonical form (unit-norm units), not aligned"},
    "normalized_aligned": {"label": "normalised-aligned",
                           "help": "canonical forms, B aligned to A"},
    "geodesic": {"label": "geodesic D", "help": "length of the geodesic on the product of spheres"},
    "hamming": {"label": "hamming (aligned)", "help": "fraction of differing signs after alignment"},
    "hamming_unaligned": {"label": "hamming (unaligned)",
                          "help": "fraction of differing signs as stored"},
    "n_parameters": {"label": "parameters N", "help": "number of parameters compared"},
}
BN_MODES = ("recompute", "interpolate")
SLERP_MIN_ANGLE = 1e-6
# A path's parameter table: the path job kind serves and validates it (kinds.py adds the single bend, bend.PARAMS),
# ``check`` holds a direct call of ``path_result`` to the same bounds.
PARAMS: dict[str, dict[str, Any]] = {
    "type": {"type": "str", "default": "linear", "choices": list(PATH_TYPES),
             "help": "; ".join(f"{k}: {v}" for k, v in PATH_TYPES.items())},
    "points": {"type": "int", "default": 11, "min": 2, "max": 201, "help": "positions along the path, both ends included"},
    "bn": {"type": "str", "default": "recompute", "choices": list(BN_MODES), "applies_to": ["batchnorm"],
           "help": "BatchNorm statistics at each point: recomputed on the training inputs, or interpolated"},
    "orders": {"type": "int", "default": 5, "min": 1, "max": 100, "when": {"type": ["hamming"]},
               "applies_to": ["binary"], "help": "random flip orders averaged (Hamming paths)"},
    "seed": {"type": "int", "default": 0, "min": 0, "max": MAX_SEED, "when": {"type": ["hamming", "bend"]},
             "help": "seed of the flip orders or of the bend's training"},
}


class PathError(ValueError):
    """Inputs a path or distance cannot be computed for; the message says why."""


class IncompatibleError(PathError):
    """Two networks that cannot be compared (different architectures, binary vs real)."""


# --------------------------------------------------------------------------------------------------
# Checks


def compatible(spec_a: dict[str, Any], spec_b: dict[str, Any]) -> dict[str, Any]:
    """The common normalised spec of two networks, or ``IncompatibleError`` saying how they differ."""
    a, b = prepare(spec_a), prepare(spec_b)
    if a == b:
        return a
    binary_a, binary_b = nets.is_binary(a), nets.is_binary(b)
    if binary_a != binary_b:
        which = (a, b) if binary_a else (b, a)
        raise IncompatibleError(f"cannot compare a binary network ({which[0]['kind']!r}) with a real-valued one "
                                f"({which[1]['kind']!r}): paths and distances need two networks of one architecture")
    if a["kind"] != b["kind"]:
        raise IncompatibleError(f"different architectures {a['kind']!r} and {b['kind']!r}: paths and distances need "
                                "two networks of one architecture")
    diff = "; ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k])
    raise IncompatibleError(f"both networks are {a['kind']!r} but their parameters differ ({diff}): paths and "
                            "distances need two networks of one architecture")


def check_path_type(spec: dict[str, Any], type: str) -> None:
    """Raise ``PathError`` if path ``type`` does not exist or does not apply to ``spec``'s networks."""
    if type not in PATH_TYPES:
        raise PathError(f"unknown path type {type!r}; known: {', '.join(PATH_TYPES)}")
    net = prepare(spec)
    binary = net.binary
    if type == "geodesic":
        nets.require_real(binary, "geodesic", PathError)
    if type == "geodesic" and not net.groups.spheres():
        raise PathError("a geodesic path needs a network with at least one hidden layer")
    if type == "hamming" and not binary:
        raise PathError("'hamming' paths are for binary networks; for real-valued ones use 'linear', "
                        "'linear_aligned' or 'geodesic'")


# --------------------------------------------------------------------------------------------------
# Distances


def _float64(state: State) -> State:
    return {k: v.detach().double() if v.is_floating_point() else v for k, v in state.items()}


def per_parameter_distance(spec: dict[str, Any], a: State, b: State) -> float:
    """||a - b|| / sqrt(N) over ``compared_names`` (N = their total number of entries), in float64."""
    names = compared_names(spec, a)
    sq = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in names)
    n = sum(a[k].numel() for k in names)
    return math.sqrt(sq / max(n, 1))


def angles(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """Angle between rows of v1 and v2 (float64), phi = 2 atan2(||v1 - v2||, ||v1 + v2||) (accurate near 0)
    for rows of equal norm; rows are first scaled to unit norm."""
    v1, v2 = v1.double(), v2.double()
    u1 = v1 / v1.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    u2 = v2 / v2.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return 2 * torch.atan2((u1 - u2).norm(dim=-1), (u1 + u2).norm(dim=-1))


def _spheres(spec: dict[str, Any], state: State) -> Iterator[tuple[Any, torch.Tensor, int]]:
    """(segment, rows, weight) for every sphere of the product: each hidden unit (a scale segment's channel:
    the incoming weights of a plain unit, the pre-BN weights or the gamma of a BatchNorm unit, the writers'
    gammas of a residual stream channel; one row each, radius 1, weight 1) and the whole output layer's
    weights (one row, radius sqrt(H_L), weight H_L). Units after a GELU are on no sphere (no scale symmetry)."""
    g = prepare(spec).groups
    for seg in g.spheres():
        yield seg, symmetry.segment_rows(state, seg), 1
    if g.output is not None:
        rows = symmetry.segment_rows(state, g.output)
        yield g.output, rows.reshape(1, -1), rows.shape[0]


def off_sphere_weights(spec: dict[str, Any]) -> list[str]:
    """The weights on no sphere: incoming weights (and BatchNorm gammas) of the units whose scale is not a
    symmetry (those before a GELU). The canonical form leaves them as they are."""
    return [w.vector for seg in prepare(spec).groups.segments if not seg.scaled for w in seg.writers]


def geodesic_distance(spec: dict[str, Any], state_a: State, state_b: State) -> float:
    """D between the canonical forms of two networks as given (no alignment):
    D^2 = sum over hidden units of phi_k^2 + H_L phi_L^2 + ||a - b||^2 over the weights on no sphere
    (``off_sphere_weights``: Euclidean, in quadrature [ours], so that every weight counts; the paper's
    networks have none). Biases and BatchNorm betas do not count, as in the paper. Real-valued networks only."""
    nets.require_real(spec, "geodesic distance", PathError)
    a = symmetry.canonical_form(spec, _float64(state_a))
    b = symmetry.canonical_form(spec, _float64(state_b))
    d2 = 0.0
    for (_, ra, weight), (_, rb, _) in zip(_spheres(spec, a), _spheres(spec, b)):
        d2 += weight * float((angles(ra, rb) ** 2).sum())
    for name in off_sphere_weights(spec):
        d2 += float(((a[name] - b[name]) ** 2).sum())
    return math.sqrt(d2)


def distances(spec: dict[str, Any], state_a: State, state_b: State, aligned: State | None = None) -> dict[str, Any]:
    """The paper's distances (Fig. 5) between two networks of ``spec``.

    Per-parameter Euclidean distances ||a - b|| / sqrt(N) over ``compared_names`` (weights and biases of
    every layer plus BatchNorm gamma/beta, not BatchNorm running statistics): "raw", "aligned" (b aligned
    to a), "normalized" (both canonical), "normalized_aligned"; "geodesic" D between the canonical forms
    after alignment (None for binary nets); binary nets also "hamming" (fraction of differing +-1
    weights after alignment) and "hamming_unaligned". For binary nets "normalized*" compare canonical
    (+-1) forms and "raw"/"aligned" the latent weights. ``aligned``: b already aligned to a (float64), when
    the caller has it (a path job aligns once).
    """
    spec = prepare(spec)
    binary = spec.binary
    a, b = _float64(state_a), _float64(state_b)
    b_al = _float64(aligned) if aligned is not None else symmetry.align(spec, a, b)
    na, nb, nb_al = (symmetry.canonical_form(spec, x) for x in (a, b, b_al))
    out: dict[str, Any] = {
        "n_parameters": sum(a[k].numel() for k in compared_names(spec, a)),
        "raw": per_parameter_distance(spec, a, b),
        "aligned": per_parameter_distance(spec, a, b_al),
        "normalized": per_parameter_distance(spec, na, nb),
        "normalized_aligned": per_parameter_distance(spec, na, nb_al),
        "geodesic": None if binary else geodesic_distance(spec, na, nb_al),
    }
    if binary:
        sa, sb, sb_al = (symmetry.binarized(spec, x) for x in (a, b, b_al))
        names = spec.groups.binary
        n = sum(sa[k].numel() for k in names)
        out["hamming"] = sum(int((sa[k] != sb_al[k]).sum()) for k in names) / n
        out["hamming_unaligned"] = sum(int((sa[k] != sb[k]).sum()) for k in names) / n
    return out


# --------------------------------------------------------------------------------------------------
# Paths (iterators of state dicts)


def check_points(points: int) -> None:
    """``points`` against the table's bounds (``PARAMS``), in words."""
    lo, hi = PARAMS["points"]["min"], PARAMS["points"]["max"]
    if not isinstance(points, int) or isinstance(points, bool) or not lo <= points <= hi:
        raise PathError(f"a path needs an integer number of points, at least {lo} and at most {hi}, got {points!r}")


def positions(points: int) -> list[float]:
    """``points`` evenly spaced positions in [0, 1], both ends included (at least 2: the two ends)."""
    if not isinstance(points, int) or isinstance(points, bool) or points < 2:
        raise PathError(f"a path needs an integer number of points, at least 2, got {points!r}")
    return [i / (points - 1) for i in range(points)]


def linear_path(state_a: State, state_b: State, ts: list[float]) -> Iterator[State]:
    """Straight line (1 - t) a + t b between raw parameter vectors; integer buffers are taken from a."""
    for t in ts:
        point = {}
        for name, a in state_a.items():
            b = state_b[name]
            point[name] = torch.lerp(a, b.to(a.dtype), t) if a.is_floating_point() else a.clone()
        yield point


def slerp_coefficients(v1: torch.Tensor, v2: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta), each (H,) float64, with slerp_rows(v1, v2, t) = alpha[:, None] * v1 + beta[:, None] * v2:
    sin((1 - t) phi) / sin(phi) and sin(t phi) / sin(phi) per row; below SLERP_MIN_ANGLE the normalised
    linear combination c ((1 - t) v1 + t v2) with c = ((1 - t) |v1| + t |v2|) / |(1 - t) v1 + t v2|."""
    v1, v2 = v1.double(), v2.double()
    phi = angles(v1, v2)  # (H,)
    use_slerp = phi > SLERP_MIN_ANGLE
    sin_phi = torch.where(use_slerp, torch.sin(phi), torch.ones_like(phi))
    target = (1 - t) * v1.norm(dim=1) + t * v2.norm(dim=1)
    lin_norm = ((1 - t) * v1 + t * v2).norm(dim=1)
    c = torch.where(lin_norm > 0, target / lin_norm.clamp_min(1e-300), torch.ones_like(lin_norm))
    alpha = torch.where(use_slerp, torch.sin((1 - t) * phi) / sin_phi, (1 - t) * c)
    beta = torch.where(use_slerp, torch.sin(t * phi) / sin_phi, t * c)
    return alpha, beta


def slerp_rows(v1: torch.Tensor, v2: torch.Tensor, t: float) -> torch.Tensor:
    """Slerp of each row of v1 (H, d) towards the same row of v2, in float64. Rows of equal norm stay on their
    sphere; below SLERP_MIN_ANGLE the normalised linear combination (norm (1-t)|v1| + t|v2|) is used."""
    alpha, beta = slerp_coefficients(v1, v2, t)
    return alpha[:, None] * v1.double() + beta[:, None] * v2.double()


def _geodesic_ends(spec: dict[str, Any], state_a: State, state_b: State,
                   aligned: State | None = None) -> tuple[State, State]:
    """canonical(a) and canonical(align(a, b)): the ends of the geodesic (``aligned``: align(a, b), if known)."""
    return (symmetry.canonical_form(spec, state_a),
            symmetry.canonical_form(spec, aligned if aligned is not None else symmetry.align(spec, state_a, state_b)))


def _geodesic_coefficients(spec: dict[str, Any], a: State, b: State, ts: list[float]) -> Iterator[dict[str, tuple]]:
    """For each t, {tensor name: (alpha, beta)} with tensor(t) = alpha a + beta b per channel (alpha, beta (C,)
    float64) for every tensor on a sphere: each sphere's slerp coefficients, shared by all the writers'
    tensors of one channel (a segment's rows are the concatenation of its writers' vectors)."""
    spheres = [(seg, ra, rb) for (seg, ra, _), (_, rb, _) in zip(_spheres(spec, a), _spheres(spec, b))]
    for t in ts:
        coef: dict[str, tuple] = {}
        for seg, ra, rb in spheres:
            if t in (0.0, 1.0):  # the ends exactly
                one, zero = torch.ones(len(ra), dtype=torch.float64), torch.zeros(len(ra), dtype=torch.float64)
                alpha, beta = (one, zero) if t == 0.0 else (zero, one)
            else:
                alpha, beta = slerp_coefficients(ra, rb, t)
            for w in seg.writers:
                name, n = w.vector, a[w.vector].shape[0]
                k = len(w.slots.positions) if w.slots else n
                here = (alpha.expand(k), beta.expand(k)) if len(alpha) == 1 else (alpha, beta)
                if w.slots is None:
                    coef[name] = here
                    continue
                # a tensor whose rows hold several segments' channels (a zero-padded shortcut's stream):
                # each segment fills its own rows, the others keep theirs (linear until filled)
                line = (torch.full((n,), 1 - t, dtype=torch.float64), torch.full((n,), t, dtype=torch.float64))
                full_a, full_b = (c.clone() for c in coef.get(name, line))
                idx = torch.as_tensor(w.slots.positions, dtype=torch.long)
                full_a[idx], full_b[idx] = here
                coef[name] = (full_a, full_b)
        yield coef


def _geodesic_states(spec: dict[str, Any], a: State, b: State, ts: list[float]) -> Iterator[State]:
    for point, coef in zip(linear_path(a, b, ts), _geodesic_coefficients(spec, a, b, ts)):
        for name, (alpha, beta) in coef.items():  # biases, BN betas and statistics stay linear
            shape = [-1] + [1] * (a[name].dim() - 1)
            point[name] = (alpha.view(shape) * a[name].double() + beta.view(shape) * b[name].double()).to(a[name].dtype)
        yield point


def geodesic_path(spec: dict[str, Any], state_a: State, state_b: State, ts: list[float]) -> Iterator[State]:
    """Points of the geodesic between canonical(a) and canonical(align(a, b)) at positions ``ts``."""
    spec = prepare(spec)
    check_path_type(spec, "geodesic")
    a, b = _geodesic_ends(spec, state_a, state_b)
    yield from _geodesic_states(spec, a, b, ts)


def hamming_path(spec: dict[str, Any], state_a: State, state_b: State, ts: list[float],
                 generator: torch.Generator | None = None, aligned: State | None = None) -> Iterator[State]:
    """One random shortest path in Hamming space from sign(a) to sign(align(a, b)): at position t the first
    round(t * m) of the m differing weights (in a random order) are flipped."""
    spec = prepare(spec)
    check_path_type(spec, "hamming")
    a = symmetry.binarized(spec, state_a)
    b = symmetry.binarized(spec, aligned if aligned is not None else symmetry.align(spec, state_a, state_b))
    names = spec.groups.binary
    va = torch.cat([a[k].reshape(-1) for k in names])  # (N,) +-1
    vb = torch.cat([b[k].reshape(-1) for k in names]).to(va.dtype)
    differ = torch.nonzero(va != vb).flatten()
    order = differ[torch.randperm(len(differ), generator=generator)]
    for t in ts:
        v = va.clone()
        flip = order[: round(t * len(order))]
        v[flip] = vb[flip]
        point, offset = dict(a), 0
        for k in names:
            n = a[k].numel()
            point[k] = v[offset : offset + n].reshape(a[k].shape)
            offset += n
        yield point


def path_states(spec: dict[str, Any], state_a: State, state_b: State, type: str, ts: list[float],
                generator: torch.Generator | None = None) -> Iterator[State]:
    """The states of a path of ``type`` at positions ``ts`` (one random order for "hamming")."""
    return path_points(spec, state_a, state_b, type, ts, generator)[0]


def _line_combination(name: str, a: State, b: State, ts: list[float]) -> Combination:
    """First layer of the straight line a -> b: weight(t) = (1 - t) a + t b, the same for every unit."""
    h = a[name].shape[0]
    coef = torch.tensor([[1 - t, t] for t in ts], dtype=torch.float64)[:, :, None].expand(len(ts), 2, h)
    return Combination(name, [a[name], b[name]], coef)


def _geodesic_combination(spec: dict[str, Any], name: str, a: State, b: State, ts: list[float]) -> Combination:
    """First layer of the geodesic a -> b (canonical ends): each unit alpha(t) a_u + beta(t) b_u, with its
    sphere's slerp coefficients (linear, 1 - t and t, for a first layer on no sphere)."""
    h = a[name].shape[0]
    coef = []
    for t, by_name in zip(ts, _geodesic_coefficients(spec, a, b, ts)):
        line = (torch.full((h,), 1 - t, dtype=torch.float64), torch.full((h,), t, dtype=torch.float64))
        coef.append(torch.stack(by_name.get(name, line)))
    return Combination(name, [a[name], b[name]], torch.stack(coef))  # coef (K, 2, H)


def path_points(spec: dict[str, Any], state_a: State, state_b: State, type: str, ts: list[float],
                generator: torch.Generator | None = None,
                aligned: State | None = None) -> tuple[Iterator[State], Combination | None]:
    """The states of a path of ``type`` at positions ``ts``, and (real networks) its first layer as an
    ``evaluate.Combination`` of the two ends' first layers, which lets the engine compute the first layer
    of all points from two products with the data. ``aligned``: align(a, b), when the caller has it."""
    spec = prepare(spec)
    check_path_type(spec, type)
    return _path_points(spec, state_a, state_b, type, ts, generator, aligned)


def _path_points(spec: dict[str, Any], state_a: State, state_b: State, type: str, ts: list[float],
                 generator: torch.Generator | None, aligned: State | None) -> tuple[Iterator[State], Combination | None]:
    """``path_points`` for a prepared network and a path type checked already."""
    if type == "hamming":
        return hamming_path(spec, state_a, state_b, ts, generator, aligned), None
    if type == "geodesic":
        a, b = _geodesic_ends(spec, state_a, state_b, aligned)
        states = _geodesic_states(spec, a, b, ts)
        return states, _geodesic_combination(spec, first_weight(spec), a, b, ts)
    if type == "linear":
        b = state_b
    else:
        b = aligned if aligned is not None else symmetry.align(spec, state_a, state_b)
    return linear_path(state_a, b, ts), _line_combination(first_weight(spec), state_a, b, ts)


# --------------------------------------------------------------------------------------------------
# What a worker calls


def _check_bn(bn: str) -> None:
    if bn not in BN_MODES:
        raise PathError(f"unknown BatchNorm mode {bn!r}; known: {', '.join(BN_MODES)}")


def setup(spec: dict[str, Any], data: Dataset, states: list[State], dtype: torch.dtype, device: Any, bn: str,
          bn_samples: int | None):
    """Model on the device (every state checked against it), splits on the device, inputs for BatchNorm
    recomputation (None when not needed: bn is not "recompute", or no BatchNorm). Paths, bends, planes, slices."""
    device = torch.device(device) if device is not None else default_device()
    model = nets.build(spec, data.input_shape, data.n_classes).to(dtype)
    for state in states:
        nets.check_state_dict(model, state)
    model = model.to(device)
    splits = {"train": (data.x_train.to(device), data.y_train.to(device)),
              "test": (data.x_test.to(device), data.y_test.to(device))}
    bn_data = bn_inputs(data.x_train, bn_samples).to(device) if has_batchnorm(model) and bn == "recompute" else None
    return model, splits, bn_data


def add_barrier(out: dict[str, Any]) -> None:
    train = out["train_error"]
    out["barrier"] = max(train)
    out["barrier_excess"] = max(train) - (train[0] + train[-1]) / 2


@torch.no_grad()
def end_errors(model: torch.nn.Module, data: Dataset, state_a: State, state_b: State) -> dict[str, dict[str, float]]:
    """Each end's errors and losses as stored, with its own BatchNorm statistics in eval mode: the numbers of the
    network itself (its ``evaluate``, the same computation), on the path's ``model`` (left as it was). With
    ``bn="recompute"`` (the default) a path's t = 0 and t = 1 are the ends with statistics recomputed on the
    training data, so for a BatchNorm network they can differ from these; the barrier is measured on the path's
    own curve (recomputed statistics at every point, both ends included)."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {}
    try:
        for end, state in (("a", state_a), ("b", state_b)):
            model.load_state_dict({k: state[k].to(v.dtype) if v.is_floating_point() else state[k]
                                   for k, v in saved.items()})
            train_err, train_loss = error_and_loss(model, data.x_train, data.y_train)
            test_err, test_loss = error_and_loss(model, data.x_test, data.y_test)
            out[end] = {"train_error": train_err, "test_error": test_err, "train_loss": train_loss,
                        "test_loss": test_loss}
    finally:
        model.load_state_dict(saved)
    return out


def path_result(
    spec: dict[str, Any],
    data: Dataset,
    state_a: State,
    state_b: State,
    type: str = "linear",
    points: int = 11,
    bn: str = "recompute",
    orders: int = 5,
    seed: int = 0,
    progress: Progress | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    device: Any = None,
    bn_samples: int | None = None,
    ts: list[float] | None = None,
    with_distances: bool = True,
) -> dict[str, Any]:
    """Train/test error and loss along a path between two networks of ``spec`` on ``data`` (a data.Dataset).

    Returns a JSON-ready dict: "type", "t", "train_error", "test_error", "train_loss", "test_loss",
    "barrier" (max train error along the path), "barrier_excess" (barrier minus the mean of the two
    endpoints' train errors on the path), "distances" (see ``distances``), "ends" (``end_errors``: each network's
    errors as stored, with its own BatchNorm statistics), "bn" (the BatchNorm mode, None without
    BatchNorm), and for "hamming" paths "orders" and the spread "train_error_std", "test_error_std" of
    the per-order curves (the curves, and so the barrier, are those of the mean over orders). Raises ``PathError`` for
    a path type that does not apply, ``nets.SpecError`` / ``nets.WeightsError`` for a bad spec or weights.
    Evaluated by the batched engine (evaluate.evaluate_states) on ``device`` (default: CUDA if present);
    ``bn_samples``: recompute BatchNorm statistics on a fixed random subset of that many training inputs.
    ``ts``: evaluate these positions instead of ``points`` even ones (a piece of a long path computed on
    one worker; every point is computed independently of the others, so pieces join exactly);
    ``with_distances=False`` leaves "distances" out (the other pieces of a split path). The pair is aligned
    once, in float64, for the path and the distances alike.
    """
    spec = prepare(spec)
    check_path_type(spec, type)
    _check_bn(bn)
    for key, value in (("orders", orders), ("seed", seed)):
        lo, hi = PARAMS[key]["min"], PARAMS[key]["max"]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise PathError(f"'{key}' must be an integer in [{lo}, {hi}], got {value!r}")
    if ts is None:  # (a piece of a job gets its positions from the kind's split, of checked points)
        check_points(points)
        ts = positions(points)
    else:
        ts = [float(t) for t in ts]
    model, splits, bn_data = setup(spec, data, [state_a, state_b], dtype, device, bn, bn_samples)
    aligned64 = None
    if type != "linear" or with_distances:
        aligned64 = symmetry.align(spec, _float64(state_a), _float64(state_b))
    aligned = None if aligned64 is None else {k: v.to(state_b[k].dtype) for k, v in aligned64.items()}
    runs = orders if type == "hamming" else 1
    gen = torch.Generator().manual_seed(seed)
    curves = []
    for r in range(runs):

        def report(fraction: float, message: str, r: int = r) -> None:
            if progress is not None:
                progress((r + fraction) / runs, message if runs == 1 else f"order {r + 1}/{runs}: {message}")

        states, first = _path_points(spec, state_a, state_b, type, ts, gen, aligned)
        curves.append(evaluate_states(model, states, splits, progress=report, total=len(ts), bn_data=bn_data,
                                      first=first))
    out: dict[str, Any] = {"type": type, "t": ts, "bn": bn if has_batchnorm(model) else None}
    for split in ("train", "test"):
        for what in ("error", "loss"):
            stacked = torch.tensor([c[split][what] for c in curves], dtype=torch.float64)  # (runs, points)
            out[f"{split}_{what}"] = stacked.mean(dim=0).tolist()
            if type == "hamming" and what == "error":
                out[f"{split}_error_std"] = stacked.std(dim=0, unbiased=False).tolist()
    add_barrier(out)
    if with_distances:
        out["distances"] = distances(spec, state_a, state_b, aligned=aligned64)
        out["ends"] = end_errors(model, data, state_a, state_b)
    if type == "hamming":
        out["orders"] = orders
    return out
