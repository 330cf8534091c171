"""Symmetries of a network: canonical form (positive rescalings, sign flips) and alignment (permutations).

Real-valued networks: everything is written once over ``groups.unit_groups(spec)`` (the symmetries
derived from the traced module: permutation groups and scale segments, see groups.py), for every
architecture, residual ones included. Binary networks too: their permutation groups and sign-flippable segments
(``Segment.negate``) come from the same derivation. docs/science.md section 2 gives the method.

- ``canonical_form(spec, state)``: paper's Algorithm 1, per scale segment (a hidden unit of a plain
  layer, the pre-BN part of a BatchNorm unit, the post-BN part, a residual stream channel):
  the channel's scale-carrying entries (the incoming weights of every conv / linear writing it, the
  gammas of every BatchNorm writing it, concatenated) get norm 1, their bias / beta follow, and the
  layers reading the channel absorb the factor (their input slice; a BatchNorm's running_mean, and
  running_var' = c^2 (running_var + eps) - eps). Segments are normalised in an order where each conv /
  linear is measured after absorbing the factors of what it reads. The output layer (weights and bias
  together [ours]) is scaled to weight norm sqrt(H_L).
  BatchNorm units [ours, exact and unique]: the pre-BN weights get norm 1, the linear bias before BN is
  folded into running_mean (b' = 0, running_mean' = running_mean - b: exact in eval mode and when the
  statistics are recomputed), the post-BN pair (gamma_k, beta_k) is divided by |gamma_k| (the next layer
  absorbing the factor) and BatchNorm's sign symmetry (pre-BN weights, bias, running mean and gamma
  negated together: same function, beta and running variance unchanged; its own step, ``fix_bn_signs``)
  makes gamma = +1: the unit becomes ReLU(zhat + beta'). A unit with gamma = 0 is left alone. Gamma
  stays +1 all along the geodesic path between two canonical units, and alignment pairs a flipped unit
  with its twin.
  Residual streams [ours, beyond the paper]: one permutation and one positive scale per stream channel;
  the canonical scale gives the concatenated gammas of every BatchNorm writing into the channel (the
  stem's, each block's last, each shortcut's) norm 1, every reader (block first convs, 1x1 shortcut
  convs, the classifier) absorbing the factor. A zero-padded (option A) shortcut: the old stream's channels keep
  its permutation and scale in the middle of the next stream (one sphere across both stages); the zero channels
  are their own group (permuted among themselves, across both sides) and each gets unit-norm gammas (those of
  the BatchNorms writing it) like any stream channel; operations on a group or segment that fills only part of
  a tensor axis touch only its places (``Slots``), bit for bit leaving the others. A plain (no BatchNorm) unit with one writer gets unit
  incoming weights, as in the paper; with several writers (an add of plain layers) their concatenated
  incoming weights get norm 1. Units after a GELU keep their scales (GELU has no scale symmetry).
  Binary nets: weights replaced by their signs (+-1, sign(0) = +1 as in the forward pass); each
  flippable hidden unit (a segment with ``negate``: read through odd functions only, by layers with
  weights) is flipped so that its first incoming weight is +1, which makes the form unique within each
  class of flip-equivalent nets [ours]. Units followed by a max-pool (binary convs) and committee units
  (fixed output weights) have no flip symmetry.
- ``align(spec, state_a, state_b)``: paper's Algorithm 2, returns state_b with its hidden units
  permuted (and flipped, binary) to match state_a, raw values kept; its BatchNorm units are then
  sign-flipped (the exact flip above) wherever their gamma's sign differs from state_a's, so that a linear
  path between a network and its flipped, permuted copy is the network all along. Matching is computed on
  normalised copies, layer by layer with the Hungarian algorithm on the cosine of incoming weights,
  the next layer being compared in aligned coordinates; the output layer is never permuted.
  Only incoming weights enter the cost, as in the paper (for BatchNorm units: the pre-BN weights).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from . import nets
from .groups import Group, Groups, Segment, Slots, prepare
from .nets import BN_EPS, WeightsError

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


def take(t: torch.Tensor, axis: int, slots: Slots | None) -> torch.Tensor:
    """The entries of ``t`` along ``axis`` that ``slots`` names (all of ``t`` when None), in channel order."""
    return t if slots is None else t.index_select(axis, slots.index(t.shape[axis]))


def on_slots(t: torch.Tensor, axis: int, slots: Slots | None, fn) -> torch.Tensor:
    """``t`` with ``fn`` applied to the entries along ``axis`` that ``slots`` names (to all of ``t`` when None);
    the other entries unchanged, bit for bit."""
    if slots is None:
        return fn(t)
    idx = slots.index(t.shape[axis])
    return t.index_copy(axis, idx, fn(t.index_select(axis, idx)).to(t.dtype))


def _copy(state: State) -> State:
    return {k: v.detach().clone() for k, v in state.items()}


# --------------------------------------------------------------------------------------------------
# Operations on segments and groups (real-valued networks)


def _scale_segment(state: State, seg: Segment, c: torch.Tensor, divide: bool = False) -> None:
    """Multiply (or divide) the segment's channels by c (C,) > 0 or a sign: writers (vector and offset) times c,
    readers' input slices divided by c, absorbing BatchNorms' running_mean times c and (running_var + eps)
    times c^2 (exact in eval mode)."""
    for w in seg.writers:
        for name in (w.vector, w.offset):
            if name:
                state[name] = on_slots(state[name], 0, w.slots, lambda t: scale_axis(t, 0, c, divide))
    for i, name in enumerate(seg.readers):
        state[name] = on_slots(state[name], 1, seg.reader_slot(i), lambda t: scale_axis(t, 1, c, not divide))
    c2 = c.double() ** 2

    def variance(t: torch.Tensor) -> torch.Tensor:
        v = t.double() + BN_EPS
        return ((v / c2 if divide else v * c2) - BN_EPS).to(t.dtype)

    for i, bn in enumerate(seg.bns):
        mean, var = f"{bn}.running_mean", f"{bn}.running_var"
        state[mean] = on_slots(state[mean], 0, seg.bn_slot(i), lambda t: scale_axis(t, 0, c, divide))
        state[var] = on_slots(state[var], 0, seg.bn_slot(i), variance)


def _flip_segment(state: State, seg: Segment, signs: torch.Tensor) -> None:
    """BatchNorm's sign symmetry on a pre-BN segment: its writers (weights and bias), the absorbing BatchNorms'
    running means and their gammas times signs (+-1 per channel); beta and running_var stay. Exact in eval
    mode and in train mode (the batch mean flips too)."""
    for w in seg.writers:
        for name in (w.vector, w.offset):
            if name:
                state[name] = on_slots(state[name], 0, w.slots, lambda t: scale_axis(t, 0, signs))
    for i, bn in enumerate(seg.bns):
        for t in ("running_mean", "weight"):
            state[f"{bn}.{t}"] = on_slots(state[f"{bn}.{t}"], 0, seg.bn_slot(i), lambda x: scale_axis(x, 0, signs))


def _fix_signs(g: Groups, out: State, ref: State | None = None) -> State:
    """Flip every BatchNorm unit whose gamma is negative (``ref``: whose gamma's sign differs from ref's).

    A flip negates its segment's writers, and a writer can be the gamma another flip is decided by (two
    BatchNorms in a row: BN1's gamma writes the segment BN2 absorbs, so fixing BN2's sign negates BN1's gamma):
    passes repeat until no gamma is left to fix (one pass per BatchNorm of the longest such chain)."""
    flippable = [seg for seg in g.segments if seg.flip]
    for _ in range(len(flippable) + 1):
        changed = False
        for seg in flippable:
            negative = take(out[f"{seg.bns[0]}.weight"], 0, seg.bn_slot(0)) < 0
            if ref is not None:
                negative = negative != (take(ref[f"{seg.bns[0]}.weight"], 0, seg.bn_slot(0)) < 0)
            if bool(negative.any()):
                _flip_segment(out, seg, torch.where(negative, -1.0, 1.0).double())
                changed = True
        if not changed:
            break
    return out


def fix_bn_signs(spec: dict[str, Any], state: State) -> State:
    """The sign step of the canonical form on its own: every BatchNorm unit whose gamma is negative is flipped
    (``_flip_segment``) so that gamma >= 0. Same function; everything else untouched (binary nets: a copy)."""
    return _fix_signs(prepare(spec).groups, _copy(state))


def segment_rows(state: State, seg: Segment) -> torch.Tensor:
    """(C, D) float64: each channel's scale-carrying entries, the writers' vectors concatenated."""
    parts = [take(state[w.vector], 0, w.slots).double() for w in seg.writers]
    return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)


def _norms(rows: torch.Tensor) -> torch.Tensor:
    n = rows.norm(dim=1)
    return torch.where(n > 0, n, torch.ones_like(n))


def _permute_group(state: State, group: Group, perm: torch.Tensor) -> None:
    """New channel k of the group = old channel perm[k], along every axis of the group (where an axis holds
    other channels too, only the group's places move)."""
    for i, (name, axis) in enumerate(group.axes):
        if name in state:
            slots = group.slot(i)
            if slots is not None:
                pos = torch.as_tensor(slots.positions, dtype=torch.long)
                full = torch.arange(slots.of)
                full[pos] = pos[perm]
                state[name] = permute_axis(state[name], axis, full)
            else:
                state[name] = permute_axis(state[name], axis, perm)


def _group_canonical(g: Groups, out: State) -> State:
    for seg in g.segments:  # biases before a BatchNorm folded into its running mean
        if seg.fold:
            offsets = [w for w in seg.writers if w.offset and w.offset in out]
            if offsets:
                total = sum(take(out[w.offset], 0, w.slots).double() for w in offsets)
                for i, bn in enumerate(seg.bns):
                    mean = f"{bn}.running_mean"
                    out[mean] = on_slots(out[mean], 0, seg.bn_slot(i), lambda t: t.double() - total)
                for w in offsets:
                    out[w.offset] = on_slots(out[w.offset], 0, w.slots, torch.zeros_like)
    for seg in g.segments:  # positive scales, in an order where readers are measured after absorbing
        if seg.scaled:
            _scale_segment(out, seg, _norms(segment_rows(out, seg)), divide=True)
    _fix_signs(g, out)  # BatchNorm sign flips: gamma >= 0
    if g.output is not None:
        rows = segment_rows(out, g.output)
        norm = float(rows.norm())
        f = torch.tensor(math.sqrt(rows.shape[0]) / norm if norm > 0 else 1.0, dtype=torch.float64)
        for w in g.output.writers:
            for name in (w.vector, w.offset):
                if name:
                    out[name] = (out[name].double() * f).to(out[name].dtype)
    return out


# --------------------------------------------------------------------------------------------------
# Canonical form


@torch.no_grad()
def canonical_form(spec: dict[str, Any], state: State) -> State:
    """The symmetry-free representative of ``state`` (same function; idempotent). See the module docstring."""
    spec = prepare(spec)
    g = spec.groups
    out = _copy(state)
    return _binary_canonical(g, out) if g.binary else _group_canonical(g, out)


def binarized(spec: dict[str, Any], state: State) -> State:
    """A binary net's state with every weight replaced by the +-1 value its forward pass uses (no flips)."""
    return _binarize(prepare(spec).groups, _copy(state))


def _binarize(g: Groups, out: State) -> State:
    for name in g.binary:
        out[name] = nets.binarize(out[name].detach())
    return out


def _signs(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0).double()


def _binary_canonical(g: Groups, out: State) -> State:
    _binarize(g, out)
    for seg in g.segments:  # in forward order: a layer is read after absorbing the flips of what it reads
        if seg.negate:
            _scale_segment(out, seg, _signs(take(out[seg.writers[0].vector], 0, seg.writers[0].slots).flatten(1)[:, 0]))
    return out


# --------------------------------------------------------------------------------------------------
# Alignment

MAX_SWEEPS = 10


def _writer_slots(group: Group) -> dict[str, Slots | None]:
    return {name: group.slot(i) for i, (name, axis) in enumerate(group.axes) if axis == 0}


def _match(ref: State, cur: State, weights: list[str], absolute: bool = False,
           slots: dict[str, Slots | None] | None = None) -> torch.Tensor:
    """The permutation of cur's units maximising the summed cosines (``absolute``: their absolute value, for
    units that can also be flipped) of the given writers' incoming weights (``slots``: the rows of each writer
    that hold the group's units, where it writes other units too)."""
    slots = slots or {}
    cost = sum(take(ref[w], 0, slots.get(w)).double().flatten(1) @ take(cur[w], 0, slots.get(w)).double().flatten(1).T
               for w in weights)  # (H, H)
    if absolute:
        cost = cost.abs()
    _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)


