"""Error and loss of networks on a data set held as tensors: one network, or many parameter points at once.

Plain reference, one model at a time: ``error_and_loss``, ``recalibrate_bn``, ``evaluate_states_loop``.

The engine, ``evaluate_states`` (and ``recalibrate_states``), evaluates K parameter points of one
architecture together (docs/science.md section 9):
- the data stay one tensor on the device, read in chunks (no DataLoader); the points are state dicts
  stacked to (K, *shape) and the model's modules are applied functionally (no model copy per point);
- dense layers of all points of a chunk run as one batched matmul, (K, n, d) @ (K, d, h); a dense first
  layer (shared input) as one matmul with K*h outputs;
- conv layers run point after point over a data chunk, channels_last on CPU. Measured on 2 shared CPU
  cores (benchmarks/README.md, LeNet, 21 points): 2.0-2.4x faster than one grouped conv (groups=K) and
  4-5x faster than ``torch.func.vmap`` over ``functional_call`` (2x slower on the MLP too), and the conv
  stage holds the activations of one point only;
- a first layer given as a ``Combination`` (paths, planes, noise draws: every unit of every point is a
  fixed combination of m base units, w_k = sum_j coef[k, j] * base_j) costs m products with the data per
  chunk instead of K (a conv is linear in its weights too);
- BatchNorm statistics of all points are recomputed in one pass, exactly as ``recalibrate_bn`` does it
  for one model (same batches of ``bn_batch`` inputs, cumulative average of the batch statistics);
- when evaluating (BatchNorm in eval mode), every conv followed by a BatchNorm in the conv stage runs with
  the BatchNorm folded into its weights and bias (one pass over the activations less per pair); residual
  blocks are traced with torch.fx to find their pairs. Models that fit none of the stages below (a layer
  graph starting with a residual block) run whole, point after point (``_whole_model_stages``);
- chunks of points and of data are sized to a memory budget (``memory_mb``).
Precision: the model's dtype (float32 or float64). On CUDA, ``precision`` None or "tf32" lets float32
matmuls and convs use TF32 (10-bit mantissa, relative rounding ~5e-4 per product, fp32 accumulation),
"fp32" forbids it, "bf16" runs the layers under bf16 autocast (8-bit mantissa, ~4e-3) except the
last layer with weights, which runs in float32 so that argmax sees no bf16 ties. Both only move
predictions whose top two logits are nearly tied: expect TF32 to change an error by well under 0.1%
of the samples, bf16 by up to a few tenths of a percent (benchmarks/gpu.py prints the difference it
measures). On CPU "tf32" is plain float32; "bf16" works but is rarely faster.
Threads are the caller's business: on a CPU shared with other work use at most the free cores (tiny
nets ran 10-20x slower with 2 threads than with 1 on a busy 2-core machine).
"""
from __future__ import annotations

import copy
import itertools
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from . import cost as costs
from .nets import binarize

Progress = Callable[[float, str], None]
State = dict[str, torch.Tensor]
Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]
PRECISIONS = ("fp32", "tf32", "bf16")
# Inputs per batch when BatchNorm statistics are recomputed [ours]: 256 (it was 4096 before issue 15).
# Measured on CPU, ResNet-20 on 1000 inputs: batches of 256 take half the time of one batch of 1000
# (the activations of a batch stay cache-sized); the statistics are the average of the batches' own.
BN_BATCH = 256
CPU_BUDGET_SHARE = 0.5  # of the worker's free budget that chunks are sized to on CPU [ours]


def _dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.get_default_dtype()


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def default_device() -> torch.device:
    """The device the science runs on when none is given: the first CUDA device if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------------
# Plain reference: one model at a time


@torch.no_grad()
def error_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> tuple[float, float]:
    """0-1 error and mean cross-entropy of ``model`` in eval mode on (x, y) (x cast to the model's dtype), in
    batches of ``batch_size`` inputs (None: as many as fit the memory budget, at most 4096: ``budget_batch``)."""
    if batch_size is None:
        batch_size = budget_batch(model, tuple(x.shape[1:])) if len(y) > 1 else 1
    model.eval()
    dtype, device = _dtype(model), _device(model)
    wrong, loss_sum = 0, 0.0
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size].to(device, dtype))
        target = y[i : i + batch_size].to(device)
        wrong += int((logits.argmax(dim=1) != target).sum())
        loss_sum += float(F.cross_entropy(logits.double(), target, reduction="sum"))
    n = max(len(y), 1)
    return wrong / n, loss_sum / n


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(_batchnorms(model))


@contextmanager
def _bn_accumulating(model: nn.Module) -> Iterator[None]:
    """BatchNorm modules in train mode with momentum None (cumulative average); restored afterwards."""
    bns = _batchnorms(model)
    saved = [(m.momentum, m.training) for m in bns]
    try:
        for m in bns:
            m.momentum = None
            m.train()
        yield
    finally:
        for m, (momentum, training) in zip(bns, saved):
            m.momentum = momentum
            m.train(training)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = BN_BATCH) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance on inputs ``x``; leaves the model in eval mode.

    One pass over ``x`` in batches, with ``momentum=None`` (cumulative average of the batch statistics,
    as ``torch.optim.swa_utils.update_bn``). With a single batch (len(x) <= batch_size) the statistics
    are exactly the data's mean and unbiased variance of each unit's pre-activation; with several,
    the mean is still exact for equal batches and the variance is the average within-batch variance
    [ours]. No-op for a model without BatchNorm.
    """
    bns = _batchnorms(model)
    if not bns:
        return model.eval()
    for m in bns:
        m.reset_running_stats()
    dtype, device = _dtype(model), _device(model)
    model.eval()
    with _bn_accumulating(model):
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(device, dtype))
    return model.eval()


