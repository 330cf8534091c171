"""Unit groups: a network's symmetries derived once from its graph (docs/architecture.md "The two registries", docs/science.md section 2).

The module the service builds for a spec (nets.build, on the meta device: nothing is allocated) is traced
with ``torch.fx``; every value of the graph carries a *channel space* (its axis 1), and two union-finds
run over the spaces:
- **permutation groups**: spaces joined through layers that act channel by channel (BatchNorm, ReLU,
  GELU, pooling, dropout, flatten) and through a residual ``add`` (both operands share one space). A
  layer with weights reads its input space on axis 1 of its weight (a flatten gives each channel a
  block of h*w inputs, found from the tensor sizes) and writes a new space on axis 0 of its weight and
  bias. Every tensor axis of one group is permuted by one permutation. Groups that reach the input or
  the output are never permuted.
- **scale segments**, finer: joined like the groups except through a BatchNorm (its output's scale is
  its gamma's, whatever its input's) and through a layer that is not positively homogeneous (GELU). A
  segment's *writers* are the layers whose output starts it (the rows of a conv / linear, or a
  BatchNorm's gamma); it is *absorbed* by the layers that read it (a conv / linear's input axis) or
  normalise it (a BatchNorm's running statistics). A positive factor per channel of a segment, applied
  to its writers and undone by its absorbers, is an exact symmetry when every layer between them is
  positively homogeneous (``Segment.scaled``). A segment that is a linear function of its writers and
  is absorbed by BatchNorms only (the conv -> BN of every BN unit) also has the exact sign flip of
  docs/science.md (section 2, "BatchNorm": writers, running mean and the BN's gamma negated) and its
  writers' biases fold into the running means (``Segment.flip``, ``Segment.fold``). A max-pool between them
  keeps the fold (max(x + d) = max(x) + d) but not the flip (max(-x) is not -max(x)); a zero-padded average
  pool keeps the flip but not the fold (``PATHS``). Two BatchNorms in a row: the first's gamma and beta write
  a segment the second absorbs, with its own flip and fold.
The segment that produces the logits is the *output* segment: argmax ignores one global positive factor.
Residual streams come out as one group and one segment per stage (the stem's and every block's last
BatchNorm write into it; the blocks' first convs, the 1x1 shortcut convs and the classifier read it):
one permutation and one positive scale per stream channel.

The union-finds hold one element per *channel* (not per space), so that a value may hold the channels of
several others side by side: the zero-padded ("option A") shortcut (``graphs.PadShortcut``) makes the next
stage's stream out of zero channels, the old stream's channels (a contiguous block) and zero channels again.
After the add, the middle block's channels are the old stream's (same permutation unit, same scale unit), and
the zero channels are new units written by the block's last BatchNorm alone. A permutation group is the set of
units that appear in exactly the same tensor axes (so the old stream and the zero channels of each stage are
separate groups: the zero channels are permuted among themselves, across both sides); where a group fills only
part of an axis, ``Slots`` says which places it holds. Scale segments likewise: a stream channel's sphere spans
the gammas of every BatchNorm writing it, in every stage it reaches. Networks without such a shortcut get the
groups and segments of whole layers, in the same order as a per-space derivation, and no ``Slots``.

Binary networks (layers with +-1 forward weights, ``is_binary``) come out of the same trace: their
weights are binarised, so any positive factor per *entry* of a latent weight is a symmetry (no segment is
scaled: the canonical form takes signs instead); a segment whose every use is an odd channel-wise function
of it (``Sign``, flatten, dropout, average pooling) read by layers with weights has the exact sign flip
of docs/science.md (section 2, "Binary networks": writers' rows and readers' input slices negated, ``Segment.negate``).
A max-pool, a ReLU, a BatchNorm, an add, the committee's fixed vote or the output end it. A ``Vote``
(the committee's sum of its units' signs with fixed weights 1) keeps its input permutable.

Refused (``GroupError``, a clear message): operations the derivation does not know, and two layers with
weights with no nonlinearity between them (an invertible mixing of the units is then a symmetry too).
GELU keeps permutations only (no scale or sign symmetry exists for it).
"""
from __future__ import annotations

