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
class Writer:
    """A layer writing a segment: ``vector`` is the tensor holding each channel's scale-carrying entries
    (a conv / linear weight, one row per channel; a BatchNorm's gamma), ``offset`` the tensor scaled with it
    (bias; BatchNorm's beta) or None."""

    vector: str
    offset: str | None
    bn: bool


@dataclass(frozen=True)
class Segment:
    writers: tuple[Writer, ...]
    readers: tuple[str, ...]  # weights whose axis 1 reads the segment (blocks of axis 1 per channel)
    bns: tuple[str, ...]  # BatchNorm prefixes normalising the segment (absorb its scale in their statistics)
    scaled: bool  # a positive factor per channel is an exact symmetry
    flip: bool  # the sign flip per channel is exact (linear path, BatchNorm absorbers only)
    fold: bool  # writers' biases fold exactly into the absorbing BatchNorms' running means
    negate: bool = False  # writers' rows and readers' input slices negated per channel is exact (odd uses only)

    def vectors(self) -> list[str]:
        return [w.vector for w in self.writers]


@dataclass(frozen=True)
class Group:
    """One permutation: ``axes`` (tensor name, axis) all permuted together (axis 1 of a reader by blocks);
    ``writers``: conv / linear weights writing into the group, with the group of their input (None: the
    network's input or a group never permuted), used by the alignment cost."""

    axes: tuple[tuple[str, int], ...]
    writers: tuple[tuple[str, int | None], ...]


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

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

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
    perm: int
    seg: int
    path: str  # how the value depends on its segment's writers' channel (``PATHS``): "affine", "linear", "shift", "none"
    origin: int | None = None  # the segment whose writers this value is a channel-wise function of
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
LEAVES = (nets.BinaryLinear, nets.BinaryConv2d, nets.Sign, nets.Vote, nets.TwoClass)


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


