"""Every job kind once: its inputs, its parameter table, its queue, its fan-out and its cost.

API validation, the cache key (on the normalised params this module returns), worker dispatch and
fan-out, ``GET /api/job-kinds``, ``toroid job KIND --help`` and the dashboard's forms all read ``KINDS``.
A kind is a ``Kind``:
- ``inputs``: the params holding network ids, {"a": {"count": 1}} or {"networks": {"min": 2, "max": 64}};
- ``params``: the table of params.py (type, default, bounds, choices, help, applies_to, when);
- ``check(params, networks, limits)``: what needs the networks (compatibility, defaults that depend on
  the architecture), returning the params complete;
- ``cost(params, networks)``: an estimate from the params alone, in FLOPs (a multiply-add is 2): evaluations
  x samples x the architecture's forward FLOPs per sample (cost.py, from the spec on the meta device), plus
  PARAM_FLOPS per parameter and point (making the point); training: x 3 (forward and backward) per epoch, x
  replicas (RSGD), Langevin steps (Entropy-SGD), 2 (SAM), plus ADV's pre-training epochs [ours];
- ``memory(params, networks, limits)``: (bytes one sample needs, bytes the job would hold unchunked),
  refused at submission when one sample does not fit the worker's budget;
- ``queue``: "interactive" or "batch"; ``batch_above``: a cost above which the job goes to "batch";
- ``split(params, sizes)`` -> pieces (one piece: no fan-out) and ``join(params, outputs)``.
A worker's runner (workers/glue/runners.py) computes one piece; adding a kind is one ``Kind`` and one runner.
Nothing here touches a database: the backend looks the networks up and hands over ``NetworkFacts``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from . import bend, cost as costs, data, flatness, hessian, nets, paths, plane, train
from . import slice as slices
from .groups import prepare
from .params import MAX_SEED, public, validate_params

QUEUES = ("interactive", "batch")
# [ours] path, flatness and slice jobs above this many FLOPs go to the batch queue: 2e11 FLOPs is the
# 1e11 sample-parameter products of the former unit on an MLP (2 FLOPs per weight and sample), seconds of CPU
INTERACTIVE_COST = 2e11
PARAM_FLOPS = 10  # [ours] FLOPs per parameter of making one point (interpolation, noise, alignment)
# [ours] what a worker process holds before any job (torch, the service, the data cache): counted in the budget
WORKER_BASELINE = 512 * 2**20
MAX_ID = 2**31 - 1


class KindError(ValueError):
    """A job that cannot run as asked; ``status`` is the HTTP status to answer (400, or 404)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class NetworkFacts:
    """What validation needs to know of a stored network."""

    id: int
    architecture: dict[str, Any]
    dataset: str
    dataset_options: dict[str, Any]
    n_params: int

    @cached_property
    def spec(self) -> nets.Prepared:
        """The architecture prepared once (groups.prepare), for every check of the submission."""
        return prepare(self.architecture)

    @property
    def binary(self) -> bool:
        return self.spec.binary

    def profile(self) -> costs.Profile:
        """Per-sample FLOPs and activation bytes of the architecture on its data (cached)."""
        return costs.profile(self.architecture, *data.shape_of(self.dataset, self.dataset_options))

    def samples(self) -> tuple[int, int]:
        return data.split_sizes(self.dataset, self.dataset_options)


@dataclass(frozen=True)
class Limits:
    """The server's settings that validation reads."""

    data_root: Path | None = None
    max_parameters: int | None = None
    max_cost: float | None = None  # FLOPs of one job
    max_activation_bytes: int | None = None  # per sample, a training step's
    worker_memory: int | None = None  # bytes of one worker process, its baseline included (None: cost.py's default)

    def working_memory(self) -> int:
        """What one job may hold in a worker: the budget less the worker's baseline."""
        budget = self.worker_memory or costs.default_budget()
        return max(budget - WORKER_BASELINE, costs.MIN_WORKING)