@torch.no_grad()
def evaluate_states_loop(
    model: nn.Module,
    states: Iterable[State],
    splits: Splits,
    progress: Progress | None = None,
    total: int | None = None,
    bn_data: torch.Tensor | None = None,
) -> dict[str, dict[str, list[float]]]:
    """The plain loop: each state loaded into ``model`` in turn, BatchNorm recomputed on ``bn_data`` if given,
    then ``error_and_loss`` on each split. Reference for ``evaluate_states`` (same arguments and result)."""
    out = {name: {"error": [], "loss": []} for name in splits}
    recompute = bn_data is not None and has_batchnorm(model)
    for k, state in enumerate(states):
        model.load_state_dict(state)
        if recompute:
            recalibrate_bn(model, bn_data)
        for name, (x, y) in splits.items():
            err, loss = error_and_loss(model, x, y)
            out[name]["error"].append(err)
            out[name]["loss"].append(loss)
        if progress is not None and total:
            progress((k + 1) / total, f"evaluated point {k + 1} of {total}")
    return out


# --------------------------------------------------------------------------------------------------
# Points: stacked state dicts, and first layers that are combinations of a few endpoint layers


def stack_states(states: list[State], dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> State:
    """{name: (K, *shape)} from K state dicts; float tensors cast to ``dtype`` (if given), all moved to ``device``."""
    out = {}
    for name in states[0]:
        t = torch.stack([s[name].detach() for s in states])
        out[name] = t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)
    return out


def unstack(stack: State, k: int) -> State:
    """Point k of a stack as a state dict (views)."""
    return {name: t[k] for name, t in stack.items()}


@dataclass
class Combination:
    """The first layer's weights of K points as per-unit combinations of m base weights:
    weight_k[u] = sum_j coef[k, j, u] * bases[j][u]. The layer's bias (if any) comes from each point's
    own state. Linear and geodesic paths have m = 2 (slerp: coef = alpha(t), beta(t) per unit), planes
    m = 3, noise draws with common random numbers 1 + draws (w and w * z_d, with coefficients 1 and sigma)."""

    name: str  # state_dict name of the first layer's weight, e.g. "fc1.weight"
    bases: list[torch.Tensor]  # m tensors shaped like the weight, (H, *fan_in)
    coef: torch.Tensor  # (K, m, H)

    def select(self, k0: int, k1: int) -> "Combination":
        """Points k0 ... k1 - 1, with only the bases they use (a non-zero coefficient)."""
        coef = self.coef[k0:k1]
        used = [j for j in range(coef.shape[1]) if bool((coef[:, j] != 0).any())]
        return Combination(self.name, [self.bases[j] for j in used], coef[:, used])

    def uniform(self) -> bool:
        """Whether each point's coefficients are the same for every unit (lines, planes, noise draws)."""
        if self.coef.stride(2) == 0 or self.coef.shape[2] == 1:
            return True  # expanded over the units
        return bool((self.coef == self.coef[:, :, :1]).all())

    def __len__(self) -> int:
        return self.coef.shape[0]

    @property
    def n_bases(self) -> int:
        return len(self.bases)


class LazyCombination:
    """A ``Combination`` too big to hold (flatness: 1 + draws bases, a coefficient per point and base) made
    chunk by chunk: ``select(k0, k1)`` returns the ``Combination`` of points k0 ... k1 - 1 with only the bases
    they use. Subclasses give ``__len__``, ``n_bases`` and ``select``; their coefficients are uniform over units."""

    name: str

    def uniform(self) -> bool:
        return True

    def select(self, k0: int, k1: int) -> Combination:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# How the engine runs a model: weightless prefix, first layer, conv stage (per point), dense stage (stacked)


