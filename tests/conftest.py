"""Shared fixtures: a real service stack (database, broker, Celery worker process) per backend.

Backends:
- ``embedded``: SQLite + kombu's filesystem broker under a temporary TOROID_HOME (always).
- ``services``: PostgreSQL + Redis from TOROID_TEST_DATABASE_URL / TOROID_TEST_REDIS_URL. When they
  are not set or not reachable the tests skip with the reason, except under CI=true, where they fail.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TOROID_VARS = ("TOROID_HOME", "TOROID_DATABASE_URL", "TOROID_BROKER_URL", "TOROID_DATA_ROOT",
               "TOROID_MAX_UPLOAD_BYTES", "TOROID_WORKER_CONCURRENCY", "TOROID_JOB_TIME_LIMIT", "TOROID_AUTH",
               "TOROID_HEARTBEAT_TIMEOUT", "TOROID_FANOUT_PAIRS", "TOROID_TORCH_THREADS", "TOROID_RESEND_AFTER",
               "TOROID_FANOUT_POINTS", "TOROID_FANOUT_PATH_POINTS", "TOROID_MAX_JOB_COST", "TOROID_MAX_RUNNING_JOBS",
               "TOROID_WORKER_MEMORY", "TOROID_MAX_ACTIVATION_BYTES", "TOROID_BROKER_PREFIX", "TOROID_FANOUT_TIMEOUT",
               "TOROID_FAIR_WINDOW", "TOROID_CHECK_PROCESSES", "TOROID_CHECK_THREADS", "TOROID_CHECKS_PER_USER")


def missing_service(reason: str):
    """Skip (on a developer's machine) or fail (under CI) for a service the test needs."""
    if IN_CI:
        pytest.fail(f"under CI this must run: {reason}")
    pytest.skip(reason)


def configure(env: dict[str, str]) -> None:
    """Point this process's settings, engine and Celery app at ``env``."""
    for key in TOROID_VARS:
        os.environ.pop(key, None)
    os.environ.update(env)
    from backend import config, db
    from workers.glue import app as worker_app

    config.get_settings.cache_clear()
    db.reset_engines()
    worker_app.get_celery.cache_clear()


def broker_keys(redis_url: str, prefix: str) -> list[bytes]:
    """The Redis keys of one test stack (under its prefix), in the one database the tests were given."""
    import redis

    return list(redis.Redis.from_url(redis_url, socket_connect_timeout=5).scan_iter(match=f"{prefix}*", count=1000))


def forget_broker(redis_url: str, prefix: str) -> None:
    """Delete one test stack's keys (its prefix), nothing else: the database may hold other people's keys."""
    import redis

    keys = broker_keys(redis_url, prefix)
    if keys:
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).delete(*keys)


def services_env(schema: str, prefix: str | None = None, flush_redis: bool = True) -> dict[str, str]:
    """PostgreSQL in a fresh schema, and the Redis database of TOROID_TEST_REDIS_URL under a key prefix of
    this stack's own (default: from the schema), whose keys are deleted first; never another database, and
    never another prefix's keys (stacks without a worker keep their queued messages from others' workers)."""
    db_url = os.environ.get("TOROID_TEST_DATABASE_URL")
    redis_url = os.environ.get("TOROID_TEST_REDIS_URL")
    prefix = prefix or f"toroid-test:{schema}:"
    if not db_url or not redis_url:
        missing_service("TOROID_TEST_DATABASE_URL and TOROID_TEST_REDIS_URL are not set (PostgreSQL / Redis tests)")
    try:
        import psycopg
        import redis

        plain = db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {schema}")
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).ping()
        if flush_redis:
            forget_broker(redis_url, prefix)
    except Exception as exc:  # noqa: BLE001
        missing_service(f"PostgreSQL / Redis not reachable: {exc}")
    sep = "&" if "?" in db_url else "?"
    return {"TOROID_DATABASE_URL": f"{db_url}{sep}options={quote(f'-csearch_path={schema}')}",
            "TOROID_BROKER_URL": redis_url, "TOROID_BROKER_PREFIX": prefix}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_log(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"'{needle}' not seen in {path} within {timeout} s:\n{path.read_text(errors='replace')[-3000:]}")


