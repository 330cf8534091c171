"""Celery glue, the same for every job kind: claim a job, run its pieces (workers/glue/runners.py), report
progress, hand the result to the life cycle (backend/lifecycle.py).

A job whose kind splits it into several pieces (kinds.py) fans out: each piece is a ``toroid.chunk``
task on any worker of the job's queue, and a chord's body ``toroid.assemble`` joins their outputs and
finishes the job. A chunk lets a queued job that ranks ahead of its own (backend/fairness.py) run first. The database is the truth: a task changes a job only while it owns the attempt it
claimed, so a job delivered twice, or cancelled, is never finished twice.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any

import torch
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from backend import lifecycle
from backend.config import get_settings
from backend.db import new_session
from backend.models import Job
from workers.glue.app import celery_app, get_celery
from workers.landscape.kinds import KINDS
from workers.glue.runners import RUNNERS, Context, load_data  # noqa: F401  (load_data: for tools and tests)

log = logging.getLogger("toroid.tasks")


@worker_process_init.connect
def _limit_threads(**_kwargs) -> None:
    """Small CPU jobs run faster on fewer threads when processes share the cores (TOROID_TORCH_THREADS)."""
    threads = get_settings().torch_threads
    if threads > 0:
        torch.set_num_threads(threads)


class JobCancelled(Exception):
    pass


class FannedOut(Exception):
    """The job's pieces went to a Celery chord; its body finishes the job."""


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
        if not lifecycle.report(self.job_id, self.attempt, min(max(self.start + fraction * self.span, 0.0), 1.0), message):
            raise JobCancelled()


class NullProgress:
    """Progress of one chunk: the chord reports per finished chunk instead."""

    def __call__(self, fraction: float, message: str) -> None:
        pass

    def sub(self, start: float, span: float) -> "NullProgress":
        return self


class Heartbeat(threading.Thread):
    """Tells the database every few seconds that this attempt's worker is alive, even in long steps
    without progress reports; the reconciler re-queues jobs whose heartbeat stops."""

    def __init__(self, job_id: int, attempt: int):
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id, self.attempt = job_id, attempt
        self.every = max(min(get_settings().heartbeat_timeout / 4, 10.0), 0.5)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                lifecycle.beat(self.job_id, self.attempt)
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)

    def __enter__(self) -> "Heartbeat":
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopped.set()


def _sizes() -> dict[str, int]:
    s = get_settings()
    return {"pairs": s.fanout_pairs, "points": s.fanout_points, "path_points": s.fanout_path_points}


def _fail_message(exc: BaseException) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"the job ran past its time limit of {get_settings().job_time_limit} s and was stopped"
    if isinstance(exc, (ValueError, KeyError, RuntimeError, OSError)):
        return f"{type(exc).__name__}: {exc}"
    log.error("job crashed:\n%s", traceback.format_exc())
    return f"internal error ({type(exc).__name__}: {exc}); see the worker log"


def execute(hint: int) -> str:
    """Claim the best queued job of job ``hint``'s queue (lifecycle.claim) and run it once; returns its
    final status (or 'skipped', 'fanned out')."""
    claimed = lifecycle.claim(hint)
    if claimed is None:
        log.info("nothing queued for the message of job %s (taken, cancelled or ended); dropped", hint)
        return "skipped"
    return run_claimed(*claimed)


def run_claimed(job_id: int, attempt: int) -> str:
    """Run attempt ``attempt`` of job ``job_id`` (claimed by this worker) once; its final status."""
    session = new_session()
    try:
        with Heartbeat(job_id, attempt):
            job = session.get(Job, job_id)
            kind, runner = KINDS[job.kind], RUNNERS[job.kind]
            pieces = kind.pieces(job.params, _sizes())
            if len(pieces) > 1:
                _fan_out(session, job, attempt, pieces)
            ctx = Context(session, job_id, job.owner, job.visibility, Reporter(job_id, attempt))
            result = runner.finish(ctx, job.params, kind.joined(job.params, [runner.piece(ctx, job.params, pieces[0])]))
            # result, new rows and the final state in one transaction, only if this attempt still owns the job
            return "succeeded" if lifecycle.finish(session, job_id, attempt, job.kind, result) else "cancelled"
    except JobCancelled:
        session.rollback()
        return "cancelled"
    except FannedOut:
        session.rollback()
        return "fanned out"
    except Exception as exc:  # noqa: BLE001 - a job must end in a final state whatever happens
        session.rollback()
        log.warning("job %s failed: %s", job_id, exc)
        lifecycle.fail(job_id, attempt, _fail_message(exc))
        return "failed"
    finally:
        session.close()


