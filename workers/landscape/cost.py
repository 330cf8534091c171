"""What one sample costs an architecture: forward FLOPs and activation memory, from its spec alone.

``profile(spec, input_shape, n_classes)`` builds the network on the ``meta`` device (shapes and dtypes,
nothing allocated) and runs it on meta inputs:
- ``flops``: forward FLOPs of one sample, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls
  and convolutions; a multiply-add is 2 FLOPs; elementwise layers, pooling and BatchNorm are not counted,
  they are memory-bound and small beside the products) [ours: the unit of every job's cost];
- ``forward_bytes``: the peak of live activation bytes of one sample's forward pass in eval mode without
  gradients (what evaluation holds per input), and ``forward_fixed``: the part that does not grow with the
  batch;
- ``train_bytes``: the peak of live bytes of one sample's training step (train mode, forward and backward:
  the activations kept for backward plus the gradients of activations), and ``train_fixed``: the part that
  does not grow with the batch (the parameters' gradients).
Live bytes are followed by a ``TorchDispatchMode`` that adds every tensor an operator makes and subtracts
it when the tensor dies (views keep their base alive). Each pass runs at two batch sizes; the per-sample
figure is the difference divided by the difference of the sizes, so a figure per sample is never
confused with one per network. All bytes are float32's (4 per entry); ``scaled`` gives another dtype's.

The worker's memory budget (``memory_budget``, ``available_bytes``) lives here too: every evaluation,
noise draw and training batch sizes its chunks from it and from these per-sample figures. The worker
sets it at start from its configuration (``set_memory_budget``); the default is a quarter of the machine.
"""
from __future__ import annotations

import json
import os
import weakref
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

ELEM = 4  # bytes per entry of the profiled (float32) activations
# [ours] working memory of one evaluated sample = EVAL_FACTOR x its forward peak: the CPU's conv kernels add
# copies (measured on a padded 1x1-conv graph: 1.3x in channels_last, the engine's layout, 2.9x in NCHW)
EVAL_FACTOR = 3


@dataclass(frozen=True)
class Profile:
    """Per-sample cost of an architecture on inputs of one shape (module docstring)."""

    flops: int  # forward FLOPs of one sample (multiply-add = 2)
    forward_bytes: int  # peak live activation bytes per sample, evaluation
    forward_fixed: int  # peak live bytes that do not grow with the batch, evaluation
    train_bytes: int  # peak live bytes per sample of a training step (kept for backward + activation gradients)
    train_fixed: int  # bytes of a training step that do not grow with the batch (parameter gradients)
    params: int  # parameters
    state_bytes: int  # bytes of the state dict (buffers included)
    batchnorm: bool = False  # whether it has BatchNorm (statistics recomputed at every evaluated point)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Live(TorchDispatchMode):
    """Counts the bytes of the tensors operators make while they are alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        ids = {id(a) for a in inputs}
        schema = func._schema
        view = any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or id(t) in ids:
                continue  # an in-place operator's result is its input
            if view or any(r.alias_info is not None for r in schema.returns):
                if inputs:  # a view: no new memory, and its base lives as long as it does
                    t.__dict__.setdefault("_toroid_base", inputs[0])
                continue
            nbytes = t.untyped_storage().nbytes() if t.device.type != "meta" else t.numel() * t.element_size()
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, nbytes)
        return out


def _forward_peak(model: torch.nn.Module, input_shape: tuple[int, ...], batch: int) -> int:
    """Peak live bytes of an evaluation forward pass (eval mode, no gradients) on ``batch`` meta inputs."""
    x = torch.zeros(batch, *input_shape, device="meta")
    model.eval()
    with _Live() as live, torch.no_grad():
        out = model(x)
        del out
    return live.peak


def measured_forward_bytes(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Peak activation bytes per input of ``model``'s evaluation forward pass, for a model at hand (where
    ``profile`` needs a spec): the largest input + output of one of its layers, measured by forward hooks on one
    zero input in the model's dtype and device (residual inputs held across a block are left to EVAL_FACTOR)."""
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    sizes = [1]

    def nbytes(t: Any) -> int:
        return sum(x.numel() * x.element_size() for x in tree_flatten(t)[0] if isinstance(x, torch.Tensor))

    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(nbytes(i) + nbytes(o)))
             for m in model.modules() if not list(m.children())]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return max(sizes)