@dataclass
class _EngineStages:
    prefix: list[nn.Module]  # weightless modules before the first layer, applied once to the shared input
    first: tuple[str, nn.Module]  # the first module with weights
    per_point: list[tuple[str, nn.Module]]  # after a conv first layer, up to the last flatten: point by point
    stacked: list[tuple[str, nn.Module]]  # the dense rest: all points of a chunk together, (K, n, ...)
    keys: dict[str, list[str]]  # module name -> its local state_dict keys ("weight", "running_mean", ...)
    last: str  # name of the last module with weights (float32 in bf16 mode)
    pp_act: int  # largest activation of one sample in the conv stage (entries)
    st_act: int  # largest activation of one sample and one point in the dense stage (entries)
    first_act: int = 1  # the first layer's output of one sample (entries): one product with a combination's base
    first_units: int = 1  # the first layer's units (output channels or features)
    whole: nn.Module | None = None  # a model the stages above do not fit: run whole, point after point
    fused: dict | None = None  # per-point module name -> _Fused, for evaluation (BatchNorm in eval mode)


@dataclass
class _Fused:
    """A per-point module with each conv -> BatchNorm pair folded into the conv, for evaluation: the BatchNorm's
    eval-mode affine map (gamma (x - mean) / sqrt(var + eps) + beta) becomes the conv's weight scale and bias."""

    module: nn.Module  # fx GraphModule without the folded BatchNorms
    pairs: list[tuple[str, str, float]]  # (conv, bn, eps), local names
    keys: list[str]  # the module's state_dict keys


def _fuse(m: nn.Module) -> _Fused | None:
    """``m`` with its conv -> BatchNorm2d pairs folded (None when there are none or it cannot be traced)."""
    try:
        gm = torch.fx.symbolic_trace(copy.deepcopy(m))
    except Exception:  # noqa: BLE001 - no fusion then, the module runs as it is
        return None
    mods = dict(gm.named_modules())
    pairs = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.Conv2d) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        bn = mods.get(user.target) if user.op == "call_module" else None
        if (isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.track_running_stats and user.args == (node,)
                and not user.kwargs):
            conv = mods[node.target]
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device))
            pairs.append((node.target, user.target, bn.eps))
            user.replace_all_uses_with(node)
            gm.graph.erase_node(user)
    if not pairs:
        return None
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return _Fused(gm, pairs, list(gm.state_dict().keys()))


def _fold(conv: State, bn: State, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv's (weight, bias) with the eval-mode BatchNorm after it folded in: W' = W s,
    b' = (b - mean) s + beta, s = gamma / sqrt(var + eps)."""
    s = bn["weight"] * torch.rsqrt(bn["running_var"] + eps)
    w, b, mean = conv["weight"], conv.get("bias"), bn["running_mean"]
    return w * s.view(-1, *([1] * (w.dim() - 1))), ((b - mean) if b is not None else -mean) * s + bn["bias"]


def _fused_params(f: _Fused, params: State) -> State:
    """One point's parameters for ``f.module`` (each pair folded by ``_fold``)."""
    out = {k: params[k] for k in f.keys if k in params}
    for conv, bn, eps in f.pairs:
        sub = lambda prefix: {k[len(prefix) + 1:]: v for k, v in params.items() if k.startswith(prefix + ".")}  # noqa: E731
        out[f"{conv}.weight"], out[f"{conv}.bias"] = _fold(sub(conv), sub(bn), eps)
    return out


def _is_weighted(m: nn.Module) -> bool:
    return len(m.state_dict()) > 0


@torch.no_grad()
def _whole_model_stages(model: nn.Module, input_shape: tuple[int, ...]) -> _EngineStages:
    """Any other model (e.g. a layer graph whose first layer with weights is a residual block): each point's
    whole forward pass by ``functional_call``, over the shared data chunk, point after point."""
    sizes = [1]
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel()))
             for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape, dtype=_dtype(model), device=_device(model)))
    except NotImplementedError:
        raise TypeError("the batched evaluation runs nn.Sequential models (as nets.build makes them) or modules "
                        "with a forward pass") from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    f = _fuse(model)
    return _EngineStages([], ("", model), [], [], {}, "", max(sizes), 1, whole=model, fused={"": f} if f else {})


def _engine_stages(model: nn.Module, input_shape: tuple[int, ...]) -> _EngineStages:
    """The engine's stages for a model from nets.build; ``_whole_model_stages`` for models they do not fit."""
    try:
        return _sequential_stages(model, input_shape)
    except TypeError:
        return _whole_model_stages(model, input_shape)