Networks = dict[str, list[NetworkFacts]]  # input param -> its networks, in the given order


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    inputs: dict[str, dict[str, int]]
    params: dict[str, dict[str, Any]]
    cost: Callable[[dict[str, Any], Networks], float]
    queue: str = "interactive"
    batch_above: float | None = None
    check: Callable[[dict[str, Any], Networks, Limits], dict[str, Any]] | None = None
    memory: Callable[[dict[str, Any], Networks, Limits], tuple[int, int]] | None = None  # (one sample, unchunked)
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # replaces the table check (train)
    split: Callable[[dict[str, Any], dict[str, int]], list[Any]] | None = None
    join: Callable[[dict[str, Any], list[Any]], Any] | None = None
    fills_errors: bool = False  # the result holds its network's errors, which the network row shows
    results: dict[str, Any] = field(default_factory=dict)  # what some result keys hold, for the catalogue
    names: tuple[str, ...] = ("network_id",)  # result keys holding network ids (one id or a list): ``result_networks``

    def pieces(self, params: dict[str, Any], sizes: dict[str, int]) -> list[Any]:
        """The pieces the job splits into, at most ``sizes`` ({"pairs", "points", "path_points"}) each."""
        return self.split(params, sizes) if self.split else [None]

    def joined(self, params: dict[str, Any], outputs: list[Any]) -> Any:
        return self.join(params, outputs) if self.join else outputs[0]

    def result_networks(self, result: Any) -> list[int]:
        """The networks ``result`` names (besides the job's inputs, which it may repeat): a network the job
        made (a train's, a canonical form, a bend's midpoint) or read. A result is valid, and readable, only
        while each of them exists and is readable."""
        out: list[int] = []
        for key in self.names if isinstance(result, dict) else ():
            value = result.get(key)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, int) and not isinstance(v, bool):
                    out.append(v)
        return out

    def catalogue(self) -> dict[str, Any]:
        out = {"kind": self.name, "description": self.description, "queue": self.queue,
               "inputs": {k: dict(v) for k, v in self.inputs.items()}, "params": public(self.params)}
        return {**out, "results": self.results} if self.results else out


@dataclass(frozen=True)
class Submission:
    """A validated job: normalised params (defaults filled, network ids in place), inputs, cost, queue."""

    kind: Kind
    params: dict[str, Any]
    inputs: list[int]
    cost: float
    queue: str
    networks: Networks = field(default_factory=dict)
    memory: int = 0  # estimated peak bytes of the job in a worker (its chunks sized to the budget), baseline excluded


# ---- checks shared by kinds -----------------------------------------------------------------------

def same_setting(nets_: list[NetworkFacts]) -> None:
    """Networks compared with each other: one architecture, the same data."""
    a = nets_[0]
    for b in nets_[1:]:
        try:
            paths.compatible(a.spec, b.spec)
        except paths.IncompatibleError as exc:
            raise KindError(f"networks {a.id} and {b.id}: {exc}") from None
        if a.dataset != b.dataset or a.dataset_options != b.dataset_options:
            raise KindError(f"networks {a.id} and {b.id} were trained on different data sets ({a.dataset} "
                            f"{a.dataset_options} vs {b.dataset} {b.dataset_options}); compare networks of one data set")


def _all(networks: Networks) -> list[NetworkFacts]:
    return [n for group in networks.values() for n in group]


def _work(net: NetworkFacts, evaluations: float, test: bool = True, bn: str | None = None) -> float:
    """FLOPs of evaluating ``evaluations`` points of ``net``'s parameter space on its data (training set, and
    test set if ``test``; BatchNorm statistics recomputed on the training set when ``bn`` is "recompute")."""
    n_train, n_test = net.samples()
    p = net.profile()
    passes = n_train * (2 if bn == "recompute" and p.batchnorm else 1) + (n_test if test else 0)
    return evaluations * (passes * p.flops + PARAM_FLOPS * max(p.params, net.n_params, 1))


def _data_bytes(dataset: str, options: dict[str, Any]) -> int:
    shape, _ = data.shape_of(dataset, options)
    n_train, n_test = data.split_sizes(dataset, options)
    return (n_train + n_test) * (math.prod(shape) * 4 + 8)


