"""Jobs: submit (validated, cached or enqueued), list, read, cancel, follow progress."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .. import jobs
from ..auth import Principal, current_user
from ..db import get_db, new_session
from ..models import FINAL_STATES, Job, Result, utcnow
from ..schemas import JobId, JobIn, JobOut

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_out(db: Session, job: Job, with_result: bool = True) -> JobOut:
    result = None
    if with_result and job.result_id is not None:
        row = db.get(Result, job.result_id)
        result = row.data if row else None
    return JobOut(id=job.id, kind=job.kind, params=job.params, inputs=job.inputs, status=job.status,
                  progress=job.progress, message=job.message, error=job.error, owner=job.owner, visibility=job.visibility,
                  cached=job.cached_from is not None, cached_from=job.cached_from, result_id=job.result_id,
                  result=result, created_at=job.created_at, started_at=job.started_at,
                  finished_at=job.finished_at)


def get_or_404(db: Session, job_id: int, user: Principal, write: bool = False) -> Job:
    job = db.get(Job, job_id)
    if job is None or not user.can_read(job):
        raise HTTPException(404, f"job {job_id} does not exist")
    if write and not user.can_write(job):
        raise HTTPException(403, f"job {job_id} belongs to {job.owner}; only its owner or an admin may cancel it")
    return job


@router.post("", response_model=JobOut, status_code=202)
def submit_job(body: JobIn, db: Session = Depends(get_db), user: Principal = Depends(current_user)) -> JobOut:
    try:
        job = jobs.submit(db, body.kind, body.params, user=user, visibility=body.visibility)
    except jobs.JobError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return job_out(db, job)


@router.get("", response_model=list[JobOut])
def list_jobs(
    db: Session = Depends(get_db),
    user: Principal = Depends(current_user),
    status: str | None = None,
    kind: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[JobOut]:
    stmt = select(Job).order_by(Job.id.desc())
    if not user.is_admin:
        stmt = stmt.where(or_(Job.visibility == "lab", Job.owner == user.name))
    if status:
        stmt = stmt.where(Job.status == status)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    return [job_out(db, j, with_result=False) for j in db.scalars(stmt.limit(limit))]


@router.get("/{job_id}", response_model=JobOut)
def read_job(job_id: JobId, db: Session = Depends(get_db), user: Principal = Depends(current_user)) -> JobOut:
    return job_out(db, get_or_404(db, job_id, user))


@router.delete("/{job_id}", response_model=JobOut)
def cancel_job(job_id: JobId, db: Session = Depends(get_db), user: Principal = Depends(current_user)) -> JobOut:
    """Cancel a queued or running job. The worker notices at its next progress report."""
    job = get_or_404(db, job_id, user, write=True)
    res = db.execute(update(Job).where(Job.id == job_id, Job.status.in_(("queued", "running")))
                     .values(status="cancelled", message="cancelled", finished_at=utcnow()))
    db.commit()
    if res.rowcount == 0:
        raise HTTPException(409, f"job {job_id} already ended ({job.status}); nothing to cancel")
    db.refresh(job)
    return job_out(db, job)


@router.get("/{job_id}/events")
async def job_events(job_id: JobId, db: Session = Depends(get_db),
                     user: Principal = Depends(current_user)) -> StreamingResponse:
    """Server-sent events: one ``data: {job}`` line each time the job's progress or state changes."""
    get_or_404(db, job_id, user)

    async def stream():
        last = None
        while True:
            with new_session() as s:
                job = s.get(Job, job_id)
                if job is None:
                    return
                payload = job_out(s, job, with_result=job.status in FINAL_STATES).model_dump_json()
                status = job.status
            if payload != last:
                yield f"data: {payload}\n\n"
                last = payload
            if status in FINAL_STATES:
                return
            await asyncio.sleep(0.3)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