@torch.no_grad()
def _sequential_stages(model: nn.Module, input_shape: tuple[int, ...]) -> _EngineStages:
    if not isinstance(model, nn.Sequential):
        raise TypeError("the batched evaluation runs nn.Sequential models (as nets.build makes them)")
    children = list(model.named_children())
    weighted = [i for i, (_, m) in enumerate(children) if _is_weighted(m)]
    if not weighted:
        raise TypeError("the model has no layer with weights")
    i0 = weighted[0]
    first = children[i0]
    if isinstance(first[1], nn.Conv2d):
        flat = max(i for i, (_, m) in enumerate(children) if isinstance(m, nn.Flatten))
        per_point, stacked = children[i0 + 1 : flat + 1], children[flat + 1 :]
    elif isinstance(first[1], nn.Linear):
        per_point, stacked = [], children[i0 + 1 :]
    else:
        raise TypeError(f"unsupported first layer {type(first[1]).__name__}")
    for name, m in stacked:
        if isinstance(m, nn.Conv2d) or (_is_weighted(m) and not isinstance(m, (nn.Linear, nn.BatchNorm1d))):
            raise TypeError(f"unsupported layer {name} ({type(m).__name__}) after the flatten")
    # sizes of one sample's activations (the model's own weights only serve to trace shapes)
    was_training = model.training
    model.eval()
    h = torch.zeros(1, *input_shape, dtype=_dtype(model), device=_device(model))
    pp_act, st_act, stage, first_act = 0, 0, "prefix", 1
    for i, (_, m) in enumerate(children):
        h = m(h)
        if i == i0:
            stage = "per_point" if per_point else "stacked"
            first_act = h.numel()
        if stage == "per_point":
            pp_act = max(pp_act, h.numel())
            if isinstance(m, nn.Flatten) and i == i0 + len(per_point):
                stage = "stacked"
        elif stage == "stacked":
            st_act = max(st_act, h.numel())
    model.train(was_training)
    keys = {name: list(m.state_dict().keys()) for name, m in children}
    fused: dict = {name: f for name, m in per_point if (f := _fuse(m)) is not None}
    for (name, m), (bn_name, bn) in zip(per_point, per_point[1:]):  # a conv child followed by a BatchNorm child
        if isinstance(m, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.track_running_stats:
            fused[name], fused[bn_name] = ("conv", bn_name, bn.eps), ("skip",)
    units = first[1].out_channels if isinstance(first[1], nn.Conv2d) else first[1].out_features
    return _EngineStages([m for _, m in children[:i0]], first, per_point, stacked, keys, children[weighted[-1]][0],
                 pp_act, max(st_act, 1), first_act, units, fused=fused)


def _params(stages: _EngineStages, stack: State, name: str, k: int | None = None) -> State:
    """Module ``name``'s tensors of point k (or of all points, stacked) under their local names."""
    return {key: (stack[f"{name}.{key}"] if k is None else stack[f"{name}.{key}"][k]) for key in stages.keys[name]}


def _binary(m: nn.Module) -> bool:
    return bool(getattr(m, "is_binary", False))


# --------------------------------------------------------------------------------------------------
# The batched forward pass


def _first_products(stages: _EngineStages, comb: Combination | None, x: torch.Tensor) -> list[torch.Tensor] | None:
    """The m products of the data with the combination's bases (shared by all points of a chunk)."""
    if comb is None:
        return None
    m = stages.first[1]
    if isinstance(m, nn.Conv2d):
        zs = [F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups) for w in comb.bases]  # m x (n, H, h, w)
        return [_channels_last(stages, z) for z in zs]
    return [F.linear(x, w) for w in comb.bases]  # m x (n, H)


def _combine(products: list[torch.Tensor], coef: torch.Tensor, bias: torch.Tensor | None,
             uniform: bool = False) -> torch.Tensor:
    """bias + sum_j coef[..., j, u] * products[j][..., u, ...]: coef (K, m, H) against (n, H) products (dense,
    all points) or (m, H) against (n, H, h, w) (conv, one point). The outputs are the largest tensors the
    engine writes and memory traffic is what they cost: one matmul when the coefficients are ``uniform``
    over units, else in-place multiply-adds skipping zero coefficients."""
    if coef.dim() == 3:  # dense, all points -> (K, n, H)
        K, m, H = coef.shape
        n = products[0].shape[0]
        if uniform:  # (K, m) @ (m, n*H)
            out = (coef[:, :, 0] @ torch.stack(products).view(m, -1)).view(K, n, H)
            return out.add_(bias[:, None, :]) if bias is not None else out
        c = coef.transpose(0, 1)[:, :, None, :]  # (m, K, 1, H) against (1, n, H)
        b = bias[:, None, :] if bias is not None else None
        z = [p[None] for p in products]
        out = torch.empty(K, n, H, dtype=products[0].dtype, device=products[0].device)
        js = list(range(m))
    else:  # conv, one point: (H, 1, 1) against (n, H, h, w)
        c = coef[:, :, None, None]  # (m, H, 1, 1)
        b = bias[:, None, None] if bias is not None else None
        z = products
        out = torch.empty_like(z[0])  # keeps a channels_last layout
        js = (coef != 0).any(dim=1).nonzero().flatten().tolist() or [0]  # one pass, not one per base
    out = torch.addcmul(b, c[js[0]], z[js[0]], out=out) if b is not None else torch.mul(c[js[0]], z[js[0]], out=out)
    for j in js[1:]:
        out.addcmul_(c[j], z[j])
    return out


