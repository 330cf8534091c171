"""Frozen copy of workers/landscape/symmetry.py before issue 15 (per-layer unit structure): the reference that
the group derivation must reproduce on the existing architectures (tests/science/test_groups.py).

Also the per-layer unit structure (``Layer``, ``Structure``, ``unit_structure``) that nets.py held until
binary networks moved onto the derived groups too: the tests use it as an independent description of the
layer-by-layer architectures' units.

Its own docstring:
Symmetries of a network: canonical form (positive rescalings, sign flips) and alignment (permutations).

Everything here is written once over ``unit_structure(spec)`` and works on state dicts, for every
architecture. docs/science.md section 2 gives the method.

- ``canonical_form(spec, state)``: paper's Algorithm 1. Real nets: every hidden unit's incoming
  weights get norm 1 (bias and BatchNorm statistics follow), its outgoing slice absorbs the factor;
  the output layer (weights and bias together [ours]) is scaled to weight norm sqrt(H_L).
  BatchNorm units [ours, exact and unique]: the pre-BN weights get norm 1 (running_mean scaled with
  them, running_var' = c^2 (running_var + eps) - eps), the linear bias before BN is folded into
  running_mean (b' = 0, running_mean' = running_mean - b: an exact eval-mode symmetry), and the
  post-BN affine pair (gamma_k, beta_k) is divided by |gamma_k|, the outgoing slice absorbing that
  factor: the unit becomes ReLU(+-zhat + beta'), gamma = +-1 (a unit with gamma = 0 is left alone).
  This choice keeps the linear interpolation of gamma that the geodesic path uses on the canonical
  set (gamma stays +1 between two units with gamma = +1).
  Binary nets: weights replaced by their signs (+-1, sign(0) = +1 as in the forward pass); each
  flippable hidden unit (see ``nets.Layer.flip``) is flipped so that its first incoming weight is +1,
  which makes the form unique within each class of flip-equivalent nets [ours]. Units followed by
  a max-pool (binary convs) and committee units (fixed output weights) have no flip symmetry.
- ``align(spec, state_a, state_b)``: paper's Algorithm 2, returns state_b with its hidden units
  permuted (and flipped, binary) to match state_a, raw values kept. Matching is computed on
  normalised copies, layer by layer with the Hungarian algorithm on the cosine of incoming weights,
  the next layer being compared in aligned coordinates; the output layer is never permuted.
  Only incoming weights enter the cost, as in the paper (for BatchNorm units: the pre-BN weights).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from workers.landscape import graphs, nets
from workers.landscape.nets import BN_EPS, WeightsError

# --------------------------------------------------------------------------------------------------
# Unit structure (git re-basin style)


@dataclass(frozen=True)
class Layer:
    """The units of one layer, described by state_dict names.

    Unit k owns row k (axis 0) of ``weight`` (its incoming weights; a conv filter flattened to
    in_channels*kh*kw), entry k of ``bias`` and of the BatchNorm tensors ``{bn}.weight``, ``{bn}.bias``,
    ``{bn}.running_mean``, ``{bn}.running_var``, and, for a hidden layer, a block of the axis ``axis`` of
    each tensor in ``outgoing`` (the next layer's input axis). The block size is that axis' length
    divided by the number of units: 1 between dense layers or between convs (whose kernel axes are
    separate), h*w when a conv's channel c feeds a dense layer through a flatten (entries c*h*w ...
    (c+1)*h*w - 1). ``flip``: flipping the sign of a unit (incoming and outgoing) is a symmetry (binary
    sign units with an outgoing layer and no max-pool).
    """

    weight: str
    bias: str | None = None
    bn: str | None = None
    outgoing: tuple[tuple[str, int], ...] = ()
    flip: bool = False

    def bn_names(self) -> list[str]:
        if not self.bn:
            return []
        return [f"{self.bn}.{t}" for t in ("weight", "bias", "running_mean", "running_var")]


@dataclass(frozen=True)
class Structure:
    hidden: tuple[Layer, ...]  # layers 1..L-1 in forward order; each has its own permutation and scales
    output: Layer | None  # never permuted; None when the output is fixed (committee)
    binary: bool

    def weights(self) -> list[str]:
        """Every layer's weight tensor in forward order (hidden layers, then the output layer's)."""
        return [layer.weight for layer in self.hidden] + ([self.output.weight] if self.output else [])

    @property
    def first_weight(self) -> str:
        """The weight of the first layer (the one that reads the inputs)."""
        return self.weights()[0]


def unit_structure(spec: dict[str, Any]) -> Structure:
    """Which tensors and axes belong to each unit of ``spec``'s network (read from the same layer plan as ``build``).
    Layer-by-layer architectures only; every real-valued network's symmetries are derived from its graph
    by groups.unit_groups."""
    spec = nets.normalize_spec(spec)
    if spec["kind"] in graphs.ARCHITECTURES:
        raise nets.SpecError(f"architecture {spec['kind']!r} has no layer-by-layer unit structure; use groups.unit_groups")
    layers = [s for s in nets._layer_plan(spec) if isinstance(s, nets._Layer)]
    output = layers[-1] if layers[-1].act is None else None
    hidden = layers[:-1] if output is not None else layers
    described = []
    for i, lay in enumerate(hidden):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        described.append(Layer(
            weight=f"{lay.name}.weight",
            bias=f"{lay.name}.bias" if lay.bias else None,
            bn=lay.bn,
            outgoing=((f"{nxt.name}.weight", 1),) if nxt is not None else (),
            flip=lay.binary and lay.act == "sign" and not lay.pool and nxt is not None,
        ))
    out = Layer(weight=f"{output.name}.weight", bias=f"{output.name}.bias" if output.bias else None) if output else None
    return Structure(hidden=tuple(described), output=out, binary=any(s.binary for s in layers))



State = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Operations on the tensors of one layer's units (factors computed in float64, cast back)


def _per_unit(t: torch.Tensor, axis: int, n_units: int) -> tuple[int, list[int]]:
    """Block size of ``t`` along ``axis`` for ``n_units`` units, and a broadcast shape for that axis."""
    size = t.shape[axis]
    if size % n_units:
        raise WeightsError(f"axis {axis} of a tensor of shape {list(t.shape)} does not split into {n_units} units")
    shape = [1] * t.dim()
    shape[axis] = size
    return size // n_units, shape


def scale_axis(t: torch.Tensor, axis: int, c: torch.Tensor, divide: bool = False) -> torch.Tensor:
    """Multiply (or divide) unit k's block of ``t`` along ``axis`` by c[k]."""
    block, shape = _per_unit(t, axis, len(c))
    c = c.double().repeat_interleave(block).view(shape)
    return (t.double() / c if divide else t.double() * c).to(t.dtype)


