"""Jobs: submit (validated, cached or enqueued), list, read, cancel, follow progress."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .. import jobs
from ..auth import Principal, current_user
from ..db import in_session, read
from ..models import FINAL_STATES, Job, Result, utcnow
from ..schemas import JobId, JobIn, JobOut, json_response

router = APIRouter(prefix="/jobs", tags=["jobs"])


JOBS, RESULTS = Job.__table__, Result.__table__
JOB_FIELDS = ("id", "kind", "params", "inputs", "status", "progress", "message", "error", "owner", "visibility",
              "cached_from", "result_id", "created_at", "started_at", "finished_at")


def eta_seconds(job, now: datetime | None = None) -> float | None:
    """Seconds a running job still needs: from its own progress rate (elapsed x remaining / done), else
    from its cost estimate in seconds where the job has one; None when neither tells."""
    if job.status != "running" or job.started_at is None:
        return None
    started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=timezone.utc)
    elapsed = max(((now or datetime.now(timezone.utc)) - started).total_seconds(), 0.0)
    done = job.progress or 0.0
    if done >= 0.01 and elapsed > 0:
        return elapsed * (1.0 - done) / done
    cost = getattr(job, "cost", None)
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        return max(float(cost) - elapsed, 0.0)
    return None


def job_dict(job, result: dict | None = None) -> dict:
    """The API's form of a job (an ORM object or a row of the jobs table). ``queue_position`` is filled
    in by ``add_queue_positions`` (it needs the other queued jobs)."""
    out = {name: getattr(job, name) for name in JOB_FIELDS}
    out["cached"] = job.cached_from is not None
    out["result"] = result
    out["queue_position"] = None
    out["eta_seconds"] = eta_seconds(job)
    return out


def add_queue_positions(conn: Connection, jobs_: list[dict]) -> list[dict]:
    """Each queued job's place in its queue (1: the next to start), in one query for the whole list."""
    if any(j["status"] == "queued" for j in jobs_):
        waiting = conn.execute(select(JOBS.c.id, JOBS.c.queue).where(JOBS.c.status == "queued")
                               .order_by(JOBS.c.id)).all()
        place, seen = {}, {}
        for job_id, queue in waiting:
            seen[queue] = seen.get(queue, 0) + 1
            place[job_id] = seen[queue]
        for j in jobs_:
            if j["status"] == "queued":
                j["queue_position"] = place.get(j["id"])
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
    if row is None or not user.can_read(row):
        return None
    return add_queue_positions(conn, [job_dict(row, row.result_data if with_result else None)])[0]


def get_or_404(db: Session, job_id: int, user: Principal, write: bool = False) -> Job:
    job = db.get(Job, job_id)
    if job is None or not user.can_read(job):
        raise HTTPException(404, f"job {job_id} does not exist")
    if write and not user.can_write(job):
        raise HTTPException(403, f"job {job_id} belongs to {job.owner}; only its owner or an admin may cancel it")
    return job


@router.post("", response_model=JobOut, status_code=202)
async def submit_job(body: JobIn, user: Principal = Depends(current_user)) -> Response:
    """Validate and submit a job: answered at once from the cache when the same job on the same
    weights ran before, else queued for a worker."""
    return json_response(JobOut, await in_session(_submit, body, user), status_code=202)


def _submit(db: Session, body: JobIn, user: Principal) -> JobOut:
    try:
        job = jobs.submit(db, body.kind, body.params, user=user, visibility=body.visibility)
    except jobs.JobError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return job_out(db, job)


def _list_rows(conn: Connection, user: Principal, status: str | None, kind: str | None, limit: int) -> list[dict]:
    stmt = select(JOBS).order_by(JOBS.c.id.desc())
    if not user.is_admin:
        stmt = stmt.where(or_(JOBS.c.visibility == "lab", JOBS.c.owner == user.name))
    if status:
        stmt = stmt.where(JOBS.c.status == status)
    if kind:
        stmt = stmt.where(JOBS.c.kind == kind)
    return add_queue_positions(conn, [job_dict(row) for row in conn.execute(stmt.limit(limit))])


@router.get("", response_model=list[JobOut])
async def list_jobs(
    user: Principal = Depends(current_user),
    status: str | None = None,
    kind: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    """Jobs you may read, newest first, without their results (read one job or its result for that)."""
    return json_response(list[JobOut], await read(_list_rows, user, status, kind, limit))


@router.get("/{job_id}", response_model=JobOut)
async def read_job(job_id: JobId, user: Principal = Depends(current_user)) -> Response:
    job = await read(readable_job, job_id, user)
    if job is None:
        raise HTTPException(404, f"job {job_id} does not exist")
    return json_response(JobOut, job)


@router.delete("/{job_id}", response_model=JobOut)
async def cancel_job(job_id: JobId, user: Principal = Depends(current_user)) -> Response:
    """Cancel a queued or running job. The worker notices at its next progress report."""
    return json_response(JobOut, await in_session(_cancel, job_id, user))


def _cancel(db: Session, job_id: int, user: Principal) -> JobOut:
    job = get_or_404(db, job_id, user, write=True)
    res = db.execute(update(Job).where(Job.id == job_id, Job.status.in_(("queued", "running")))
                     .values(status="cancelled", message="cancelled", finished_at=utcnow()))
    db.commit()
    if res.rowcount == 0:
        raise HTTPException(409, f"job {job_id} already ended ({job.status}); nothing to cancel")
    db.refresh(job)
    return job_out(db, job)


@router.get("/{job_id}/events")
async def job_events(job_id: JobId, user: Principal = Depends(current_user)) -> StreamingResponse:
    """Server-sent events: one ``data: {job}`` line each time the job's progress or state changes."""
    if await read(readable_job, job_id, user, False) is None:
        raise HTTPException(404, f"job {job_id} does not exist")

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
