"""Flatness: the local energy of a network (docs/science.md section 4).

Real-valued networks, multiplicative Gaussian noise on every weight:
    delta_E(sigma) = E_z[ E_train(w + sigma z * w) ] - E_train(w),   z ~ N(0, I)
(E_train: the 0-1 training error). Multiplying each weight by (1 + sigma z) makes delta_E invariant to
the positive per-unit rescalings of section 2. Binary networks: a random fraction eps of the +-1 weights
of every layer flipped (eps in the result's "sigma" list, "kind": "flip").

Choices the paper leaves open [ours]:
- Which parameters get noise: params="weights" (default) perturbs the weight tensor of every layer with
  weights (dense and conv, output layer included); params="all" also biases and BatchNorm's gamma and
  beta (never the running statistics).
- Common random numbers: draw d uses the same z (binary: the same random order of the weights, the first
  round(eps n_l) of layer l flipped) for every sigma, so the curve of each draw is smooth in sigma and
  the differences between sigmas are measured with less noise than independent draws would give.
- Draws: the paper averages 100 per sigma; the default here is 20 (binary: 10), which keeps a CPU job to
  minutes; "delta_sem" (std / sqrt(draws)) says how precise the mean is. sigma = 0 needs no draw
  (delta 0 exactly).
- Default sigma grids, 11 values from 0: MLP up to 0.5, LeNet up to 0.25, VGG up to 0.08 (the paper's
  ranges; ResNets and torchvision's VGG-BN as VGG, layer graphs as the MLP); binary eps 0 ... 0.06.
- BatchNorm networks: bn="recompute" (default) recomputes the running statistics on the training inputs
  for every draw (and for the unperturbed network): noise on the weights before a BatchNorm shifts the
  statistics of its inputs, and stale statistics would measure that mismatch rather than the landscape
  (the same reason as along paths). bn="keep" uses the network's stored statistics for every draw.
  ``bn_samples`` recomputes them on a fixed random subset of the training set instead (faster).
All draws are evaluated together by the batched engine (evaluate.evaluate_states); thanks to the common
random numbers the first layer of draw d is w + sigma (w * z_d) for every sigma, so its pre-activations
for all sigmas come from two products with the data (``first_layer_combination``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch

from . import nets, symmetry
from .groups import first_weight, prepare, weight_names
from .params import MAX_SEED
from .evaluate import Combination, LazyCombination, bn_inputs, default_device, evaluate_states, has_batchnorm

State = dict[str, torch.Tensor]
Progress = Callable[[float, str], None]

SIGMA_GRIDS = {  # largest sigma per architecture kind (the paper's figures); 11 values from 0
    "mlp": 0.5,
    "lenet": 0.25,
    "vgg": 0.08,
    # deep BatchNorm convnets (issue 15) [ours]: the VGG range
    "resnet": 0.08, "resnet18": 0.08, "resnet34": 0.08, "resnet50": 0.08, "wide_resnet50_2": 0.08,
    "vgg11_bn": 0.08, "vgg13_bn": 0.08, "vgg16_bn": 0.08, "vgg19_bn": 0.08,
}
FLIP_FRACTIONS = [0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06]
DEFAULT_DRAWS = {"multiplicative": 20, "flip": 10}
PARAMS = ("weights", "all")
BN_MODES = ("recompute", "keep")
MAX_DRAWS = 10_000
MAX_LEVELS = 100  # noise levels of one job
MAX_SIGMA = {"multiplicative": 10.0, "flip": 1.0}  # largest sigma; largest flipped fraction


class FlatnessError(ValueError):
    """Flatness parameters that cannot be used; the message says why."""


def default_sigmas(spec: dict[str, Any]) -> list[float]:
    """The default noise grid of ``spec``'s architecture: sigmas (real) or flip fractions (binary)."""
    spec = prepare(spec)
    if spec.binary:
        return list(FLIP_FRACTIONS)
    top = SIGMA_GRIDS.get(spec["kind"], 0.5)
    return [round(top * i / 10, 10) for i in range(11)]


def noised_names(spec: dict[str, Any], model: torch.nn.Module, params: str) -> list[str]:
    """state_dict names that get noise: every layer's weight tensor, or (params="all") every parameter."""
    if params == "all" and not nets.is_binary(spec):
        return [name for name, _ in model.named_parameters()]
    return weight_names(spec)


