"""Job submission: validate a job's parameters, compute its cache key, answer from cache or enqueue.

Each job kind has a validator here (what the API accepts) and a runner in workers/tasks.py (what a
worker computes). A request never computes a landscape: it validates, enqueues and answers.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from workers.landscape import SCIENCE_VERSION, data, nets, paths, train

from .auth import Principal, local_principal
from .models import Job, Network, Result, utcnow


class JobError(ValueError):
    """Parameters a job cannot run with; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# Keys of a job's params that hold network ids; in the cache key they are replaced by content.
NETWORK_KEYS = ("a", "b", "network", "networks")


def _int(params: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise JobError(f"'{key}' must be an integer between {lo} and {hi}, got {value!r}")
    return value


def _unknown(params: dict[str, Any], allowed: set[str], kind: str) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise JobError(f"unknown parameter(s) {extra} for a {kind} job; allowed: {sorted(allowed)}")


def pinned(session: Session, obj):
    """Keep ``obj`` alive as long as the session: the session's identity map holds objects only weakly,
    and a submission looks its networks and result up several times (one query each, not several)."""
    if obj is not None:
        session.info.setdefault("pinned", []).append(obj)
    return obj


def _prefetch_networks(session: Session, params: dict[str, Any]) -> None:
    """Load every network a job names in one query (a matrix job may name hundreds); the validators'
    lookups then find them in the session."""
    ids = set()
    for key in NETWORK_KEYS:
        for value in params.get(key) if isinstance(params.get(key), list) else [params.get(key)]:
            if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**31 - 1:
                ids.add(value)
    if len(ids) > 1:
        for net in session.scalars(select(Network).where(Network.id.in_(sorted(ids)))):
            pinned(session, net)


def get_network(session: Session, network_id: Any, role: str, user: Principal) -> Network:
    if not isinstance(network_id, int) or isinstance(network_id, bool):
        raise JobError(f"'{role}' must be a network id (an integer), got {network_id!r}")
    net = pinned(session, session.get(Network, network_id)) if 1 <= network_id <= 2**31 - 1 else None
    if net is None or not user.can_read(net):
        raise JobError(f"network {network_id} ('{role}') does not exist", status=404)
    return net


def check_same_setting(a: Network, b: Network) -> None:
    """Two networks can be compared only with one architecture on the same data."""
    try:
        paths.compatible(a.architecture, b.architecture)
    except paths.IncompatibleError as exc:
        raise JobError(f"networks {a.id} and {b.id}: {exc}") from None
    if a.dataset != b.dataset or a.dataset_options != b.dataset_options:
        raise JobError(
            f"networks {a.id} and {b.id} were trained on different data sets "
            f"({a.dataset} {a.dataset_options} vs {b.dataset} {b.dataset_options}); compare networks of one data set"
        )


def _choice(params: dict[str, Any], key: str, default: str, choices) -> str:
    value = params.get(key, default)
    if value not in choices:
        raise JobError(f"'{key}' must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _bool_param(params: dict[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise JobError(f"'{key}' must be true or false, got {value!r}")
    return value


# ---- validators: (session, params, user) -> (normalised params, input network ids, queue) -------

TRAIN_KEYS = {"architecture", "dataset", "dataset_options", "optimizer", "name", "tags", "visibility"}


def validate_train(session: Session, params: dict[str, Any], user: Principal) -> tuple[dict, list[int], str]:
    try:
        spec = nets.normalize_spec(params.get("architecture"))
    except nets.SpecError as exc:
        raise JobError(f"architecture: {exc}") from None
    name = params.get("dataset", "digits")
    try:
        options = data.normalize_options(name, params.get("dataset_options"))
    except data.DatasetError as exc:
        raise JobError(f"dataset: {exc}") from None
    optimizer = params.get("optimizer", "sgd")
    opt_params = {k: v for k, v in params.items() if k not in TRAIN_KEYS}
    try:
        opt_params = train.normalize_params(optimizer, opt_params)
    except ValueError as exc:
        raise JobError(f"optimizer: {exc}") from None
    net_name = params.get("name") or f"{spec['kind']}-{optimizer}-seed{opt_params.get('seed', 0)}"
    if not isinstance(net_name, str) or len(net_name) > 200:
        raise JobError("'name' must be a string of at most 200 characters")
    tags = params.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and len(t) <= 50 for t in tags):
        raise JobError("'tags' must be a list of short strings")
    visibility = params.get("visibility", "lab")
    if visibility not in ("lab", "private"):
        raise JobError("'visibility' must be 'lab' or 'private'")
    out = {"architecture": spec, "dataset": name, "dataset_options": options, "optimizer": optimizer,
           "name": net_name, "tags": tags, "visibility": visibility, **opt_params}
    return out, [], "batch"


def _float(params: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = params.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise JobError(f"'{key}' must be a number between {lo} and {hi}, got {value!r}")
    return float(value)


BEND_VARIANTS = ("geodesic", "garipov")


def validate_path(session: Session, params: dict[str, Any], user: Principal) -> tuple[dict, list[int], str]:
    _unknown(params, {"a", "b", "type", "points", "bn", "orders", "seed", "variant", "epochs", "lr"}, "path")
    a = get_network(session, params.get("a"), "a", user)
    b = get_network(session, params.get("b"), "b", user)
    check_same_setting(a, b)
    kind = _choice(params, "type", "linear", [*paths.PATH_TYPES, "bend"])
    if kind == "bend":
        if nets.is_binary(a.architecture):
            raise JobError("a single-bend path needs real-valued networks; binary networks have 'hamming' paths")
    else:
        try:
            paths.check_path_type(a.architecture, kind)
        except paths.PathError as exc:
            raise JobError(str(exc)) from None
    out = {"a": a.id, "b": b.id, "type": kind, "points": _int(params, "points", 11, 2, 201),
           "bn": _choice(params, "bn", "recompute", paths.BN_MODES)}
    if kind == "hamming":
        out["orders"] = _int(params, "orders", 5, 1, 100)
        out["seed"] = _int(params, "seed", 0, 0, 2**31 - 1)
    if kind == "bend":
        out["variant"] = _choice(params, "variant", "geodesic", BEND_VARIANTS)
        out["seed"] = _int(params, "seed", 0, 0, 2**31 - 1)
        if "epochs" in params:
            out["epochs"] = _int(params, "epochs", 20, 1, 10000)
        if "lr" in params:
            out["lr"] = _float(params, "lr", 0.02, 1e-6, 10.0)
    return out, [a.id, b.id], "interactive"


def validate_flatness(session: Session, params: dict[str, Any], user: Principal) -> tuple[dict, list[int], str]:
    _unknown(params, {"network", "sigmas", "draws", "seed", "params"}, "flatness")
    net = get_network(session, params.get("network"), "network", user)
    out: dict[str, Any] = {"network": net.id, "seed": _int(params, "seed", 0, 0, 2**31 - 1),
                           "params": _choice(params, "params", "weights", ("weights", "all"))}
    sigmas = params.get("sigmas")
    if sigmas is not None:
        if (not isinstance(sigmas, list) or not 1 <= len(sigmas) <= 100 or
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 10 for v in sigmas)):
            raise JobError("'sigmas' must be a list of 1 to 100 noise levels between 0 and 10")
        out["sigmas"] = [float(v) for v in sigmas]
    if params.get("draws") is not None:
        out["draws"] = _int(params, "draws", 10, 1, 10000)
    # a few hundred noisy evaluations take seconds: interactive; more go to the batch queue
    evaluations = len(out.get("sigmas") or [0] * 8) * out.get("draws", 10)
    return out, [net.id], "interactive" if evaluations <= 400 else "batch"


def validate_plane(session: Session, params: dict[str, Any], user: Principal) -> tuple[dict, list[int], str]:
    _unknown(params, {"networks", "grid", "mode", "margin", "bn"}, "plane")
    ids = params.get("networks")
    if not isinstance(ids, list) or len(ids) != 3 or len(set(map(str, ids))) != 3:
        raise JobError("'networks' must be a list of three distinct network ids")
    three = [get_network(session, i, "networks", user) for i in ids]
    for other in three[1:]:
        check_same_setting(three[0], other)
    if nets.is_binary(three[0].architecture):
        raise JobError("2-D sections are for real-valued networks; binary networks live on the hypercube")
    out = {"networks": [n.id for n in three], "grid": _int(params, "grid", 11, 3, 101),
           "mode": _choice(params, "mode", "aligned", ("aligned", "raw")),
           "margin": _float(params, "margin", 0.2, 0.0, 2.0), "bn": _choice(params, "bn", "recompute", paths.BN_MODES)}
    return out, out["networks"], "batch"


def validate_canonicalize(session: Session, params: dict[str, Any], user: Principal) -> tuple[dict, list[int], str]:
    _unknown(params, {"network"}, "canonicalize")
    net = get_network(session, params.get("network"), "network", user)
    return {"network": net.id}, [net.id], "interactive"


def validate_distance(session: Session, params: dict[str, Any], user: Principal) -> tuple[dict, list[int], str]:
    _unknown(params, {"a", "b"}, "distance")
    a = get_network(session, params.get("a"), "a", user)
    b = get_network(session, params.get("b"), "b", user)
    check_same_setting(a, b)
    return {"a": a.id, "b": b.id}, [a.id, b.id], "interactive"


MAX_MATRIX = 64


def validate_matrix(session: Session, params: dict[str, Any], user: Principal) -> tuple[dict, list[int], str]:
    _unknown(params, {"networks", "barriers", "points", "bn"}, "matrix")
    ids = params.get("networks")
    if not isinstance(ids, list) or not 2 <= len(ids) <= MAX_MATRIX or len(set(map(str, ids))) != len(ids):
        raise JobError(f"'networks' must be a list of 2 to {MAX_MATRIX} distinct network ids")
    nets_ = [get_network(session, i, "networks", user) for i in ids]
    for other in nets_[1:]:
        check_same_setting(nets_[0], other)
    barriers = _bool_param(params, "barriers", False)
    out: dict[str, Any] = {"networks": [n.id for n in nets_], "barriers": barriers}
    if barriers:
        kind = "hamming" if nets.is_binary(nets_[0].architecture) else "geodesic"
        try:
            paths.check_path_type(nets_[0].architecture, kind)
        except paths.PathError as exc:
            raise JobError(f"barriers: {exc}") from None
        out["points"] = _int(params, "points", 11, 2, 101)
        out["bn"] = _choice(params, "bn", "recompute", paths.BN_MODES)
    return out, out["networks"], "batch"


def validate_evaluate(session: Session, params: dict[str, Any], user: Principal) -> tuple[dict, list[int], str]:
    _unknown(params, {"network"}, "evaluate")
    net = get_network(session, params.get("network"), "network", user)
    return {"network": net.id}, [net.id], "interactive"


VALIDATORS: dict[str, Callable[[Session, dict[str, Any], Principal], tuple[dict, list[int], str]]] = {
    "train": validate_train,
    "path": validate_path,
    "evaluate": validate_evaluate,
    "canonicalize": validate_canonicalize,
    "distance": validate_distance,
    "matrix": validate_matrix,
    "flatness": validate_flatness,
    "plane": validate_plane,
}


# ---- cache key ------------------------------------------------------------------------------

def _describe(session: Session, network_id: int) -> dict[str, Any]:
    net = session.get(Network, network_id)
    return {"weights": net.weights_hash, "architecture": net.architecture,
            "dataset": net.dataset, "dataset_options": net.dataset_options}


def cache_key(session: Session, kind: str, params: dict[str, Any]) -> str:
    """Hash of kind + normalised params (network ids replaced by their content) + science version."""
    material = {}
    for key, value in params.items():
        if key in NETWORK_KEYS:
            value = [_describe(session, v) for v in value] if isinstance(value, list) else _describe(session, value)
        material[key] = value
    blob = json.dumps({"kind": kind, "params": material, "version": SCIENCE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cached_result(session: Session, kind: str, key: str, user: Principal) -> Job | None:
    """The newest finished job with this key that ``user`` may read (and whose named network still exists)."""
    stmt = select(Job).where(Job.cache_key == key, Job.kind == kind, Job.status == "succeeded",
                             Job.result_id.is_not(None))
    if not user.is_admin:
        stmt = stmt.where(or_(Job.visibility == "lab", Job.owner == user.name))
    done = session.scalars(stmt.order_by(Job.id.desc()).limit(1)).first()
    if done is None:
        return None
    result = pinned(session, session.get(Result, done.result_id))  # the answer shows it
    # A result that names a network (train, canonicalize, ...) is valid only while that network exists
    # and the asker may read it.
    network_id = (result.data or {}).get("network_id") if result else None
    if result is None:
        return None
    if network_id is not None:
        net = session.get(Network, network_id)
        if net is None or not user.can_read(net):
            return None
    return done


def unfinished_jobs(session: Session, owner: str) -> int:
    return int(session.scalar(select(func.count(Job.id)).where(Job.owner == owner,
                                                                 Job.status.in_(("queued", "running")))))


def submit(session: Session, kind: str, params: dict[str, Any], user: Principal | None = None,
           visibility: str | None = None, check_quota: bool = True) -> Job:
    """Validate, then answer from cache or create the job and enqueue it. Commits."""
    user = user or local_principal()
    if kind not in VALIDATORS:
        raise JobError(f"unknown job kind {kind!r}; known: {', '.join(sorted(VALIDATORS))}")
    if not isinstance(params, dict):
        raise JobError("'params' must be a JSON object")
    _prefetch_networks(session, params)
    params, inputs, queue = VALIDATORS[kind](session, params, user)
    if visibility is None:  # a job on a private network is private; a train job follows its network
        private = params.get("visibility") == "private" or any(
            session.get(Network, i).visibility == "private" for i in inputs)
        visibility = "private" if private else "lab"
    key = cache_key(session, kind, params)
    hit = _cached_result(session, kind, key, user)
    if hit is not None:
        now = utcnow()
        job = Job(kind=kind, params=params, inputs=inputs, status="succeeded", progress=1.0,
                  message=f"answered from the cache (same as job {hit.id})", owner=user.name, visibility=visibility,
                  cache_key=key, cached_from=hit.id, result_id=hit.result_id, queue=queue, created_at=now,
                  started_at=now, finished_at=now)
        session.add(job)
        session.commit()
        return job
    if check_quota and unfinished_jobs(session, user.name) >= user.max_running_jobs:
        raise JobError(f"{user.name} has {user.max_running_jobs} unfinished jobs, the limit; wait for some to end "
                       "or cancel them", status=429)
    job = Job(kind=kind, params=params, inputs=inputs, status="queued", message="queued", owner=user.name,
              visibility=visibility, cache_key=key, queue=queue)
    session.add(job)
    session.commit()
    enqueue(session, job)
    return job


def enqueue(session: Session, job: Job) -> None:
    """Send the job to its queue and note when. A lost message is re-sent by ``reconcile``."""
    from workers.app import get_celery

    get_celery().send_task(f"toroid.{job.kind}", args=[job.id], queue=job.queue)
    session.execute(update(Job).where(Job.id == job.id).values(sent_at=utcnow()))
    session.commit()


def reconcile(session: Session, resend_all: bool = False) -> dict[str, list[int]]:
    """Make the broker agree with the database, which is the truth.

    - a running job whose worker has not reported for ``heartbeat_timeout`` seconds (killed, machine
      lost) goes back to queued and is sent again;
    - a queued job last sent more than ``resend_after`` seconds ago (or never) is sent again: after a
      broker restart or wipe nothing queued is lost. A duplicate message is harmless: only one
      worker can move a job from queued to running.
    ``resend_all`` (at service start) sends every queued job again at once.
    """
    from datetime import timedelta

    from .config import get_settings

    settings = get_settings()
    now = utcnow()
    stale = now - timedelta(seconds=settings.heartbeat_timeout)
    requeued = []
    # a fanned-out job's chunks may wait in the queue behind other work: give it longer
    stale_fanout = now - timedelta(seconds=max(settings.heartbeat_timeout, settings.resend_after))
    for job in session.scalars(select(Job).where(Job.status == "running")).all():
        beat = job.heartbeat_at or job.started_at
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=now.tzinfo)
        if beat is None or beat < (stale_fanout if job.fanout else stale):
            res = session.execute(update(Job).where(Job.id == job.id, Job.status == "running",
                                                    Job.attempts == job.attempts)
                                  .values(status="queued", message="its worker was lost; queued again", sent_at=None, fanout=0))
            session.commit()
            if res.rowcount == 1:
                requeued.append(job.id)
    resend_before = now - timedelta(seconds=settings.resend_after)
    resent = []
    for job in session.scalars(select(Job).where(Job.status == "queued").order_by(Job.id)).all():
        sent = job.sent_at
        if sent is not None and sent.tzinfo is None:
            sent = sent.replace(tzinfo=now.tzinfo)
        if resend_all or sent is None or sent < resend_before or job.id in requeued:
            enqueue(session, job)
            resent.append(job.id)
    return {"requeued": requeued, "resent": resent}