def _register(kind: str) -> None:
    @celery_app.task(name=f"toroid.{kind}", acks_late=True, reject_on_worker_lost=True)
    def _task(job_id: int) -> str:
        return execute(job_id)


for _kind in KINDS:
    _register(_kind)


# ---- fan-out: pieces of a big job on several workers, joined by a chord -----------------------------

def _fan_out(session, job: Job, attempt: int, pieces: list[Any]) -> None:
    """Hand the pieces to a Celery chord (once per attempt) and raise FannedOut."""
    from celery import chord

    if lifecycle.fanned_out(session, job.id, attempt, len(pieces)):
        app = get_celery()  # the application of the current settings (as lifecycle.enqueue)
        header = [app.signature("toroid.chunk", args=(job.id, attempt, piece, len(pieces)), queue=job.queue, immutable=True)
                  for piece in pieces]
        chord(header, app=app)(app.signature("toroid.assemble", args=(job.id, attempt), queue=job.queue))
    raise FannedOut()


@celery_app.task(bind=True, name="toroid.chunk", acks_late=True, reject_on_worker_lost=True, ignore_result=False,
                 max_retries=None)
def chunk_task(self, job_id: int, attempt: int, piece: Any, n_chunks: int) -> Any:
    """One piece of a fanned-out job. Returns its output, or None when the job was cancelled or handed
    to another attempt (the chord body then does nothing).

    Chunks pass the fair choice (backend/fairness.py): when a queued job of another owner ranks ahead
    of this chunk's job, this worker claims and runs that job first, then sends this chunk to the back
    of its queue again (a retry: same task, same place in the chord), so that a task never holds a
    worker for more than one job's time limit."""
    if not lifecycle.still_mine(job_id, attempt):
        return None
    ahead = lifecycle.claim_ahead(job_id, attempt)
    if ahead is not None:
        log.info("chunk of job %s lets job %s go first (fair share)", job_id, ahead[0])
        run_claimed(*ahead)
        lifecycle.beat(job_id, attempt)  # its chunks are alive: one is deferred, not lost
        raise self.retry(countdown=0)
    session = new_session()
    try:
        with Heartbeat(job_id, attempt):
            job = session.get(Job, job_id)
            ctx = Context(session, job_id, job.owner, job.visibility, NullProgress())
            out = RUNNERS[job.kind].piece(ctx, dict(job.params), piece)
            session.rollback()  # a piece only reads
        return out if lifecycle.chunk_done(job_id, attempt, n_chunks) else None
    except Exception as exc:  # noqa: BLE001 - the job fails with the reason; the chord body never runs
        log.error("chunk of job %s failed:\n%s", job_id, traceback.format_exc())
        lifecycle.fail(job_id, attempt, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        session.close()


@celery_app.task(name="toroid.assemble", acks_late=True, reject_on_worker_lost=True)
def assemble_task(outputs: list, job_id: int, attempt: int) -> str:
    if any(o is None for o in outputs) or not lifecycle.still_mine(job_id, attempt):
        return "skipped"
    session = new_session()
    try:
        job = session.get(Job, job_id)
        ctx = Context(session, job_id, job.owner, job.visibility, NullProgress())
        result = RUNNERS[job.kind].finish(ctx, job.params, KINDS[job.kind].joined(job.params, outputs))
        return "succeeded" if lifecycle.finish(session, job_id, attempt, job.kind, result) else "cancelled"
    except Exception as exc:  # noqa: BLE001
        session.rollback()
        log.error("assembling job %s failed:\n%s", job_id, traceback.format_exc())
        lifecycle.fail(job_id, attempt, f"internal error while assembling ({type(exc).__name__}: {exc})")
        return "failed"
    finally:
        session.close()
