"""One Celery task per job kind: load the inputs, call the science, store the result, report progress.

The database is the truth. A task claims its job (queued -> running), reports progress into the job
row (and learns there that it was cancelled), and writes its result and the job's final state in one
transaction, only if the job is still running: a job delivered twice, or cancelled, is never
finished twice.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from functools import lru_cache
from typing import Any, Callable

import torch
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from sqlalchemy import update
from sqlalchemy.orm import Session

from backend import store
from backend.config import get_settings
from backend.db import new_session
from backend.models import Job, Network, Result, utcnow
from workers.app import celery_app
from workers.landscape import data as datasets
from workers.landscape import evaluate, nets, paths, symmetry, train

log = logging.getLogger("toroid.tasks")


@worker_process_init.connect
def _limit_threads(**_kwargs) -> None:
    """Small CPU jobs run faster on fewer threads when processes share the cores (TOROID_TORCH_THREADS)."""
    threads = get_settings().torch_threads
    if threads > 0:
        torch.set_num_threads(threads)


class JobCancelled(Exception):
    pass


class Reporter:
    """progress(fraction, message): writes to the job row at most every ``interval`` seconds and
    raises JobCancelled once the job was cancelled (or handed to another attempt)."""

    def __init__(self, job_id: int, attempt: int, start: float = 0.0, span: float = 1.0, interval: float = 0.5):
        self.job_id, self.attempt, self.start, self.span, self.interval = job_id, attempt, start, span, interval
        self._last = 0.0

    def sub(self, start: float, span: float) -> "Reporter":
        """A reporter for a sub-task occupying [start, start + span] of this one's range."""
        return Reporter(self.job_id, self.attempt, self.start + start * self.span, span * self.span, self.interval)

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and fraction < 1.0:
            return
        self._last = now
        value = min(max(self.start + fraction * self.span, 0.0), 1.0)
        with new_session() as s:
            res = s.execute(update(Job).where(*_mine(self.job_id, self.attempt))
                            .values(progress=value, message=message[:500], heartbeat_at=utcnow()))
            s.commit()
            if res.rowcount == 0:
                raise JobCancelled()


def _mine(job_id: int, attempt: int):
    """SQL conditions: the job is still running as this attempt (not cancelled, not handed over)."""
    return Job.id == job_id, Job.status == "running", Job.attempts == attempt


class Heartbeat(threading.Thread):
    """Tells the database every few seconds that this attempt's worker is alive, even in long steps
    without progress reports; the reconciler re-queues jobs whose heartbeat stops."""

    def __init__(self, job_id: int, attempt: int, every: float):
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id, self.attempt, self.every = job_id, attempt, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with new_session() as s:
                    s.execute(update(Job).where(*_mine(self.job_id, self.attempt)).values(heartbeat_at=utcnow()))
                    s.commit()
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)


@lru_cache(maxsize=4)
def _dataset(name: str, options_json: str) -> datasets.Dataset:
    return datasets.load_dataset(name, json.loads(options_json))


def load_data(name: str, options: dict[str, Any]) -> datasets.Dataset:
    return _dataset(name, json.dumps(options, sort_keys=True))


def load_network(session: Session, network_id: int) -> tuple[Network, torch.nn.Module, dict[str, torch.Tensor], datasets.Dataset]:
    net = session.get(Network, network_id)
    if net is None:
        raise ValueError(f"network {network_id} no longer exists")
    data = load_data(net.dataset, net.dataset_options)
    model = nets.build(net.architecture, data.input_shape, data.n_classes)
    try:
        state = store.get(net.weights_hash)
    except FileNotFoundError:
        raise ValueError(f"the weights of network {net.id} are missing from the weight store "
                         f"({net.weights_hash}); restore the store from a backup or delete the network") from None
    nets.load_weights(model, state)
    # a copy: the model is reused to evaluate other points, which overwrites its own tensors
    return net, model, {k: v.detach().clone() for k, v in model.state_dict().items()}, data


# ---- runners: (session, job, progress) -> JSON result ---------------------------------------