def _stream(seed: int, i: int) -> torch.Generator:
    """The noise of the i-th noised tensor: its own stream, so that one tensor's draws can be made alone."""
    return torch.Generator().manual_seed(seed * 100_003 + i)


def multiplicative_states(state: State, names: list[str], sigmas: list[float], draws: int,
                          seed: int = 0) -> Iterator[State]:
    """w * (1 + sigma z) on ``names`` for each draw (z ~ N(0, 1) per weight, one z per draw shared by all
    sigmas), draw after draw: draws * len(sigmas) states."""
    gens = [_stream(seed, i) for i in range(len(names))]
    for _ in range(draws):
        z = {n: torch.randn(state[n].shape, generator=g, dtype=torch.float64) for n, g in zip(names, gens)}
        for sigma in sigmas:
            yield {**state, **{n: (state[n].double() * (1 + sigma * z[n])).to(state[n].dtype) for n in names}}


class NoiseCombination(LazyCombination):
    """The first layer ``name`` of [state, *multiplicative_states(...)] as a combination: bases w and w * z_d (the
    same z_d as ``multiplicative_states``), coefficients 1 and sigma. The engine then gets the first layer of
    every point of a draw from two products with the data instead of one per sigma. Made chunk by chunk: a
    chunk's bases (its draws' w * z_d, drawn again from the tensor's own stream) and coefficients (points x
    bases of the chunk, uniform over units); nothing of size draws x draws, nor draws x weights, is ever held."""

    def __init__(self, w: torch.Tensor, name: str, stream: int, seed: int, sigmas: list[float], draws: int):
        self.name, self.w, self.sigmas, self.draws = name, w, list(sigmas), draws
        self._seed, self._stream = seed, stream
        self._gen, self._next = _stream(seed, stream), 0  # the draw the generator gives next

    def __len__(self) -> int:
        return 1 + self.draws * len(self.sigmas)

    @property
    def n_bases(self) -> int:
        return 1 + self.draws

    def _noise(self, d0: int, d1: int) -> list[torch.Tensor]:
        """w * z_d for draws d0 ... d1 - 1 (the stream restarts when asked for an earlier draw)."""
        if d0 < self._next:
            self._gen, self._next = _stream(self._seed, self._stream), 0
        while self._next < d0:
            torch.randn(self.w.shape, generator=self._gen, dtype=torch.float64)
            self._next += 1
        out = [self.w * torch.randn(self.w.shape, generator=self._gen, dtype=torch.float64) for _ in range(d0, d1)]
        self._next = d1
        return out

    def select(self, k0: int, k1: int) -> Combination:
        S, k1 = len(self.sigmas), min(k1, len(self))
        draws = [(k - 1) // S for k in range(max(k0, 1), k1)]
        d0, d1 = (draws[0], draws[-1] + 1) if draws else (0, 0)
        base = k0 == 0
        bases = ([self.w] if base or draws else []) + self._noise(d0, d1)
        coef = torch.zeros(k1 - k0, len(bases), dtype=torch.float64)
        sig = torch.tensor(self.sigmas, dtype=torch.float64)
        coef[:, 0] = 1.0
        for row, k in enumerate(range(k0, k1)):
            if k > 0:
                coef[row, 1 + (k - 1) // S - d0] = sig[(k - 1) % S]
        return Combination(self.name, bases, coef[:, :, None].expand(-1, -1, self.w.shape[0]))


def first_layer_combination(state: State, names: list[str], name: str, sigmas: list[float], draws: int,
                            seed: int = 0) -> NoiseCombination:
    """The first layer ``name`` of [state, *multiplicative_states(...)] as a ``NoiseCombination``."""
    return NoiseCombination(state[name].double(), name, names.index(name), seed, sigmas, draws)


def flipped_states(state: State, names: list[str], fractions: list[float], draws: int,
                   seed: int = 0) -> Iterator[State]:
    """A binarised ``state`` with round(eps * n_l) of the n_l weights of each tensor in ``names`` flipped, for
    each fraction eps; per draw one random order per tensor, its first weights flipped (nested sets)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        orders = {name: torch.randperm(state[name].numel(), generator=gen) for name in names}
        for eps in fractions:
            point = dict(state)
            for name in names:
                w = state[name].reshape(-1).clone()
                flip = orders[name][: round(eps * w.numel())]
                w[flip] = -w[flip]
                point[name] = w.reshape(state[name].shape)
            yield point


def _check(values: Any, what: str, hi: float) -> list[float]:
    if not isinstance(values, (list, tuple)) or not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= hi for v in values
    ):
        raise FlatnessError(f"'{what}' must be a non-empty list of numbers between 0 and {hi}, got {values!r}")
    if len(values) > MAX_LEVELS:
        raise FlatnessError(f"'{what}' holds {len(values)} values; at most {MAX_LEVELS}")
    return [float(v) for v in values]


def flatness_result(
    spec: dict[str, Any],
    data: Any,
    state: State,
    sigmas: list[float] | None = None,
    draws: int | None = None,
    seed: int = 0,
    params: str = "weights",
    progress: Progress | None = None,
    *,
    bn: str = "recompute",
    bn_samples: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
    memory_mb: float | None = None,
) -> dict[str, Any]:
    """Local energy of one network on ``data``'s training set (module docstring), JSON-ready:
    {"sigma": [...], "delta_mean", "delta_std" (over draws), "delta_sem" (std / sqrt(draws)) (lists, one
    value per sigma), "base_train_error", "draws", "kind": "multiplicative" | "flip" (binary networks:
    "sigma" holds the flipped fractions eps), "params", "bn" (None without BatchNorm), "seed"}.
    Raises ``FlatnessError`` for bad parameters, nets.SpecError / nets.WeightsError for a bad spec or weights.
    """
    spec = prepare(spec)
    binary = spec.binary
    kind = nets.variant(binary, "noise")
    sigmas = default_sigmas(spec) if sigmas is None else _check(sigmas, "sigmas", MAX_SIGMA[kind])
    draws = DEFAULT_DRAWS[kind] if draws is None else draws
    if not isinstance(draws, int) or isinstance(draws, bool) or not 1 <= draws <= MAX_DRAWS:
        raise FlatnessError(f"'draws' must be an integer between 1 and {MAX_DRAWS}, got {draws!r}")
    if params not in PARAMS:
        raise FlatnessError(f"unknown 'params' {params!r}; known: {', '.join(PARAMS)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise FlatnessError(f"'seed' must be an integer in [0, {MAX_SEED}], got {seed!r}")
    if bn not in BN_MODES:
        raise FlatnessError(f"unknown BatchNorm mode {bn!r}; known: {', '.join(BN_MODES)}")
    device = torch.device(device) if device is not None else default_device()
    model = nets.build(spec, data.input_shape, data.n_classes).to(dtype)
    nets.check_state_dict(model, state)
    model = model.to(device)
    names = noised_names(spec, model, params)
    base = symmetry.binarized(spec, state) if binary else {k: v.detach() for k, v in state.items()}
    noisy = [s for s in sigmas if s > 0]
    perturbed = (flipped_states(base, names, noisy, draws, seed) if binary
                 else multiplicative_states(base, names, noisy, draws, seed))
    with_bn = has_batchnorm(model)
    bn_data = bn_inputs(data.x_train, bn_samples).to(device) if with_bn and bn == "recompute" else None
    total = 1 + draws * len(noisy)

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message.replace("point", "noise draw"))

    def states() -> Iterator[State]:
        yield base
        yield from perturbed

    splits = {"train": (data.x_train.to(device), data.y_train.to(device))}
    first = None if binary else first_layer_combination(base, names, first_weight(spec), noisy, draws, seed)
    errors = evaluate_states(model, states(), splits, progress=report, total=total, bn_data=bn_data,
                             memory_mb=memory_mb, first=first)["train"]["error"]
    base_error = errors[0]
    delta = torch.tensor(errors[1:], dtype=torch.float64).view(draws, len(noisy)) - base_error  # (draws, sigmas>0)
    mean, std = delta.mean(dim=0), (delta.std(dim=0) if draws > 1 else torch.zeros(len(noisy), dtype=torch.float64))
    out: dict[str, list[float]] = {"delta_mean": [], "delta_std": [], "delta_sem": []}
    j = 0
    for s in sigmas:
        if s > 0:
            m, sd = float(mean[j]), float(std[j])
            j += 1
        else:
            m, sd = 0.0, 0.0
        out["delta_mean"].append(m)
        out["delta_std"].append(sd)
        out["delta_sem"].append(sd / math.sqrt(draws))
    return {"sigma": sigmas, **out, "base_train_error": base_error, "draws": draws, "kind": kind,
            "params": "weights" if binary else params, "bn": bn if with_bn else None, "seed": seed}
