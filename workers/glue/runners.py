"""Per-kind runners: what a worker computes for one piece of a job (kinds.py says how a job splits into
pieces and how their outputs join), and what it does with the joined output (``finish``).

A runner gets a ``Context``: the job's session, owner and progress, and its networks loaded once each
(the row, the weights as stored, the data set) and its architecture prepared once (``Context.spec``: the
normalised spec with its unit groups and structure facts, groups.prepare), which every science function
takes. The science checks the weights against the architecture when it builds its model, once per job.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch
from sqlalchemy.orm import Session

from backend import store
from backend.config import get_settings
from backend.models import Network
from backend.networks import ERROR_FIELDS, fill_errors, store_state
from workers.landscape import bend, evaluate, flatness, hessian, kinds, nets, paths, plane, symmetry, train
from workers.landscape import cost as costs
from workers.landscape import slice as slices
from workers.landscape import data as datasets
from workers.landscape.groups import in_module_order, prepare

State = dict[str, torch.Tensor]


@lru_cache(maxsize=4)
def _dataset(name: str, options_json: str) -> datasets.Dataset:
    return datasets.load_dataset(name, json.loads(options_json), root=get_settings().dataset_root)


def load_data(name: str, options: dict[str, Any]) -> datasets.Dataset:
    return _dataset(name, json.dumps(options, sort_keys=True))


class Context:
    """What a runner works with: the session, the job's owner and visibility, progress, its networks."""

    def __init__(self, session: Session, job_id: int, owner: str, visibility: str, progress):
        self.session, self.job_id, self.owner, self.visibility, self.progress = session, job_id, owner, visibility, progress
        self._states: dict[int, State] = {}
        costs.set_memory_budget(get_settings().worker_memory or None)  # every chunk of the job is sized to it
        self._specs: dict[str, nets.Prepared] = {}

    def network(self, network_id: int) -> Network:
        net = self.session.get(Network, network_id)
        if net is None:
            raise ValueError(f"network {network_id} no longer exists")
        return net

    def spec(self, network_id: int) -> nets.Prepared:
        """The network's architecture prepared (normalised, unit groups derived), once per job and architecture."""
        architecture = self.network(network_id).architecture
        key = json.dumps(architecture, sort_keys=True)
        if key not in self._specs:
            self._specs[key] = prepare(architecture)
        return self._specs[key]

    def state(self, network_id: int) -> State:
        if network_id not in self._states:
            net = self.network(network_id)
            try:
                state = store.get(net.weights_hash)
            except FileNotFoundError:
                raise ValueError(f"the weights of network {net.id} are missing from the weight store "
                                 f"({net.weights_hash}); restore the store from a backup or delete the network") from None
            # in the module's own order, as model.state_dict() gives it (what a script computing in process has)
            self._states[network_id] = {k: state[k] for k in in_module_order(self.spec(network_id), state)}
        return self._states[network_id]

    def data(self, network_id: int) -> datasets.Dataset:
        net = self.network(network_id)
        return load_data(net.dataset, net.dataset_options)

    def model(self, spec: dict[str, Any], data: datasets.Dataset, state: State | None = None) -> torch.nn.Module:
        model = nets.build(spec, data.input_shape, data.n_classes)
        return nets.load_weights(model, state) if state is not None else model

    def store(self, like: Network, state: State, name: str, source: dict[str, Any], data: datasets.Dataset,
              **fields: Any) -> Network:
        """Store ``state`` as a new network of ``like``'s architecture and data set, with its errors."""
        model = self.model(self.spec(like.id), data, state)
        return store_state(self.session, model.state_dict(), name=name[:200], owner=self.owner, source=source,
                           architecture=like.architecture, dataset=like.dataset, dataset_options=like.dataset_options,
                           n_params=nets.n_parameters(model), **{"visibility": self.visibility, "tags": list(like.tags or []),
                                                                 "history": [], **errors(model, data), **fields})


def errors(model: torch.nn.Module, data: datasets.Dataset) -> dict[str, float]:
    train_err, train_loss = evaluate.error_and_loss(model, data.x_train, data.y_train)  # batches fit the budget
    test_err, test_loss = evaluate.error_and_loss(model, data.x_test, data.y_test)
    return dict(zip(ERROR_FIELDS, (train_err, test_err, train_loss, test_loss)))


