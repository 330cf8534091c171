"""Job submission: validate (workers/landscape/kinds.py), compute the cache key, answer from the cache,
attach to an equal unfinished job, or create the job and enqueue it. A request never computes a landscape.

Order: every check that needs no database first (the kind's table, the inputs' types and lengths), then
the networks in one query, then the checks that need them and the cost estimate; the quota check and the
insert are one atomic step (db.locked). A cache hit is answered before that step, holding no lock.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from workers.landscape import SCIENCE_VERSION, data, kinds, nets

from . import lifecycle, visibility
from .auth import Principal, local_principal
from .config import get_settings
from .db import committing, locked
from .errors import Conflict, DomainError, Forbidden, NotFound
from .lifecycle import enqueue, reconcile  # noqa: F401  (the names the service and tools use)
from .models import Job, Network, Result, utcnow
from .networks import fill_errors


class JobError(DomainError):
    """Parameters a job cannot run with, or a quota it would pass; ``status`` is the HTTP status to answer
    (400; 404 for a network that does not exist; 429 at the limit of unfinished jobs)."""


def pinned(session: Session, obj):
    """Keep ``obj`` alive as long as the session: the session's identity map holds objects only weakly,
    and a submission looks its networks and result up several times (one query each, not several)."""
    if obj is not None:
        session.info.setdefault("pinned", []).append(obj)
    return obj


def _networks(session: Session, ids: dict[str, list[int]], user: Principal) -> dict[int, Network]:
    """The job's networks in one query; 404 naming the first one that is missing or not readable."""
    wanted = sorted({i for group in ids.values() for i in group})
    found = {n.id: pinned(session, n) for n in session.scalars(select(Network).where(Network.id.in_(wanted)))} \
        if wanted else {}
    hidden = visibility.hidden_by_sources(session.connection(), user, wanted) if found else set()
    for role, group in ids.items():
        for i in group:
            if i not in found or not user.can_read(found[i]) or i in hidden:
                raise JobError(f"network {i} ('{role}') does not exist", status=404)
    return found


def _facts(net: Network) -> kinds.NetworkFacts:
    return kinds.NetworkFacts(net.id, net.architecture, net.dataset, net.dataset_options or {}, net.n_params or 0)


def limits() -> kinds.Limits:
    settings = get_settings()
    return kinds.Limits(data_root=settings.dataset_root, max_parameters=settings.max_parameters,
                        max_cost=settings.max_job_cost, max_activation_bytes=settings.max_activation_bytes,
                        worker_memory=settings.worker_memory or None)


def validate(session: Session, kind: str, params: Any, user: Principal) -> tuple[kinds.Submission, dict[int, Network]]:
    try:
        kind_, normal, ids = kinds.shape(kind, params)
        rows = _networks(session, ids, user)
        sub = kinds.complete(kind_, normal, {k: [_facts(rows[i]) for i in v] for k, v in ids.items()}, limits())
    except kinds.KindError as exc:
        raise JobError(str(exc), exc.status) from None
    return sub, rows


def heavy(kind: str) -> bool:
    """Whether validating a job of ``kind`` takes an architecture of its own (a train job): a layer graph's
    trace and sizes, work for ``precheck`` off the API's threads."""
    k = kinds.KINDS.get(kind)
    return k is not None and "architecture" in k.params


def architecture_of(params: Any) -> tuple[Any, tuple[int, ...] | None, int | None] | None:
    """A job's own architecture and its data set's input shape and classes (None where they cannot be told
    cheaply: ``submit`` then says what is wrong), for the heavy check (backend/checks.py)."""
    if not isinstance(params, dict) or "architecture" not in params:
        return None
    try:
        dataset = params.get("dataset", "digits")
        shape, n_classes = data.shape_of(dataset, data.normalize_options(dataset, params.get("dataset_options")))
        return params["architecture"], tuple(shape), n_classes
    except Exception:  # noqa: BLE001 - submit's own checks name it
        return params["architecture"], None, None


