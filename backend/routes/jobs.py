"""Jobs: submit (validated, cached or enqueued), list, read, cancel, follow progress."""
from __future__ import annotations

import asyncio
import heapq
import logging
import math
from datetime import datetime, timezone
from types import SimpleNamespace

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .. import checks, fairness, jobs, visibility, writes
from ..auth import Principal, current_user
from ..db import read
from ..errors import DomainError, NotFound
from ..models import FINAL_STATES, Job, Result
from ..schemas import JobId, JobIn, JobOut, filter_query, json_response
from ..writes import committed_rows

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger("toroid.api")


JOBS, RESULTS = Job.__table__, Result.__table__
JOB_FIELDS = ("id", "kind", "params", "inputs", "status", "progress", "message", "error", "owner", "visibility",
              "cached_from", "result_id", "created_at", "started_at", "finished_at", "queue", "cost")


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def eta_seconds(job, now: datetime | None = None) -> float | None:
    """Seconds a running job still needs, from its own progress rate (elapsed x remaining / done); None
    before it has done 1% (``add_queue_positions`` then estimates it from its cost)."""
    if job.status != "running" or job.started_at is None:
        return None
    elapsed = max(((now or datetime.now(timezone.utc)) - _aware(job.started_at)).total_seconds(), 0.0)
    done = job.progress or 0.0
    return elapsed * (1.0 - done) / done if done >= 0.01 and elapsed > 0 else None


def job_dict(job, result: dict | None = None) -> dict:
    """The API's form of a job (an ORM object or a row of the jobs table). ``queue_position`` (and an
    ETA from the cost) is filled in by ``add_queue_positions``: it needs the other jobs."""
    out = {name: getattr(job, name) for name in JOB_FIELDS}
    out["cached"] = job.cached_from is not None
    out["result"] = result
    out["queue_position"] = None
    out["starts_in_seconds"] = None
    out["eta_seconds"] = eta_seconds(job)
    return out


def _queue_order(conn: Connection, running: list) -> tuple[dict[int, int], dict[str, list]]:
    """The place each queued job will start at in its queue, if nothing ends meanwhile: the workers' rule
    played forward (backend/fairness.py: ``scores`` now, then ``plan``). Jobs waiting for an equal job
    (attached_to) have no place: they start with it. Also each queue's rows in that order, where the rest
    of each fanned-out running job (its chunks still to run, ``rest`` set; its cost is in its owner's
    score already) takes its job's rank: queued jobs ranked ahead of it start after its current chunk."""
    waiting = conn.execute(select(JOBS.c.id, JOBS.c.queue, JOBS.c.owner, JOBS.c.kind, JOBS.c.cost)
                           .where(JOBS.c.status == "queued", JOBS.c.attached_to.is_(None)).order_by(JOBS.c.id)).all()
    score = fairness.scores(conn) if waiting else {}
    by_queue: dict[str, list] = {}
    for row in waiting:
        by_queue.setdefault(row.queue, []).append(row)
    for r in running:
        if r.fanout and r.queue in by_queue:
            by_queue[r.queue].append(SimpleNamespace(id=r.id, owner=r.owner, kind=r.kind, cost=0.0, rest=r))
    place: dict[int, int] = {}
    ordered = {queue: fairness.plan(rows, score) for queue, rows in by_queue.items()}
    for rows in ordered.values():
        place.update({row.id: k for k, row in enumerate([r for r in rows if not hasattr(r, "rest")], 1)})
    return place, ordered