@dataclass(frozen=True)
class Runner:
    piece: Callable[[Context, dict[str, Any], Any], Any]  # one piece of the job -> its output
    finish: Callable[[Context, dict[str, Any], Any], dict[str, Any]] = lambda ctx, p, joined: joined


# ---- the runners ------------------------------------------------------------------------------------

def train_piece(ctx: Context, p: dict[str, Any], _piece) -> dict[str, Any]:
    data = load_data(p["dataset"], p["dataset_options"])
    options = kinds.train_options(p)
    # initial weights from init_seed, or from seed and the sampler (train.initial_seed); recorded in the source
    model = train.initial_model(p["architecture"], data, p["optimizer"], options)
    options["init_seed"] = train.initial_seed(p["optimizer"], options)
    ctx.progress(0.0, f"training {p['name']} with {p['optimizer']}")
    history = train.train(model, data, p["optimizer"], progress=ctx.progress.sub(0.0, 0.97), **options)
    measured = errors(model, data)
    reached = train.outcome(model, history, p["optimizer"], options, measured["train_error"])
    net = store_state(ctx.session, model.state_dict(), name=p["name"], owner=ctx.owner, visibility=p["visibility"],
                      architecture=p["architecture"], dataset=p["dataset"], dataset_options=p["dataset_options"],
                      source={"kind": "trained", "optimizer": p["optimizer"], "params": options, "job_id": ctx.job_id,
                              "data": data.info, "pretraining": train.pretraining(history), **reached},
                      tags=p["tags"], history=history, n_params=nets.n_parameters(model), **measured)
    return {"network_id": net.id, "train_error": measured["train_error"], "test_error": measured["test_error"],
            **reached, "history": history}


def evaluate_piece(ctx: Context, p: dict[str, Any], _piece) -> dict[str, Any]:
    net, data = ctx.network(p["network"]), ctx.data(p["network"])
    model = ctx.model(ctx.spec(net.id), data, ctx.state(net.id))
    ctx.progress(0.1, "evaluating")
    result = {"network_id": net.id, **errors(model, data)}
    fill_errors(ctx.session, net.id, result)
    return result


def path_piece(ctx: Context, p: dict[str, Any], ts: list[float]) -> dict[str, Any]:
    net_a, net_b, data = ctx.network(p["a"]), ctx.network(p["b"]), ctx.data(p["a"])
    a, b = ctx.state(p["a"]), ctx.state(p["b"])
    if p["type"] != "bend":
        hamming = {k: p[k] for k in ("orders", "seed") if k in p}  # (only Hamming paths have them)
        return paths.path_result(ctx.spec(p["a"]), data, a, b, type=p["type"], points=p["points"], bn=p["bn"],
                                 progress=ctx.progress, ts=ts, with_distances=ts[0] == 0.0, **hamming)
    result, midpoint = bend.bend_result(ctx.spec(p["a"]), data, a, b, points=p["points"], variant=p["variant"],
                                        epochs=p["epochs"], lr=p["lr"], seed=p["seed"], bn=p["bn"], progress=ctx.progress)
    mid = ctx.store(net_a, midpoint, f"bend of {net_a.name} and {net_b.name}",
                    {"kind": "bend", "from": [net_a.id, net_b.id], "variant": p["variant"], "job_id": ctx.job_id,
                     "params": {"epochs": p["epochs"], "lr": p["lr"], "seed": p["seed"]}}, data,
                    tags=["bend"])  # its own provenance and tags, not A's ("demo", "sgd"): no sampler's network
    return {**result, "midpoint_network_id": mid.id}


def flatness_piece(ctx: Context, p: dict[str, Any], sigmas: list[float]) -> dict[str, Any]:
    net = ctx.network(p["network"])
    result = flatness.flatness_result(ctx.spec(net.id), ctx.data(net.id), ctx.state(net.id), sigmas=sigmas,
                                      draws=p["draws"], seed=p["seed"], params=p["params"], progress=ctx.progress)
    return {"network_id": net.id, **result}


def hessian_piece(ctx: Context, p: dict[str, Any], _piece) -> dict[str, Any]:
    net = ctx.network(p["network"])
    result = hessian.hessian_result(ctx.spec(net.id), ctx.data(net.id), ctx.state(net.id), k=p["k"],
                                    iterations=p["iterations"], probes=p["probes"], samples=p["samples"],
                                    seed=p["seed"], progress=ctx.progress)
    return {"network_id": net.id, **result}


