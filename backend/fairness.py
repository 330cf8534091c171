"""Fair sharing by work done [ours]: which queued job of a queue runs next. The one home of the rule: the
workers' claim (backend/lifecycle.py, in SQL), a chunk of a fanned-out job deciding whether to let a
queued job go first (workers/glue/tasks.py), and the API's ``queue_position`` / ``starts_in_seconds``
(backend/routes/jobs.py, the same rule played forward) all use the functions here.

An owner's *score* is the work their jobs hold or did recently, in the unit of ``Job.cost`` (the
estimate kinds.py gives every job before it runs):

- every running job of theirs counts its whole cost (a worker is busy with it);
- every job of theirs that ended within the last ``TOROID_FAIR_WINDOW`` seconds (default 3600) after
  starting counts its cost, times its progress when it failed or was cancelled (the part it did);
- jobs answered from the cache or by an equal job (``cached_from``) did no work and count nothing.

The next job of a queue is the queued job (not attached to an equal one) whose owner has the lowest
score, the oldest among those: ranked by (score of its owner, id). A user who keeps one worker busy
therefore steps back for a user who did less in the last window, also with a single worker per queue,
where nobody else has a job *running* when the next one is chosen.

Played forward (the forecast): each start adds the started job's cost to its owner's score, as it will
be when the next job is claimed (running or just finished, it counts either way); the window is taken
as it is now.

Chunks of a fanned-out job rank as their job: (score of its owner, its id). A chunk that reaches a
worker while a queued job of another owner ranks ahead of it lets that job run first (``ahead_of``).
"""
from __future__ import annotations

import heapq
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from .config import get_settings
from .models import Job, utcnow


def _work(job) -> Any:
    """SQL: the work a job (a ``Job`` or an alias of it) holds or did, in units of cost."""
    cost = func.coalesce(job.cost, 0.0)
    return case((job.status.in_(("running", "succeeded")), cost), else_=cost * func.coalesce(job.progress, 0.0))


def _counted(job, now: datetime) -> Any:
    """SQL: the job counts towards its owner's score (running, or ended within the window after starting)."""
    since = now - timedelta(seconds=get_settings().fair_window)
    return and_(job.cached_from.is_(None), job.started_at.is_not(None),
                or_(job.status == "running", and_(job.finished_at.is_not(None), job.finished_at >= since)))


def score_of(owner_column, now: datetime | None = None) -> Any:
    """SQL scalar: the score of the owner in ``owner_column`` (correlated; for ORDER BY in a claim)."""
    other = aliased(Job)
    return (select(func.coalesce(func.sum(_work(other)), 0.0))
            .where(other.owner == owner_column, _counted(other, now or utcnow()))
            .correlate_except(other).scalar_subquery())


def rank(now: datetime | None = None) -> tuple[Any, Any]:
    """ORDER BY terms for queued jobs: the best first."""
    return score_of(Job.owner, now), Job.id


def scores(conn: Connection, now: datetime | None = None) -> dict[str, float]:
    """Every owner's score now (owners with none counted are missing: score 0)."""
    rows = conn.execute(select(Job.owner, func.sum(_work(Job))).where(_counted(Job, now or utcnow()))
                        .group_by(Job.owner)).all()
    return {owner: float(total or 0.0) for owner, total in rows}


def ahead_of(job_id: int, owner: str, now: datetime | None = None) -> Any:
    """SQL condition on queued jobs: ranked ahead of running job ``job_id`` of ``owner`` (its chunks'
    rank), and of another owner (a user's own jobs keep their order: the running one first)."""
    now = now or utcnow()
    mine, theirs = score_of(owner, now), score_of(Job.owner, now)
    return and_(Job.owner != owner, or_(theirs < mine, and_(theirs == mine, Job.id < job_id)))


def plan(waiting: Iterable[Any], score: dict[str, float]) -> list[Any]:
    """The order in which ``waiting`` (rows with ``id``, ``owner`` and ``cost``, of one queue) will
    start if nothing ends meanwhile: the claim's rule played forward, each start adding its cost to
    its owner's score."""
    left: dict[str, list] = {}
    for row in sorted(waiting, key=lambda r: r.id):
        left.setdefault(row.owner, []).append(row)
    current = {owner: score.get(owner, 0.0) for owner in left}
    heap = [(current[o], rows[0].id, o) for o, rows in left.items()]
    heapq.heapify(heap)
    out = []
    while heap:
        _, _, owner = heapq.heappop(heap)
        row = left[owner].pop(0)
        out.append(row)
        current[owner] += float(row.cost or 0.0)
        if left[owner]:
            heapq.heappush(heap, (current[owner], left[owner][0].id, owner))
    return out