@lru_cache(maxsize=256)
def _derive(key: str) -> Groups:
    spec = json.loads(key)
    model = _meta_model(spec)
    graph = _trace(model)
    mods = dict(model.named_modules())
    perm, seg = _UnionFind(), _UnionFind()
    INPUT = (perm.new(), seg.new())  # the input's space: never permuted or rescaled
    values: dict[fx.Node, _Value] = {}
    writers: list[tuple[int, int, Writer, int]] = []  # (perm, seg, writer, perm of the input or -1)
    readers: list[tuple[str, int, int]] = []  # (weight, seg of the input, perm of the input)
    members: list[tuple[int, str, int]] = []  # (perm, tensor, axis)
    absorbers: list[tuple[str, int, str]] = []  # (bn, seg of its input, path at its input)
    blocked: list[int] = []
    uses: list[tuple[int | None, bool]] = []  # (origin, odd) of every use of a value (odd: by a reader)
    odd_readers: list[tuple[str, int]] = []  # (weight, origin): weights reading an odd function of a segment
    weights: list[str] = []
    binary: list[str] = []
    perm_of_writer: dict[str, int] = {}
    output_value: _Value | None = None

    def value_of(arg: Any, where: str) -> _Value:
        if not isinstance(arg, fx.Node) or arg not in values:
            raise GroupError(f"{where}: an input that is not a tensor of the network is not handled")
        return values[arg]

    for node in graph.graph.nodes:
        if node.op == "placeholder":
            out = _Value(INPUT[0], INPUT[1], "none")
        elif node.op == "output":
            output_value = value_of(node.args[0], "output")
            uses.append((output_value.origin, False))
            continue
        elif node.op == "call_module":
            m, name = mods[node.target], node.target
            v = value_of(node.args[0], name)
            if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
                if isinstance(m, (nn.Conv2d, nn.Conv1d)) and m.groups != 1:
                    raise GroupError(f"layer {name}: grouped convolutions (groups={m.groups}) are not handled")
                if "sign" in PATHS[v.path] and perm.find(v.perm) != perm.find(INPUT[0]):
                    raise GroupError(f"layer {name} reads a linear function of the previous layer with weights (no "
                                     "activation between them): any invertible mixing of those units is then a "
                                     "symmetry, which the service does not remove")
                weight = f"{name}.weight"
                weights.append(weight)
                if getattr(m, "is_binary", False):
                    binary.append(weight)
                readers.append((weight, v.seg, v.perm))
                uses.append((v.origin, v.odd))
                if v.origin is not None and v.odd:
                    odd_readers.append((weight, v.origin))
                out = _Value(perm.new(), seg.new(), "affine")
                out.origin, out.odd = out.seg, True
                bias = f"{name}.bias" if m.bias is not None else None
                writers.append((out.perm, out.seg, Writer(weight, bias, False), v.perm))
                members += [(out.perm, weight, 0)] + ([(out.perm, bias, 0)] if bias else [])
                perm_of_writer[weight] = out.perm
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if not m.affine or not m.track_running_stats:
                    raise GroupError(f"layer {name}: BatchNorm without affine parameters or running statistics is not handled")
                absorbers.append((name, v.seg, v.path))
                uses.append((v.origin, False))
                out = _Value(v.perm, seg.new(), "affine")
                out.origin = out.seg
                writers.append((out.perm, out.seg, Writer(f"{name}.weight", f"{name}.bias", True), -1))
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
                blocked.append(v.seg)  # not positively homogeneous: the segment before it is never rescaled
                out = _Value(v.perm, seg.new(), "none", v.origin, v.odd and isinstance(m, ODD))
            elif isinstance(m, nets.Vote):  # a sum over the channels with fixed weights: permutable, no flip
                uses.append((v.origin, False))
                out = _Value(perm.new(), seg.new(), "none")
            elif isinstance(m, nets.TwoClass):  # logits [-s, s] of one score: the network's output end
                out = _Value(v.perm, v.seg, "none", v.origin)
            else:
                raise GroupError(f"layer {name} ({type(m).__name__}): its symmetries are not derived by the service")
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2 \
                and not node.kwargs:
            a, b = value_of(node.args[0], "add"), value_of(node.args[1], "add")
            worst = _path(PATHS[a.path] & PATHS[b.path])
            uses.extend([(a.origin, False), (b.origin, False)])  # [ours: no flip across an add]
            out = _Value(perm.union(a.perm, b.perm), seg.union(a.seg, b.seg), worst, seg.find(a.seg))
        else:
            raise GroupError(f"operation {node.op} {node.target!r}: its symmetries are not derived by the service")
        values[node] = out

    if output_value is None:
        raise GroupError("the network has no output")
    fixed_perms = {perm.find(INPUT[0]), perm.find(output_value.perm)}
    input_seg, output_seg = seg.find(INPUT[1]), seg.find(output_value.seg)
    blocked_segs = {seg.find(s) for s in blocked}

    # permutation groups
    by_perm: dict[int, dict[str, Any]] = {}
    for p, name, axis in members:
        by_perm.setdefault(perm.find(p), {"axes": [], "writers": []})["axes"].append((name, axis))
    for p, s, w, p_in in writers:
        if not w.bn:
            root_in = perm.find(p_in)
            by_perm[perm.find(p)]["writers"].append((w.vector, None if root_in in fixed_perms else root_in))
    for weight, s, p in readers:
        if perm.find(p) not in fixed_perms:
            by_perm.setdefault(perm.find(p), {"axes": [], "writers": []})["axes"].append((weight, 1))
    order = [perm.find(perm_of_writer[w]) for w in weights]
    roots = [r for r in dict.fromkeys(order) if r not in fixed_perms]
    index = {r: i for i, r in enumerate(roots)}
    groups = tuple(Group(tuple(dict.fromkeys(by_perm[r]["axes"])),
                         tuple((w, index.get(g) if g is not None else None) for w, g in by_perm[r]["writers"]))
                   for r in roots)

    # scale segments
    seg_info: dict[int, dict[str, list]] = {}
    for p, s, w, _ in writers:
        seg_info.setdefault(seg.find(s), {"writers": [], "readers": [], "bns": [], "paths": []})["writers"].append(w)
    for weight, s, _ in readers:
        r = seg.find(s)
        if r in seg_info:  # (not the input's, nor one after a GELU: no writer, nothing to scale)
            seg_info[r]["readers"].append(weight)
    for bn, s, path in absorbers:
        if seg.find(s) not in seg_info:
            continue
        seg_info[seg.find(s)]["bns"].append(bn)
        seg_info[seg.find(s)]["paths"].append(path)
    odd_uses: dict[int, list[bool]] = {}
    for o, odd in uses:
        if o is not None:
            odd_uses.setdefault(seg.find(o), []).append(odd)
    built: dict[int, Segment] = {}
    for r, info in seg_info.items():
        if r == input_seg:
            continue
        free = r not in blocked_segs and r != output_seg
        only_bns = free and not info["readers"] and bool(info["bns"])
        linear = only_bns and all("sign" in PATHS[p] for p in info["paths"])
        fold = only_bns and all("shift" in PATHS[p] for p in info["paths"])
        negate = r != output_seg and not any(w.bn for w in info["writers"]) and all(odd_uses.get(r) or [False])
        readers_r = tuple(info["readers"]) or (tuple(w for w, o in odd_readers if seg.find(o) == r) if negate else ())
        built[r] = Segment(tuple(info["writers"]), readers_r, tuple(info["bns"]), free,
                           linear, fold, negate)
    output = built.pop(output_seg, None)
    if output is not None and (output.readers or output.bns):
        output = None  # logits that feed something else: no global factor is exact [ours: none used]
    segments = _normalising_order(built, readers, seg, writers)
    return Groups(groups, segments, output, tuple(weights), tuple(binary))


def _normalising_order(built: dict[int, Segment], readers, seg: _UnionFind, writers) -> tuple[Segment, ...]:
    """Segments ordered so that a conv / linear writer of a scaled segment is measured after every segment it
    reads has been normalised (its rows absorbed those factors); a cycle (a residual stream written by layers
    without BatchNorm) has no such order and is refused."""
    read_by = {w: seg.find(s) for w, s, _ in readers}
    deps = {r: {read_by[w.vector] for w in s.writers if not w.bn and read_by.get(w.vector) in built}
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
