"""Hessian sharpness: the top eigenvalues and the trace of the training loss's Hessian, on the network as
stored and on its canonical form with the Hessian restricted to the tangent space of the product of spheres.

Flatness in most of the literature is the Hessian's top eigenvalue and trace (Keskar et al. 2017; PyHessian,
Yao et al. 2020), and Dinh et al. (2017) showed that both change under the positive rescalings that leave the
function as it is. Measured in the canonical coordinates of the paper (every hidden unit on its unit
sphere, the output layer on its sphere of radius sqrt(H_L)), they no longer do.

- Loss: the mean cross-entropy on ``samples`` training points (a seeded random subset; all of them when
  ``samples`` is at least the training set), in eval mode: BatchNorm uses the stored running statistics,
  so the loss is a function of the parameters alone [ours]; float64.
- Parameters: every parameter of the module (weights, biases, BatchNorm gamma and beta; not the running
  statistics, which are buffers).
- Hessian-vector products: forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``), summed over
  batches of the samples; the Hessian is never formed.
- Top-k eigenvalues (largest algebraic): implicitly restarted Lanczos, ``scipy.sparse.linalg.eigsh`` on a
  ``LinearOperator`` of HVPs (20 Lanczos vectors, relative tolerance 1e-7, a seeded start vector), with
  about ``iterations`` HVPs at most (restarts = iterations // 20); "converged" says whether it met the
  tolerance (if not, the eigenvalues it has, possibly fewer than k).
- Trace: Hutchinson's estimator with ``probes`` Rademacher vectors v, mean of v.Hv; "trace_sem" is the
  standard error of that mean (std / sqrt(probes)).
- Canonical: the same on the canonical form (symmetry.canonical_form), with every HVP projected on the
  tangent space of the product of spheres, P H P with P the orthogonal projection that removes, for each
  sphere, the component of the direction along the sphere's point: each hidden unit's incoming weights
  (one row of a scale segment: the concatenated writers' vectors), each BatchNorm unit's pre-BN weights on
  their sphere and its gamma on its own (a sphere of one coordinate, gamma = +1: no tangent direction, so
  gamma does not move), a residual stream channel's concatenated gammas, and the whole output weight matrix
  (one sphere of radius sqrt(H_L)). Coordinates on no sphere move freely: biases, BatchNorm betas, the
  output bias and the weights of units before a GELU. P H P is the second derivative of the loss along
  straight tangent lines [ours]; along great circles the Riemannian Hessian adds -(u.g)/r^2 on each sphere
  (u its point, g the gradient's part there), which "gradient_radial" lets one bound: the largest |u.g|/r^2.
  Since a network and any positively rescaled (or permuted, flipped) copy have one canonical form, the
  canonical numbers are the same for both; the raw ones are not.
Binary networks are refused (their forward pass uses the signs of the weights: no Hessian).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch.func import functional_call, grad, jvp

from . import nets, symmetry
from .data import Dataset
from .groups import prepare

State = dict[str, torch.Tensor]
Progress = Callable[[float, str], None]

DEFAULTS = {"k": 3, "iterations": 300, "probes": 50, "samples": 1000, "seed": 0}
LIMITS = {"k": (1, 20), "iterations": (1, 10_000), "probes": (1, 10_000), "samples": (1, 1_000_000)}
BATCH = 1024  # samples per HVP batch
TOL = 1e-7  # Lanczos' relative tolerance
NCV = 20  # Lanczos vectors (at least 2k + 1)


class HessianError(ValueError):
    """A Hessian that cannot be computed as asked; the message says why."""


def check(spec: dict[str, Any]) -> None:
    if nets.is_binary(spec):
        raise HessianError("the Hessian is for real-valued networks; a binary network's forward pass uses the signs "
                           "of its weights (see flatness for binary networks)")


class _Loss:
    """The mean cross-entropy of ``model`` on (x, y) as a function of the parameters named ``names``."""

    def __init__(self, model: torch.nn.Module, state: State, x: torch.Tensor, y: torch.Tensor):
        self.model = model.eval()
        self.names = [n for n, _ in model.named_parameters()]
        self.params = {n: state[n].detach().double() for n in self.names}
        self.buffers = {n: state[n].detach().double() if state[n].is_floating_point() else state[n]
                        for n, _ in model.named_buffers() if n in state}
        self.x, self.y, self.n = x.double(), y, len(y)

    def _loss(self, params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, {**params, **self.buffers}, (xb,))
        return torch.nn.functional.cross_entropy(out, yb, reduction="sum") / self.n

    def value(self) -> float:
        with torch.no_grad():
            return float(sum(self._loss(self.params, self.x[i:i + BATCH], self.y[i:i + BATCH])
                             for i in range(0, self.n, BATCH)))

    def gradient(self) -> dict[str, torch.Tensor]:
        total = {n: torch.zeros_like(p) for n, p in self.params.items()}
        for i in range(0, self.n, BATCH):
            g = grad(self._loss)(self.params, self.x[i:i + BATCH], self.y[i:i + BATCH])
            for n in total:
                total[n] += g[n]
        return total

    def hvp(self, v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total = {n: torch.zeros_like(p) for n, p in self.params.items()}
        for i in range(0, self.n, BATCH):
            xb, yb = self.x[i:i + BATCH], self.y[i:i + BATCH]
            _, hv = jvp(lambda p: grad(self._loss)(p, xb, yb), (self.params,), (v,))
            for n in total:
                total[n] += hv[n]
        return total


class _Flat:
    """Dict of tensors <-> one flat float64 numpy vector, in the order of ``names``."""

    def __init__(self, params: dict[str, torch.Tensor]):
        self.names = list(params)
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.n = sum(self.sizes)

    def to_dict(self, v: np.ndarray) -> dict[str, torch.Tensor]:
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))
        return {n: c.view(s) for n, c, s in zip(self.names, torch.split(t, self.sizes), self.shapes)}

    def to_vec(self, d: dict[str, torch.Tensor]) -> np.ndarray:
        return torch.cat([d[n].reshape(-1) for n in self.names]).numpy()


def _sphere_blocks(spec: dict[str, Any], state: State) -> list[tuple[list[str], torch.Tensor, int]]:
    """(writer tensor names, unit rows (C, D) of the sphere points, rows per channel: C or 1 for the output)."""
    g = prepare(spec).groups
    blocks = [(seg.vectors(), symmetry.segment_rows(state, seg), 0) for seg in g.spheres()]
    if g.output is not None:
        blocks.append((g.output.vectors(), symmetry.segment_rows(state, g.output).reshape(1, -1), 1))
    return blocks


def _rows(d: dict[str, torch.Tensor], names: list[str], whole: bool) -> torch.Tensor:
    rows = torch.cat([d[n].reshape(d[n].shape[0], -1) for n in names], dim=1)
    return rows.reshape(1, -1) if whole else rows


def _set_rows(d: dict[str, torch.Tensor], names: list[str], rows: torch.Tensor, whole: bool) -> None:
    if whole:
        c = d[names[0]].shape[0]
        rows = rows.reshape(c, -1)
    start = 0
    for n in names:
        width = d[n].reshape(d[n].shape[0], -1).shape[1]
        d[n] = rows[:, start:start + width].reshape(d[n].shape).clone()
        start += width


def tangent_projection(spec: dict[str, Any], state: State) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """P: a direction (dict of tensors) -> its projection on the tangent space of the product of spheres at
    ``state`` (each sphere's radial component removed; coordinates on no sphere kept)."""
    blocks = [(names, points / points.norm(dim=1, keepdim=True).clamp_min(1e-300), bool(whole))
              for names, points, whole in _sphere_blocks(spec, state)]

    def project(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(v)
        for names, units, whole in blocks:
            rows = _rows(out, names, whole)
            rows = rows - (rows * units).sum(dim=1, keepdim=True) * units
            _set_rows(out, names, rows, whole)
        return out

    return project


def _spectrum(loss: _Loss, project, k: int, iterations: int, probes: int, seed: int,
              progress: Progress | None) -> dict[str, Any]:
    flat = _Flat(loss.params)
    proj = project or (lambda d: d)
    calls = {"n": 0}
    budget = k * iterations + probes

    def matvec(v: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if progress is not None and calls["n"] % 10 == 0:
            progress(min(calls["n"] / max(budget, 1), 0.99), f"{calls['n']} Hessian-vector products")
        return flat.to_vec(proj(loss.hvp(proj(flat.to_dict(np.asarray(v).reshape(-1))))))

    rng = np.random.default_rng(seed)
    dim = flat.n
    op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    k_eff = min(k, dim - 1) if dim > 1 else 1
    converged = True
    if dim > 1:
        try:
            ncv = min(dim, max(2 * k_eff + 1, NCV))
            values = eigsh(op, k=k_eff, which="LA", maxiter=max(1, iterations // ncv), tol=TOL,
                           v0=rng.standard_normal(dim), ncv=ncv, return_eigenvectors=False)
        except ArpackNoConvergence as exc:
            values, converged = exc.eigenvalues, False
        values = sorted((float(x) for x in values), reverse=True)
    else:
        values = [float(matvec(np.ones(1))[0])]
    lanczos_products = calls["n"]
    samples = []
    for _ in range(probes):
        v = rng.choice([-1.0, 1.0], size=dim)
        if project is not None:
            v = flat.to_vec(proj(flat.to_dict(v)))
        samples.append(float(v @ matvec(v)))
    s = np.asarray(samples)
    return {"eigenvalues": values, "converged": converged, "trace": float(s.mean()),
            "trace_sem": float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else None,
            "n_parameters": dim, "hvps": calls["n"], "lanczos_hvps": lanczos_products}


def _subset(data: Dataset, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(data.y_train)
    if samples >= n:
        return data.x_train, data.y_train
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples].sort().values
    return data.x_train[idx], data.y_train[idx]


def hessian_result(spec: dict[str, Any], data: Dataset, state: State, k: int = DEFAULTS["k"],
                   iterations: int = DEFAULTS["iterations"], probes: int = DEFAULTS["probes"],
                   samples: int = DEFAULTS["samples"], seed: int = DEFAULTS["seed"],
                   progress: Progress | None = None) -> dict[str, Any]:
    """Top-k eigenvalues and Hutchinson trace of the training loss's Hessian, "raw" (the network as stored)
    and "canonical" (its canonical form, the Hessian restricted to the tangent space of the spheres).

    Returns {"raw": {...}, "canonical": {...}, "samples", "loss", "loss_canonical", "k", "iterations",
    "probes", "seed", "tangent_dimension"}; each part holds "eigenvalues" (largest first), "converged",
    "trace", "trace_sem", "n_parameters", "hvps". The canonical part also has "gradient_radial"."""
    spec = prepare(spec)
    check(spec)
    for key, value in (("k", k), ("iterations", iterations), ("probes", probes), ("samples", samples)):
        lo, hi = LIMITS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise HessianError(f"'{key}' must be an integer from {lo} to {hi}, got {value!r}")
    x, y = _subset(data, samples, seed)
    model = nets.build(spec, data.input_shape, data.n_classes).double()
    nets.check_state_dict(model, state)
    out: dict[str, Any] = {"samples": len(y), "k": k, "iterations": iterations, "probes": probes, "seed": seed}
    parts = (("raw", state), ("canonical", symmetry.canonical_form(spec, {n: t.double() if t.is_floating_point() else t
                                                                          for n, t in state.items()})))
    for i, (part, st) in enumerate(parts):
        loss = _Loss(model, st, x, y)
        sub = None if progress is None else (lambda f, m, i=i, part=part: progress((i + f) / 2, f"{part}: {m}"))
        project = tangent_projection(spec, st) if part == "canonical" else None
        out[part] = _spectrum(loss, project, k, iterations, probes, seed, sub)
        out["loss" if part == "raw" else "loss_canonical"] = loss.value()
        if project is not None:
            g = loss.gradient()
            radial = [float(((_rows(g, names, bool(whole)) * (pts / pts.norm(dim=1, keepdim=True).clamp_min(1e-300)))
                             .sum(dim=1).abs() / pts.norm(dim=1).clamp_min(1e-300)).max())
                      for names, pts, whole in _sphere_blocks(spec, st)]
            out[part]["gradient_radial"] = max(radial) if radial else 0.0
            out["tangent_dimension"] = tangent_dimension(spec, st)
    if progress is not None:
        progress(1.0, "done")
    return out


def tangent_dimension(spec: dict[str, Any], state: State) -> int:
    """Dimension of the tangent space: the parameters, less one per sphere (a BatchNorm gamma's sphere of one
    coordinate leaves none)."""
    net = prepare(spec)
    g = net.groups
    spheres = sum(symmetry.segment_rows(state, seg).shape[0] for seg in g.spheres()) + (g.output is not None)
    return sum(state[n].numel() for n in net.tensors.parameters if n in state) - int(spheres)