def _seconds_per_cost(conn: Connection, kinds: set[str]) -> dict[str, float]:
    """Per job kind, the median seconds per unit of cost of its last 20 finished (computed, not cached) jobs."""
    if not kinds:
        return {}
    finished = conn.execute(
        select(JOBS.c.kind, JOBS.c.cost, JOBS.c.started_at, JOBS.c.finished_at)
        .where(JOBS.c.status == "succeeded", JOBS.c.kind.in_(kinds), JOBS.c.cached_from.is_(None), JOBS.c.cost > 0,
               JOBS.c.started_at.is_not(None), JOBS.c.finished_at.is_not(None))
        .order_by(JOBS.c.id.desc()).limit(200)).all()
    rates: dict[str, list[float]] = {}
    for kind, cost, started, ended in finished:
        if len(rates.setdefault(kind, [])) < 20:
            rates[kind].append((_aware(ended) - _aware(started)).total_seconds() / cost)
    return {kind: sorted(r)[len(r) // 2] for kind, r in rates.items() if r}


def _cost_eta(job, rates: dict[str, float], now: datetime) -> float | None:
    """A running job's remaining seconds from its cost and its kind's rate, less the time it has run."""
    if job.cost and job.started_at is not None and job.kind in rates:
        return max(rates[job.kind] * job.cost - (now - _aware(job.started_at)).total_seconds(), 0.0)
    return None


def _remaining(r, rates: dict[str, float], now: datetime) -> float | None:
    eta = eta_seconds(r, now)
    return _cost_eta(r, rates, now) if eta is None else eta


def _start_forecast(ordered: dict[str, list], running: list, rates: dict[str, float], now: datetime) -> dict[int, float | None]:
    """When each queued job should start, in seconds from now [ours]: its queue's running jobs hold the
    workers (one each; a queue with none running gives no forecast: no worker may be serving it), each
    frees its worker after its ETA, a fanned-out one after its current chunk (its ETA over the chunks it
    has left), the rest of its chunks then taking their place in the order; the queued jobs take the first
    free worker in their order, each for its cost times its kind's seconds per unit of cost. Unknown
    durations make the rest of the queue unknown."""
    out: dict[int, float | None] = {}
    for queue, rows in ordered.items():
        slots = []  # when each busy worker of the queue is free again
        rest: dict[int, float] = {}  # fanned-out job -> seconds of its chunks after the current one
        for r in running:
            if r.queue == queue:
                eta = _remaining(r, rates, now)
                if eta is not None and r.fanout:
                    left = max(round((1.0 - (r.progress or 0.0)) * r.fanout), 1)
                    rest[r.id], eta = eta * (left - 1) / left, eta / left
                slots.append(math.inf if eta is None else eta)
        heapq.heapify(slots)
        for row in rows:
            if not slots:  # nothing of this queue is running: no worker known to serve it
                if not hasattr(row, "rest"):
                    out[row.id] = None
                continue
            start = heapq.heappop(slots)
            if hasattr(row, "rest"):  # the chunks a fanned-out job has left
                heapq.heappush(slots, start + rest.get(row.id, 0.0))  # unknown: its own worker is free at infinity
                continue
            out[row.id] = None if math.isinf(start) else start
            heapq.heappush(slots, start + (rates[row.kind] * row.cost if row.kind in rates and row.cost else math.inf))
    return out


def add_queue_positions(conn: Connection, jobs_: list[dict]) -> list[dict]:
    """Each queued job's place in its queue (1: the next to start; ``_queue_order``) and when it should start
    (``_start_forecast``); for a running job without a progress rate yet, an ETA from its cost: the seconds
    per unit of cost that recent finished jobs of its kind took, times its cost, less the time it has run.
    A few queries for the whole list, and none when nothing in it is queued or young."""
    now = datetime.now(timezone.utc)
    queued = [j for j in jobs_ if j["status"] == "queued"]
    early = [j for j in jobs_ if j["status"] == "running" and j["eta_seconds"] is None and j.get("cost")
             and j["started_at"] is not None]
    place, ordered, running = {}, {}, []
    if queued:
        running = conn.execute(select(JOBS.c.id, JOBS.c.queue, JOBS.c.owner, JOBS.c.kind, JOBS.c.cost, JOBS.c.status,
                                      JOBS.c.progress, JOBS.c.started_at, JOBS.c.fanout)
                               .where(JOBS.c.status == "running", JOBS.c.attached_to.is_(None))).all()
        place, ordered = _queue_order(conn, running)
    kinds = {r.kind for r in running} | {r.kind for rows in ordered.values() for r in rows} | {j["kind"] for j in early}
    rates = _seconds_per_cost(conn, kinds)
    if queued:
        starts = _start_forecast(ordered, running, rates, now)
        for j in queued:
            j["queue_position"] = place.get(j["id"])
            j["starts_in_seconds"] = starts.get(j["id"])
    for j in early:
        j["eta_seconds"] = _cost_eta(SimpleNamespace(**j), rates, now)
    return jobs_


def job_out(db: Session, job: Job, with_result: bool = True) -> JobOut:
    result = None
    if with_result and job.result_id is not None:
        row = db.get(Result, job.result_id)
        result = row.data if row else None
    return JobOut(**add_queue_positions(db.connection(), [job_dict(job, result)])[0])


def _job_row(conn: Connection, job_id: int, with_result: bool = True):
    """The job's row (and its result's data as ``result_data``, None until it has one), in one query."""
    stmt = select(JOBS)
    if with_result:
        stmt = select(JOBS, RESULTS.c.data.label("result_data")).select_from(
            JOBS.outerjoin(RESULTS, RESULTS.c.id == JOBS.c.result_id))
    return conn.execute(stmt.where(JOBS.c.id == job_id)).first()


def readable_job(conn: Connection, job_id: int, user: Principal, with_result: bool = True) -> dict | None:
    row = _job_row(conn, job_id, with_result)
    result = row.result_data if row is not None and with_result else None
    if row is None or not visibility.job_readable(conn, user, row, result):
        return None
    return add_queue_positions(conn, [job_dict(row, result)])[0]


@router.post("", response_model=JobOut, status_code=202)
async def submit_job(request: Request, body: JobIn, user: Principal = Depends(current_user),
                     idempotency_key: str | None = Header(None, max_length=200, description=writes.KEY_HELP),
                     dry_run: bool = Query(False, description="only validate and estimate: 200 with the normalised "
                                           "params, queue, cost_flops, memory_bytes, estimated_seconds; no job")) -> Response:
    """Validate and submit a job: answered at once from the cache when the same job on the same
    weights ran before, else queued for a worker. With an ``Idempotency-Key`` header a repeat of the
    request is answered with the first answer and submits nothing. With ``dry_run=true`` nothing is
    created: the answer (200) is what the job would be and cost."""
    await checks.job(user.name, body.kind, body.params)  # a train job's architecture: off the API's threads
    if dry_run:
        return JSONResponse(await writes.write(_dry_run, body, user))

    async def work() -> tuple[Response, int]:
        out = await writes.write(_submit, body, user)
        if isinstance(out, int):  # committed, then the connection died: the job is read on a fresh one
            out = await read(readable_job, out, user)
        return json_response(JobOut, out, status_code=202), (out["id"] if isinstance(out, dict) else out.id)

    async def replay(status: int, job_id: int) -> Response:  # the job as the caller may read it now
        job = await read(readable_job, job_id, user)
        if job is None:
            raise NotFound(f"job {job_id} (made by the first request with this Idempotency-Key) does not exist")
        return json_response(JobOut, job, status_code=status)

    fp = writes.fingerprint("POST /api/jobs", body.model_dump_json())
    return await writes.idempotent(request, user.name, writes.request_key(request), fp, work, replay)


def _dry_run(db: Session, body: JobIn, user: Principal) -> dict:
    try:
        return jobs.dry_run(db, body.kind, body.params, user=user)  # a refusal is a DomainError, answered by the app
    finally:
        db.rollback()


def _submit(db: Session, body: JobIn, user: Principal) -> JobOut | int:
    """The submitted job, or only its id when it was committed and answering failed after the commit."""
    with committed_rows(db, Job) as made:
        try:
            return job_out(db, jobs.submit(db, body.kind, body.params, user=user, visibility=body.visibility))
        except DomainError:
            raise
        except Exception:
            if not made:
                raise
            log.warning("job %s was committed, then its request failed; answering with it", made[0], exc_info=True)
            return made[0]


def _list_rows(conn: Connection, user: Principal, status: str | None, kind: str | None, limit: int,
               cached: bool | None = None) -> list[dict]:
    stmt = select(JOBS).order_by(JOBS.c.id.desc())
    if cached is not None:  # answered from the cache (cached_from set) or computed (or still to be)
        stmt = stmt.where(JOBS.c.cached_from.is_not(None) if cached else JOBS.c.cached_from.is_(None))
    if not user.is_admin:
        stmt = stmt.where(or_(JOBS.c.visibility == "lab", JOBS.c.owner == user.name))
    if status:
        stmt = stmt.where(JOBS.c.status == status)
    if kind:
        stmt = stmt.where(JOBS.c.kind == kind)
    hidden = visibility.unreadable_networks(conn, user)
    if not hidden:
        return add_queue_positions(conn, [job_dict(row) for row in conn.execute(stmt.limit(limit))])
    # jobs naming a network the caller may not read are left out: read on, a page at a time
    out, page, offset = [], max(limit, 100), 0
    while len(out) < limit:
        rows = conn.execute(stmt.limit(page).offset(offset)).all()
        out += [job_dict(row) for row in rows if hidden.isdisjoint(row.inputs or [])][:limit - len(out)]
        if len(rows) < page:
            break
        offset += page
    return add_queue_positions(conn, out)


@router.get("", response_model=list[JobOut])
async def list_jobs(
    user: Principal = Depends(current_user),
    status: filter_query() = None,
    kind: filter_query() = None,
    limit: int = Query(100, ge=1, le=1000),
    cached: bool | None = Query(None, description="true: only jobs answered at once from the cache; false: none of "
                                "them (the dashboard's Jobs view hides them by default)"),
) -> Response:
    """Jobs you may read, newest first, without their results (read one job or its result for that)."""
    return json_response(list[JobOut], await read(_list_rows, user, status, kind, limit, cached))


@router.get("/{job_id}", response_model=JobOut)
async def read_job(job_id: JobId, user: Principal = Depends(current_user)) -> Response:
    job = await read(readable_job, job_id, user)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return json_response(JobOut, job)


@router.delete("/{job_id}", response_model=JobOut)
async def cancel_job(job_id: JobId, user: Principal = Depends(current_user)) -> Response:
    """Cancel a queued or running job. The worker notices at its next progress report."""
    await writes.write(jobs.cancel, job_id, user)
    # read after the commit (repeated on a fresh connection if the database dropped it): a committed
    # cancel is answered as one
    job = await read(readable_job, job_id, user)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return json_response(JobOut, job)


@router.get("/{job_id}/events")
async def job_events(job_id: JobId, user: Principal = Depends(current_user)) -> StreamingResponse:
    """Server-sent events: one ``data: {job}`` line each time the job's progress or state changes."""
    if await read(readable_job, job_id, user, False) is None:
        raise NotFound(f"job {job_id} does not exist")

    async def stream():
        last = None
        while True:
            job = await read(readable_job, job_id, user, False)
            if job is None:
                return
            if job["status"] in FINAL_STATES:
                job = await read(readable_job, job_id, user)
            payload = JobOut.model_validate(job).model_dump_json()
            if payload != last:
                yield f"data: {payload}\n\n"
                last = payload
            if job["status"] in FINAL_STATES:
                return
            await asyncio.sleep(0.3)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