def _dense(m: nn.Linear, p: State, h: torch.Tensor, shared: bool) -> torch.Tensor:
    """A dense layer for all points: h (n, d) shared or (K, n, d) -> (K, n, H)."""
    w, b = p["weight"], p.get("bias")  # (K, H, d), (K, H)
    if _binary(m):
        w = binarize(w)
    K, H, d = w.shape
    if shared:  # one matmul with K*H outputs
        out = F.linear(h, w.reshape(K * H, d)).view(h.shape[0], K, H).transpose(0, 1)
        out = out + b[:, None, :] if b is not None else out.contiguous()
    elif b is not None:
        out = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
    else:
        out = torch.bmm(h, w.transpose(1, 2))
    return out / d**0.5 if _binary(m) else out


def _forward(stages: _EngineStages, stack: State, x: torch.Tensor, comb: Combination | None, bf16: bool,
             fuse: bool = False) -> torch.Tensor:
    """Logits (K, n, C) of the K stacked points on inputs x (n, ...). ``fuse`` (evaluation only, BatchNorm in
    eval mode): per-point modules run with their conv -> BatchNorm pairs folded (``_Fused``)."""
    fused = stages.fused if fuse and stages.fused else {}
    name0, first = stages.first
    K = next(iter(stack.values())).shape[0]
    cast = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    if stages.whole is not None:  # (the last layer is not kept in float32 here)
        with cast:
            if "" in fused:
                f = fused[""]
                h = torch.stack([functional_call(f.module, _fused_params(f, unstack(stack, k)), (x,)) for k in range(K)])
            else:
                h = torch.stack([functional_call(stages.whole, unstack(stack, k), (x,)) for k in range(K)])
        return h.float() if bf16 else h
    with cast:
        for m in stages.prefix:
            x = m(x)
        products = _first_products(stages, comb, x)  # m products shared by the K points, or None
        uniform = comb is not None and comb.uniform()
        if stages.per_point:  # conv stage, point after point
            flat = []
            for k in range(K):
                if products is not None:
                    bias = stack.get(f"{name0}.bias")
                    h = _combine(products, comb.coef[k], bias[k] if bias is not None else None)
                else:
                    h = _channels_last(stages, functional_call(first, _params(stages, stack, name0, k), (x,)))
                for name, m in stages.per_point:
                    f = fused.get(name)
                    if isinstance(f, tuple) and f[0] == "skip":
                        continue  # folded into the conv before it
                    if isinstance(f, tuple):  # a conv child with the next child's BatchNorm folded in
                        _, bn_name, eps = f
                        w, b = _fold(_params(stages, stack, name, k), _params(stages, stack, bn_name, k), eps)
                        h = F.conv2d(h, w, b, m.stride, m.padding, m.dilation, m.groups)
                    elif f is not None:
                        h = functional_call(f.module, _fused_params(f, _params(stages, stack, name, k)), (h,))
                    elif stages.keys[name]:
                        h = functional_call(m, _params(stages, stack, name, k), (h,))
                    else:
                        h = h.relu_() if isinstance(m, nn.ReLU) else m(h)
                flat.append(h)
            h = torch.stack(flat)  # (K, n, D)
        elif products is not None:
            h = _combine(products, comb.coef, stack.get(f"{name0}.bias"), uniform)
        else:
            h = _dense(first, _params(stages, stack, name0), x, shared=True)
        for name, m in stages.stacked:
            last = bf16 and name == stages.last
            with torch.autocast(x.device.type, enabled=False) if last else nullcontext():
                if last:
                    h = h.float()
                if isinstance(m, nn.Linear):
                    h = _dense(m, _params(stages, stack, name), h, shared=False)
                elif stages.keys[name]:  # BatchNorm1d: point by point
                    h = torch.stack([functional_call(m, _params(stages, stack, name, k), (h[k],)) for k in range(K)])
                elif isinstance(m, nn.ReLU):
                    h = h.relu_()  # h is the engine's own intermediate
                else:  # weightless: on the merged (K*n) batch
                    n = h.shape[1]
                    h = m(h.reshape(K * n, *h.shape[2:]))
                    h = h.reshape(K, n, *h.shape[1:])
    return h.float() if bf16 else h