import gc
import json
import operator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import fx, nn

from . import graphs, nets


class GroupError(nets.SpecError):
    """A network whose symmetries cannot be derived exactly; the message says why."""


@dataclass(frozen=True)
class Slots:
    """Where the channels of a group or a segment sit along a tensor axis that also holds other channels:
    ``positions[k]`` is the place of its channel k among the axis's ``of`` channels (a reader's axis 1 by
    blocks of equal size). None stands for "the whole axis, in order": the only case in a network without a
    zero-padded shortcut."""

    positions: tuple[int, ...]
    of: int

    def index(self, size: int) -> torch.Tensor:
        """The entries of an axis of ``size`` entries that the channels occupy (whole blocks, in channel order)."""
        block = size // self.of
        pos = torch.as_tensor(self.positions, dtype=torch.long)
        return (pos[:, None] * block + torch.arange(block)).reshape(-1)


@dataclass(frozen=True)
class Writer:
    """A layer writing a segment: ``vector`` is the tensor holding each channel's scale-carrying entries
    (a conv / linear weight, one row per channel; a BatchNorm's gamma), ``offset`` the tensor scaled with it
    (bias; BatchNorm's beta) or None; ``slots`` its rows that write the segment (None: all of them)."""

    vector: str
    offset: str | None
    bn: bool
    slots: Slots | None = None


@dataclass(frozen=True)
class Segment:
    writers: tuple[Writer, ...]
    readers: tuple[str, ...]  # weights whose axis 1 reads the segment (blocks of axis 1 per channel)
    bns: tuple[str, ...]  # BatchNorm prefixes normalising the segment (absorb its scale in their statistics)
    scaled: bool  # a positive factor per channel is an exact symmetry
    flip: bool  # the sign flip per channel is exact (linear path, BatchNorm absorbers only)
    fold: bool  # writers' biases fold exactly into the absorbing BatchNorms' running means
    negate: bool = False  # writers' rows and readers' input slices negated per channel is exact (odd uses only)
    reader_slots: tuple[Slots | None, ...] = ()  # beside readers (empty: every one None)
    bn_slots: tuple[Slots | None, ...] = ()  # beside bns (empty: every one None)

    def vectors(self) -> list[str]:
        return [w.vector for w in self.writers]

    def reader_slot(self, i: int) -> Slots | None:
        return self.reader_slots[i] if self.reader_slots else None

    def bn_slot(self, i: int) -> Slots | None:
        return self.bn_slots[i] if self.bn_slots else None

    def channels(self, state: dict[str, torch.Tensor]) -> int:
        w = self.writers[0]
        return len(w.slots.positions) if w.slots else state[w.vector].shape[0]


@dataclass(frozen=True)
class Group:
    """One permutation: ``axes`` (tensor name, axis) all permuted together (axis 1 of a reader by blocks),
    ``slots`` beside them (empty: every axis holds exactly the group's channels); ``writers``: conv / linear
    weights writing into the group, with the groups of their input (empty: the network's input or groups
    never permuted), used by the alignment cost."""

    axes: tuple[tuple[str, int], ...]
    writers: tuple[tuple[str, tuple[int, ...]], ...]
    slots: tuple[Slots | None, ...] = ()

    def slot(self, i: int) -> Slots | None:
        return self.slots[i] if self.slots else None

    def channels(self, state: dict[str, torch.Tensor]) -> int:
        s = self.slot(0)
        return len(s.positions) if s else state[self.axes[0][0]].shape[self.axes[0][1]]


@dataclass(frozen=True)
class Groups:
    groups: tuple[Group, ...]  # permutable groups, in the order of their first writer
    segments: tuple[Segment, ...]  # scaled or not, never the output; scaled ones in an order fit to normalise
    output: Segment | None  # the logits' segment (one global factor); None when the output has no writer
    weights: tuple[str, ...]  # every conv / linear weight in forward order (weights[0] reads the input)
    binary: tuple[str, ...] = ()  # the weights of binary layers (their forward pass uses their signs)

    def spheres(self) -> list[Segment]:
        """Segments on a sphere in the canonical form: one unit sphere per channel."""
        return [s for s in self.segments if s.scaled]