@torch.no_grad()
def align(spec: dict[str, Any], state_a: State, state_b: State) -> State:
    """``state_b`` with its hidden units permuted (and sign-flipped, binary nets) to match ``state_a``; raw values kept.

    Real-valued networks: groups in the order of their first writer; each matched with the Hungarian
    algorithm on the summed cosines of the incoming weights of the writers whose own inputs are already
    aligned (all of them in a network without skip connections: the paper's Algorithm 2 exactly). Groups
    where some writer was left out (a residual stream, written by blocks that read it) are then matched
    again on all their writers, sweep after sweep, until no permutation changes (at most MAX_SWEEPS)."""
    spec = prepare(spec)
    g = spec.groups
    if g.binary:
        return _binary_align(g, state_a, state_b)
    ref, cur = canonical_form(spec, state_a), canonical_form(spec, state_b)
    out = _copy(state_b)
    done: set[int] = set()
    partial = []
    for i, group in enumerate(g.groups):
        usable = [w for w, sources in group.writers if all(src in done for src in sources)]
        perm = _match(ref, cur, usable, slots=_writer_slots(group))
        _permute_group(cur, group, perm)
        _permute_group(out, group, perm)
        done.add(i)
        if len(usable) < len(group.writers):
            partial.append(group)
    for _ in range(MAX_SWEEPS if partial else 0):
        changed = False
        for group in partial:
            perm = _match(ref, cur, [w for w, _ in group.writers], slots=_writer_slots(group))
            if not torch.equal(perm, torch.arange(len(perm))):
                _permute_group(cur, group, perm)
                _permute_group(out, group, perm)
                changed = True
        if not changed:
            break
    return _fix_signs(g, out, ref=state_a)  # BatchNorm units flipped to a's gamma signs (exact)


