"""One Settings object, read from the environment (TOROID_* variables) — the only place configuration lives."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOROID_", extra="ignore")

    # All state of the embedded default lives under this folder: database, weight store, broker files.
    home: Path = Field(default_factory=lambda: Path.home() / ".toroid")
    # SQLAlchemy URL; empty means SQLite at <home>/toroid.db. Example: postgresql://user@host/db
    database_url: str = ""
    # Celery broker; empty means kombu's filesystem transport under <home>/broker (no server needed).
    broker_url: str = ""
    # Prefix of every key the Redis broker and result backend write (empty: none): several installations,
    # or test runs, share one Redis database without reading each other's messages.
    broker_prefix: str = ""
    # Folder holding MNIST / Fashion-MNIST / CIFAR in torchvision's layout (never downloaded).
    data_root: Path | None = None
    # Largest accepted weights upload, in bytes (413 above it), counted on the bytes as they arrive.
    max_upload_bytes: int = 256 * 1024 * 1024
    # Largest accepted body of every other request (JSON), in bytes (413 above it).
    max_json_bytes: int = 1024 * 1024
    # A request body that sends nothing for this many seconds, or is not complete after
    # body_timeout seconds, is answered 408 and its connection closed.
    body_stall_timeout: float = 30.0
    body_timeout: float = 900.0
    # A connection must send each request's line and headers within this many seconds of opening or
    # of the previous response (backend/protocol.py; 0: no limit), else 408 and closed.
    header_timeout: float = 20.0
    # Largest request head (request line and headers together), in bytes, counted as they arrive
    # before the HTTP parser buffers them (backend/protocol.py): 431 and closed above it.
    max_header_bytes: int = 64 * 1024
    # A response whose bytes the client does not take for this many seconds (the send buffer stays
    # full) is dropped and its connection closed (backend/protocol.py; 0: no limit).
    write_timeout: float = 30.0
    # Largest network (parameters) an upload or a train job may declare; VGG16 and ResNet-50 fit.
    max_parameters: int = 150_000_000
    # A Prometheus scraper's token for /metrics when authentication is on (an admin's token works too).
    metrics_token: str = ""
    # How long a repeated Idempotency-Key answers with the first answer, in seconds.
    idempotency_ttl: float = 24 * 3600.0
    # Worker processes started by `toroid serve` beside the API.
    worker_concurrency: int = 1
    # CPU threads torch may use in each worker process (0: torch's default, one per core).
    torch_threads: int = 0
    # Hard time limit of one job, in seconds (it fails with a clear message past it).
    job_time_limit: int = 6 * 3600
    # Authentication: "auto" requires a token whenever `toroid serve` listens beyond loopback;
    # "on" always; "off" never (single-user machine).
    auth: Literal["auto", "on", "off"] = "auto"
    # Per-user limits (an admin may set others per user): unfinished jobs, stored weight bytes.
    max_running_jobs: int = 20
    max_stored_bytes: int = 20 * 1024**3
    # Largest accepted cost estimate of one job, in FLOPs (workers/landscape/kinds.py: evaluations x samples
    # x forward FLOPs per sample, training x 3 per epoch); VGG16 trained 300 epochs on CIFAR-10 (2.8e16) fits.
    max_job_cost: float = 1e17
    # Largest activation memory of one sample in a training step, in bytes (uploads and train jobs; 400 above).
    max_activation_bytes: int = 32 * 1024**2
    # Memory of one worker process in bytes, its own baseline included: every job's chunks are sized to it,
    # and a job that cannot fit one sample is refused at submission (0: a quarter of the machine's memory).
    worker_memory: int = 0
    # A running job whose worker has not been heard from for this long is handed to another worker.
    heartbeat_timeout: float = 60.0
    # A fanned-out job whose chunks have not been heard from for this long (none ran, none was deferred,
    # no worker of its queue was busy) lost its chunks (a wiped broker): it is queued again as a new attempt.
    fanout_timeout: float = 300.0
    # Fair sharing (backend/fairness.py): an owner's score is the cost of their running jobs plus that of
    # their jobs that ended within this many seconds; the lowest score runs next.
    fair_window: float = 3600.0
    # Queued jobs are sent to the broker again after this long (a wiped broker loses nothing).
    resend_after: float = 600.0
    # Seconds between two passes of the reconciler in the API process (0: only at start).
    reconcile_every: float = 15.0
    # Big jobs fan out over workers (Celery chord): pairs of networks per chunk of a matrix job, and
    # evaluated noisy networks (draws x noise levels) per chunk of a flatness job.
    fanout_pairs: int = 16
    fanout_points: int = 1000
    # positions per chunk of a long linear, linear-aligned or geodesic path job
    fanout_path_points: int = 64
    # API process: threads serving database work (each holds at most one pooled connection), and
    # seconds a pooled connection may sit idle before it is checked with a ping on its next use.
    api_threads: int = 4
    # Expensive checks before a request is answered (backend/checks.py): processes for an architecture's
    # trace and sizes (0: in the check threads), threads for an upload's parse and build, beside the API's
    # own, and how many one user may have in flight (429 above).
    check_processes: int = 2
    check_threads: int = 2
    checks_per_user: int = 2
    db_ping_after: float = 10.0

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite:///{self.home / 'toroid.db'}"
        # Plain postgresql:// URLs use psycopg 3 (the driver the project installs).
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def celery_result_backend(self) -> str:
        """Where chunk results of fanned-out jobs wait for their chord: Redis, or SQLite beside the broker."""
        if self.celery_broker_url.startswith(("redis://", "rediss://")):
            return self.celery_broker_url
        return f"db+sqlite:///{self.home / 'celery-results.sqlite'}"

    @property
    def embedded_broker(self) -> bool:
        return self.celery_broker_url.startswith("filesystem://")

    @property
    def dataset_root(self) -> Path:
        return self.data_root or (self.home / "data")

    def ensure_dirs(self) -> None:
        for d in (self.home, self.store_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.embedded_broker:
            for sub in ("queue", "processed"):
                (self.broker_dir / sub).mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
