"""One Celery task per job kind: load the inputs, call the science, store the result, report progress.

The database is the truth. A task claims its job (queued -> running), reports progress into the job
row (and learns there that it was cancelled), and writes its result and the job's final state in one
transaction, only if the job is still running: a job delivered twice, or cancelled, is never
finished twice.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from functools import lru_cache
from typing import Any, Callable

import torch
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import update
from sqlalchemy.orm import Session

from backend import store
from backend.config import get_settings
from backend.db import new_session
from backend.models import Job, Network, Result, utcnow
from workers.app import celery_app
from workers.landscape import data as datasets
from workers.landscape import evaluate, nets, paths, train

log = logging.getLogger("toroid.tasks")


class JobCancelled(Exception):
    pass


class Reporter:
    """progress(fraction, message): writes to the job row at most every ``interval`` seconds and
    raises JobCancelled once the job has been cancelled."""

    def __init__(self, job_id: int, start: float = 0.0, span: float = 1.0, interval: float = 0.5):
        self.job_id, self.start, self.span, self.interval = job_id, start, span, interval
        self._last = 0.0

    def sub(self, start: float, span: float) -> "Reporter":
        """A reporter for a sub-task occupying [start, start + span] of this one's range."""
        return Reporter(self.job_id, self.start + start * self.span, span * self.span, self.interval)

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and fraction < 1.0:
            return
        self._last = now
        value = min(max(self.start + fraction * self.span, 0.0), 1.0)
        with new_session() as s:
            res = s.execute(update(Job).where(Job.id == self.job_id, Job.status == "running")
                            .values(progress=value, message=message[:500]))
            s.commit()
            if res.rowcount == 0:
                raise JobCancelled()


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
    return net, model, model.state_dict(), data


# ---- runners: (session, job, progress) -> JSON result ---------------------------------------

def run_train(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    p = dict(job.params)
    data = load_data(p["dataset"], p["dataset_options"])
    seed = int(p.get("seed", 0))
    torch.manual_seed(seed)
    model = nets.build(p["architecture"], data.input_shape, data.n_classes)
    opt_params = {k: v for k, v in p.items()
                  if k not in ("architecture", "dataset", "dataset_options", "optimizer", "name", "tags", "visibility")}
    progress(0.0, f"training {p['name']} with {p['optimizer']}")
    history = train.train(model, data, p["optimizer"], progress=progress.sub(0.0, 0.97), **opt_params)
    train_err, train_loss = evaluate.error_and_loss(model, data.x_train, data.y_train)
    test_err, test_loss = evaluate.error_and_loss(model, data.x_test, data.y_test)
    h, _ = store.put(model.state_dict())
    net = Network(name=p["name"], owner=job.owner, architecture=p["architecture"], dataset=p["dataset"],
                  dataset_options=p["dataset_options"],
                  source={"kind": "trained", "optimizer": p["optimizer"], "params": opt_params, "job_id": job.id,
                          "data": data.info},
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


def run_path(session: Session, job: Job, progress: Reporter) -> dict[str, Any]:
    p = job.params
    _, model, state_a, data = load_network(session, p["a"])
    _, _, state_b, _ = load_network(session, p["b"])
    ts = paths.positions(p["points"])
    curves = evaluate.evaluate_states(
        model, paths.linear_path(state_a, state_b, ts),
        {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)},
        progress=progress, total=len(ts),
    )
    train_error = curves["train"]["error"]
    barrier = max(train_error)
    return {"type": p["type"], "t": ts, "train_error": train_error, "test_error": curves["test"]["error"],
            "train_loss": curves["train"]["loss"], "test_loss": curves["test"]["loss"], "barrier": barrier,
            "barrier_excess": barrier - (train_error[0] + train_error[-1]) / 2}


RUNNERS: dict[str, Callable[[Session, Job, Reporter], dict[str, Any]]] = {
    "train": run_train,
    "evaluate": run_evaluate,
    "path": run_path,
}


# ---- the task wrapper -------------------------------------------------------------------------

def _claim(job_id: int) -> bool:
    """queued/running -> running; False when the job is gone or already final."""
    with new_session() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(("queued", "running")))
                        .values(status="running", started_at=utcnow(), attempts=Job.attempts + 1,
                                message="started", progress=0.0))
        s.commit()
        return res.rowcount == 1


def _fail(job_id: int, error: str) -> None:
    with new_session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                  .values(status="failed", error=error[:4000], message="failed", finished_at=utcnow()))
        s.commit()


def execute(job_id: int) -> str:
    """Run job ``job_id`` once; returns its final status (or 'skipped')."""
    if not _claim(job_id):
        log.info("job %s is not queued or running any more; skipped", job_id)
        return "skipped"
    progress = Reporter(job_id)
    session = new_session()
    try:
        job = session.get(Job, job_id)
        result = RUNNERS[job.kind](session, job, progress)
        row = Result(kind=job.kind, data=result)
        session.add(row)
        session.flush()
        res = session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                              .values(status="succeeded", progress=1.0, message="done", result_id=row.id,
                                      finished_at=utcnow()))
        if res.rowcount != 1:  # cancelled at the last moment: keep nothing
            session.rollback()
            return "cancelled"
        session.commit()
        return "succeeded"
    except JobCancelled:
        session.rollback()
        return "cancelled"
    except SoftTimeLimitExceeded:
        session.rollback()
        _fail(job_id, f"the job ran past its time limit of {get_settings().job_time_limit} s and was stopped")
        return "failed"
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        session.rollback()
        log.warning("job %s failed: %s", job_id, exc)
        _fail(job_id, f"{type(exc).__name__}: {exc}")
        return "failed"
    except Exception as exc:  # noqa: BLE001 - a job must end in a final state whatever happens
        session.rollback()
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        _fail(job_id, f"internal error ({type(exc).__name__}: {exc}); see the worker log")
        return "failed"
    finally:
        session.close()


def _register(kind: str) -> None:
    @celery_app.task(name=f"toroid.{kind}", acks_late=True, reject_on_worker_lost=True)
    def _task(job_id: int) -> str:
        return execute(job_id)


for _kind in RUNNERS:
    _register(_kind)