def plane_piece(ctx: Context, p: dict[str, Any], _piece) -> dict[str, Any]:
    first = ctx.network(p["networks"][0])
    result = plane.plane_result(ctx.spec(first.id), ctx.data(first.id), [ctx.state(i) for i in p["networks"]],
                                grid=p["grid"], mode=p["mode"], margin=p["margin"], bn=p["bn"], progress=ctx.progress)
    return {"networks": p["networks"], **result}


def slice_piece(ctx: Context, p: dict[str, Any], _piece) -> dict[str, Any]:
    net = ctx.network(p["network"])
    result = slices.slice_result(ctx.spec(net.id), ctx.data(net.id), ctx.state(net.id), dims=p["dims"],
                                 points=p["points"], span=p["span"], mode=p["mode"], seed=p["seed"], bn=p["bn"],
                                 progress=ctx.progress)
    return {"network_id": net.id, **result}


def canonicalize_piece(ctx: Context, p: dict[str, Any], _piece) -> dict[str, Any]:
    net = ctx.network(p["network"])
    ctx.progress(0.2, "normalising units")
    canon = symmetry.canonical_form(ctx.spec(net.id), ctx.state(net.id))
    out = ctx.store(net, canon, f"{net.name} (canonical)", {"kind": "canonicalize", "from": net.id, "job_id": ctx.job_id},
                    ctx.data(net.id))
    return {"network_id": out.id, "from": net.id, "train_error": out.train_error, "test_error": out.test_error}


def distance_piece(ctx: Context, p: dict[str, Any], _piece) -> dict[str, Any]:
    spec = ctx.spec(p["a"])
    ctx.progress(0.1, "aligning and measuring")
    return paths.distances(spec, ctx.state(p["a"]), ctx.state(p["b"]))


def matrix_piece(ctx: Context, p: dict[str, Any], pairs: list) -> list:
    """Distances (and the geodesic or Hamming barrier) of some pairs of a matrix job."""
    ids = p["networks"]
    spec, data = ctx.spec(ids[0]), ctx.data(ids[0])
    done = []
    for k, (i, j) in enumerate(pairs):
        step = ctx.progress.sub(k / len(pairs), 1 / len(pairs))
        step(0.0, f"pair {k + 1} of {len(pairs)}: networks {ids[i]} and {ids[j]}")
        a, b = ctx.state(ids[i]), ctx.state(ids[j])
        d = paths.distances(spec, a, b)
        out: dict[str, Any] = {"distances": {key: v for key, v in d.items()
                                             if (isinstance(v, (int, float)) or v is None) and key != "n_parameters"}}
        if p["barriers"]:
            kind = nets.variant(spec, "barrier")
            out["barrier"] = paths.path_result(spec, data, a, b, type=kind, points=p["points"], bn=p["bn"],
                                               progress=step.sub(0.1, 0.9), with_distances=False)["barrier"]
        done.append((i, j, out))
    return done


def matrix_finish(ctx: Context, p: dict[str, Any], joined: dict[str, Any]) -> dict[str, Any]:
    ids = p["networks"]
    n, rows = len(ids), [ctx.network(i) for i in ids]
    pairs = joined["pairs"]
    keys = list(pairs[0][2]["distances"]) if pairs else []
    matrices = {key: [[0.0] * n for _ in range(n)] for key in keys}
    barriers = [[0.0] * n for _ in range(n)] if p["barriers"] else None
    for i, j, out in pairs:
        for key in keys:
            matrices[key][i][j] = matrices[key][j][i] = out["distances"].get(key)
        if barriers is not None:
            barriers[i][j] = barriers[j][i] = out["barrier"]
    return {"networks": ids, "names": [x.name for x in rows], "distances": matrices, "barriers": barriers,
            "train_error": [x.train_error for x in rows], "test_error": [x.test_error for x in rows],
            "optimizer": [(x.source or {}).get("optimizer") for x in rows], "chunks": joined["chunks"]}


RUNNERS: dict[str, Runner] = {
    "train": Runner(train_piece),
    "evaluate": Runner(evaluate_piece),
    "path": Runner(path_piece),
    "flatness": Runner(flatness_piece),
    "hessian": Runner(hessian_piece),
    "plane": Runner(plane_piece),
    "slice": Runner(slice_piece),
    "canonicalize": Runner(canonicalize_piece),
    "distance": Runner(distance_piece),
    "matrix": Runner(matrix_piece, matrix_finish),
}