def _kept_for_backward(model: torch.nn.Module, input_shape: tuple[int, ...], batch: int) -> int:
    """Bytes of the activations autograd keeps for backward in a train-mode forward of ``batch`` meta inputs
    (each tensor once, views counted with their base; the parameters themselves not)."""
    x = torch.zeros(batch, *input_shape, device="meta")
    params = {id(p) for p in model.parameters()}
    kept: dict[int, int] = {}
    held: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in params and id(base) not in kept:
            kept[id(base)] = base.numel() * base.element_size()
            held.append(base)  # alive until the end, so that no id is reused
        return t

    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
    finally:
        model.eval()
    del out
    return sum(kept.values())


def _per_sample(measure, model: torch.nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(bytes per sample, bytes that do not grow with the batch) of ``measure``, from batches of 2 and 4
    (BatchNorm in train mode needs more than one sample)."""
    p2, p4 = measure(model, input_shape, 2), measure(model, input_shape, 4)
    per = max((p4 - p2 + 1) // 2, 0)
    return per, max(p2 - 2 * per, 0)


@lru_cache(maxsize=256)
def _profile(key: str, input_shape: tuple[int, ...], n_classes: int) -> Profile:
    from . import nets

    spec = json.loads(key)
    model = nets.meta_model(spec, input_shape, n_classes)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_shape, device="meta"))
    fwd, fwd_fixed = _per_sample(_forward_peak, model, input_shape)
    kept, _ = _per_sample(_kept_for_backward, model, input_shape)
    trn = kept + fwd  # backward also holds about one forward peak of activation gradients [ours]
    trn_fixed = fwd_fixed + nets.n_parameters(model) * ELEM  # the parameters' gradients
    state = model.state_dict()
    bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return Profile(int(counter.get_total_flops()), fwd, fwd_fixed, trn, trn_fixed, nets.n_parameters(model),
                   sum(t.numel() * t.element_size() for t in state.values()), bn)


def profile(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> Profile:
    """The ``Profile`` of ``spec`` (normalised here; cached by the normalised spec, shape and classes).
    Raises nets.SpecError for a spec that does not build."""
    from . import nets

    normal = nets.normalize_spec(spec)
    return _profile(json.dumps(normal, sort_keys=True), tuple(int(d) for d in input_shape), int(n_classes))


def eval_bytes(p: Profile, dtype: torch.dtype = torch.float32) -> int:
    """Working memory of one sample in evaluation (EVAL_FACTOR x the forward peak), for ``dtype``."""
    return scaled(EVAL_FACTOR * max(p.forward_bytes, 1), dtype)


def scaled(nbytes: int, dtype: torch.dtype) -> int:
    """Bytes of a float32 figure for tensors of ``dtype``."""
    return nbytes * (torch.finfo(dtype).bits // 8) // ELEM


# ---- the worker's memory budget -----------------------------------------------------------------------

def machine_memory() -> int:
    """Physical memory of this machine in bytes (os.sysconf), 8 GiB where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


DEFAULT_FRACTION = 0.25  # [ours] of the machine per worker process
_budget: int | None = None


def default_budget() -> int:
    return int(DEFAULT_FRACTION * machine_memory())


def set_memory_budget(nbytes: int | None) -> None:
    """The memory one worker process may use in all, its own baseline included (None: the default)."""
    global _budget
    _budget = int(nbytes) if nbytes else None


def memory_budget() -> int:
    return _budget if _budget is not None else default_budget()


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


MIN_WORKING = 16 * 2**20  # [ours] the least a computation is given, even over budget (one sample must run)


def available_bytes() -> int:
    """What a computation may still allocate: the budget less what the process holds now."""
    return max(memory_budget() - resident_bytes(), MIN_WORKING)