# --------------------------------------------------------------------------------------------------
# Union-find


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return list(range(start, start + n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> int:
        i, j = self.find(i), self.find(j)
        if i != j:
            self.parent[max(i, j)] = min(i, j)
        return min(i, j)


@dataclass
class _Value:
    """A value of the graph: its channels' elements in both union-finds (None: the network's input, whose
    channels are made when a layer needs their number)."""

    perm: list[int] | None
    seg: list[int] | None
    path: str  # how the value depends on its segment's writers' channel (``PATHS``): "affine", "linear", "shift", "none"
    origin: list[int] | None = None  # the segment elements whose writers this value is a channel-wise function of
    odd: bool = False  # that function is odd (negating the writers' channel negates this value's)


# What a value is as a function of its segment's writers, channel by channel, as the two properties the
# BatchNorm symmetries need: ``sign``, negating the writers (weights and bias) negates the value (the sign flip
# is exact when a BatchNorm absorbs it), and ``shift``, adding a constant to the writers' bias adds that constant
# to the value (the bias folds into the absorbing BatchNorm's running mean). "affine": both (conv / linear output,
# dropout, flatten, unpadded pooling); "linear": sign only (a zero-padded average pool: the padding does not
# move with a shift); "shift": shift only (a max-pool: max(x + d) = max(x) + d, max(-x) != -max(x)); "none".
PATHS = {"affine": {"sign", "shift"}, "linear": {"sign"}, "shift": {"shift"}, "none": set()}


def _path(properties: set[str]) -> str:
    return next(name for name, props in PATHS.items() if props == properties)


AFFINE_SAME = (nn.Dropout, nn.Flatten, nn.Identity, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU)
MAX_POOLS = (nn.MaxPool2d, nn.MaxPool1d)
ODD = (nn.Dropout, nn.Flatten, nn.Identity, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d, nn.AvgPool2d, nn.AvgPool1d,
       nets.Sign)  # channel-wise odd functions (zero padding keeps an average pool odd)
LEAVES = (nets.BinaryLinear, nets.BinaryConv2d, nets.Sign, nets.Vote, nets.TwoClass, graphs.PadShortcut)


class _Tracer(fx.Tracer):
    """fx's tracer, with the service's own layers kept whole (their forward passes are autograd Functions)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)


# --------------------------------------------------------------------------------------------------
# Tracing


def _meta_model(spec: dict[str, Any], n_classes: int = 10) -> nn.Module:
    """The spec's module on the meta device, for some input shape it builds for (the structure does not depend
    on the sizes: blocks are found from the tensors' sizes when they are used)."""
    errors: list[Exception] = []
    for shape, classes in (((3, 256, 256), n_classes), ((3, 2048, 2048), n_classes), ((64,), n_classes), ((64,), 2)):
        try:  # (2 classes last: a committee machine is built for 2 classes only)
            with torch.device("meta"):  # a normalised spec: not validated again (normalize_spec calls check)
                return nets.build_normalized(spec, shape, classes)
        except (nets.SpecError, graphs.GraphSpecError) as exc:
            errors.append(exc)
    telling = [e for e in errors if "needs image" not in str(e)] or errors  # the image attempt's, for conv nets
    raise GroupError(f"the network cannot be built (checked with inputs of shape 3x256x256, and 64 for flat inputs): {telling[0]}")


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # noqa: BLE001 - any tracing failure is the same problem for the caller
        raise GroupError(f"the network cannot be traced to derive its symmetries: {exc}") from None


def _slots(positions: list[int], of: int) -> Slots | None:
    return None if positions == list(range(of)) else Slots(tuple(positions), of)


NOT_DERIVED = {  # operations a refusal explains (the derivation knows no exact symmetry treatment for them)
    nn.ReLU6: "ReLU6 is not positively homogeneous (it saturates at 6), so a unit's scale is not a symmetry",
    nn.Hardswish: "Hardswish is not positively homogeneous, so a unit's scale is not a symmetry",
    nn.Hardsigmoid: "Hardsigmoid is not positively homogeneous, so a unit's scale is not a symmetry",
    nn.SiLU: "SiLU (swish) is not positively homogeneous, so a unit's scale is not a symmetry",
    nn.Sigmoid: "sigmoid(-x) = 1 - sigmoid(x) gives each unit a sign flip with a bias shift, which is not removed",
    nn.Tanh: "tanh is odd: each unit has a sign flip besides its permutation, which is not removed",
    nn.LayerNorm: "LayerNorm couples every channel of a sample (one scale and shift of the whole layer)",
    nn.GroupNorm: "GroupNorm couples the channels of a group",
}


@lru_cache(maxsize=256)
def _derive(key: str) -> Groups:
    return _derive_model(_meta_model(json.loads(key)))


def explain_module(model: nn.Module) -> None:
    """Raise ``GroupError`` naming the first operation of ``model`` (any module, e.g. one of torchvision's) whose
    symmetries are not derived; return quietly when the whole network derives."""
    _derive_model(model)


def _derive_model(model: nn.Module) -> Groups:
    # one element per channel makes many small objects: the cyclic collector, run over them again and again,
    # took half the time (ResNet-50); nothing made here forms a cycle that must be collected meanwhile
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _derive_channels(model)
    finally:
        if enabled:
            gc.enable()


def _derive_channels(model: nn.Module) -> Groups:
    """The groups of a module (built on the meta device). Every channel of every value is an element of two
    union-finds (its permutation unit and its scale unit), so that a value may hold the channels of several others side by
    side (a zero-padded shortcut: the zero channels, then the old stream's, then zero channels again). A
    permutation group is then a set of units that appear in exactly the same tensor axes (a permutation of
    them maps every axis onto itself); a segment a set of scale units with the same writers, readers and
    absorbers. Where every value's channels are those of one layer (every network without such a shortcut)
    the groups and segments are those of whole layers, in the same order, and hold no ``Slots``."""
    graph = _trace(model)
    mods = dict(model.named_modules())
    perm, seg = _UnionFind(), _UnionFind()
    inputs: dict[int, tuple[list[int], list[int]]] = {}  # the input's channels, by their number
    fixed_perm: list[int] = []  # elements of the input's channels: never permuted or rescaled
    fixed_seg: list[int] = []
    values: dict[fx.Node, _Value] = {}
    writers: list[tuple[Writer, list[int], list[int], list[int] | None]] = []  # (writer, perm, seg, perm of input)
    readers: list[tuple[str, list[int] | None, list[int] | None]] = []  # (weight, seg of its input, perm of its input)
    members: list[tuple[list[int], str, int]] = []  # (perm elements, tensor, axis)
    absorbers: list[tuple[str, list[int], str]] = []  # (bn, seg of its input, path at its input)
    blocked: list[int] = []
    uses: list[tuple[list[int] | None, bool]] = []  # (origin, odd) of every use of a value (odd: by a reader)
    odd_readers: list[tuple[str, list[int]]] = []  # (weight, origin): weights reading an odd function of a segment
    weights: list[str] = []
    binary: list[str] = []
    output_value: _Value | None = None

    def value_of(arg: Any, where: str) -> _Value:
        if not isinstance(arg, fx.Node) or arg not in values:
            raise GroupError(f"{where}: an input that is not a tensor of the network is not handled")
        return values[arg]

    def sized(v: _Value, n: int, where: str) -> _Value:
        """``v`` with its channels made, when it is the network's input (``n`` of them)."""
        if v.perm is None:
            if n not in inputs:
                inputs[n] = (perm.new(n), seg.new(n))
                fixed_perm.extend(inputs[n][0])
                fixed_seg.extend(inputs[n][1])
            return _Value(list(inputs[n][0]), list(inputs[n][1]), v.path, v.origin, v.odd)
        if len(v.perm) != n:
            raise GroupError(f"{where}: expects {n} channels, gets {len(v.perm)}")
        return v

    def reads_input(v: _Value) -> bool:
        if v.perm is None:
            return True
        fixed = {perm.find(e) for e in fixed_perm}
        return all(perm.find(e) in fixed for e in v.perm)

    for node in graph.graph.nodes:
        if node.op == "placeholder":
            out = _Value(None, None, "none")
        elif node.op == "output":
            output_value = value_of(node.args[0], "output")
            uses.append((output_value.origin, False))
            continue
        elif node.op == "call_module":
            m, name = mods[node.target], node.target
            v = value_of(node.args[0], name)
            if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
                if isinstance(m, (nn.Conv2d, nn.Conv1d)) and m.groups != 1:
                    what = "a depthwise convolution" if m.groups == m.in_channels else "a grouped convolution"
                    raise GroupError(f"layer {name}: {what} (Conv groups={m.groups}) is not handled: its channels are "
                                     "tied in groups, which the permutation groups do not describe")
                if "sign" in PATHS[v.path] and not reads_input(v):
                    raise GroupError(f"layer {name} reads a linear function of the previous layer with weights (no "
                                     "activation between them): any invertible mixing of those units is then a "
                                     "symmetry, which the service does not remove")
                n_out = m.out_features if isinstance(m, nn.Linear) else m.out_channels
                weight = f"{name}.weight"
                weights.append(weight)
                if getattr(m, "is_binary", False):
                    binary.append(weight)
                readers.append((weight, v.seg, v.perm))
                uses.append((v.origin, v.odd))
                if v.origin is not None and v.odd:
                    odd_readers.append((weight, v.origin))
                out = _Value(perm.new(n_out), seg.new(n_out), "affine")
                out.origin, out.odd = out.seg, True
                bias = f"{name}.bias" if m.bias is not None else None
                writers.append((Writer(weight, bias, False), out.perm, out.seg, v.perm))
                members += [(out.perm, weight, 0)] + ([(out.perm, bias, 0)] if bias else [])
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if not m.affine or not m.track_running_stats:
                    raise GroupError(f"layer {name}: BatchNorm without affine parameters or running statistics is not handled")
                v = sized(v, m.num_features, name)
                absorbers.append((name, v.seg, v.path))
                uses.append((v.origin, False))
                out = _Value(v.perm, seg.new(len(v.perm)), "affine")
                out.origin = out.seg
                writers.append((Writer(f"{name}.weight", f"{name}.bias", True), out.perm, out.seg, None))
                members += [(v.perm, f"{name}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(m, HOMOGENEOUS):
                out = _Value(v.perm, v.seg, "none", v.origin)
            elif isinstance(m, MAX_POOLS):  # positively homogeneous, commutes with a per-channel shift (not odd)
                out = _Value(v.perm, v.seg, _path(PATHS[v.path] & {"shift"}), v.origin)
            elif isinstance(m, (nn.AvgPool2d, nn.AvgPool1d)):
                padded = any(int(p) > 0 for p in torch.nn.modules.utils._pair(m.padding))
                out = _Value(v.perm, v.seg, _path(PATHS[v.path] - {"shift"}) if padded else v.path, v.origin, v.odd)
            elif isinstance(m, AFFINE_SAME):
                if isinstance(m, nn.Flatten) and m.start_dim != 1:
                    raise GroupError(f"layer {name}: a flatten must keep the batch axis alone (start_dim=1)")
                out = _Value(v.perm, v.seg, v.path, v.origin, v.odd)
            elif isinstance(m, (nn.GELU, nets.Sign)):
                if v.seg is not None:  # not positively homogeneous: the segment before it is never rescaled
                    blocked.extend(v.seg)
                out = _Value(v.perm, None if v.seg is None else seg.new(len(v.seg)), "none", v.origin,
                             v.odd and isinstance(m, ODD))
            elif isinstance(m, graphs.PadShortcut):  # subsampled, then zero channels before and after
                v = sized(v, m.c_in, name)
                uses.append((v.origin, False))  # [ours: no flip across it, as across an add]
                out = _Value(perm.new(m.before) + v.perm + perm.new(m.after),
                             seg.new(m.before) + v.seg + seg.new(m.after), v.path)
            elif isinstance(m, nets.Vote):  # a sum over the channels with fixed weights: permutable, no flip
                uses.append((v.origin, False))
                out = _Value(perm.new(1), seg.new(1), "none")
            elif isinstance(m, nets.TwoClass):  # logits [-s, s] of one score: the network's output end
                out = _Value(v.perm, v.seg, "none", v.origin)
            else:
                why = next((w for t, w in NOT_DERIVED.items() if isinstance(m, t)), "")
                raise GroupError(f"layer {name} ({type(m).__name__}): its symmetries are not derived by the service"
                                 + (f": {why}" if why else ""))
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2 \
                and not node.kwargs:
            a, b = value_of(node.args[0], "add"), value_of(node.args[1], "add")
            worst = _path(PATHS[a.path] & PATHS[b.path])
            uses.extend([(a.origin, False), (b.origin, False)])  # [ours: no flip across an add]
            if a.perm is None and b.perm is None:
                out = _Value(None, None, worst)
            else:
                n = len(a.perm if a.perm is not None else b.perm)
                a, b = sized(a, n, "add"), sized(b, n, "add")
                for x, y in zip(a.perm, b.perm):
                    perm.union(x, y)
                for x, y in zip(a.seg, b.seg):
                    seg.union(x, y)
                out = _Value(a.perm, a.seg, worst, a.seg)
        else:
            target = getattr(node.target, "__name__", node.target)
            raise GroupError(f"operation {target!r} ({node.op}, at {node.name}): its symmetries are not derived by the "
                             "service")
        values[node] = out

    if output_value is None:
        raise GroupError("the network has no output")
    fixed_perms = {perm.find(e) for e in fixed_perm + (output_value.perm or [])}
    input_segs = {seg.find(e) for e in fixed_seg}
    output_segs = {seg.find(e) for e in output_value.seg or []}
    blocked_segs = {seg.find(e) for e in blocked}

    # permutation groups: units that appear in the same tensor axes
    axis_units: dict[tuple[str, int], list[int]] = {}
    for elements, name, axis in members:
        axis_units.setdefault((name, axis), [perm.find(e) for e in elements])
    for weight, _, elements in readers:
        if elements is not None:
            axis_units.setdefault((weight, 1), [perm.find(e) for e in elements])
    where: dict[int, list[tuple[str, int]]] = {}
    for key, units in axis_units.items():
        for u in units:
            if u not in fixed_perms:
                where.setdefault(u, []).append(key)
    signature = {u: tuple(dict.fromkeys(keys)) for u, keys in where.items()}
    atoms: dict[tuple, dict[int, None]] = {}  # signature -> units, in the order of the first writer's rows
    for w in weights:
        for u in axis_units[(w, 0)]:
            if u in signature:
                atoms.setdefault(signature[u], {})[u] = None
    for u, sig in signature.items():  # (units no conv / linear writes: none in the networks built here)
        atoms.setdefault(sig, {})[u] = None
    atom_of = {u: i for i, units in enumerate(atoms.values()) for u in units}
    group_writers: list[list[tuple[str, tuple[int, ...]]]] = [[] for _ in atoms]
    for w, p_elements, _, p_in in writers:
        if w.bn:
            continue
        sources = () if p_in is None else tuple(dict.fromkeys(
            atom_of[r] for r in (perm.find(e) for e in p_in) if r in atom_of))
        for i in dict.fromkeys(atom_of[r] for r in (perm.find(e) for e in p_elements) if r in atom_of):
            group_writers[i].append((w.vector, sources))
    groups = []
    for (sig, units), found in zip(atoms.items(), group_writers):
        slots = []
        for key in sig:
            place = {u: i for i, u in enumerate(axis_units[key])}
            slots.append(_slots([place[u] for u in units], len(axis_units[key])))
        groups.append(Group(sig, tuple(dict.fromkeys(found)), tuple(slots) if any(x is not None for x in slots) else ()))

    # scale segments: units with the same writers, readers and absorbers
    info: dict[int, dict[str, list]] = {}
    for w, _, s_elements, _ in writers:
        for i, e in enumerate(s_elements):
            info.setdefault(seg.find(e), {"writers": [], "readers": [], "bns": [], "odd_readers": []})["writers"].append(
                (w, i, len(s_elements)))
    for weight, s_elements, _ in readers:
        for i, e in enumerate(s_elements or []):
            if seg.find(e) in info:  # (not the input's, nor one after a GELU: no writer, nothing to scale)
                info[seg.find(e)]["readers"].append((weight, i, len(s_elements)))
    for bn, s_elements, path in absorbers:
        for i, e in enumerate(s_elements):
            if seg.find(e) in info:
                info[seg.find(e)]["bns"].append((bn, i, len(s_elements), path))
    for weight, origin in odd_readers:
        for i, e in enumerate(origin):
            if seg.find(e) in info:
                info[seg.find(e)]["odd_readers"].append((weight, i, len(origin)))
    odd_uses: dict[int, list[bool]] = {}
    for origin, odd in uses:
        for e in origin or []:
            odd_uses.setdefault(seg.find(e), []).append(odd)
    kinds: dict[tuple, list[int]] = {}
    for r in sorted(info):
        if r in input_segs:
            continue
        x = info[r]
        free = r not in blocked_segs and r not in output_segs
        paths = [p for *_, p in x["bns"]]
        only_bns = free and not x["readers"] and bool(x["bns"])
        linear = only_bns and all("sign" in PATHS[p] for p in paths)
        fold = only_bns and all("shift" in PATHS[p] for p in paths)
        negate = r not in output_segs and not any(w.bn for w, *_ in x["writers"]) and all(odd_uses.get(r) or [False])
        read = x["readers"] or (x["odd_readers"] if negate else [])
        kind = (tuple(w for w, *_ in x["writers"]), tuple(n for n, *_ in read), tuple(b for b, *_ in x["bns"]),
                free, linear, fold, negate, r in output_segs)
        kinds.setdefault(kind, []).append(r)
    built: dict[int, Segment] = {}
    segment_of: dict[int, int] = {}
    output: Segment | None = None
    n_output_kinds = sum(1 for k in kinds if k[-1])
    for kind, units in kinds.items():
        first = {r: info[r]["writers"][0][1] for r in units}
        units = sorted(units, key=first.__getitem__)  # in the order of the first writer's rows

        def slots_of(role: str, j: int) -> Slots | None:
            entries = [info[r][role if role != "read" else ("readers" if info[r]["readers"] else "odd_readers")][j]
                       for r in units]
            return _slots([e[1] for e in entries], entries[0][2])

        w_all, read_names, bn_names, free, linear, fold, negate, is_output = kind
        seg_writers = tuple(Writer(w.vector, w.offset, w.bn, slots_of("writers", j)) for j, w in enumerate(w_all))
        r_slots = tuple(slots_of("read", j) for j in range(len(read_names)))
        b_slots = tuple(slots_of("bns", j) for j in range(len(bn_names)))
        segment = Segment(seg_writers, read_names, bn_names, free, linear, fold, negate,
                          r_slots if any(s is not None for s in r_slots) else (),
                          b_slots if any(s is not None for s in b_slots) else ())
        if is_output:
            output = segment if n_output_kinds == 1 else None  # [ours: logits of mixed writers get no factor]
            continue
        first_unit = min(units)
        built[first_unit] = segment
        segment_of.update(dict.fromkeys(units, first_unit))
    if output is not None and (output.readers or output.bns or any(w.slots for w in output.writers)):
        output = None  # logits that feed something else: no global factor is exact [ours: none used]
    read_by = {w: {segment_of[seg.find(e)] for e in s or [] if seg.find(e) in segment_of} for w, s, _ in readers}
    segments = _normalising_order(built, read_by)
    return Groups(tuple(groups), segments, output, tuple(weights), tuple(binary))


def _normalising_order(built: dict[int, Segment], read_by: dict[str, set[int]]) -> tuple[Segment, ...]:
    """Segments ordered so that a conv / linear writer of a scaled segment is measured after every segment it
    reads has been normalised (its rows absorbed those factors); a cycle (a residual stream written by layers
    without BatchNorm) has no such order and is refused."""
    deps = {r: {d for w in s.writers if not w.bn for d in read_by.get(w.vector, ()) if d in built}
            for r, s in built.items() if s.scaled}
    order: list[int] = []
    state: dict[int, int] = {}

    def visit(r: int) -> None:
        if state.get(r) == 2:
            return
        if state.get(r) == 1:
            raise GroupError("a residual stream is written by layers with weights but no BatchNorm: its canonical "
                             "scale would depend on itself, which the service does not handle; put a BatchNorm "
                             "before each add")
        state[r] = 1
        for d in sorted(deps.get(r, ())):
            if d in deps:
                visit(d)
        state[r] = 2
        order.append(r)

    for r in sorted(deps):
        visit(r)
    rest = [r for r in sorted(built) if r not in deps]
    return tuple(built[r] for r in order + rest)


def check(normalized_spec: dict[str, Any]) -> None:
    """Raise ``GroupError`` when the symmetries of a normalised spec cannot be derived exactly."""
    _derive(json.dumps(normalized_spec, sort_keys=True))


def unit_groups(spec: dict[str, Any]) -> Groups:
    """The unit groups of the network of ``spec`` (cached per normalised spec; a prepared network's own)."""
    return prepare(spec).groups


# --------------------------------------------------------------------------------------------------
# The prepared network and the structure facts the science modules share


def prepare(spec: dict[str, Any]) -> nets.Prepared:
    """The network of ``spec`` prepared (nets.Prepared): normalised, its unit groups derived and its tensors
    read, once. A prepared network is returned as it is, so every science function calls this on entry and
    passes the result on: a job prepares its architecture once (workers/glue/runners.py, ``Context``)."""
    if isinstance(spec, nets.Prepared):
        return spec
    normal = nets.normalize_spec(spec)
    key = json.dumps(normal, sort_keys=True)
    facts = _tensors(key)
    return nets.Prepared(normal, groups=_derive(key), tensors=facts, binary=nets.binary_normalized(normal),
                         batchnorm=bool(facts.variances))


def weight_names(spec: dict[str, Any]) -> list[str]:
    """Every conv / linear weight of ``spec``'s network in forward order (weights[0] reads the inputs)."""
    return list(prepare(spec).groups.weights)


def first_weight(spec: dict[str, Any]) -> str:
    """state_dict name of the weight of the network's first layer (the one that reads the inputs)."""
    return weight_names(spec)[0]


@dataclass(frozen=True)
class Tensors:
    """What the tensors of a network's state dict are, read from its built module (never from their names)."""

    parameters: frozenset[str]  # the module's parameters: weights, biases, BatchNorm gamma and beta
    variances: frozenset[str]  # BatchNorm running variances (buffers, like the running means and batch counts)
    order: tuple[str, ...] = ()  # every state_dict name in the module's own order


@lru_cache(maxsize=256)
def _tensors(key: str) -> Tensors:
    model = _meta_model(json.loads(key), n_classes=2)  # the names do not depend on the number of classes
    variances = {f"{name}.{local}" for name, m in model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for local, buf in m.named_buffers(recurse=False) if buf is m.running_var}
    return Tensors(frozenset(n for n, _ in model.named_parameters()), frozenset(variances), tuple(model.state_dict()))


def tensors(spec: dict[str, Any]) -> Tensors:
    """``Tensors`` of ``spec``'s network (cached per normalised spec; a prepared network's own)."""
    return prepare(spec).tensors


def in_module_order(spec: dict[str, Any], state: dict[str, Any]) -> list[str]:
    """The names of ``state`` in the order of the module's own state_dict (names it does not know last, sorted),
    whatever order the dict holds them in: a weights file read back (safetensors) gives its keys in an order
    that differs from process to process, and nothing computed may depend on that."""
    order = tensors(spec).order
    known = [k for k in order if k in state]
    return known + sorted(set(state) - set(order))


def compared_names(spec: dict[str, Any], state: dict[str, torch.Tensor]) -> list[str]:
    """Tensors counted by per-parameter distances, in the module's order: the model's parameters (the
    weights and biases of all layers and BatchNorm's affine gamma and beta; not its running statistics)."""
    parameters = tensors(spec).parameters
    return [k for k in in_module_order(spec, state) if k in parameters]
