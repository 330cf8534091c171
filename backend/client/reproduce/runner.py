"""Run many jobs through the REST API with one progress bar: a window of jobs in flight, failures recorded.

A job the service cannot run because its kind or path type does not exist (yet) marks that *feature*
missing: the other jobs needing it are skipped, and the report says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from backend.client import ApiError

FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Spec:
    """One job to run: ``key`` names it for the caller; ``feature`` names what it needs of the service."""

    key: Any
    kind: str
    params: dict[str, Any]
    feature: str | None = None


@dataclass
class Runner:
    client: Any
    total: int
    quiet: bool = False
    window: int = 10  # jobs in flight at once (the service allows 20 unfinished jobs per user)
    poll: float = 0.3
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)  # every finished job, by id
    failures: list[dict[str, Any]] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # feature -> why it is missing
    skipped: int = 0
    cached: int = 0
    refuse_stage: bool = False  # a train job the service refuses (400) stops the run: ValueError naming why

    def __post_init__(self) -> None:
        self.done = 0
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} jobs [{elapsed}<{remaining}]{postfix}"
        self.bar = tqdm(total=self.total, desc="reproduce", unit="job", disable=self.quiet, dynamic_ncols=True,
                        bar_format=fmt)

    def close(self) -> None:
        self.bar.n = self.done
        self.bar.refresh()
        self.bar.close()

    def _advance(self, running: dict[int, dict[str, Any]] | None = None) -> None:
        partial = sum(float(j.get("progress") or 0.0) for j in (running or {}).values())
        self.bar.n = min(self.done + partial, self.total)
        active = [j for j in (running or {}).values() if j.get("status") == "running"]
        if active:
            j = active[0]
            self.bar.set_postfix_str(f"{j['kind']} {j['id']}: {str(j.get('message') or '')[:50]}", refresh=False)
        else:
            self.bar.set_postfix_str("", refresh=False)
        self.bar.refresh()

    def _fail(self, spec: Spec, error: str, job_id: int | None = None) -> None:
        self.failures.append({"key": str(spec.key), "kind": spec.kind, "params": spec.params, "job": job_id,
                              "error": error})

    @staticmethod
    def _missing_reason(spec: Spec, exc: ApiError) -> str | None:
        """Why ``spec`` cannot run at all on this service (its kind or path type is unknown), else None."""
        detail = str(exc.detail)
        if exc.status == 400 and "unknown job kind" in detail:
            return f"not available: job kind missing ({detail})"
        if exc.status == 400 and spec.kind == "path" and "'type' must be one of" in detail:
            return f"not available: path type {spec.params.get('type')!r} missing ({detail})"
        return None

    def run(self, specs: list[Spec]) -> dict[Any, dict[str, Any] | None]:
        """Run ``specs``; returns key -> the finished job (with "result"), or None when it failed or was skipped."""
        out: dict[Any, dict[str, Any] | None] = {}
        pending = list(specs)
        running: dict[int, dict[str, Any]] = {}  # job id -> latest job row
        owner: dict[int, Spec] = {}
        waited_429 = 0
        while pending or running:
            # submit while the window has room
            while pending and len(running) < self.window:
                spec = pending[0]
                if spec.feature and spec.feature in self.missing:
                    pending.pop(0)
                    out[spec.key] = None
                    self.skipped += 1
                    self.done += 1
                    continue
                try:
                    job = self.client.submit(spec.kind, **spec.params)
                except ApiError as exc:
                    if exc.status == 429 and running:  # the service's limit of unfinished jobs: wait for some
                        break
                    if exc.status == 429 and waited_429 < 600:  # someone else's jobs fill the quota
                        time.sleep(2.0)
                        waited_429 += 2
                        continue
                    pending.pop(0)
                    if self.refuse_stage and spec.kind == "train" and exc.status == 400:
                        raise ValueError(f"the service refuses the architecture: {exc.detail}") from None
                    reason = self._missing_reason(spec, exc)
                    if spec.feature and exc.status == 400 and not reason:
                        # a job of an optional feature the service rejects: its twins would be rejected too
                        reason = f"not available: the service rejects {spec.kind} jobs {spec.params} ({exc.detail})"
                    if reason and spec.feature:
                        self.missing.setdefault(spec.feature, reason)
                        self.skipped += 1
                    else:
                        self._fail(spec, f"rejected: {exc.detail}")
                    out[spec.key] = None
                    self.done += 1
                    continue
                pending.pop(0)
                if job.get("cached"):
                    self.cached += 1
                running[job["id"]] = job
                owner[job["id"]] = spec
            if not running:
                continue
            self._advance(running)
            time.sleep(self.poll)
            for job_id, row in self._statuses(list(running)).items():
                running[job_id] = row
            for job_id in [i for i, row in running.items() if row["status"] in FINAL]:
                spec = owner.pop(job_id)
                del running[job_id]
                job = self.client.job(job_id)
                self.done += 1
                if job["status"] == "succeeded" and job.get("result") is not None:
                    self.jobs[job_id] = job
                    out[spec.key] = job
                else:
                    self._fail(spec, job.get("error") or f"job {job_id} {job['status']}", job_id)
                    out[spec.key] = None
            self._advance(running)
        self._advance()
        return out

    def _statuses(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """The current rows of jobs ``ids``: one listing call, then single reads for any it did not show."""
        rows: dict[int, dict[str, Any]] = {}
        try:
            listed = self.client.jobs(limit=min(1000, 100 + 2 * len(ids)))
            wanted = set(ids)
            rows = {j["id"]: j for j in listed if j["id"] in wanted}
        except ApiError:
            pass
        for job_id in ids:
            if job_id not in rows:
                rows[job_id] = self.client.job(job_id)
        return rows
