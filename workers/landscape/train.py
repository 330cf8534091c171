"""Samplers of minimizers (docs/science.md section 5): SGD, RSGD, ADV, Adam, SAM, Entropy-SGD.

``train(model, data, optimizer, **params)`` trains ``model`` in place and returns its training curve,
one dict per epoch: epoch, train_error, train_loss, test_error, test_loss, lr, phase ("train", or
"pretrain" for ADV's first phase) and sampler-specific entries (RSGD: replica_distance and gamma;
Entropy-SGD: gamma; ADV's pre-training: adversarial_error, the error on the pre-training set).
``OPTIMIZERS`` lists the samplers and their parameters; ``normalize_params`` fills in the defaults.

Seeds: ``seed`` seeds the minibatch order and every random draw of the sampler; ``init_seed`` the
initial weights (``initial_model`` builds them). Left unset, the initial weights are seeded from
``seed`` *and the sampler's name* [ours], so that two samplers given the same ``seed`` never start
from the same point (networks of different samplers that share an initialisation sit ~10x closer than
independent ones, which would skew every comparison of samplers); give ``init_seed`` to share one on
purpose.

Common to all samplers: cross-entropy, minibatches of a fresh random order each epoch (seeded), the
learning rate cosine-annealed per epoch down to 0 at ``epochs``, no weight decay, and an early stop
after the first epoch whose training error is at most ``target_error`` (the paper trains until it is
below 1%). Binary networks (modules with ``is_binary = True``) are trained the BinaryNet way: the
optimizer moves their real latent weights, which are clamped to [-1, 1] after every update.
Parameters with ``requires_grad=False`` are never touched. The progress callback is called at the
start, after every epoch and about every second in between; an exception it raises stops training at
once, the model gets its initial weights back and the exception propagates.
"""
from __future__ import annotations

import copy
import math
import time
import zlib
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from . import nets
from .data import Dataset, validate_params
from .evaluate import error_and_loss, recalibrate_bn

Progress = Callable[[float, str], None]


class TrainError(ValueError):
    """An unknown optimizer or bad training parameters; the message says what is wrong."""


def _p(kind: str, default: Any, help: str, **limits: Any) -> dict[str, Any]:
    return {"type": kind, "default": default, "help": help, **limits}


_COMMON = {
    "epochs": _p("int", 20, "number of passes over the training set (the paper: up to 300)", min=1, max=100_000),
    "batch_size": _p("int", 128, "minibatch size", min=1, max=1_000_000),
    "seed": _p("int", 0, "seed of the minibatch order and of every random draw of the sampler; also of the initial "
                         "weights, together with the sampler's name, unless init_seed is given", min=0),
    "init_seed": _p("int", None, "seed of the initial weights; unset: derived from seed and the sampler, so that "
                                 "different samplers never share an initialisation (give the same init_seed to "
                                 "share one on purpose)", nullable=True, min=0),
    "target_error": _p("float", None, "stop after the first epoch with training error at most this; the paper's "
                                      "rule is 0.01 (train until below 1%), which every sampler reaches given enough "
                                      "epochs", nullable=True, min=0.0, max=1.0),
}


def _sgd_params(lr: float, momentum: float) -> dict[str, Any]:
    return {**_COMMON,
            "lr": _p("float", lr, "initial learning rate (cosine-annealed to 0)", min=0.0, max=100.0),
            "momentum": _p("float", momentum, "Nesterov momentum (0: none)", min=0.0, max=0.999)}


OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {
        "description": "SGD with Nesterov momentum and a cosine-annealed learning rate (the paper's SGD).",
        "params": _sgd_params(0.02, 0.9),
    },
    "rsgd": {
        "description": "Replicated SGD (Pittorino et al. 2021): y replicas, each from its own initialisation and with "
                       "its own minibatches, pulled towards their centre (their mean) by gamma ||w_a - centre||^2 with "
                       "a coupling gamma that grows geometrically; the result is the centre. The history records "
                       "gamma and the mean replica-to-centre distance per epoch.",
        "params": {
            **_sgd_params(0.05, 0.9),
            "replicas": _p("int", 5, "number y of replicas", min=2, max=64),
            "gamma0": _p("float", 1e-3, "initial coupling (the group's robust-ensemble code: 1e-3)", min=0.0, max=1e6),
            "gamma1": _p("float", 0.1, "growth of the coupling: gamma = gamma0 (1 + gamma1)^(t S), t in epochs, S = "
                                       "coupling_epochs / epochs (the group's code: 0.1 per epoch)", min=0.0, max=100.0),
            "coupling_epochs": _p("int", 200, "the coupling's schedule is scaled to the run: it grows over the run's "
                                  "epochs as much as gamma1 per epoch over this many (so the replicas merge by the end "
                                  "at any epoch budget; 200: the schedule of a 200-epoch run, unchanged there); null: "
                                  "gamma1 per epoch whatever the run's length", nullable=True, min=1, max=100_000),
            "replica_init": _p("str", "independent", "'independent': every replica starts from its own random "
                               "initialisation (the group's code); 'shared': all start from the same weights",
                               choices=["independent", "shared"]),
        },
    },
    "adv": {
        "description": "Adversarial initialisation (Liu et al. 2020): pre-train on the training set plus copies with "
                       "random labels and a fraction of pixels zeroed until that set is fitted (training error at "
                       "most pretrain_target, at most pretrain_epochs epochs), then plain SGD on the clean set. The "
                       "history records the pre-training error; a pre-training stopped by the cap says so.",
        "params": {
            **_sgd_params(0.02, 0.0),
            "pretrain_epochs": _p("int", 500, "most epochs of pre-training on the adversarial set (a cap: it stops as "
                                              "soon as its training error is at most pretrain_target)", min=0,
                                  max=100_000),
            "pretrain_target": _p("float", 0.05, "pre-training stops after the first epoch whose error on the "
                                                 "adversarial set (clean + random-label copies) is at most this",
                                  min=0.0, max=1.0),
            "pretrain_lr": _p("float", 0.02, "learning rate of the pre-training (cosine-annealed)", min=0.0, max=100.0),
            "pretrain_momentum": _p("float", 0.9, "Nesterov momentum of the pre-training", min=0.0, max=0.999),
            "copies": _p("int", 1, "number of randomly labelled copies of the training set", min=1, max=100),
            "zero_fraction": _p("float", 0.1, "fraction of pixels zeroed in each copy", min=0.0, max=1.0),
        },
    },
    "adam": {
        "description": "Adam with a cosine-annealed learning rate.",
        "params": {
            **_COMMON,
            "lr": _p("float", 0.001, "initial learning rate (cosine-annealed to 0)", min=0.0, max=100.0),
            "momentum": _p("float", 0.9, "Adam's beta1", min=0.0, max=0.999),
            "beta2": _p("float", 0.999, "Adam's beta2", min=0.0, max=0.999999),
        },
    },
    "sam": {
        "description": "Sharpness-aware minimisation (Foret et al. 2021) on top of the paper's SGD: each step uses "
                       "the gradient at the worst point of radius rho around the weights.",
        "params": {**_sgd_params(0.02, 0.9),
                   "rho": _p("float", 0.05, "radius of the perturbation (Foret et al.: 0.05)", min=0.0, max=100.0)},
    },
    "entropy_sgd": {
        "description": "Entropy-SGD (Chaudhari et al. 2017): an inner Langevin loop of L minibatches explores around "
                       "the weights; the weights then move towards the loop's running average.",
        "params": {
            **_sgd_params(1.0, 0.9),
            "L": _p("int", None, "Langevin steps (minibatches) per weight update; null: 20 (Chaudhari et al.), at most "
                                 "half the minibatches of an epoch, so that a small data set gets at least two weight "
                                 "updates per epoch (digits, batch 128: 5)", nullable=True, min=1, max=1000),
            "inner_lr": _p("float", 0.1, "step size of the Langevin loop", min=0.0, max=100.0),
            "gamma0": _p("float", 0.03, "initial coupling of the Langevin loop to the weights (Chaudhari et al.: 0.03)",
                         min=0.0, max=1e6),
            "gamma1": _p("float", 1e-3, "growth of the coupling per weight update (scoping): gamma = gamma0 (1 + "
                                        "gamma1)^t, t = weight updates so far (Chaudhari et al.: 1.001 per update)",
                         min=0.0, max=100.0),
            "noise": _p("float", 1e-4, "scale of the Langevin noise", min=0.0, max=100.0),
            "alpha": _p("float", 0.75, "weight of the old value in the running average", min=0.0, max=0.999),
        },
    },
}


