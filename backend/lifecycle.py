"""The job life cycle, in one place: every change of a job's state is written here.

queued -> running (a worker's claim: attempt n+1) -> succeeded | failed; queued | running -> cancelled;
running -> queued again when its worker was lost. A worker changes a job only while it still owns the
attempt it claimed (``_mine``), so a job delivered twice, cancelled or handed over is never finished twice.

Single flight: a job equal to a queued or running one (same cache key) is *attached* to it: it is never
sent to a worker, and ends with its leader (same result, or the same error). A cancelled leader hands its
work to the oldest job attached to it.

Fairness (backend/fairness.py, the rule's one home): a worker that receives a message claims the best
queued job of that queue, ranked by the work its owner's jobs hold or did recently, then age, not
necessarily the one the message names; every job has one message, so every queued job is claimed in the
end. A chunk of a fanned-out job lets a queued job of another owner that ranks ahead of it run first
(``claim_ahead``).

Writes that check a quota take a per-owner lock first (``db.locked``): a PostgreSQL advisory transaction lock,
or SQLite's write lock (BEGIN IMMEDIATE), so that the check and the insert are one atomic step.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from . import fairness
from .config import get_settings
from .db import new_session
from .models import Job, Result, utcnow

log = logging.getLogger("toroid.lifecycle")

ACTIVE = ("queued", "running")


def _mine(job_id: int, attempt: int):
    """SQL conditions: the job is still running as this attempt (not cancelled, not handed over)."""
    return Job.id == job_id, Job.status == "running", Job.attempts == attempt


def _stale_before(now: datetime, fanned_out: bool) -> datetime:
    settings = get_settings()
    return now - timedelta(seconds=settings.fanout_timeout if fanned_out else settings.heartbeat_timeout)


def _not_lost(now: datetime):
    """SQL: not a running job whose heartbeat is older than its timeout (heartbeat, or fan-out timeout)."""
    beat_at = func.coalesce(Job.heartbeat_at, Job.started_at)
    return or_(Job.status != "running", beat_at.is_(None),
               and_(Job.fanout == 0, beat_at >= _stale_before(now, False)),
               and_(Job.fanout > 0, beat_at >= _stale_before(now, True)))


# ---- submission -------------------------------------------------------------------------------------

def unfinished(session: Session, owner: str) -> int:
    return int(session.scalar(select(func.count(Job.id)).where(Job.owner == owner, Job.status.in_(ACTIVE))))


def leader(session: Session, kind: str, key: str, readable) -> Job | None:
    """The oldest queued or running job with this cache key that the submitter may read (``readable``: a
    SQL condition), to attach an equal job to."""
    stmt = select(Job).where(Job.cache_key == key, Job.kind == kind, Job.status.in_(ACTIVE),
                             Job.attached_to.is_(None), _not_lost(utcnow()))
    if readable is not None:
        stmt = stmt.where(readable)
    return session.scalars(stmt.order_by(Job.id).limit(1)).first()


def enqueue(session: Session, job: Job) -> None:
    """Send the job to its queue and note when. A lost message is re-sent by ``reconcile``."""
    from workers.glue.app import get_celery

    get_celery().send_task(f"toroid.{job.kind}", args=[job.id], queue=job.queue)
    session.execute(update(Job).where(Job.id == job.id).values(sent_at=utcnow()))
    session.commit()


# ---- a worker's attempt -----------------------------------------------------------------------------

def claim(hint: int) -> tuple[int, int] | None:
    """Claim the best queued job of job ``hint``'s queue (module docstring): (job id, attempt), or None
    when that queue has nothing waiting (a duplicate or late message is then simply dropped)."""
    with new_session() as s:
        queue = s.scalar(select(Job.queue).where(Job.id == hint))
        return None if queue is None else _claim_best(s, queue)


def claim_ahead(job_id: int, attempt: int) -> tuple[int, int] | None:
    """For a chunk of running job ``job_id``: claim the best queued job of its queue that ranks ahead of
    it (fairness.ahead_of), or None when none does (or the job is no longer this attempt's)."""
    with new_session() as s:
        row = s.execute(select(Job.queue, Job.owner).where(*_mine(job_id, attempt))).first()
        return None if row is None else _claim_best(s, row.queue, fairness.ahead_of(job_id, row.owner))


def _claim_best(s: Session, queue: str, *conditions) -> tuple[int, int] | None:
    for _ in range(20):  # another worker may take the same one first
        best = s.scalar(select(Job.id).where(Job.status == "queued", Job.queue == queue, Job.attached_to.is_(None),
                                             *conditions).order_by(*fairness.rank()).limit(1))
        if best is None:
            return None
        now = utcnow()
        res = s.execute(update(Job).where(Job.id == best, Job.status == "queued")
                        .values(status="running", started_at=now, heartbeat_at=now, attempts=Job.attempts + 1,
                                message="started", progress=0.0, fanout=0))
        s.commit()
        if res.rowcount == 1:
            return best, int(s.scalar(select(Job.attempts).where(Job.id == best)))
    return None


def report(job_id: int, attempt: int, progress: float, message: str) -> bool:
    """Progress of a running attempt; False once the job was cancelled or handed to another attempt."""
    with new_session() as s:
        res = s.execute(update(Job).where(*_mine(job_id, attempt))
                        .values(progress=progress, message=message[:500], heartbeat_at=utcnow()))
        s.commit()
        return res.rowcount == 1


def beat(job_id: int, attempt: int) -> None:
    """This attempt's worker is alive; and so may be the chunks of fanned-out jobs of its queue, which
    can wait in the queue behind it (``reconcile`` re-queues a fanned-out job nobody beats for)."""
    with new_session() as s:
        now = utcnow()
        s.execute(update(Job).where(*_mine(job_id, attempt)).values(heartbeat_at=now))
        queue = select(Job.queue).where(Job.id == job_id).scalar_subquery()
        s.execute(update(Job).where(Job.status == "running", Job.fanout > 0, Job.queue == queue)
                  .values(heartbeat_at=now))
        s.commit()


def still_mine(job_id: int, attempt: int) -> bool:
    with new_session() as s:
        return s.scalar(select(Job.id).where(*_mine(job_id, attempt))) is not None


def fanned_out(session: Session, job_id: int, attempt: int, chunks: int) -> bool:
    """Note that this attempt handed its work to ``chunks`` pieces; at most once per attempt (False: it
    was fanned out already, or is no longer this attempt's)."""
    res = session.execute(update(Job).where(*_mine(job_id, attempt), Job.fanout == 0)
                          .values(fanout=chunks, message=f"fanned out in {chunks} chunks", heartbeat_at=utcnow()))
    session.commit()
    return res.rowcount == 1


def chunk_done(job_id: int, attempt: int, chunks: int) -> bool:
    with new_session() as s:
        res = s.execute(update(Job).where(*_mine(job_id, attempt))
                        .values(progress=Job.progress + 0.99 / chunks, heartbeat_at=utcnow(),
                                message=f"{chunks} chunks: one more done"))
        s.commit()
        return res.rowcount == 1


def finish(session: Session, job_id: int, attempt: int, kind: str, result: dict[str, Any]) -> bool:
    """Store the result and end the job (and those attached to it) as succeeded, in the session's
    transaction with whatever rows the runner added; only if this attempt still owns the job."""
    from workers.landscape.kinds import KINDS

    from .networks import fill_errors

    row = Result(kind=kind, data=result)
    session.add(row)
    session.flush()
    now = utcnow()
    res = session.execute(update(Job).where(*_mine(job_id, attempt))
                          .values(status="succeeded", progress=1.0, message="done", result_id=row.id, finished_at=now))
    if res.rowcount != 1:
        session.rollback()
        return False
    followers = session.scalars(select(Job).where(Job.attached_to == job_id, Job.status == "queued")).all()
    for job in followers:
        if KINDS[kind].fills_errors:  # what the job does for its own inputs, though another computed it
            fill_errors(session, job.params["network"], result)
        job.status, job.progress, job.result_id, job.cached_from = "succeeded", 1.0, row.id, job_id
        job.message, job.started_at, job.finished_at = f"answered by job {job_id} (the same job)", now, now
    session.commit()
    return True


def fail(job_id: int, attempt: int, error: str) -> None:
    with new_session() as s:
        res = s.execute(update(Job).where(*_mine(job_id, attempt))
                        .values(status="failed", error=error[:4000], message="failed", finished_at=utcnow()))
        if res.rowcount == 1:
            s.execute(update(Job).where(Job.attached_to == job_id, Job.status == "queued")
                      .values(status="failed", error=f"job {job_id} (the same job) failed: {error}"[:4000],
                              message="failed", finished_at=utcnow()))
        s.commit()


# ---- cancel and reconcile ---------------------------------------------------------------------------

def cancel(session: Session, job_id: int) -> bool:
    """Cancel a queued or running job (its worker notices at its next report); the oldest job attached to
    it takes its place and is sent. False when it had ended already. One transaction: once it is
    committed, nothing that fails afterwards (a lost connection) can turn a done cancel into an error."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                          .values(status="cancelled", message="cancelled", finished_at=utcnow()))
    if res.rowcount == 0:
        session.rollback()
        return False
    heir = session.scalars(select(Job).where(Job.attached_to == job_id, Job.status == "queued").order_by(Job.id)
                           .limit(1)).first()
    if heir is not None:
        session.execute(update(Job).where(Job.attached_to == job_id, Job.id != heir.id).values(attached_to=heir.id))
        heir.attached_to, heir.message = None, "queued"
    session.commit()
    if heir is not None:
        try:
            enqueue(session, heir)
        except Exception:  # noqa: BLE001 - the heir is queued in the database; the reconciler sends it
            log.warning("cancel of job %s: sending its heir %s failed; the reconciler will", job_id, heir.id,
                        exc_info=True)
    return True


def reconcile(session: Session, resend_all: bool = False) -> dict[str, list[int]]:
    """Make the broker agree with the database, which is the truth.

    - a running job whose worker has not reported for ``heartbeat_timeout`` seconds (killed, machine
      lost) goes back to queued (a new attempt) and is sent again. A fanned-out attempt gets
      ``fanout_timeout`` instead: its chunks beat while they run or let another job go first, and every
      busy worker of its queue beats for it (its chunks may wait behind that work); a fanned-out job
      nothing was heard of for that long lost its chunks (a wiped broker) and is queued again too. The
      old attempt's chunks, if any turn up, do nothing, and jobs attached to it end with the new attempt;
    - a queued job last sent more than ``resend_after`` seconds ago (or never) is sent again: after a
      broker restart or wipe nothing queued is lost. A duplicate message is harmless: only one
      worker can move a job from queued to running. Jobs attached to another are never sent.
    ``resend_all`` (at service start) sends every queued job again at once.
    """
    settings = get_settings()
    now = utcnow()
    requeued = []
    for job in session.scalars(select(Job).where(Job.status == "running")).all():
        beat_at = job.heartbeat_at or job.started_at
        if beat_at is not None and beat_at.tzinfo is None:
            beat_at = beat_at.replace(tzinfo=now.tzinfo)
        if beat_at is None or beat_at < _stale_before(now, job.fanout > 0):
            message = (f"its {job.fanout} chunks made no progress for {settings.fanout_timeout:g} s (lost with the "
                       "broker?); queued again" if job.fanout else "its worker was lost; queued again")
            res = session.execute(update(Job).where(*_mine(job.id, job.attempts), Job.fanout == job.fanout,
                                                    ~_not_lost(now))  # no beat came in meanwhile
                                  .values(status="queued", message=message, sent_at=None))
            session.commit()
            if res.rowcount == 1:
                requeued.append(job.id)
    resend_before = now - timedelta(seconds=settings.resend_after)
    resent = []
    for job in session.scalars(select(Job).where(Job.status == "queued", Job.attached_to.is_(None))
                               .order_by(Job.id)).all():
        sent = job.sent_at
        if sent is not None and sent.tzinfo is None:
            sent = sent.replace(tzinfo=now.tzinfo)
        if resend_all or sent is None or sent < resend_before or job.id in requeued:
            enqueue(session, job)
            resent.append(job.id)
    return {"requeued": requeued, "resent": resent}
