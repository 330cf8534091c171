"""Jobs survive faults: a worker killed mid-job, a wiped broker, a job past its time limit.

The database is the truth: a killed worker's job is re-queued by the reconciler once its heartbeat
stops, and finishes exactly once; queued jobs lost with the broker are sent again.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from backend import jobs
from backend.db import new_session

from .conftest import close_stack, make_stack, start_worker, stop

LONG_TRAIN = {"architecture": {"kind": "mlp", "hidden": [64, 64]}, "dataset": "digits", "optimizer": "sgd",
              "epochs": 60, "seed": 0}


def wait_status(stack, job_id: int, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stack.client.get(f"/api/jobs/{job_id}").json()
        if job["status"] == status and (status != "running" or job["progress"] > 0.02):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} never reached {status}: {job}")


@pytest.fixture
def redis_stack():
    s = make_stack("faults", with_worker=False, backend="services",
                   extra={"TOROID_HEARTBEAT_TIMEOUT": "3"}, reconcile=False)
    yield s
    stop(s.worker)
    close_stack(s)


def test_worker_killed_mid_job_finishes_exactly_once(redis_stack):
    s = redis_stack
    first = start_worker(s.env, s.home / "worker1.log", "doomed")
    try:
        job = s.submit("train", **{**LONG_TRAIN, "epochs": 400}, name="survivor")  # about 10 s on one core
        wait_status(s, job["id"], "running")
        os.killpg(first.pid, signal.SIGKILL)  # the whole worker, pool included: no chance to clean up
        first.wait()
    finally:
        stop(first)
    assert s.client.get(f"/api/jobs/{job['id']}").json()["status"] == "running"  # the database does not know yet
    s.worker = start_worker(s.env, s.home / "worker.log", "rescuer")
    deadline = time.monotonic() + 60
    requeued = []
    while not requeued:  # what the API's periodic reconciler does
        assert time.monotonic() < deadline, "the reconciler never noticed the dead worker"
        time.sleep(1)
        s.activate()
        with new_session() as session:
            requeued = jobs.reconcile(session)["requeued"]
    assert requeued == [job["id"]]
    done = s.wait(job, timeout=300)
    assert done["status"] == "succeeded", done
    detail = s.client.get(f"/api/jobs/{job['id']}").json()
    with new_session() as session:
        from backend.models import Job

        assert session.get(Job, job["id"]).attempts == 2
    survivors = [n for n in s.client.get("/api/networks").json() if n["name"] == "survivor"]
    assert len(survivors) == 1 and survivors[0]["id"] == detail["result"]["network_id"]


def test_wiped_broker_loses_no_queued_job(redis_stack):

    s = redis_stack
    queued = [s.submit("train", **{**LONG_TRAIN, "epochs": 2, "seed": k}, name=f"queued-{k}") for k in range(2)]
    from .conftest import broker_keys, forget_broker

    assert broker_keys(s.env["TOROID_BROKER_URL"], s.env["TOROID_BROKER_PREFIX"])
    forget_broker(s.env["TOROID_BROKER_URL"], s.env["TOROID_BROKER_PREFIX"])  # the broker forgets everything
    assert not broker_keys(s.env["TOROID_BROKER_URL"], s.env["TOROID_BROKER_PREFIX"])
    s.activate()
    with new_session() as session:
        assert sorted(jobs.reconcile(session, resend_all=True)["resent"]) == sorted(j["id"] for j in queued)
    s.worker = start_worker(s.env, s.home / "worker.log", "after-wipe")
    for job in queued:
        assert s.wait(job, timeout=120)["status"] == "succeeded"


def test_job_past_its_time_limit_fails_with_a_clear_message():
    s = make_stack("timelimit", with_worker=True, backend="embedded", extra={"TOROID_JOB_TIME_LIMIT": "2"})
    try:
        job = s.submit("train", **{**LONG_TRAIN, "epochs": 3000}, name="too-long")
        done = s.wait(job, timeout=90)
        assert done["status"] == "failed" and "time limit of 2 s" in done["error"]
        assert not [n for n in s.client.get("/api/networks").json() if n["name"] == "too-long"]
    finally:
        close_stack(s)



def test_database_connections_dropped_under_the_api_are_replaced():
    """PostgreSQL restarted (here: every connection of this API terminated by the server): the next
    requests are answered on fresh connections, reads and writes alike, with no error."""
    import psycopg

    from .helpers import upload

    s = make_stack("dbrestart", with_worker=False, backend="services",
                   extra={"TOROID_DB_PING_AFTER": "1"}, reconcile=False)
    name = f"toroid-dbrestart-{os.getpid()}"  # this stack's connections, and nobody else's
    s.env["TOROID_DATABASE_URL"] += ("&" if "?" in s.env["TOROID_DATABASE_URL"] else "?") + f"application_name={name}"
    s.activate()

    def terminate() -> int:
        with psycopg.connect(os.environ["TOROID_TEST_DATABASE_URL"], autocommit=True) as admin:
            return admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE application_name = %s", (name,)).fetchone()[0]

    try:
        net = upload(s.client, name="survives").json()
        assert s.client.get(f"/api/networks/{net['id']}").status_code == 200  # the pool holds connections now
        assert terminate() >= 1
        for _ in range(3):  # a read finds its connection dead, and is answered on a fresh one
            r = s.client.get(f"/api/networks/{net['id']}")
            assert r.status_code == 200, r.text
        assert terminate() >= 1
        time.sleep(1.2)  # idle past TOROID_DB_PING_AFTER: a write checks its connection before using it
        r = s.client.patch(f"/api/networks/{net['id']}", json={"name": "still-here"})
        assert r.status_code == 200 and r.json()["name"] == "still-here", r.text
        assert s.client.get("/api/networks", params={"q": "still-here"}).json()[0]["id"] == net["id"]
    finally:
        close_stack(s)