def normalize_params(optimizer: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a sampler's parameters and return them with every default filled in."""
    if optimizer not in OPTIMIZERS:
        raise TrainError(f"unknown optimizer {optimizer!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    return validate_params(OPTIMIZERS[optimizer]["params"], params, f"optimizer {optimizer!r}", TrainError)


def initial_seed(optimizer: str, params: dict[str, Any] | None = None) -> int:
    """The seed of the initial weights: ``init_seed`` when given, else one derived from ``seed`` and the
    sampler's name (stable across processes and machines: a CRC32, not Python's salted hash)."""
    p = normalize_params(optimizer, params)
    if p["init_seed"] is not None:
        return int(p["init_seed"])
    return zlib.crc32(f"{optimizer}:{p['seed']}".encode()) & 0x7FFFFFFF


def initial_model(spec: dict[str, Any], data: Dataset, optimizer: str, params: dict[str, Any] | None = None,
                  ) -> nn.Module:
    """``spec``'s network for ``data``, initialised from ``initial_seed(optimizer, params)`` (the global
    random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(initial_seed(optimizer, params))
        return nets.build(spec, data.input_shape, data.n_classes)


def train(model: nn.Module, data: Dataset, optimizer: str = "sgd", *, progress: Progress | None = None,
          **params: Any) -> list[dict[str, Any]]:
    """Train ``model`` in place with sampler ``optimizer``; return the training curve (one dict per epoch)."""
    p = normalize_params(optimizer, params)
    if not any(q.requires_grad for q in model.parameters()):
        raise TrainError("the model has no trainable parameters")
    initial = copy.deepcopy(model.state_dict())
    total = p["epochs"] + (p["pretrain_epochs"] if optimizer == "adv" else 0)
    report = _Reporter(progress, total)
    try:
        report(0.0, f"starting {optimizer}")
        return _SAMPLERS[optimizer](model, data, p, report)
    except BaseException:
        model.load_state_dict(initial)  # nothing half-done stays behind
        raise


# ----------------------------------------------------------------------------------------------
# Shared machinery

class _Reporter:
    """Progress over ``total`` epochs: always at epoch ends, at most every ``every`` seconds in between."""

    def __init__(self, progress: Progress | None, total: int, every: float = 1.0):
        self.progress, self.total, self.every = progress, max(total, 1), every
        self.done, self.last = 0, time.monotonic()

    def __call__(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0), message)
        self.last = time.monotonic()

    def tick(self, within_epoch: float, label: str) -> None:
        if self.progress is not None and time.monotonic() - self.last >= self.every:
            self((self.done + within_epoch) / self.total, f"{label}: {100 * within_epoch:.0f}% of the epoch")

    def epoch(self, message: str) -> None:
        self.done += 1
        self(self.done / self.total, message)


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    return [q for q in model.parameters() if q.requires_grad]


def _binary_weights(model: nn.Module) -> list[torch.Tensor]:
    """Latent weights of binary layers (``is_binary = True``), which BinaryNet keeps in [-1, 1]."""
    return [m.weight for m in model.modules()
            if getattr(m, "is_binary", False) and isinstance(getattr(m, "weight", None), torch.Tensor)
            and m.weight.requires_grad]


@torch.no_grad()
def _clamp(weights: list[torch.Tensor]) -> None:
    for w in weights:
        w.clamp_(-1.0, 1.0)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs on the model's device in its dtype (float64 models train too), labels on its device."""
    q = next(model.parameters())
    return x.to(device=q.device, dtype=q.dtype), y.to(q.device)


def _batches(n: int, batch_size: int, gen: torch.Generator, streams: int = 1) -> Iterator[list[torch.Tensor]]:
    """One epoch of minibatches: ``streams`` independent random orders, read in step."""
    orders = [torch.randperm(n, generator=gen) for _ in range(streams)]
    for i in range(0, n, batch_size):
        yield [order[i : i + batch_size] for order in orders]


def _geometric(gamma0: float, gamma1: float, t: float) -> float:
    """gamma0 (1 + gamma1)^t, saturating at about 1e300 instead of overflowing."""
    return gamma0 * math.exp(min(t * math.log1p(gamma1), 690.0))


def _sgd_optimizer(params: list[torch.Tensor], lr: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0)


def _fit(model: nn.Module, data: Dataset, p: dict[str, Any], report: _Reporter, opt: torch.optim.Optimizer,
         step: Callable[[list[torch.Tensor]], None], *, n: int, epochs: int, streams: int = 1,
         phase: str = "train", after_epoch: Callable[[], dict[str, Any]] | None = None,
         stop: Callable[[dict[str, Any]], bool] | None = None, seed_offset: int = 0,
         train_modules: list[nn.Module] | None = None) -> list[dict[str, Any]]:
    """The epoch loop of every sampler: ``step(batch_indices)`` makes one update (one index tensor per
    stream); after each epoch ``after_epoch`` runs (and adds entries), the learning rate is annealed and
    ``model`` is evaluated. ``stop(entry)`` ends the loop after an epoch (default: training error at most
    ``target_error``). ``train_modules`` (default: the model) are put in train mode each epoch."""
    if stop is None:
        stop = lambda h: p["target_error"] is not None and h["train_error"] <= p["target_error"]  # noqa: E731
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    gen = torch.Generator().manual_seed(p["seed"] + seed_offset)
    device = _device(model)
    x_train, y_train = _on_model(model, data.x_train, data.y_train)
    x_test, y_test = _on_model(model, data.x_test, data.y_test)
    n_steps = math.ceil(n / p["batch_size"])
    label = "pre-training" if phase == "pretrain" else "training"
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        lr = opt.param_groups[0]["lr"]
        for m in train_modules or [model]:
            m.train()
        for k, idx in enumerate(_batches(n, p["batch_size"], gen, streams)):
            step([i.to(device) for i in idx])
            report.tick((k + 1) / n_steps, f"{label} epoch {epoch + 1}/{epochs}")
        extra = after_epoch() if after_epoch else {}
        sched.step()
        train_err, train_loss = error_and_loss(model, x_train, y_train)
        test_err, test_loss = error_and_loss(model, x_test, y_test)
        history.append({"epoch": epoch + 1, "phase": phase, "train_error": train_err, "train_loss": train_loss,
                        "test_error": test_err, "test_loss": test_loss, "lr": lr, **extra})
        coupling = (f", replicas {extra['replica_distance']:.3g} from their centre (gamma {extra['gamma']:.3g})"
                    if "replica_distance" in extra else "")
        report.epoch(f"{label} epoch {epoch + 1}/{epochs}: train error {100 * train_err:.2f}%, "
                     f"test error {100 * test_err:.2f}%, train loss {train_loss:.3g}, test loss {test_loss:.3g}{coupling}")
        if stop(history[-1]):
            break
    return history


def _gradient_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   binary: list[torch.Tensor]) -> Callable[[list[torch.Tensor]], None]:
    def step(idx: list[torch.Tensor]) -> None:
        loss = F.cross_entropy(model(x[idx[0]]), y[idx[0]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _clamp(binary)
    return step


# ----------------------------------------------------------------------------------------------
# Samplers

def _train_sgd(model, data, p, report):
    opt = _sgd_optimizer(_trainable(model), p["lr"], p["momentum"])
    x, y = _on_model(model, data.x_train, data.y_train)
    step = _gradient_step(model, opt, x, y, _binary_weights(model))
    return _fit(model, data, p, report, opt, step, n=len(y), epochs=p["epochs"])


def _train_adam(model, data, p, report):
    opt = torch.optim.Adam(_trainable(model), lr=p["lr"], betas=(p["momentum"], p["beta2"]))
    x, y = _on_model(model, data.x_train, data.y_train)
    step = _gradient_step(model, opt, x, y, _binary_weights(model))
    return _fit(model, data, p, report, opt, step, n=len(y), epochs=p["epochs"])


def _train_sam(model, data, p, report):
    """SAM: gradient g at w; e = rho g / ||g|| (one norm over all trainable parameters); the update uses
    the gradient at w + e (Foret et al. 2021, with the paper's SGD as base optimizer)."""
    params = _trainable(model)
    opt = _sgd_optimizer(params, p["lr"], p["momentum"])
    binary = _binary_weights(model)
    x, y = _on_model(model, data.x_train, data.y_train)

    def step(idx):
        xb, yb = x[idx[0]], y[idx[0]]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        with torch.no_grad():
            grads = [q.grad if q.grad is not None else torch.zeros_like(q) for q in params]
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
            shifts = [p["rho"] * g / (norm + 1e-12) for g in grads]
            for q, e in zip(params, shifts):
                q.add_(e)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        with torch.no_grad():
            for q, e in zip(params, shifts):
                q.sub_(e)
        opt.step()
        _clamp(binary)

    return _fit(model, data, p, report, opt, step, n=len(y), epochs=p["epochs"])


def adversarial_set(data: Dataset, *, copies: int = 1, zero_fraction: float = 0.1,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """ADV's pre-training set: the clean training set followed by ``copies`` copies with labels drawn
    uniformly at random and ``zero_fraction`` of the pixels of every image set to 0.

    [ours] Inputs are already standardised, so 0 is the mean pixel value; a "pixel" is one spatial
    position of an image (all its channels are zeroed together) or one input of a flat input vector;
    exactly round(zero_fraction * pixels) pixels per image, at random positions.
    Returns (x, y) of sizes (1 + copies) * n_train.
    """
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    n = len(y)
    image = x.dim() == 4  # (n, C, H, W)
    n_pixels = x[0, 0].numel() if image else x[0].numel()
    k = round(zero_fraction * n_pixels)
    xs, ys = [x], [y]
    for _ in range(copies):
        keep = torch.ones(n, n_pixels, dtype=x.dtype)
        if k > 0:
            where = torch.rand(n, n_pixels, generator=gen).topk(k, dim=1).indices
            keep.scatter_(1, where, 0.0)
        keep = keep.view(n, 1, *x.shape[2:]) if image else keep.view(n, *x.shape[1:])
        xs.append(x * keep.to(x.device))
        ys.append(torch.randint(data.n_classes, (n,), generator=gen).to(y.device))
    return torch.cat(xs), torch.cat(ys)


def _train_adv(model, data, p, report):
    """ADV: pre-training on ``adversarial_set`` (SGD, pretrain_lr, Nesterov pretrain_momentum, cosine over
    ``pretrain_epochs``) until it is fitted, then SGD with ``lr`` and ``momentum`` on the clean set.

    Liu et al. train the pre-training set to ~100% accuracy; a pre-training left at 46% error gives minima
    flatter than SGD's, the opposite of the paper. So the pre-training stops after the first epoch whose
    error on the adversarial set is at most ``pretrain_target`` (5% [ours]), ``pretrain_epochs`` being a cap;
    every pre-training epoch records ``adversarial_error`` and the last one ``pretrain_fitted`` (False when
    the cap was hit, with a plain ``note``; ``pretraining(history)`` summarises it).
    [ours] momentum defaults to 0 in the clean phase, the vanilla SGD with which Liu et al. reach bad
    minima; pre-training uses momentum to fit faster."""
    binary = _binary_weights(model)
    history: list[dict[str, Any]] = []
    if p["pretrain_epochs"] > 0:
        x_adv, y_adv = adversarial_set(data, copies=p["copies"], zero_fraction=p["zero_fraction"], seed=p["seed"])
        x_adv, y_adv = _on_model(model, x_adv, y_adv)
        opt = _sgd_optimizer(_trainable(model), p["pretrain_lr"], p["pretrain_momentum"])
        step = _gradient_step(model, opt, x_adv, y_adv, binary)

        def adversarial_error():
            return {"adversarial_error": error_and_loss(model, x_adv, y_adv)[0]}

        pre = _fit(model, data, p, report, opt, step, n=len(y_adv), epochs=p["pretrain_epochs"], phase="pretrain",
                   after_epoch=adversarial_error, stop=lambda h: h["adversarial_error"] <= p["pretrain_target"],
                   seed_offset=1)
        last = pre[-1]
        last["pretrain_fitted"] = last["adversarial_error"] <= p["pretrain_target"]
        if not last["pretrain_fitted"]:
            last["note"] = (f"ADV pre-training hit its cap of {p['pretrain_epochs']} epochs with error "
                            f"{100 * last['adversarial_error']:.1f}% on the adversarial set, above the target "
                            f"{100 * p['pretrain_target']:.1f}%: the random labels were not learned, so this "
                            "minimizer may not be the bad one ADV is meant to find (raise pretrain_epochs)")
        report(report.done / report.total, last.get("note") or
               f"pre-training fitted after {len(pre)} epochs: adversarial-set error {100 * last['adversarial_error']:.1f}%")
        history += pre
        report.total = report.done + max(p["epochs"], 1)  # the cap was an upper bound: progress of what is left
    opt = _sgd_optimizer(_trainable(model), p["lr"], p["momentum"])
    x, y = _on_model(model, data.x_train, data.y_train)
    step = _gradient_step(model, opt, x, y, binary)
    return history + _fit(model, data, p, report, opt, step, n=len(y), epochs=p["epochs"])


PAPER_TARGET = 0.01  # the paper's rule: train until the training error is below 1%
MERGED = 0.01  # [ours] RSGD's replicas count as merged when their mean distance to the centre is at most 1% of its norm


def outcome(model: nn.Module, history: list[dict[str, Any]], optimizer: str, params: dict[str, Any] | None,
            train_error: float) -> dict[str, Any]:
    """Whether a training reached its target, for the train job's result and the network's provenance:
    {"target_error": the target (``target_error``, or the paper's 1% when none was given), "reached_target":
    train_error <= target, "warning": None or what went wrong in words}. RSGD also says whether its replicas
    merged ("replica_distance", and in words when they did not: the result is then the mean of networks that
    were never one); ADV whether its pre-training fitted the random labels."""
    p = normalize_params(optimizer, params)
    target = p["target_error"] if p["target_error"] is not None else PAPER_TARGET
    out: dict[str, Any] = {"target_error": target, "reached_target": bool(train_error <= target), "warning": None}
    problems = []
    if not out["reached_target"]:
        problems.append(f"training error {100 * train_error:.2f}% after {len(history)} epochs is above the target "
                        f"{100 * target:.2f}%: not a minimizer by the paper's rule (more epochs, or another learning rate)")
    last = history[-1] if history else {}
    if optimizer == "rsgd" and "replica_distance" in last:
        norm = math.sqrt(sum(float((q.detach().double() ** 2).sum()) for q in model.parameters() if q.requires_grad))
        out["replica_distance"] = last["replica_distance"]
        if last["replica_distance"] > MERGED * max(norm, 1e-12):
            problems.append(f"RSGD's replicas did not merge: their mean distance to the centre is "
                            f"{last['replica_distance']:.3g} ({100 * last['replica_distance'] / max(norm, 1e-12):.0f}% "
                            f"of the centre's norm, gamma {last.get('gamma', float('nan')):.3g} at the end); the result "
                            "is the average of networks that never became one (raise gamma0, gamma1 or coupling_epochs)")
    pre = pretraining(history)
    if pre is not None and not pre["fitted"]:
        problems.append(f"ADV's pre-training did not fit its random labels ({100 * pre['error']:.1f}% error on the "
                        "adversarial set after the cap of pretrain_epochs)")
    out["warning"] = "; ".join(problems) or None
    return out


def pretraining(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """ADV's pre-training in a few numbers for a network's provenance: {"epochs", "error" (on the adversarial
    set, last epoch), "fitted", "note"}; None for a history without pre-training."""
    pre = [h for h in history if h.get("phase") == "pretrain"]
    if not pre:
        return None
    last = pre[-1]
    return {"epochs": len(pre), "error": last["adversarial_error"], "fitted": bool(last.get("pretrain_fitted")),
            "note": last.get("note")}


def _train_rsgd(model, data, p, report):
    """Replicated SGD (Pittorino et al., ICLR 2021, "Entropic gradient descent algorithms and wide flat minima").

    From the paper and the group's public robust-ensemble code (``RobustNet`` of its sacreddnn training
    scripts): y replicas w_a, each built as a fresh network (its own random initialisation; replica 0 is
    ``model`` as given, the others are re-initialised from seeds derived from the initial seed) and fed its
    own minibatches; the energy mean_a L(w_a) + gamma mean_a ||w_a - c||^2 with the centre c = mean_a w_a
    (no centre replica); gamma0 = 1e-3 grown by (1 + 0.1) per epoch; the result is the centre (float
    buffers averaged as the code's ``build_center_of_mass`` does). The group's code multiplies the
    learning rate by y because its loss averages over the replicas; here each replica's step uses ``lr``
    on its own loss, which is the same update. From docs/science.md section 5: lr 0.05 cosine-annealed, Nesterov 0.9, y = 5.

    [ours] Each step is an SGD step on the replicas' losses (Nesterov momentum), then the exact flow of the
    coupling over the same step size: w_a - c <- (w_a - c) exp(-2 gamma lr), which leaves c unchanged and
    cannot overshoot however large gamma grows (the group's code puts the coupling's gradient through the
    momentum instead, which is unstable once 2 gamma lr is large; its scripts bound gamma's total growth
    with a ``gmax`` factor). gamma = gamma0
    (1 + gamma1)^t with t the epochs elapsed (fractional, updated every step). replica_init = "shared" starts
    every replica from ``model``'s weights (the behaviour before; the replicas then sit on their centre from
    the first epochs). After every epoch ``model`` is set to the centre (BatchNorm statistics recomputed on
    the training set) and evaluated; the history adds ``replica_distance`` (mean_a ||w_a - c||) and
    ``gamma``, so a user can see whether the replicas collapsed too early.
    """
    x, y = _on_model(model, data.x_train, data.y_train)
    replicas = [copy.deepcopy(model) for _ in range(p["replicas"])]
    if p["replica_init"] == "independent":
        _reinitialise(replicas[1:], model, initial_seed("rsgd", p))
    trainable = [name for name, q in model.named_parameters() if q.requires_grad]
    rep_params = [[dict(r.named_parameters())[name] for r in replicas] for name in trainable]  # per tensor, per replica
    opt = _sgd_optimizer([q for group in rep_params for q in group], p["lr"], p["momentum"])
    binary = [w for r in replicas for w in _binary_weights(r)]
    steps_per_epoch = math.ceil(len(y) / p["batch_size"])
    state = {"step": 0, "gamma": p["gamma0"]}
    scale = 1.0 if p["coupling_epochs"] is None else p["coupling_epochs"] / p["epochs"]

    def step(idx):
        loss = sum(F.cross_entropy(r(x[i]), y[i]) for r, i in zip(replicas, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["gamma"] = _geometric(p["gamma0"], p["gamma1"], state["step"] / steps_per_epoch * scale)
        shrink = math.exp(-2 * state["gamma"] * opt.param_groups[0]["lr"])
        with torch.no_grad():
            for group in rep_params:
                centre = torch.stack(group).mean(dim=0)
                for q in group:
                    q.sub_(centre).mul_(shrink).add_(centre)
        _clamp(binary)
        state["step"] += 1

    def to_centre():
        with torch.no_grad():
            distance = 0.0
            states = [r.state_dict() for r in replicas]
            centre = {}
            for key, value in model.state_dict().items():
                stacked = torch.stack([s[key] for s in states])
                centre[key] = stacked.double().mean(dim=0).to(value.dtype) if value.is_floating_point() else states[0][key]
            model.load_state_dict(centre)
            for a in range(len(replicas)):
                distance += math.sqrt(sum(float(((group[a].double() - centre[name].double()) ** 2).sum())
                                          for name, group in zip(trainable, rep_params)))
        recalibrate_bn(model, x)
        return {"replica_distance": distance / len(replicas), "gamma": state["gamma"]}

    return _fit(model, data, p, report, opt, step, n=len(y), epochs=p["epochs"], streams=p["replicas"],
                after_epoch=to_centre, train_modules=replicas)


def _reinitialise(replicas: list[nn.Module], model: nn.Module, seed: int) -> None:
    """Fresh random initial weights for each replica (``reset_parameters`` of every layer: the distribution
    ``nets.build`` draws from), replica k seeded from (seed, k); parameters ``model`` freezes keep its values."""
    frozen = {name: q for name, q in model.named_parameters() if not q.requires_grad}
    for k, replica in enumerate(replicas, start=1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(zlib.crc32(f"replica:{seed}:{k}".encode()) & 0x7FFFFFFF)
            for m in replica.modules():
                if m is not replica and hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        with torch.no_grad():
            for name, q in replica.named_parameters():
                if name in frozen:
                    q.copy_(frozen[name])


ENTROPY_L = 20  # Chaudhari et al.'s Langevin steps per weight update


def langevin_steps(p: dict[str, Any], n: int) -> int:
    """Entropy-SGD's L: as given, or 20 but at most half the minibatches of an epoch (at least 1) [ours]: with L
    at or above an epoch's minibatches every loop is cut short by the epoch's end, one weight update per epoch
    (digits: 11 minibatches of 128), and the scoping of gamma, per update, never tightens."""
    if p["L"] is not None:
        return int(p["L"])
    return max(1, min(ENTROPY_L, math.ceil(n / p["batch_size"]) // 2))


def _train_entropy_sgd(model, data, p, report):
    """Entropy-SGD. With x the weights: x' starts at x and takes L Langevin steps on minibatches: a step
    x' <- x' - inner_lr grad L(x') + sqrt(2 inner_lr) noise N(0, 1), then the coupling gamma/2 ||x' - x||^2
    (x' - x <- (x' - x) exp(-gamma inner_lr), its exact flow: stable however large gamma grows), while
    mu <- alpha mu + (1 - alpha) x' (mu starts at x); then x takes an optimizer step along x - mu. As in
    Chaudhari et al.'s code the outer gradient is x - mu (not gamma (x - mu)): lr = 1 without momentum
    would move x to mu; the default adds Nesterov momentum 0.9, with the cosine annealing of every sampler.
    Defaults as Chaudhari et al. 2017: gamma0 = 0.03 with scoping gamma = gamma0 (1 + gamma1)^t, gamma1 =
    1e-3 and t the weight updates so far ("1.001 per update"), L = 20 (on small data sets at most half an
    epoch's minibatches: ``langevin_steps``), inner step 0.1, noise 1e-4,
    alpha = 0.75. [ours] the inner step size stays constant; an epoch is one pass of the Langevin loop
    over the data (so an epoch costs what SGD's does, and makes ceil(batches / L) weight updates); a loop
    cut short by the end of the epoch still ends with its weight update; the noise comes from a generator
    seeded with seed.
    """
    device = _device(model)
    params = _trainable(model)
    opt = _sgd_optimizer(params, p["lr"], p["momentum"])
    binary = _binary_weights(model)
    x, y = _on_model(model, data.x_train, data.y_train)
    noise_gen = torch.Generator(device=device).manual_seed(p["seed"] + 2)
    anchor = [q.detach().clone() for q in params]  # x
    mean = [q.detach().clone() for q in params]  # mu
    state = {"inner": 0, "updates": 0, "gamma": p["gamma0"]}
    L = langevin_steps(p, len(y))

    def outer_update():
        with torch.no_grad():
            for q, a, m in zip(params, anchor, mean):
                q.copy_(a)
                q.grad = a - m
        opt.step()
        _clamp(binary)
        with torch.no_grad():
            for q, a, m in zip(params, anchor, mean):
                a.copy_(q)
                m.copy_(q)
        state["inner"] = 0
        state["updates"] += 1

    def step(idx):
        gamma = state["gamma"] = _geometric(p["gamma0"], p["gamma1"], state["updates"])
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx[0]]), y[idx[0]]).backward()
        with torch.no_grad():
            scale = math.sqrt(2 * p["inner_lr"]) * p["noise"]
            pull = math.exp(-gamma * p["inner_lr"])
            for q, a in zip(params, anchor):
                if q.grad is not None:
                    q.sub_(p["inner_lr"] * q.grad)
                if scale > 0:
                    q.add_(scale * torch.randn(q.shape, generator=noise_gen, device=device, dtype=q.dtype))
                q.sub_(a).mul_(pull).add_(a)
            _clamp(binary)
            for q, m in zip(params, mean):
                m.mul_(p["alpha"]).add_(q, alpha=1 - p["alpha"])
        state["inner"] += 1
        if state["inner"] == L:
            outer_update()

    def finish_loop():
        if state["inner"] > 0:
            outer_update()
        return {"gamma": state["gamma"]}

    return _fit(model, data, p, report, opt, step, n=len(y), epochs=p["epochs"], after_epoch=finish_loop)


_SAMPLERS = {"sgd": _train_sgd, "rsgd": _train_rsgd, "adv": _train_adv, "adam": _train_adam, "sam": _train_sam,
             "entropy_sgd": _train_entropy_sgd}