def start_worker(env: dict[str, str], log: Path, name: str = "test") -> subprocess.Popen:
    from workers.glue.app import QUEUES

    cmd = [sys.executable, "-m", "celery", "-A", "workers.glue.app", "worker", "-Q", ",".join(QUEUES), "-c", "1",
           "-n", f"{name}-{os.getpid()}@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_log(log, "ready.", proc)
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Stack:
    """A configured backend: API client in this process, a real worker process beside it."""

    name: str
    env: dict[str, str]
    home: Path
    client: Any = None
    worker: subprocess.Popen | None = None
    extra: dict = field(default_factory=dict)

    def activate(self) -> None:
        configure(self.env)

    def wait(self, job: dict | int, timeout: float = 180) -> dict:
        job_id = job if isinstance(job, int) else job["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.client.get(f"/api/jobs/{job_id}").json()
            if current["status"] in ("succeeded", "failed", "cancelled"):
                return current
            time.sleep(0.2)
        log = (self.home / "worker.log").read_text(errors="replace")[-3000:]
        raise TimeoutError(f"job {job_id} did not end within {timeout} s; worker log:\n{log}")

    def submit(self, kind: str, **params) -> dict:
        r = self.client.post("/api/jobs", json={"kind": kind, "params": params})
        assert r.status_code == 202, r.text
        return r.json()

    def run(self, kind: str, **params) -> dict:
        job = self.wait(self.submit(kind, **params))
        assert job["status"] == "succeeded", job
        return job


def make_stack(name: str, with_worker: bool, backend: str | None = None, extra: dict[str, str] | None = None,
               **app_options) -> Stack:
    """A stack named ``name`` on ``backend`` ("embedded" or "services"; default: the name)."""
    backend = backend or name
    home = Path(tempfile.mkdtemp(prefix=f"toroid-{name}-"))
    try:  # a skip (services missing) or a failed start removes the home again: no empty folders left behind
        env = {"TOROID_HOME": str(home), "TOROID_TORCH_THREADS": "1", **(extra or {})}
        if backend == "services":
            env.update(services_env(f"toroid_{name}_{os.getpid()}"))
        stack = Stack(name=name, env=env, home=home)
        stack.activate()
        from fastapi.testclient import TestClient

        from backend.app import create_app

        stack.client = TestClient(create_app(**app_options))
        if with_worker:
            stack.worker = start_worker(env, home / "worker.log", name)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    return stack


def close_stack(stack: Stack) -> None:
    stop(stack.worker)
    stack.client.close()
    shutil.rmtree(stack.home, ignore_errors=True)
    if stack.env.get("TOROID_BROKER_PREFIX"):  # its Redis keys go with it
        try:
            forget_broker(stack.env["TOROID_BROKER_URL"], stack.env["TOROID_BROKER_PREFIX"])
        except Exception:  # noqa: BLE001 - Redis gone at the end of a run: nothing to clean
            pass


@pytest.fixture(scope="session", params=["embedded", "services"])
def stack(request) -> Stack:
    """A full stack with a worker, once per backend."""
    s = make_stack(request.param, with_worker=True)
    yield s
    close_stack(s)


@pytest.fixture
def live(stack: Stack) -> Stack:
    stack.activate()
    return stack


@pytest.fixture(scope="session")
def api_stack() -> Stack:
    """Embedded stack without a worker: for validation tests that must never reach a worker."""
    s = make_stack("api", with_worker=False)
    yield s
    close_stack(s)


@pytest.fixture
def api(api_stack: Stack):
    api_stack.activate()
    return api_stack.client


def start_serve(*args: str, prefix: str = "toroid-serve-"):
    """`toroid serve --port P ARGS` as a user starts it, embedded, in a fresh home (its own process group):
    (url, home, log, process, environment)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    env = {**os.environ, "TOROID_HOME": str(home)}
    for key in ("TOROID_DATABASE_URL", "TOROID_BROKER_URL", "TOROID_BROKER_PREFIX"):
        env.pop(key, None)
    toroid = Path(sys.executable).parent / "toroid"
    log = home / "serve.log"
    proc = subprocess.Popen([str(toroid), "serve", "--port", str(port), *args], cwd=ROOT, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return f"http://127.0.0.1:{port}", home, log, proc, env


@pytest.fixture(scope="session")
def server():
    """`toroid serve` as a user starts it (API + its own worker process), on a free port, embedded."""
    url, home, log, proc, env = start_serve()
    from backend.client import Client

    try:
        Client(url).wait_ready(timeout=90, alive=lambda: proc.poll() is None)
    except TimeoutError:
        stop(proc)
        raise RuntimeError(f"toroid serve did not come up:\n{log.read_text(errors='replace')[-3000:]}") from None
    wait_for_log(home / "worker.log", "ready.", proc)
    yield {"url": url, "home": home, "env": env, "proc": proc}
    stop(proc)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing_service(f"playwright is not installed: {exc}")
    exe = os.environ.get("TOROID_TEST_CHROMIUM", "/usr/bin/chromium")
    if not Path(exe).exists():
        missing_service(f"no Chromium at {exe} (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the served dashboard; fails the test if the page logs a console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    errors: list[str] = []
    # An API answering 4xx is a legitimate answer the page shows in words (Chromium still logs it as
    # "Failed to load resource"); a page asset that fails to load is a bug.
    p.on("console", lambda m: errors.append(m.text) if m.type == "error"
         and not m.text.startswith("Failed to load resource: the server responded with a status of 4") else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("response", lambda r: errors.append(f"{r.status} for {r.url}")
         if r.status >= 400 and "/api/" not in r.url else None)
    outside: list[str] = []
    p.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server["url"]) and not r.url.startswith("data:") else None)
    yield p
    context.close()
    assert not errors, f"the page logged errors: {errors}"
    assert not outside, f"the page made requests off the machine: {outside}"