def _binary_align(g: Groups, state_a: State, state_b: State) -> State:
    """Paper's Algorithm 2 on the signs: group by group in forward order, the Hungarian algorithm on the
    overlaps of the +-1 incoming weights (their absolute values for flippable units, which are then flipped
    to agree with a)."""
    ref, cur = _binarize(g, _copy(state_a)), _binarize(g, _copy(state_b))
    out = _copy(state_b)
    flippable = {w.vector: seg for seg in g.segments if seg.negate for w in seg.writers}
    for group in g.groups:
        weights = [w for w, _ in group.writers]
        seg = flippable.get(weights[0]) if all(w in flippable for w in weights) else None
        rows = _writer_slots(group)
        perm = _match(ref, cur, weights, absolute=seg is not None, slots=rows)
        _permute_group(cur, group, perm)
        _permute_group(out, group, perm)
        if seg is not None:
            signs = _signs(sum((take(ref[w], 0, rows.get(w)).double() * take(cur[w], 0, rows.get(w)).double())
                               .flatten(1).sum(dim=1) for w in weights))
            _scale_segment(cur, seg, signs)
            _scale_segment(out, seg, signs)
    return out


# --------------------------------------------------------------------------------------------------
# Random symmetry transform (tests, demonstrations)


@torch.no_grad()
def random_symmetry(spec: dict[str, Any], state: State, seed: int = 0, max_scale: float = 2.0) -> State:
    """A copy of ``state`` computing the same function: every permutation group randomly permuted, every
    scale segment's channels rescaled by random positive factors in [1/max_scale, max_scale] (both
    BatchNorm freedoms, residual stream channels), BatchNorm units sign-flipped at random, a random constant
    per channel added to a bias that folds into a BatchNorm's running mean (and to that mean), the output
    layer by one positive factor; binary nets: every latent weight rescaled by its own positive factor
    and flippable units flipped at random."""
    gen = torch.Generator().manual_seed(seed)
    out = _copy(state)

    def positive(*shape: int) -> torch.Tensor:
        return torch.exp((2 * torch.rand(*shape, generator=gen, dtype=torch.float64) - 1) * math.log(max_scale))

    spec = prepare(spec)

    g = spec.groups
    if g.binary:
        return _binary_random_symmetry(g, out, gen, positive)
    for seg in g.segments:
        if seg.scaled:
            _scale_segment(out, seg, positive(seg.channels(out)))
        if seg.flip:
            signs = torch.where(torch.rand(seg.channels(out), generator=gen) < 0.5, 1.0, -1.0).double()
            _flip_segment(out, seg, signs)
        biased = [w for w in seg.writers if w.offset and w.offset in out]
        if seg.fold and biased:  # a constant per channel added to a writer's bias and to the running means
            shift = torch.randn(seg.channels(out), generator=gen, dtype=torch.float64)
            add = lambda t: (t.double() + shift).to(t.dtype)  # noqa: E731
            out[biased[0].offset] = on_slots(out[biased[0].offset], 0, biased[0].slots, add)
            for i, bn in enumerate(seg.bns):
                mean = f"{bn}.running_mean"
                out[mean] = on_slots(out[mean], 0, seg.bn_slot(i), add)
    for group in g.groups:
        _permute_group(out, group, torch.randperm(group.channels(out), generator=gen))
    if g.output is not None:
        f = float(positive(1))
        for w in g.output.writers:
            for name in (w.vector, w.offset):
                if name:
                    out[name] = (out[name].double() * f).to(out[name].dtype)
    return out


def _binary_random_symmetry(g: Groups, out: State, gen: torch.Generator, positive) -> State:
    for name in g.binary:  # any positive factor per latent weight: the same signs
        out[name] = (out[name].double() * positive(*out[name].shape)).to(out[name].dtype)
    for seg in g.segments:
        if seg.negate:
            n = seg.channels(out)
            _scale_segment(out, seg, torch.where(torch.rand(n, generator=gen) < 0.5, 1.0, -1.0).double())
    for group in g.groups:
        _permute_group(out, group, torch.randperm(group.channels(out), generator=gen))
    return out
