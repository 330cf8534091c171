"""Prometheus metrics at /metrics, read from the database (the truth) and the broker at scrape time,
so every API replica reports the same numbers whichever process ran the jobs."""
from __future__ import annotations

import secrets

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func, select

from .config import get_settings
from .db import new_session
from .models import JOB_STATES, Job, Network

DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, float("inf"))


def queue_depths() -> dict[str, int | None]:
    """Messages waiting in each Celery queue (None when the broker cannot be asked)."""
    from workers.glue.app import QUEUES

    settings = get_settings()
    try:
        if settings.embedded_broker:
            folder = settings.broker_dir / "queue"
            names = [p.name for p in folder.iterdir()] if folder.exists() else []
            return {q: sum(1 for n in names if n.endswith(f".{q}.msg")) for q in QUEUES}
        if settings.celery_broker_url.startswith(("redis://", "rediss://")):
            import redis

            r = redis.Redis.from_url(settings.celery_broker_url, socket_timeout=2)
            return {q: int(r.llen(settings.broker_prefix + q)) for q in QUEUES}
    except Exception:  # noqa: BLE001 - a scrape must not fail because the broker is away
        pass
    return {q: None for q in QUEUES}


class ToroidCollector:
    def collect(self):
        with new_session() as s:
            by_state = dict(s.execute(select(Job.status, func.count(Job.id)).group_by(Job.status)).all())
            by_kind = s.execute(select(Job.kind, Job.status, func.count(Job.id)).group_by(Job.kind, Job.status)).all()
            finished = s.execute(select(Job.kind, Job.started_at, Job.finished_at)
                                 .where(Job.status == "succeeded", Job.cached_from.is_(None),
                                        Job.started_at.is_not(None), Job.finished_at.is_not(None))).all()
            n_networks, stored = s.execute(select(func.count(Network.id),
                                                  func.coalesce(func.sum(Network.weights_bytes), 0))).one()
        jobs = GaugeMetricFamily("toroid_jobs", "Jobs by state", labels=["state"])
        for state in JOB_STATES:
            jobs.add_metric([state], by_state.get(state, 0))
        yield jobs
        kinds = GaugeMetricFamily("toroid_jobs_by_kind", "Jobs by kind and state", labels=["kind", "state"])
        for kind, state, n in by_kind:
            kinds.add_metric([kind, state], n)
        yield kinds
        per_kind: dict[str, list[float]] = {}
        for kind, start, end in finished:
            per_kind.setdefault(kind, []).append(max((end - start).total_seconds(), 0.0))
        hist = HistogramMetricFamily("toroid_job_duration_seconds", "Run time of finished jobs", labels=["kind"])
        for kind, values in per_kind.items():
            buckets = [(str(b) if b != float("inf") else "+Inf", sum(v <= b for v in values)) for b in DURATION_BUCKETS]
            hist.add_metric([kind], buckets, sum_value=sum(values))
        yield hist
        depth = GaugeMetricFamily("toroid_queue_depth", "Messages waiting in the broker", labels=["queue"])
        for queue, n in queue_depths().items():
            if n is not None:
                depth.add_metric([queue], n)
        yield depth
        yield GaugeMetricFamily("toroid_networks", "Stored networks", value=n_networks)
        yield GaugeMetricFamily("toroid_stored_bytes", "Bytes of stored weights", value=stored)


async def check_scraper(request) -> None:
    """With authentication on, /metrics is for an admin's token or ``TOROID_METRICS_TOKEN`` (a scraper's):
    its totals count private networks and jobs too."""
    from fastapi import HTTPException

    from .auth import authenticate

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = get_settings().metrics_token
    if expected and scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), expected.encode()):
        return
    user = await authenticate(request.app, header)
    if not user.is_admin:
        raise HTTPException(403, "/metrics needs an admin's token or TOROID_METRICS_TOKEN")


def render() -> bytes:
    registry = CollectorRegistry()
    registry.register(ToroidCollector())
    return generate_latest(registry)