# --------------------------------------------------------------------------------------------------
# Chunking, precision


@dataclass
class _Chunks:
    points: int  # points per chunk
    data: int  # inputs per chunk (evaluation)


def _memory_bytes(device: torch.device, memory_mb: float | None) -> int:
    if memory_mb is not None:
        return int(memory_mb * 2**20)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    # the worker's budget less what the process holds already; a share held back for what the chunk sizes do
    # not count (the allocator's slack, the previous chunk's stack while the next is made, Python objects) [ours]
    return int(CPU_BUDGET_SHARE * costs.available_bytes())


def budget_batch(model: nn.Module, input_shape: tuple[int, ...], memory_mb: float | None = None,
                 largest: int = 4096) -> int:
    """Inputs per batch of a plain forward pass (``error_and_loss``) that fit the memory budget: the budget over
    cost.EVAL_FACTOR x one input's peak activation bytes, measured on two and four inputs."""
    budget = _memory_bytes(_device(model), memory_mb)
    per = costs.EVAL_FACTOR * costs.measured_forward_bytes(model, input_shape)
    return int(max(1, min(largest, budget // max(per, 1))))


def _chunks(stages: _EngineStages, n_points: int, n_data: int, state_bytes: int, elem: int, device: torch.device,
            memory_mb: float | None, chunk: int | None, first: "Combination | LazyCombination | None" = None,
            min_data: int = 0) -> _Chunks:
    """Data chunk: ``chunk``, else on CPU 256 inputs for dense nets (measured fastest on 2 cores: the
    (K, 256, h) intermediates stay in cache) and 64 for conv nets (measured with one thread, CPU time of 5
    points on 512 inputs, 256 -> 64: LeNet 0.34 -> 0.30 s, VGG16 8.5 -> 7.3 s, ResNet-20 1.9 -> 1.3 s: the
    activations of deep conv stages stay cache-sized), 8192 on CUDA; shrunk to fit one point in the budget.
    Points per chunk: as many as fit the budget with that data chunk: stacked weights twice, dense activations
    three times, and with a first-layer ``first`` combination its products with the data (the bases a chunk
    uses, twice: stacked for the matmul) and its coefficients (points x bases; x units when not uniform).
    ``min_data``: inputs a chunk of points must also take at once (BatchNorm recalibration's fixed batches)."""
    budget = _memory_bytes(device, memory_mb)
    if chunk is None:
        conv = bool(stages.per_point) or stages.whole is not None
        chunk = 8192 if device.type == "cuda" else 64 if conv else 256
    one_point = 3 * elem * (stages.pp_act + stages.st_act)
    data = max(1, min(chunk, n_data, budget // max(one_point, 1)))
    held = max(data, min_data)  # inputs one pass over the chunk's points holds
    per_point = 2 * state_bytes + 3 * elem * held * stages.st_act
    spare = budget - 3 * elem * held * stages.pp_act
    points = max(1, min(n_points, spare // per_point))
    if first is not None and len(first):
        ratio = first.n_bases / len(first)  # bases per point
        units = 1 if first.uniform() else stages.first_units
        product = 2 * elem * held * stages.first_act

        def need(k: int) -> float:
            bases = min(first.n_bases, ratio * k + 2)
            return k * per_point + bases * product + 8 * k * bases * units

        lo, hi = 1, points
        while lo < hi:  # the most points whose chunk fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if need(mid) <= spare else (lo, mid - 1)
        points = lo
    return _Chunks(points, data)


@contextmanager
def _precision(device: torch.device, precision: str | None) -> Iterator[bool]:
    """TF32 on CUDA for "tf32" and "bf16" (None means "tf32" on CUDA); yields whether to autocast to bf16."""
    precision = precision or ("tf32" if device.type == "cuda" else "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        yield precision == "bf16"
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield precision == "bf16"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _cpu_channels_last(stages: _EngineStages, x: torch.Tensor) -> bool:
    return (bool(stages.per_point) or stages.whole is not None) and x.device.type == "cpu" and x.dtype == torch.float32


def _channels_last(stages: _EngineStages, x: torch.Tensor) -> torch.Tensor:
    """Image inputs of conv nets in channels_last on CPU (float32): oneDNN's fast convs and max-pools
    (measured 1.7x and 5x faster than NCHW on 2 cores)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and _cpu_channels_last(stages, x) else x


def _conv_weights_channels_last(stages: _EngineStages, stack: State) -> State:
    """Each point's conv weights channels_last too (a 1-channel input alone cannot say which layout it is in)."""
    convs = [f"{name}.{sub}" if name and sub else name or sub
             for name, m in [stages.first, *stages.per_point]
             for sub, c in m.named_modules() if isinstance(c, nn.Conv2d)]
    out = dict(stack)
    for name in convs:
        w = stack[f"{name}.weight"]  # (K, O, I, kh, kw)
        if _cpu_channels_last(stages, w):
            out[f"{name}.weight"] = w.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return out


# --------------------------------------------------------------------------------------------------
# BatchNorm recalibration and evaluation of one chunk of points


def _fresh_bn_stats(model: nn.Module, stack: State, K: int) -> State:
    """Reset running statistics of every BatchNorm for K points (as reset_running_stats)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            mean = stack[f"{name}.running_mean"]
            out[f"{name}.running_mean"] = torch.zeros_like(mean)
            out[f"{name}.running_var"] = torch.ones_like(mean)
            out[f"{name}.num_batches_tracked"] = torch.zeros(K, dtype=torch.long, device=mean.device)
    return out


@torch.no_grad()
def _recalibrate_chunk(model: nn.Module, stages: _EngineStages, stack: State, comb: Combination | None, x: torch.Tensor,
                       batch_size: int, bf16: bool) -> State:
    """The stack with every BatchNorm's statistics recomputed on x, for each point as ``recalibrate_bn``."""
    K = next(iter(stack.values())).shape[0]
    stack = {**stack, **_fresh_bn_stats(model, stack, K)}  # updated in place through per-point views
    with _bn_accumulating(model):
        for i in range(0, len(x), batch_size):
            xb = _channels_last(stages, x[i : i + batch_size])
            _forward(stages, stack, xb, comb, bf16)
    return stack


@torch.no_grad()
def _evaluate_chunk(stages: _EngineStages, stack: State, comb: Combination | None, x: torch.Tensor, y: torch.Tensor,
                    data_chunk: int, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) numbers of mistakes and (K,) float64 sums of cross-entropy on (x, y)."""
    K = next(iter(stack.values())).shape[0]
    wrong = torch.zeros(K, dtype=torch.long, device=x.device)
    loss = torch.zeros(K, dtype=torch.float64, device=x.device)
    for i in range(0, len(y), data_chunk):
        xb, yb = _channels_last(stages, x[i : i + data_chunk]), y[i : i + data_chunk]
        logits = _forward(stages, stack, xb, comb, bf16, fuse=True)  # (K, n, C)
        wrong += (logits.argmax(dim=2) != yb).sum(dim=1)
        # cross-entropy per input in the logits' dtype, summed in float64 (the plain reference casts the
        # logits to float64 first: float32 losses agree to ~1e-7 relative, float64 ones exactly)
        logp = logits.log_softmax(dim=2)
        loss -= logp.gather(2, yb.expand(K, -1)[..., None]).squeeze(2).double().sum(dim=1)
    return wrong, loss


def _chunk_combination(stages: _EngineStages, first: Combination | LazyCombination | None, k0: int, K: int,
                       dtype: torch.dtype,
                       device: torch.device) -> Combination | None:
    """The combination for points k0 ... k0 + K - 1, on the device, when it applies: it names the first
    layer, that layer is linear in its weights (not binary), and it needs fewer products than points."""
    if first is None or stages.whole is not None:
        return None
    name, m = stages.first
    if first.name != f"{name}.weight" or _binary(m):
        return None
    sel = first.select(k0, k0 + K)
    if len(sel.bases) >= K:
        return None
    coef = sel.coef
    if coef.dim() == 3 and coef.stride(2) == 0:  # the same for every unit: cast one column, not (K, m, H)
        coef = coef[:, :, :1].to(device, dtype).expand(coef.shape)
    else:
        coef = coef.to(device, dtype)
    return Combination(sel.name, [b.to(device, dtype) for b in sel.bases], coef)


def _prepare(model: nn.Module, splits: Splits) -> tuple[_EngineStages, torch.dtype, torch.device]:
    model.eval()
    x = next(iter(splits.values()))[0]
    return _engine_stages(model, tuple(x.shape[1:])), _dtype(model), _device(model)


def _state_bytes(state: State, elem: int) -> int:
    return sum(t.numel() for t in state.values()) * elem


@torch.no_grad()
def evaluate_states(
    model: nn.Module,
    states: Iterable[State],
    splits: Splits,
    progress: Progress | None = None,
    total: int | None = None,
    bn_data: torch.Tensor | None = None,
    *,
    first: Combination | LazyCombination | None = None,
    bn_batch: int = BN_BATCH,
    memory_mb: float | None = None,
    chunk: int | None = None,
    precision: str | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Error and loss of each state on each named split: ``{split: {"error": [...], "loss": [...]}}``.

    Same results as ``evaluate_states_loop`` (errors identical in exact arithmetic, losses to float
    tolerance), computed by the batched engine (module docstring). ``model`` (an nn.Sequential from
    nets.build) gives the architecture, dtype and device; its own weights are not used and not changed.
    ``states``: an iterable of state dicts, consumed chunk by chunk. ``bn_data``: when given (training
    inputs), BatchNorm statistics are recomputed on it at every state, in batches of ``bn_batch`` as
    ``recalibrate_bn``. ``first``: the first layer's weights as a ``Combination`` (one coefficient row
    per state). ``memory_mb``: budget for stacked weights and activations (default 1 GiB on CPU, half the
    free memory on CUDA); ``chunk``: inputs per data chunk; ``precision``: see the module docstring.
    ``progress(fraction, message)`` is called once per state, when its chunk is done; an exception it
    raises propagates.
    """
    out = {name: {"error": [], "loss": []} for name in splits}
    it = iter(states)
    head = next(it, None)
    if head is None:
        return out
    stages, dtype, device = _prepare(model, splits)
    elem = torch.finfo(dtype).bits // 8
    n_data = max(len(y) for _, y in splits.values())
    n_points = total or (len(first) if first is not None else 1 << 30)
    recompute = bn_data is not None and has_batchnorm(model)
    sizes = _chunks(stages, n_points, n_data, _state_bytes(head, elem), elem, device, memory_mb, chunk, first,
                    min_data=min(bn_batch, len(bn_data)) if recompute else 0)
    on_device = {name: (x.to(device, dtype), y.to(device)) for name, (x, y) in splits.items()}
    bn_x = bn_data.to(device, dtype) if recompute else None
    done = 0
    with _precision(device, precision) as bf16:
        for chunk_states in _batched(itertools.chain([head], it), sizes.points):
            K = len(chunk_states)
            stack = _conv_weights_channels_last(stages, stack_states(chunk_states, dtype, device))
            chunk_states.clear()  # the stack holds the points now
            comb = _chunk_combination(stages, first, done, K, dtype, device)
            if recompute:
                stack = _recalibrate_chunk(model, stages, stack, comb, bn_x, bn_batch, bf16)
            for name, (x, y) in on_device.items():
                wrong, loss = _evaluate_chunk(stages, stack, comb, x, y, sizes.data, bf16)
                n = max(len(y), 1)
                out[name]["error"] += [int(w) / n for w in wrong.tolist()]
                out[name]["loss"] += [float(s) / n for s in loss.tolist()]
            for k in range(done, done + K):
                if progress is not None and total:
                    progress((k + 1) / total, f"evaluated point {k + 1} of {total}")
            done += K
    return out


def _batched(it: Iterable[State], size: int) -> Iterator[list[State]]:
    it = iter(it)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


@torch.no_grad()
def recalibrate_states(model: nn.Module, states: list[State], x: torch.Tensor, batch_size: int = BN_BATCH, *,
                       first: Combination | None = None, memory_mb: float | None = None) -> list[State]:
    """Copies of ``states`` with every BatchNorm's statistics recomputed on inputs ``x`` (e.g. a fixed subset
    of the training set, see ``bn_inputs``), all points together; each equals ``recalibrate_bn`` on that state.
    States are returned in the model's dtype; without BatchNorm they are returned unchanged."""
    if not states or not has_batchnorm(model):
        return list(states)
    stages, dtype, device = _prepare(model, {"x": (x, x)})
    elem = torch.finfo(dtype).bits // 8
    sizes = _chunks(stages, len(states), min(batch_size, len(x)), _state_bytes(states[0], elem), elem, device,
                    memory_mb, batch_size, first)
    xs = x.to(device, dtype)
    out: list[State] = []
    for k0 in range(0, len(states), sizes.points):
        chunk = states[k0 : k0 + sizes.points]
        stack = _conv_weights_channels_last(stages, stack_states(chunk, dtype, device))
        comb = _chunk_combination(stages, first, k0, len(chunk), dtype, device)
        stack = _recalibrate_chunk(model, stages, stack, comb, xs, batch_size, False)
        out += [{name: t[k].clone() for name, t in stack.items()} for k in range(len(chunk))]
    return out


def bn_inputs(x_train: torch.Tensor, samples: int | None = None, seed: int = 0) -> torch.Tensor:
    """Inputs for BatchNorm recalibration: all of ``x_train``, or a fixed random subset of ``samples`` of them
    (the same subset for every point, so that points are comparable) [ours]."""
    if samples is None or samples >= len(x_train):
        return x_train
    if samples < 1:
        raise ValueError(f"BatchNorm recalibration needs at least one input, got {samples}")
    idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))[:samples]
    return x_train[idx.sort().values]