def run_train(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    p = dict(job.params)
    data = load_data(p["dataset"], p["dataset_options"])
    opt_params = {k: v for k, v in p.items()
                  if k not in ("architecture", "dataset", "dataset_options", "optimizer", "name", "tags", "visibility")}
    # initial weights from init_seed, or from seed and the sampler (train.initial_seed); recorded in the source
    model = train.initial_model(p["architecture"], data, p["optimizer"], opt_params)
    opt_params["init_seed"] = train.initial_seed(p["optimizer"], opt_params)
    progress(0.0, f"training {p['name']} with {p['optimizer']}")
    history = train.train(model, data, p["optimizer"], progress=progress.sub(0.0, 0.97), **opt_params)
    train_err, train_loss = evaluate.error_and_loss(model, data.x_train, data.y_train)
    test_err, test_loss = evaluate.error_and_loss(model, data.x_test, data.y_test)
    h, size = store.put(model.state_dict())
    net = Network(name=p["name"], owner=job.owner, visibility=p.get("visibility", "lab"), weights_bytes=size,
                  architecture=p["architecture"], dataset=p["dataset"],
                  dataset_options=p["dataset_options"],
                  source={"kind": "trained", "optimizer": p["optimizer"], "params": opt_params, "job_id": job.id,
                          "data": data.info, "pretraining": train.pretraining(history)},
                  tags=p.get("tags", []), train_error=train_err, test_error=test_err, train_loss=train_loss,
                  test_loss=test_loss, history=history, weights_hash=h, n_params=nets.n_parameters(model))
    session.add(net)
    session.flush()
    return {"network_id": net.id, "train_error": train_err, "test_error": test_err, "history": history}


def run_evaluate(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    net, model, _, data = load_network(session, job.params["network"])
    progress(0.1, "evaluating")
    train_err, train_loss = evaluate.error_and_loss(model, data.x_train, data.y_train)
    test_err, test_loss = evaluate.error_and_loss(model, data.x_test, data.y_test)
    net.train_error, net.train_loss, net.test_error, net.test_loss = train_err, train_loss, test_err, test_loss
    return {"network_id": net.id, "train_error": train_err, "test_error": test_err,
            "train_loss": train_loss, "test_loss": test_loss}


SPLITTABLE_PATHS = ("linear", "linear_aligned", "geodesic")


def path_pieces(session: Session, params: dict[str, Any]) -> list[list[float]]:
    """The positions of a long linear, linear-aligned or geodesic path in chunks of
    TOROID_FANOUT_PATH_POINTS (a bend or Hamming path is one piece)."""
    ts = paths.positions(params["points"])
    if params["type"] not in SPLITTABLE_PATHS:
        return [ts]
    per_chunk = max(get_settings().fanout_path_points, 2)
    return [ts[k : k + per_chunk] for k in range(0, len(ts), per_chunk)]


def path_piece(session: Session, params: dict[str, Any], ts: list[float], progress) -> dict[str, Any]:
    net_a, _, state_a, data = load_network(session, params["a"])
    _, _, state_b, _ = load_network(session, params["b"])
    return paths.path_result(net_a.architecture, data, state_a, state_b, type=params["type"],
                             points=params["points"], bn=params.get("bn", "recompute"), progress=progress, ts=ts)


def path_assemble(session: Session, params: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(outputs[0])
    for key in ("t", "train_error", "test_error", "train_loss", "test_loss"):
        out[key] = [v for o in outputs for v in o[key]]
    out["barrier"] = max(out["train_error"])
    out["barrier_excess"] = out["barrier"] - (out["train_error"][0] + out["train_error"][-1]) / 2
    out["chunks"] = len(outputs)
    return out


def run_path(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    fan_out(session, job, progress)
    p = job.params
    net_a, _, state_a, data = load_network(session, p["a"])
    net_b, _, state_b, _ = load_network(session, p["b"])
    if p["type"] == "bend":
        options = {k: p[k] for k in ("epochs", "lr") if k in p}
        result, midpoint = paths.bend_result(net_a.architecture, data, state_a, state_b, points=p["points"],
                                             variant=p["variant"], seed=p["seed"], bn=p["bn"], progress=progress,
                                             **options)
        mid = store_network(session, job, net_a, midpoint, f"bend of {net_a.name} and {net_b.name}",
                            {"kind": "bend", "from": [net_a.id, net_b.id], "variant": p["variant"], "job_id": job.id},
                            data)
        return {**result, "midpoint_network_id": mid.id}
    return paths.path_result(net_a.architecture, data, state_a, state_b, type=p["type"], points=p["points"],
                             bn=p.get("bn", "recompute"), orders=p.get("orders", 5), seed=p.get("seed", 0),
                             progress=progress)


def store_network(session: Session, job: Job, like: Network, state: dict[str, torch.Tensor], name: str,
                  source: dict[str, Any], data: datasets.Dataset) -> Network:
    """Store ``state`` as a new network of ``like``'s architecture and data set, with its errors."""
    model = nets.build(like.architecture, data.input_shape, data.n_classes)
    nets.load_weights(model, state)
    train_err, train_loss = evaluate.error_and_loss(model, data.x_train, data.y_train)
    test_err, test_loss = evaluate.error_and_loss(model, data.x_test, data.y_test)
    h, size = store.put(model.state_dict())
    net = Network(name=name[:200], owner=job.owner, visibility=job.visibility, architecture=like.architecture,
                  dataset=like.dataset, dataset_options=like.dataset_options, source=source, tags=list(like.tags or []),
                  train_error=train_err, test_error=test_err, train_loss=train_loss, test_loss=test_loss, history=[],
                  weights_hash=h, weights_bytes=size, n_params=nets.n_parameters(model))
    session.add(net)
    session.flush()
    return net


def flatness_pieces(session: Session, params: dict[str, Any]) -> list[list[float]]:
    """The noise levels of a flatness job in chunks of at most TOROID_FANOUT_POINTS evaluated points.
    Each draw's noise is the same whatever levels a chunk holds, so chunks give the unsplit result."""
    from workers.landscape import flatness

    net = session.get(Network, params["network"])
    kind = "flip" if nets.is_binary(net.architecture) else "multiplicative"
    sigmas = params.get("sigmas") or flatness.default_sigmas(net.architecture)
    draws = params.get("draws") or flatness.DEFAULT_DRAWS[kind]
    per_chunk = max(get_settings().fanout_points // max(draws, 1), 1)
    return [sigmas[k : k + per_chunk] for k in range(0, len(sigmas), per_chunk)]


def flatness_piece(session: Session, params: dict[str, Any], sigmas: list[float] | None, progress) -> dict[str, Any]:
    from workers.landscape import flatness

    net, _, state, data = load_network(session, params["network"])
    result = flatness.flatness_result(net.architecture, data, state, sigmas=sigmas, draws=params.get("draws"),
                                      seed=params["seed"], params=params["params"], progress=progress)
    return {"network_id": net.id, **result}


def flatness_assemble(session: Session, params: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(outputs[0])
    for key in ("sigma", "delta_mean", "delta_std", "delta_sem"):
        out[key] = [v for o in outputs for v in o[key]]
    out["chunks"] = len(outputs)
    return out


def run_flatness(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    fan_out(session, job, progress)
    result = flatness_piece(session, job.params, job.params.get("sigmas"), progress)
    return {**result, "chunks": 1}


def run_plane(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    from workers.landscape import plane

    p = job.params
    loaded = [load_network(session, i) for i in p["networks"]]
    result = plane.plane_result(loaded[0][0].architecture, loaded[0][3], [x[2] for x in loaded], grid=p["grid"],
                                mode=p["mode"], margin=p["margin"], bn=p["bn"], progress=progress)
    return {"networks": p["networks"], **result}


def run_canonicalize(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    net, _, state, data = load_network(session, job.params["network"])
    progress(0.2, "normalising units")
    canon = symmetry.canonical_form(net.architecture, state)
    out = store_network(session, job, net, canon, f"{net.name} (canonical)",
                        {"kind": "canonicalize", "from": net.id, "job_id": job.id}, data)
    return {"network_id": out.id, "from": net.id, "train_error": out.train_error, "test_error": out.test_error}


def run_distance(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    net_a, _, state_a, _ = load_network(session, job.params["a"])
    _, _, state_b, _ = load_network(session, job.params["b"])
    progress(0.1, "aligning and measuring")
    return paths.distances(net_a.architecture, state_a, state_b)


def matrix_pair(spec: dict[str, Any], data, params: dict[str, Any], state_i, state_j, progress) -> dict[str, Any]:
    """Distances (and the geodesic or Hamming barrier) of one pair of a matrix job."""
    d = paths.distances(spec, state_i, state_j)
    out = {"distances": {k: v for k, v in d.items() if (isinstance(v, (int, float)) or v is None) and k != "n_parameters"}}
    if params["barriers"]:
        kind = "hamming" if nets.is_binary(spec) else "geodesic"
        r = paths.path_result(spec, data, state_i, state_j, type=kind, points=params["points"], bn=params["bn"],
                              progress=progress)
        out["barrier"] = r["barrier"]
    return out


def matrix_assemble(session: Session, ids: list[int], params: dict[str, Any],
                    pairs: list[tuple[int, int, dict[str, Any]]], chunks: int = 1) -> dict[str, Any]:
    n = len(ids)
    nets_ = [session.get(Network, i) for i in ids]
    keys = list(pairs[0][2]["distances"]) if pairs else []
    matrices = {key: [[0.0] * n for _ in range(n)] for key in keys}
    barriers = [[0.0] * n for _ in range(n)] if params["barriers"] else None
    for i, j, out in pairs:
        for key in keys:
            matrices[key][i][j] = matrices[key][j][i] = out["distances"].get(key)
        if barriers is not None:
            barriers[i][j] = barriers[j][i] = out["barrier"]
    return {"networks": ids, "names": [x.name for x in nets_], "distances": matrices, "barriers": barriers,
            "train_error": [x.train_error for x in nets_], "test_error": [x.test_error for x in nets_],
            "optimizer": [(x.source or {}).get("optimizer") for x in nets_], "chunks": chunks}


def matrix_pieces(session: Session, params: dict[str, Any]) -> list[list[tuple[int, int]]]:
    """The pairs of a matrix job in chunks of TOROID_FANOUT_PAIRS."""
    n = len(params["networks"])
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    per_chunk = max(get_settings().fanout_pairs, 1)
    return [pairs[k : k + per_chunk] for k in range(0, len(pairs), per_chunk)]


def matrix_piece(session: Session, params: dict[str, Any], pairs: list, progress) -> list:
    ids = params["networks"]
    needed = sorted({i for pair in pairs for i in pair})
    loaded = {i: load_network(session, ids[i]) for i in needed}
    spec, data = loaded[needed[0]][0].architecture, loaded[needed[0]][3]
    done = []
    for k, (i, j) in enumerate(pairs):
        step = progress.sub(k / len(pairs), 1 / len(pairs))
        step(0.0, f"pair {k + 1} of {len(pairs)}: networks {ids[i]} and {ids[j]}")
        done.append((i, j, matrix_pair(spec, data, params, loaded[i][2], loaded[j][2], step.sub(0.1, 0.9))))
    return done


def run_matrix(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    fan_out(session, job, progress)
    (pairs,) = matrix_pieces(session, job.params) or [[]]
    return matrix_assemble(session, job.params["networks"], job.params, matrix_piece(session, job.params, pairs, progress))


RUNNERS: dict[str, Callable[[Session, Job, Reporter], dict[str, Any]]] = {
    "train": run_train,
    "evaluate": run_evaluate,
    "path": run_path,
    "canonicalize": run_canonicalize,
    "distance": run_distance,
    "matrix": run_matrix,
    "flatness": run_flatness,
    "plane": run_plane,
}


# ---- the task wrapper -------------------------------------------------------------------------

def _claim(job_id: int) -> int | None:
    """queued -> running, atomically; returns this attempt's number, or None when another worker has
    the job or it has ended (a duplicate or late message is then simply dropped)."""
    with new_session() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                        .values(status="running", started_at=utcnow(), heartbeat_at=utcnow(),
                                attempts=Job.attempts + 1, message="started", progress=0.0))
        s.commit()
        if res.rowcount != 1:
            return None
        return s.get(Job, job_id).attempts


def _fail(job_id: int, attempt: int, error: str) -> None:
    with new_session() as s:
        s.execute(update(Job).where(*_mine(job_id, attempt))
                  .values(status="failed", error=error[:4000], message="failed", finished_at=utcnow()))
        s.commit()


def execute(job_id: int) -> str:
    """Run job ``job_id`` once; returns its final status (or 'skipped')."""
    attempt = _claim(job_id)
    if attempt is None:
        log.info("job %s is not queued (taken, cancelled or ended); message dropped", job_id)
        return "skipped"
    settings = get_settings()
    heartbeat = Heartbeat(job_id, attempt, every=max(min(settings.heartbeat_timeout / 4, 10.0), 0.5))
    heartbeat.start()
    progress = Reporter(job_id, attempt)
    session = new_session()
    try:
        job = session.get(Job, job_id)
        result = RUNNERS[job.kind](session, job, progress)
        # result, new rows and the final state in one transaction, only if this attempt still owns the job
        return "succeeded" if _finish(session, job_id, attempt, result, job.kind) else "cancelled"
    except JobCancelled:
        session.rollback()
        return "cancelled"
    except FannedOut:
        session.rollback()
        return "fanned out"
    except SoftTimeLimitExceeded:
        session.rollback()
        _fail(job_id, attempt, f"the job ran past its time limit of {settings.job_time_limit} s and was stopped")
        return "failed"
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        session.rollback()
        log.warning("job %s failed: %s", job_id, exc)
        _fail(job_id, attempt, f"{type(exc).__name__}: {exc}")
        return "failed"
    except Exception as exc:  # noqa: BLE001 - a job must end in a final state whatever happens
        session.rollback()
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        _fail(job_id, attempt, f"internal error ({type(exc).__name__}: {exc}); see the worker log")
        return "failed"
    finally:
        heartbeat.stopped.set()
        session.close()


def _register(kind: str) -> None:
    @celery_app.task(name=f"toroid.{kind}", acks_late=True, reject_on_worker_lost=True)
    def _task(job_id: int) -> str:
        return execute(job_id)


for _kind in RUNNERS:
    _register(_kind)


# ---- fan-out: chunks of a big job on several workers, reassembled by a chord --------------------

def _finish(session: Session, job_id: int, attempt: int, result: dict[str, Any], kind: str) -> bool:
    row = Result(kind=kind, data=result)
    session.add(row)
    session.flush()
    res = session.execute(update(Job).where(*_mine(job_id, attempt))
                          .values(status="succeeded", progress=1.0, message="done", result_id=row.id,
                                  finished_at=utcnow()))
    if res.rowcount != 1:
        session.rollback()
        return False
    session.commit()
    return True


class FannedOut(Exception):
    """Raised by a runner that handed its work to a Celery chord; the chord's body finishes the job."""


class NullProgress:
    """Progress of one chunk: the chord reports per finished chunk instead."""

    def __call__(self, fraction: float, message: str) -> None:
        pass

    def sub(self, start: float, span: float) -> "NullProgress":
        return self


# kind -> (split params into pieces, compute one piece, assemble the pieces' outputs into the result)
FANOUT: dict[str, tuple[Callable, Callable, Callable]] = {
    "matrix": (matrix_pieces, matrix_piece,
               lambda session, params, outputs: matrix_assemble(session, params["networks"], params,
                                                                [tuple(x) for o in outputs for x in o],
                                                                chunks=len(outputs))),
    "flatness": (flatness_pieces, flatness_piece, flatness_assemble),
    "path": (path_pieces, path_piece, path_assemble),
}


def fan_out(session: Session, job: Job, progress: Reporter) -> None:
    """If the job splits into several pieces, hand them to a Celery chord (pieces on any worker of the
    job's queue, reassembled by ``toroid.assemble``) and raise FannedOut; else return."""
    from celery import chord

    pieces = FANOUT[job.kind][0](session, job.params)
    if len(pieces) < 2:
        return
    session.execute(update(Job).where(*_mine(job.id, progress.attempt))
                    .values(fanout=len(pieces), message=f"fanned out in {len(pieces)} chunks"))
    session.commit()
    header = [chunk_task.si(job.id, progress.attempt, piece, len(pieces)).set(queue=job.queue) for piece in pieces]
    chord(header)(assemble_task.s(job.id, progress.attempt).set(queue=job.queue))
    raise FannedOut()


@celery_app.task(name="toroid.chunk", acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def chunk_task(job_id: int, attempt: int, piece: Any, n_chunks: int) -> Any:
    """One piece of a fanned-out job. Returns its output, or None when the job was cancelled or handed
    to another attempt (the chord body then does nothing)."""
    with new_session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != "running" or job.attempts != attempt:
            return None
        kind, params = job.kind, dict(job.params)
    heartbeat = Heartbeat(job_id, attempt, every=max(min(get_settings().heartbeat_timeout / 4, 10.0), 0.5))
    heartbeat.start()
    session = new_session()
    try:
        out = FANOUT[kind][1](session, params, piece, NullProgress())
        with new_session() as s:  # one more chunk done
            res = s.execute(update(Job).where(*_mine(job_id, attempt))
                            .values(progress=Job.progress + 0.99 / n_chunks, heartbeat_at=utcnow(),
                                    message=f"{n_chunks} chunks: one more done"))
            s.commit()
        return out if res.rowcount == 1 else None
    except Exception as exc:  # noqa: BLE001 - the job fails with the reason; the chord body never runs
        log.error("chunk of job %s failed:\n%s", job_id, traceback.format_exc())
        _fail(job_id, attempt, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        heartbeat.stopped.set()
        session.close()


@celery_app.task(name="toroid.assemble", acks_late=True, reject_on_worker_lost=True)
def assemble_task(outputs: list, job_id: int, attempt: int) -> str:
    if any(o is None for o in outputs):
        return "skipped"
    session = new_session()
    try:
        job = session.get(Job, job_id)
        if job is None or job.status != "running" or job.attempts != attempt:
            return "skipped"
        result = FANOUT[job.kind][2](session, job.params, outputs)
        return "succeeded" if _finish(session, job_id, attempt, result, job.kind) else "cancelled"
    except Exception as exc:  # noqa: BLE001
        session.rollback()
        log.error("assembling job %s failed:\n%s", job_id, traceback.format_exc())
        _fail(job_id, attempt, f"internal error while assembling ({type(exc).__name__}: {exc})")
        return "failed"
    finally:
        session.close()
