"""The Celery application. Broker and queues come from backend.config.

Embedded default: kombu's filesystem transport under TOROID_HOME (no server), through workers.glue.broker's
subclass (messages written to a temporary name and renamed into place, so a worker never reads half a
message; kombu's own writer lets it, and the worker then dies on a JSONDecodeError). Lab server: Redis.
Queues: ``interactive`` for what a person waits for (evaluate, distance, canonicalize, path, small
flatness; kinds.py decides per job), ``batch`` for long work (train, matrix, plane, big flatness). Workers are started per queue
(`toroid serve` runs one process for each), so interactive work never waits behind batch work.
"""
from __future__ import annotations

from functools import lru_cache

from celery import Celery
from kombu import Exchange, Queue

from backend.config import get_settings

QUEUES = ("interactive", "batch")


def make_celery() -> Celery:
    settings = get_settings()
    # The result backend holds only the chunk results of fanned-out jobs until their chord assembles them.
    app = Celery("toroid", broker=settings.celery_broker_url, backend=settings.celery_result_backend,
                 include=["workers.glue.tasks"])
    conf: dict = dict(
        task_ignore_result=True,  # the database is the truth: results are written there by the task
        task_acks_late=True,  # a job whose worker dies is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        task_default_queue="interactive",
        task_default_exchange="interactive",
        task_default_routing_key="interactive",
        task_time_limit=settings.job_time_limit + 60,
        task_soft_time_limit=settings.job_time_limit,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=7 * 24 * 3600,
        result_chord_retry_interval=0.5,
    )
    if settings.embedded_broker:
        settings.ensure_dirs()
        queue_dir = str(settings.broker_dir / "queue")
        conf["broker_transport"] = "workers.glue.broker:Transport"  # atomic writes; see workers/glue/broker.py
        conf["broker_transport_options"] = {
            "data_folder_in": queue_dir,
            "data_folder_out": queue_dir,
            "processed_folder": str(settings.broker_dir / "processed"),
            "store_processed": False,  # a read message is deleted: the processed folder stays empty
            "polling_interval": 0.2,  # seconds between looks at the queue folder
            "control_folder": str(settings.broker_dir / "control"),
        }
    else:
        # Redis: a job not acknowledged within the visibility timeout is delivered again.
        conf["broker_transport_options"] = {"visibility_timeout": settings.job_time_limit + 600}
        if settings.broker_prefix:  # every key of the broker and of the chunk results under one prefix
            conf["broker_transport_options"]["global_keyprefix"] = settings.broker_prefix
            conf["result_backend_transport_options"] = {"global_keyprefix": settings.broker_prefix}
    app.conf.update(conf)
    return app


def clean_results(app: Celery | None = None) -> None:
    """Delete chunk results older than ``result_expires`` from the result backend. Redis expires them by
    itself; the embedded SQLite backend only when asked (Celery's beat would, and no beat runs), so the API
    process's reconciler calls this from time to time."""
    (app or get_celery()).backend.cleanup()


@lru_cache
def get_celery() -> Celery:
    """The application for the current settings (tests clear this cache when they switch settings)."""
    return make_celery()


celery_app = get_celery()  # what `celery -A workers.glue.app worker` loads