def precheck(kind: str, params: Any) -> None:
    """The rest of validating a job that needs no database, ahead of ``submit`` and off the API's threads
    (backend/checks.py): what it works out is remembered per process (nets.normalize_spec,
    nets.spec_size), so that ``submit`` finds it done. Raises JobError as ``submit`` would; a problem it
    cannot name is left for ``submit`` to say."""
    try:
        _kind, normal, _ids = kinds.shape(kind, params)
    except kinds.KindError as exc:
        raise JobError(str(exc), exc.status) from None
    if isinstance(normal.get("architecture"), dict):
        try:
            nets.spec_size(normal["architecture"], *data.shape_of(normal["dataset"], normal["dataset_options"]))
            kinds.train_profile(normal)  # its FLOPs and activation bytes (a meta pass), cached per process
        except Exception:  # noqa: BLE001 - submit's own checks name it
            pass


# ---- cache key ------------------------------------------------------------------------------

def cache_key(kind: kinds.Kind, params: dict[str, Any], rows: dict[int, Network]) -> str:
    """Hash of kind + normalised params (network ids replaced by their content) + science version."""
    def describe(i: int) -> dict[str, Any]:
        net = rows[i]
        return {"weights": net.weights_hash, "architecture": net.architecture, "dataset": net.dataset,
                "dataset_options": net.dataset_options}

    material = {key: ([describe(v) for v in value] if isinstance(value, list) else describe(value))
                if key in kind.inputs else value for key, value in params.items()}
    blob = json.dumps({"kind": kind.name, "params": material, "version": SCIENCE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _readable(user: Principal):
    return None if user.is_admin else or_(Job.visibility == "lab", Job.owner == user.name)


def _cached_result(session: Session, kind: str, key: str, user: Principal) -> Job | None:
    """The newest finished job with this key that ``user`` may read, while every network its result names
    (a train's network, a bend's midpoint, ...) still exists and is readable (backend/visibility.py)."""
    stmt = select(Job, Result).join(Result, Result.id == Job.result_id).where(
        Job.cache_key == key, Job.kind == kind, Job.status == "succeeded")
    if (readable := _readable(user)) is not None:
        stmt = stmt.where(readable)
    found = session.execute(stmt.order_by(Job.id.desc()).limit(1)).first()  # the job and its result: one query
    if found is None:
        return None
    done, result = pinned(session, found[0]), pinned(session, found[1])
    if not visibility.cached_result_valid(session.connection(), user, kind, result.data):
        return None
    return done


def _commit_without_waiting_for_disk(session: Session) -> None:
    """PostgreSQL: this transaction's commit does not wait for its write-ahead log to reach the disk (it
    does within a fraction of a second). Only for a cached answer's job row: a crash in that moment loses
    the row (a repeat of the request is answered from the cache again), never a result or a queued job."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def _answer_from_cache(session: Session, sub: kinds.Submission, fields: dict[str, Any], hit: Job) -> Job:
    """A finished job answered from ``hit``'s result (the caller commits)."""
    now = utcnow()
    job = Job(**fields, status="succeeded", progress=1.0, message=f"answered from the cache (same as job {hit.id})",
              cached_from=hit.id, result_id=hit.result_id, created_at=now, started_at=now, finished_at=now)
    if sub.kind.fills_errors:  # what the job does for its own input, though another computed it
        fill_errors(session, sub.params["network"], session.get(Result, hit.result_id).data)
    session.add(job)
    return job


def submit(session: Session, kind: str, params: dict[str, Any], user: Principal | None = None,
           visibility: str | None = None, check_quota: bool = True) -> Job:
    """Validate, then answer from the cache, attach to an equal unfinished job, or create the job and
    enqueue it. Commits."""
    user = user or local_principal()
    sub, rows = validate(session, kind, params, user)
    if visibility is None:  # a job on a private network is private; a train job follows its network
        private = sub.params.get("visibility") == "private" and sub.kind.name == "train" or any(
            rows[i].visibility == "private" for i in sub.inputs)
        visibility = "private" if private else "lab"
    key = cache_key(sub.kind, sub.params, rows)
    fields = dict(kind=kind, params=sub.params, inputs=sub.inputs, owner=user.name, visibility=visibility,
                  cache_key=key, queue=sub.queue, cost=sub.cost)
    # A cache hit takes no lock: it counts against no quota and queues nothing, so answering it needs
    # no order among this owner's submissions (before, every cached answer waited its turn for the
    # owner's lock, held through the insert and the commit: 50 clients of one user queued on it).
    hit = _cached_result(session, kind, key, user)
    if hit is not None:
        with committing(session):
            _commit_without_waiting_for_disk(session)
            return _answer_from_cache(session, sub, fields, hit)
    with locked(session, f"owner:{user.name}", f"key:{key}"):
        hit = _cached_result(session, kind, key, user)  # it may have finished while we waited for the lock
        if hit is not None:
            return _answer_from_cache(session, sub, fields, hit)
        if check_quota and lifecycle.unfinished(session, user.name) >= user.max_running_jobs:
            raise JobError(f"{user.name} has {user.max_running_jobs} unfinished jobs, the limit; wait for some to "
                           "end or cancel them", status=429)
        first = lifecycle.leader(session, kind, key, _readable(user))
        job = Job(**fields, status="queued", attached_to=first.id if first else None,
                  message=f"waiting for job {first.id} (the same job)" if first else "queued")
        session.add(job)
    if job.attached_to is None:
        enqueue(session, job)
    return job


def cancel(session: Session, job_id: int, user: Principal) -> None:
    """Cancel a queued or running job ``user`` may change (lifecycle.cancel); NotFound when ``user`` may not
    read it, Forbidden when it is someone else's, Conflict when it already ended."""
    job = session.get(Job, job_id)
    if job is None or not visibility.job_readable(session.connection(), user, job):
        raise NotFound(f"job {job_id} does not exist")
    if not user.can_write(job):
        raise Forbidden(f"job {job_id} belongs to {job.owner}; only its owner or an admin may cancel it")
    if not lifecycle.cancel(session, job_id):
        raise Conflict(f"job {job_id} already ended ({job.status}); nothing to cancel")


# ---- dry run --------------------------------------------------------------------------------------

THROUGHPUT_JOBS = 50  # finished jobs per queue whose median FLOPs per second estimates a new job's seconds


def throughput(session: Session, queue: str) -> float | None:
    """Median FLOPs per second of the last THROUGHPUT_JOBS jobs of ``queue`` that a worker computed (not
    answered from the cache nor attached to another); None before any."""
    rows = session.execute(
        select(Job.cost, Job.started_at, Job.finished_at)
        .where(Job.queue == queue, Job.status == "succeeded", Job.cached_from.is_(None), Job.attached_to.is_(None),
               Job.started_at.is_not(None), Job.finished_at.is_not(None), Job.cost.is_not(None))
        .order_by(Job.id.desc()).limit(THROUGHPUT_JOBS)).all()
    rates = sorted(cost / seconds for cost, start, end in rows
                   if (seconds := (end - start).total_seconds()) > 0 and cost > 0)
    if not rates:
        return None
    mid = len(rates) // 2
    return rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2


def dry_run(session: Session, kind: str, params: Any, user: Principal | None = None) -> dict[str, Any]:
    """What ``submit`` would run, without creating, caching or enqueueing anything: the normalised params, the
    queue, the cost in FLOPs, the peak memory estimate in a worker, the architecture's per-sample FLOPs and
    activation bytes, and the seconds expected on this server's workers (the cost over its queue's measured FLOPs
    per second; None while unknown)."""
    user = user or local_principal()
    sub, _rows = validate(session, kind, params, user)
    rate = throughput(session, sub.queue)
    return {"dry_run": True, "kind": sub.kind.name, "params": sub.params, "queue": sub.queue, "cost_flops": sub.cost,
            "memory_bytes": sub.memory, "per_sample": kinds.per_sample(sub), "flops_per_second": rate,
            "estimated_seconds": sub.cost / rate if rate else None}