def permute_axis(t: torch.Tensor, axis: int, perm: torch.Tensor) -> torch.Tensor:
    """New unit k of ``t`` along ``axis`` = old unit perm[k] (whole blocks move)."""
    block, _ = _per_unit(t, axis, len(perm))
    idx = (perm[:, None] * block + torch.arange(block)).reshape(-1)
    return t.index_select(axis, idx)


def _unit_names(layer: Layer, state: State) -> list[str]:
    """Tensors whose axis 0 is indexed by the layer's units (weights, bias, BatchNorm)."""
    return [n for n in [layer.weight, layer.bias, *layer.bn_names()] if n is not None and n in state]


def _permute_layer(state: State, layer: Layer, perm: torch.Tensor) -> None:
    for name in _unit_names(layer, state):
        state[name] = permute_axis(state[name], 0, perm)
    for name, axis in layer.outgoing:
        state[name] = permute_axis(state[name], axis, perm)


def _scale_outgoing(state: State, layer: Layer, c: torch.Tensor) -> None:
    for name, axis in layer.outgoing:
        state[name] = scale_axis(state[name], axis, c)


def _flip_layer(state: State, layer: Layer, signs: torch.Tensor) -> None:
    state[layer.weight] = scale_axis(state[layer.weight], 0, signs)
    _scale_outgoing(state, layer, signs)


def _rescale_pre_bn(state: State, layer: Layer, c: torch.Tensor, divide: bool = False) -> None:
    """Scale a BatchNorm unit's pre-BN weights, bias and running mean by c (or 1/c), (running_var + eps) by c^2:
    exact in eval mode."""
    for name in [layer.weight, layer.bias, f"{layer.bn}.running_mean"]:
        if name:
            state[name] = scale_axis(state[name], 0, c, divide)
    var = f"{layer.bn}.running_var"
    c2 = c.double() ** 2
    v = state[var].double() + BN_EPS
    state[var] = ((v / c2 if divide else v * c2) - BN_EPS).to(state[var].dtype)


def _row_norms(w: torch.Tensor) -> torch.Tensor:
    """(H,) float64 norms of each unit's incoming weights; 0 replaced by 1 (a dead unit is left alone)."""
    n = w.double().flatten(1).norm(dim=1)
    return torch.where(n > 0, n, torch.ones_like(n))


def _weight_names(s: Structure) -> list[str]:
    return [lay.weight for lay in s.hidden] + ([s.output.weight] if s.output else [])


def _copy(state: State) -> State:
    return {k: v.detach().clone() for k, v in state.items()}


# --------------------------------------------------------------------------------------------------
# Canonical form