def _eval_memory(points: Callable[[dict[str, Any]], int]):
    """(one sample, everything at once) of an evaluation job of ``points(params)`` points: the data and a few
    states of each input network, then per point two stacked states and per data sample the working memory of
    one evaluated point (chunks hold as many of each as the budget allows; at least one sample of one point)."""
    def memory(p: dict[str, Any], networks: Networks, limits: Limits) -> tuple[int, int]:
        net = _all(networks)[0]
        prof = net.profile()
        n_train, n_test = net.samples()
        fixed = _data_bytes(net.dataset, net.dataset_options) + 4 * prof.state_bytes * len(_all(networks))
        k = points(p)
        if k == 0:
            return fixed, fixed
        one = fixed + 2 * prof.state_bytes + costs.eval_bytes(prof)
        return one, fixed + k * (2 * prof.state_bytes + costs.eval_bytes(prof) * max(n_train, n_test))
    return memory


def _p(type_: str, default: Any, help: str, **more: Any) -> dict[str, Any]:
    return {"type": type_, "default": default, "help": help, **more}


SEED = _p("int", 0, "random seed", min=0, max=MAX_SEED)
BN = _p("str", "recompute", "BatchNorm statistics at each point: recomputed on the training inputs, or interpolated",
        choices=list(paths.BN_MODES), applies_to=["batchnorm"])


# ---- path ------------------------------------------------------------------------------------------

SPLITTABLE_PATHS = ("linear", "linear_aligned", "geodesic")
_BEND = {"when": {"type": ["bend"]}, "applies_to": ["real"]}
PATH_PARAMS = {  # the path module's table (paths.PARAMS) and the single bend's (bend.PARAMS)
    **paths.PARAMS,
    "type": {**paths.PARAMS["type"], "help": paths.PARAMS["type"]["help"] + "; bend: a trained midpoint joined to "
             "both ends", "choices": [*paths.PARAMS["type"]["choices"], "bend"]},
    **{k: {**v, **_BEND} for k, v in bend.PARAMS.items() if k != "seed"},
}


def _check_path(p: dict[str, Any], networks: Networks, limits: Limits) -> dict[str, Any]:
    a, b = networks["a"][0], networks["b"][0]
    same_setting([a, b])
    if p["type"] == "bend":
        nets.require_real(a.binary, "bend", KindError)
    else:
        try:
            paths.check_path_type(a.spec, p["type"])
        except paths.PathError as exc:
            raise KindError(str(exc)) from None
    return p


def _path_cost(p: dict[str, Any], networks: Networks) -> float:
    a = networks["a"][0]
    cost = _work(a, p["points"] * p.get("orders", 1), bn=p.get("bn"))
    if p["type"] == "bend":
        cost += 3 * _work(a, p["epochs"], test=False)
    return cost


def _split_path(p: dict[str, Any], sizes: dict[str, int]) -> list[list[float]]:
    """Positions of a long linear, linear-aligned or geodesic path in chunks (a bend or Hamming path: one)."""
    ts = paths.positions(p["points"])
    if p["type"] not in SPLITTABLE_PATHS:
        return [ts]
    per = max(sizes.get("path_points", 64), 2)
    return [ts[k : k + per] for k in range(0, len(ts), per)]


def _join_path(p: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(outputs[0])  # the first piece carries the distances
    for key in ("t", "train_error", "test_error", "train_loss", "test_loss"):
        out[key] = [v for o in outputs for v in o[key]]
    paths.add_barrier(out)
    out["chunks"] = len(outputs)
    return out


# ---- flatness --------------------------------------------------------------------------------------

FLATNESS_PARAMS = {
    "sigmas": _p("list[float]", None, "noise levels (binary networks: flipped fractions, at most "
                 f"{flatness.MAX_SIGMA['flip']}); null: the architecture's default grid", nullable=True, min=0.0,
                 max=max(flatness.MAX_SIGMA.values()), min_items=1, max_items=flatness.MAX_LEVELS),
    "draws": _p("int", None, "noise draws per level; null: "
                f"{flatness.DEFAULT_DRAWS['multiplicative']} (binary: {flatness.DEFAULT_DRAWS['flip']})",
                nullable=True, min=1, max=flatness.MAX_DRAWS),
    "seed": {**SEED, "help": "seed of the noise"},
    "params": _p("str", "weights", "what gets noise: every layer's weights, or all parameters", choices=list(flatness.PARAMS)),
}


def _check_flatness(p: dict[str, Any], networks: Networks, limits: Limits) -> dict[str, Any]:
    net = networks["network"][0]
    kind = nets.variant(net.binary, "noise")
    sigmas = p["sigmas"] if p["sigmas"] is not None else flatness.default_sigmas(net.spec)
    if max(sigmas) > flatness.MAX_SIGMA[kind]:
        raise KindError(f"parameter 'sigmas' of a flatness job on a binary network holds flipped fractions, at most "
                        f"{flatness.MAX_SIGMA[kind]}; got {max(sigmas)}")
    draws = p["draws"] if p["draws"] is not None else flatness.DEFAULT_DRAWS[kind]
    return {**p, "sigmas": [float(s) for s in sigmas], "draws": draws}


def _flatness_points(p: dict[str, Any]) -> int:
    return 1 + p["draws"] * sum(1 for s in p["sigmas"] if s > 0)


def _flatness_cost(p: dict[str, Any], networks: Networks) -> float:
    return _work(networks["network"][0], _flatness_points(p), test=False, bn="recompute")


def _split_flatness(p: dict[str, Any], sizes: dict[str, int]) -> list[list[float]]:
    """Noise levels in chunks of at most ``sizes["points"]`` evaluated networks. Each draw's noise is the same
    whatever levels a chunk holds, so chunks give the unsplit result."""
    per = max(sizes.get("points", 1000) // max(p["draws"], 1), 1)
    return [p["sigmas"][k : k + per] for k in range(0, len(p["sigmas"]), per)]


def _join_flatness(p: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(outputs[0])
    for key in ("sigma", "delta_mean", "delta_std", "delta_sem"):
        out[key] = [v for o in outputs for v in o[key]]
    out["chunks"] = len(outputs)
    return out


# ---- hessian ---------------------------------------------------------------------------------------

_HD = hessian.DEFAULTS
HESSIAN_PARAMS = {
    "k": _p("int", _HD["k"], "top eigenvalues of the Hessian to compute (largest first)",
            min=hessian.LIMITS["k"][0], max=hessian.LIMITS["k"][1]),
    "iterations": _p("int", _HD["iterations"], "Hessian-vector products Lanczos may use at most",
                     min=hessian.LIMITS["iterations"][0], max=hessian.LIMITS["iterations"][1]),
    "probes": _p("int", _HD["probes"], "Rademacher probes of Hutchinson's trace estimator (its standard error "
                 "falls as 1/sqrt(probes))", min=hessian.LIMITS["probes"][0], max=hessian.LIMITS["probes"][1]),
    "samples": _p("int", _HD["samples"], "training samples the loss is averaged over (a seeded random subset; "
                  "all of them when larger than the training set)", min=hessian.LIMITS["samples"][0],
                  max=hessian.LIMITS["samples"][1]),
    "seed": {**SEED, "help": "seed of the subset, the Lanczos start vector and the probes"},
}


def _check_hessian(p: dict[str, Any], networks: Networks, limits: Limits) -> dict[str, Any]:
    try:
        hessian.check(networks["network"][0].architecture)
    except hessian.HessianError as exc:
        raise KindError(str(exc)) from None
    return p


def _hessian_cost(p: dict[str, Any], networks: Networks) -> float:
    """FLOPs: two parts (raw, canonical), each about iterations + probes Hessian-vector products of ~4 passes
    (forward over reverse) over ``samples`` training samples."""
    net = networks["network"][0]
    n_train = max(net.samples()[0], 1)
    return _work(net, 2 * 4.0 * (p["iterations"] + p["probes"]) * min(p["samples"], n_train) / n_train, test=False)


# ---- plane -----------------------------------------------------------------------------------------

PLANE_PARAMS = {
    "grid": _p("int", 11, "grid nodes per axis", min=plane.MIN_GRID, max=plane.MAX_GRID),
    "mode": _p("str", "aligned", "aligned: the canonical forms, aligned to the first; raw: as stored",
               choices=list(plane.MODES)),
    "margin": _p("float", 0.2, "margin around the three networks, in units of the larger extent",
                 min=0.0, max=plane.MAX_MARGIN),
    "bn": BN,
}


def _check_plane(p: dict[str, Any], networks: Networks, limits: Limits) -> dict[str, Any]:
    three = networks["networks"]
    same_setting(three)
    nets.require_real(three[0].binary, "plane", KindError)
    return p


def _plane_cost(p: dict[str, Any], networks: Networks) -> float:
    return _work(networks["networks"][0], (p["grid"] + 3) ** 2, bn=p.get("bn"))


# ---- slice -----------------------------------------------------------------------------------------

SLICE_PARAMS = slices.PARAMS  # the slice module's own table, which slice_result checks with


def _check_slice(p: dict[str, Any], networks: Networks, limits: Limits) -> dict[str, Any]:
    net = networks["network"][0]
    nets.require_real(net.binary, "slice", KindError)
    slices.check_points(p["dims"], p["points"], KindError)
    return p


def _slice_cost(p: dict[str, Any], networks: Networks) -> float:
    return _work(networks["network"][0], (p["points"] + 1) ** p["dims"], bn=p.get("bn"))


# ---- matrix ----------------------------------------------------------------------------------------

MAX_MATRIX = 64
MATRIX_PARAMS = {
    "barriers": _p("bool", False, "also the barrier along the geodesic (binary: Hamming) path of every pair"),
    "points": _p("int", 11, "positions along each barrier path", min=2, max=101, when={"barriers": [True]}),
    "bn": {**BN, "when": {"barriers": [True]}},
}


def _check_matrix(p: dict[str, Any], networks: Networks, limits: Limits) -> dict[str, Any]:
    group = networks["networks"]
    same_setting(group)
    if p["barriers"]:
        kind = nets.variant(group[0].binary, "barrier")
        try:
            paths.check_path_type(group[0].spec, kind)
        except paths.PathError as exc:
            raise KindError(f"barriers: {exc}") from None
    return p


def _matrix_cost(p: dict[str, Any], networks: Networks) -> float:
    group = networks["networks"]
    pairs = len(group) * (len(group) - 1) / 2
    return pairs * (10 * PARAM_FLOPS * max(group[0].n_params, 1)
                    + (_work(group[0], p["points"], bn=p["bn"]) if p["barriers"] else 0))


def _split_matrix(p: dict[str, Any], sizes: dict[str, int]) -> list[list[tuple[int, int]]]:
    n = len(p["networks"])
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    per = max(sizes.get("pairs", 16), 1)
    return [pairs[k : k + per] for k in range(0, len(pairs), per)] or [[]]


def _join_matrix(p: dict[str, Any], outputs: list[list]) -> dict[str, Any]:
    return {"pairs": [tuple(x) for o in outputs for x in o], "chunks": len(outputs)}


# ---- train -----------------------------------------------------------------------------------------

TRAIN_PARAMS = {
    "architecture": _p("object", None, "architecture spec, e.g. {\"kind\": \"mlp\", \"hidden\": [32, 32]} "
                       "(see /api/architectures)", required=True, catalogue="architectures"),
    "dataset": _p("str", "digits", "data set (see /api/datasets)", choices=list(data.DATASETS)),
    "dataset_options": _p("object", None, "the data set's options (see /api/datasets)", nullable=True,
                          catalogue="datasets"),
    "optimizer": _p("str", "sgd", "sampler (see /api/optimizers); its parameters go beside these",
                    choices=list(train.OPTIMIZERS), catalogue="optimizers"),
    "name": _p("str", None, "name of the trained network (default: kind-optimizer-seed)", nullable=True, max_length=200),
    "tags": _p("list[str]", [], "tags of the trained network", min_items=0, max_items=50, max_length=50),
    "visibility": _p("str", "lab", "who may read the network: the lab, or only you", choices=["lab", "private"]),
}


def _normalize_train(params: dict[str, Any]) -> dict[str, Any]:
    """The job's own table, then the architecture's, the data set's and the sampler's (the rest of the params)."""
    p = validate_params(TRAIN_PARAMS, {k: v for k, v in params.items() if k in TRAIN_PARAMS}, "a train job", KindError)
    try:
        p["architecture"] = nets.normalize_spec(p["architecture"])
    except nets.SpecError as exc:
        raise KindError(f"architecture: {exc}") from None
    try:
        p["dataset_options"] = data.normalize_options(p["dataset"], p["dataset_options"])
    except data.DatasetError as exc:
        raise KindError(f"dataset: {exc}") from None
    try:
        opt_params = train.normalize_params(p["optimizer"], {k: v for k, v in params.items() if k not in TRAIN_PARAMS})
    except ValueError as exc:
        raise KindError(f"optimizer: {exc}") from None
    p["name"] = p["name"] or f"{p['architecture']['kind']}-{p['optimizer']}-seed{opt_params.get('seed', 0)}"
    return {**p, **opt_params}


def train_options(p: dict[str, Any]) -> dict[str, Any]:
    """The sampler's own parameters of a normalised train job."""
    return {k: v for k, v in p.items() if k not in TRAIN_PARAMS}


def _check_train(p: dict[str, Any], networks: Networks, limits: Limits) -> dict[str, Any]:
    reason = data.unavailable(p["dataset"], limits.data_root)
    if reason:
        raise KindError(f"dataset: {reason}")
    try:  # the size from the spec alone (nothing allocated), which also says it builds for this data
        shape, n_classes = data.shape_of(p["dataset"], p["dataset_options"])
        nets.check_size(p["architecture"], shape, n_classes, limits.max_parameters or 2**62,
                        limits.max_activation_bytes)
    except (nets.SpecError, data.DatasetError) as exc:
        raise KindError(f"architecture: {exc}") from None
    return p


def train_profile(p: dict[str, Any]) -> costs.Profile:
    """Per-sample FLOPs and activation bytes of a normalised train job's architecture on its data."""
    return costs.profile(p["architecture"], *data.shape_of(p["dataset"], p["dataset_options"]))


def _train_memory(p: dict[str, Any], networks: Networks, limits: Limits) -> tuple[int, int]:
    """A training step holds the data (ADV: and its randomly labelled copies), the weights, their gradients and
    the optimizer's state (a few copies; RSGD: per replica), and one batch's activations (RSGD: every replica's
    batch at once). A batch is never split, so one batch must fit: both figures are the same."""
    prof = train_profile(p)
    replicas = p.get("replicas", 1) if p["optimizer"] == "rsgd" else 1
    copies = 1 + (p.get("copies", 0) if p.get("pretrain_epochs", 0) else 0)
    need = (copies * _data_bytes(p["dataset"], p["dataset_options"]) + 4 * replicas * prof.state_bytes
            + replicas * (p["batch_size"] * prof.train_bytes + prof.train_fixed))
    return need, need


_PASSES = {"rsgd": "replicas", "entropy_sgd": "L"}


def _train_cost(p: dict[str, Any], networks: Networks) -> float:
    n_train, n_test = data.split_sizes(p["dataset"], p["dataset_options"])
    prof = train_profile(p)
    passes = p.get(_PASSES.get(p["optimizer"], ""), 2 if p["optimizer"] == "sam" else 1) or train.ENTROPY_L
    pretrain = p.get("pretrain_epochs", 0) * (1 + p.get("copies", 0))
    steps = p["epochs"] * passes + pretrain  # epochs' worth of training steps over the training set
    # forward + backward = 3 forwards per sample and step; the errors measured at the end: one forward each
    return 3.0 * steps * n_train * prof.flops + (n_train + n_test) * prof.flops + PARAM_FLOPS * steps * prof.params


# ---- the registry ----------------------------------------------------------------------------------

ONE = {"count": 1}
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("train", "train a network on a data set with a sampler; the trained network is stored", {},
         TRAIN_PARAMS, _train_cost, queue="batch", check=_check_train, normalize=_normalize_train, memory=_train_memory),
    Kind("evaluate", "train and test error and loss of a stored network (run after each upload)",
         {"network": ONE}, {}, lambda p, n: _work(n["network"][0], 1), fills_errors=True,
         memory=_eval_memory(lambda p: 1)),
    Kind("canonicalize", "the symmetry-free canonical form of a network, stored as a new network",
         {"network": ONE}, {}, lambda p, n: _work(n["network"][0], 1) + 10 * PARAM_FLOPS * n["network"][0].n_params,
         names=("network_id", "from"), memory=_eval_memory(lambda p: 1)),
    Kind("distance", "distances between two networks: raw, aligned, normalised, geodesic (binary: Hamming)",
         {"a": ONE, "b": ONE}, {}, lambda p, n: 10.0 * PARAM_FLOPS * n["a"][0].n_params,
         check=lambda p, n, lim: same_setting(_all(n)) or p, results={"distances": paths.DISTANCES},
         memory=_eval_memory(lambda p: 0)),
    Kind("path", "train and test error along a path between two networks", {"a": ONE, "b": ONE}, PATH_PARAMS,
         _path_cost, batch_above=INTERACTIVE_COST, check=_check_path, split=_split_path, join=_join_path,
         names=("midpoint_network_id",), memory=_eval_memory(lambda p: p["points"] * p.get("orders", 1))),
    Kind("flatness", "local energy: the training error's rise under noise on the weights", {"network": ONE},
         FLATNESS_PARAMS, _flatness_cost, batch_above=INTERACTIVE_COST, check=_check_flatness, split=_split_flatness,
         join=_join_flatness, memory=_eval_memory(_flatness_points)),
    Kind("hessian", "sharpness: top eigenvalues and trace of the training loss's Hessian, as stored and in canonical "
         "coordinates (restricted to the tangent space of the spheres)", {"network": ONE}, HESSIAN_PARAMS,
         _hessian_cost, batch_above=INTERACTIVE_COST, check=_check_hessian, memory=_eval_memory(lambda p: 1)),
    Kind("plane", "error and loss on the plane through three networks", {"networks": {"count": 3}}, PLANE_PARAMS,
         _plane_cost, queue="batch", check=_check_plane, names=("networks",),
         memory=_eval_memory(lambda p: (p["grid"] + 3) ** 2)),
    Kind("slice", "error and loss on a 1-D or 2-D random-direction section around one network (filter-normalised, "
         "or in canonical coordinates)", {"network": ONE}, SLICE_PARAMS, _slice_cost, batch_above=INTERACTIVE_COST,
         check=_check_slice, memory=_eval_memory(lambda p: (p["points"] + 1) ** p["dims"])),
    Kind("matrix", "distances (and barriers) between every pair of networks",
         {"networks": {"min": 2, "max": MAX_MATRIX}}, MATRIX_PARAMS, _matrix_cost, queue="batch", check=_check_matrix,
         split=_split_matrix, join=_join_matrix, names=("networks",), results={"distances": paths.DISTANCES},
         memory=_eval_memory(lambda p: p["points"] if p["barriers"] else 0)),
)}


# ---- validation ------------------------------------------------------------------------------------

def _network_id(value: Any, role: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise KindError(f"'{role}' must be a network id (an integer), got {value!r}")
    if not 1 <= value <= MAX_ID:
        raise KindError(f"network {value} ('{role}') does not exist", status=404)
    return value


def _input_ids(kind: Kind, params: dict[str, Any]) -> dict[str, list[int]]:
    out = {}
    for key, rule in kind.inputs.items():
        value = params.get(key)
        if rule.get("count") == 1:
            out[key] = [_network_id(value, key)]
            continue
        lo, hi = rule.get("min", rule.get("count")), rule.get("max", rule.get("count"))
        count = "three" if lo == hi == 3 else (str(lo) if lo == hi else f"{lo} to {hi}")
        if (not isinstance(value, list) or not lo <= len(value) <= hi
                or len({json_key(v) for v in value}) != len(value)):
            raise KindError(f"'{key}' must be a list of {count} distinct network ids")
        out[key] = [_network_id(v, key) for v in value]
    return out


def json_key(value: Any) -> str:
    return f"{type(value).__name__}:{value!r}"


def shape(kind_name: str, params: Any) -> tuple[Kind, dict[str, Any], dict[str, list[int]]]:
    """Every check that needs no network: the kind, the table, the inputs' types and lengths.
    Returns (kind, params normalised without the networks, input param -> ids)."""
    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise KindError(f"unknown job kind {kind_name!r}; known: {', '.join(sorted(KINDS))}")
    if not isinstance(params, dict):
        raise KindError("'params' must be a JSON object")
    ids = _input_ids(kind, params)
    rest = {k: v for k, v in params.items() if k not in kind.inputs}
    if kind.normalize is not None:
        normal = kind.normalize(rest)
    else:
        normal = validate_params(kind.params, rest, f"a {kind.name} job", KindError)
    return kind, {**{k: (v if kind.inputs[k].get("count") != 1 else v[0]) for k, v in ids.items()}, **normal}, ids


def complete(kind: Kind, params: dict[str, Any], networks: Networks, limits: Limits) -> Submission:
    """The checks that need the networks, the cost estimate and the queue."""
    if kind.check is not None:
        params = kind.check(params, networks, limits)
    try:
        cost = float(kind.cost(params, networks))
        one, whole = kind.memory(params, networks, limits) if kind.memory is not None else (0, 0)
    except nets.SpecError as exc:
        raise KindError(f"architecture: {exc}") from None
    if limits.max_cost is not None and cost > limits.max_cost:
        raise KindError(f"this {kind.name} job would cost about {cost:.3g} FLOPs, over the per-job limit of "
                        f"{limits.max_cost:.3g} FLOPs (TOROID_MAX_JOB_COST); ask for fewer points, draws, epochs "
                        "or networks, or a smaller network")
    room = limits.working_memory()
    if one > room:
        what = (f"one batch of {params['batch_size']} samples" if kind.name == "train" else "one sample of one point")
        raise KindError(f"this {kind.name} job needs about {mib(one)} for {what}, more than a worker's memory "
                        f"budget leaves for a job ({mib(room)}: TOROID_WORKER_MEMORY less {mib(WORKER_BASELINE)} "
                        "for the worker itself); " + ("ask for a smaller batch_size or a smaller network"
                                                      if kind.name == "train" else "use a smaller network"))
    queue = "batch" if kind.batch_above is not None and cost > kind.batch_above else kind.queue
    return Submission(kind, params, [n.id for n in _all(networks)], cost, queue, networks, memory=min(whole, room))


def per_sample(sub: Submission) -> dict[str, int] | None:
    """The architecture's per-sample figures of a validated job (its first network's; a train job's own)."""
    if sub.kind.name == "train":
        prof = train_profile(sub.params)
    elif sub.networks:
        prof = _all(sub.networks)[0].profile()
    else:
        return None
    return {"flops": prof.flops, "forward_bytes": prof.forward_bytes, "train_bytes": prof.train_bytes,
            "parameters": prof.params}


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


def result_networks(kind_name: str, result: Any) -> list[int]:
    """The networks a result of ``kind_name`` names (``Kind.result_networks``); the one rule that both the
    cache (a result naming a deleted network is not reused) and visibility (nor shown) read."""
    kind = KINDS.get(kind_name)
    return kind.result_networks(result) if kind is not None else []


def catalogue() -> list[dict[str, Any]]:
    return [k.catalogue() for k in KINDS.values()]


def example(kind_name: str, ids: dict[str, list[int]]) -> dict[str, Any]:
    """A job of ``kind_name`` built from its declared defaults, on the networks ``ids`` (input param -> ids)."""
    kind = KINDS[kind_name]
    out = {k: (v[0] if kind.inputs[k].get("count") == 1 else v) for k, v in ids.items()}
    return {**out, **{k: p["default"] for k, p in kind.params.items() if "when" not in p}}