@torch.no_grad()
def canonical_form(spec: dict[str, Any], state: State) -> State:
    """The symmetry-free representative of ``state`` (same function; idempotent). See the module docstring."""
    s = unit_structure(spec)
    out = _copy(state)
    if s.binary:
        return _binary_canonical(s, out)
    for layer in s.hidden:
        n = _row_norms(out[layer.weight])  # (H,)
        if layer.bn:
            g, beta, mean, _ = layer.bn_names()
            if layer.bias:  # fold the bias into the running mean: only (b - mean) matters in eval mode
                out[mean] = out[mean] - out[layer.bias]
                out[layer.bias] = torch.zeros_like(out[layer.bias])
            _rescale_pre_bn(out, layer, n, divide=True)
            a = out[g].double().abs()  # (H,) post-BN gain
            a = torch.where(a > 0, a, torch.ones_like(a))
            out[g], out[beta] = scale_axis(out[g], 0, a, divide=True), scale_axis(out[beta], 0, a, divide=True)
            _scale_outgoing(out, layer, a)
        else:
            out[layer.weight] = scale_axis(out[layer.weight], 0, n, divide=True)
            if layer.bias:
                out[layer.bias] = scale_axis(out[layer.bias], 0, n, divide=True)
            _scale_outgoing(out, layer, n)
    if s.output is not None:
        w = out[s.output.weight]
        norm = float(w.double().norm())
        f = math.sqrt(w.shape[0]) / norm if norm > 0 else 1.0
        out[s.output.weight] = (w.double() * f).to(w.dtype)
        if s.output.bias:
            out[s.output.bias] = (out[s.output.bias].double() * f).to(w.dtype)
    return out


def binarized(spec: dict[str, Any], state: State) -> State:
    """A binary net's state with every weight replaced by the +-1 value its forward pass uses (no flips)."""
    return _binarize(unit_structure(spec), _copy(state))


def _binarize(s: Structure, out: State) -> State:
    for name in _weight_names(s):
        out[name] = nets.binarize(out[name].detach())
    return out


def _binary_canonical(s: Structure, out: State) -> State:
    _binarize(s, out)
    for layer in s.hidden:  # in forward order: layer l+1 is read after absorbing layer l's flips
        if layer.flip:
            first = out[layer.weight].flatten(1)[:, 0]  # (H,) +-1
            _flip_layer(out, layer, torch.where(first >= 0, 1.0, -1.0).double())
    return out


# --------------------------------------------------------------------------------------------------
# Alignment


@torch.no_grad()
def align(spec: dict[str, Any], state_a: State, state_b: State) -> State:
    """``state_b`` with its hidden units permuted (and sign-flipped, binary nets) to match ``state_a``; raw values kept."""
    s = unit_structure(spec)
    if s.binary:
        ref, cur = binarized(spec, state_a), binarized(spec, state_b)
    else:
        ref, cur = canonical_form(spec, state_a), canonical_form(spec, state_b)
    out = _copy(state_b)
    for layer in s.hidden:
        wa = ref[layer.weight].double().flatten(1)  # (H, fan_in), unit norm (real) or +-1 (binary)
        wb = cur[layer.weight].double().flatten(1)  # already in coordinates aligned with a
        cost = wa @ wb.T  # (H, H) cosine (times fan_in for binary)
        if layer.flip:
            cost = cost.abs()
        _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
        perm = torch.as_tensor(cols, dtype=torch.long)
        _permute_layer(cur, layer, perm)
        _permute_layer(out, layer, perm)
        if layer.flip:
            dots = (wa * cur[layer.weight].double().flatten(1)).sum(dim=1)
            signs = torch.where(dots >= 0, 1.0, -1.0).double()
            _flip_layer(cur, layer, signs)
            _flip_layer(out, layer, signs)
    return out


# --------------------------------------------------------------------------------------------------
# Random symmetry transform (tests, demonstrations)


@torch.no_grad()
def random_symmetry(spec: dict[str, Any], state: State, seed: int = 0, max_scale: float = 2.0) -> State:
    """A copy of ``state`` computing the same function: every hidden layer randomly permuted, every unit
    rescaled by a random positive factor in [1/max_scale, max_scale] (both BatchNorm freedoms), the
    output layer by one positive factor; binary nets: every latent weight rescaled by its own positive
    factor and flippable units flipped at random."""
    s = unit_structure(spec)
    gen = torch.Generator().manual_seed(seed)
    out = _copy(state)

    def positive(*shape: int) -> torch.Tensor:
        return torch.exp((2 * torch.rand(*shape, generator=gen, dtype=torch.float64) - 1) * math.log(max_scale))

    for layer in s.hidden:
        h = out[layer.weight].shape[0]
        if s.binary:
            out[layer.weight] = (out[layer.weight].double() * positive(*out[layer.weight].shape)).to(out[layer.weight].dtype)
            if layer.flip:
                _flip_layer(out, layer, torch.where(torch.rand(h, generator=gen) < 0.5, 1.0, -1.0).double())
        elif layer.bn:
            _rescale_pre_bn(out, layer, positive(h))
            c = positive(h)
            for name in layer.bn_names()[:2]:
                out[name] = scale_axis(out[name], 0, c)
            _scale_outgoing(out, layer, 1 / c)
        else:
            c = positive(h)
            for name in [layer.weight, layer.bias]:
                if name:
                    out[name] = scale_axis(out[name], 0, c)
            _scale_outgoing(out, layer, 1 / c)
        _permute_layer(out, layer, torch.randperm(h, generator=gen))
    if s.output is not None:
        w = out[s.output.weight]
        if s.binary:
            out[s.output.weight] = (w.double() * positive(*w.shape)).to(w.dtype)
        else:
            f = float(positive(1))
            for name in [s.output.weight, s.output.bias]:
                if name:
                    out[name] = (out[name].double() * f).to(out[name].dtype)
    return out
