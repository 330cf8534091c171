"""Fair share by work done (issue 26 item 3), with one worker per queue (the default), on the embedded
default and on PostgreSQL + Redis: bob queues six trains, then alice one; alice's runs second and the
queue place she was shown was true. Chunks of a fanned-out job pass the same choice. A fanned-out job
whose chunks were lost with the broker is queued again, and no job attaches to it once it is lost.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from datetime import timedelta

import pytest
from safetensors.torch import save

from backend import auth, jobs
from backend.db import new_session, read_connection
from backend.models import Job, utcnow

from .conftest import close_stack, make_stack, start_worker, stop
from .helpers import random_state

TRAIN = {"architecture": {"kind": "mlp", "hidden": [64, 64]}, "dataset": "digits", "optimizer": "sgd"}
BIG = {"kind": "mlp", "hidden": [256, 256]}


def wait_for(fn, timeout: float = 120, what: str = "it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := fn():
            return out
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


class Lab:
    """A stack with tokens on and two users, alice and bob, each with a client's headers."""

    def __init__(self, name: str, backend: str, extra: dict | None = None, worker: bool = True):
        self.s = make_stack(name, with_worker=worker, backend=backend, require_auth=True, reconcile=False,
                            extra=extra)
        with new_session() as ses:
            self.headers = {n: {"Authorization": f"Bearer {auth.create_user(ses, n)[1]}"} for n in ("alice", "bob")}

    def submit(self, user: str, kind: str, **params) -> dict:
        r = self.s.client.post("/api/jobs", json={"kind": kind, "params": params}, headers=self.headers[user])
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, user: str, job_id: int) -> dict:
        return self.s.client.get(f"/api/jobs/{job_id}", headers=self.headers[user]).json()

    def wait(self, job: dict, timeout: float = 240) -> dict:
        user = "alice" if job["owner"] == "alice" else "bob"
        return wait_for(lambda: (j := self.job(user, job["id"]))["status"] in ("succeeded", "failed", "cancelled") and j,
                        timeout=timeout, what=f"job {job['id']} ending")

    def upload(self, user: str, spec: dict, seed: int, name: str) -> int:
        blob = save({k: v.contiguous() for k, v in random_state(spec, seed=seed).items()})
        meta = {"name": name, "architecture": spec, "dataset": "digits"}
        r = self.s.client.post("/api/networks", files={"file": ("w.safetensors", blob)},
                               data={"meta": json.dumps(meta)}, headers=self.headers[user])
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def cancel_all(self) -> None:
        self.s.activate()
        with new_session() as ses:
            active = [(j.id, j.owner) for j in ses.query(Job).filter(Job.status.in_(("queued", "running")))]
        for job_id, owner in active:
            self.s.client.delete(f"/api/jobs/{job_id}", headers=self.headers[owner])


@pytest.fixture(params=["embedded", "services"])
def lab(request):
    lab = Lab(f"fair{request.param[0]}", request.param, extra={"TOROID_FANOUT_POINTS": "200"})
    yield lab
    lab.cancel_all()
    close_stack(lab.s)


def test_alice_runs_second_after_bobs_six_trains_and_was_told_so(lab):
    bob = [lab.submit("bob", "train", **TRAIN, epochs=150, seed=k, name=f"bob-{k}") for k in range(6)]
    wait_for(lambda: lab.job("bob", bob[0]["id"])["status"] == "running", what="bob's first train running")
    alice = lab.submit("alice", "train", **TRAIN, epochs=150, seed=99, name="alice-0")
    # she is told she is next (before: told 1 as well, and started 7th), and bob's others come after her
    assert alice["status"] == "queued" and alice["queue_position"] == 1, alice
    assert [lab.job("bob", j["id"])["queue_position"] for j in bob[1:]] == [2, 3, 4, 5, 6]
    done = lab.wait(alice, timeout=240)
    assert done["status"] == "succeeded", done
    lab.s.activate()
    with new_session() as ses:
        started = [j.id for j in ses.query(Job).filter(Job.started_at.is_not(None)).order_by(Job.started_at, Job.id)]
    assert started[:2] == [bob[0]["id"], alice["id"]], (started, [j["id"] for j in bob], alice["id"])


def test_chunks_of_a_fanned_out_job_let_a_better_ranked_job_go_first(lab):
    net = lab.upload("bob", BIG, 3, "bob-big")
    # 12 noise levels x 200 draws, one level per chunk (TOROID_FANOUT_POINTS 200): 12 chunks on the batch queue
    sigmas = [0.01 * (k + 1) for k in range(12)]
    big = lab.submit("bob", "flatness", network=net, sigmas=sigmas, draws=200, seed=1)
    assert big["queue"] == "batch"
    wait_for(lambda: "fanned out in 12" in lab.job("bob", big["id"])["message"], what="bob's job fanned out")
    small = lab.submit("alice", "train", **TRAIN, epochs=20, seed=7, name="alice-small")
    assert small["queue"] == "batch" and small["queue_position"] == 1
    done = lab.wait(small, timeout=240)
    assert done["status"] == "succeeded", done
    at_alice = lab.job("bob", big["id"])
    # before: alice's job waited for all 12 chunks (bob's job at 99%)
    assert at_alice["status"] == "running" and at_alice["progress"] < 0.5, at_alice
    finished = lab.wait(big, timeout=300)
    assert finished["status"] == "succeeded", finished
    result = finished["result"]
    assert result["chunks"] == 12 and result["sigma"] == sigmas and len(result["delta_mean"]) == 12
    assert "lets job" in (lab.s.home / "worker.log").read_text()  # a chunk deferred to alice's job


def test_scores_count_recent_work_running_work_and_nothing_cached():
    """The rule's parts, on rows: work in the window counts (failed or cancelled: the part done), running
    jobs count their cost, old work and cached answers count nothing; the forecast plays it forward."""
    from backend import fairness
    from backend.routes.jobs import add_queue_positions, job_dict

    s = make_stack("fairrows", with_worker=False)
    try:
        now = utcnow()
        ago = lambda sec: now - timedelta(seconds=sec)  # noqa: E731
        with new_session() as ses:
            mk = lambda key, **kw: Job(kind="train", params={}, inputs=[], cache_key=str(key), queue="batch", **kw)  # noqa: E731
            ses.add_all([
                mk(1, owner="bob", status="succeeded", cost=100.0, started_at=ago(60), finished_at=ago(30)),
                mk(2, owner="bob", status="failed", cost=100.0, progress=0.5, started_at=ago(60), finished_at=ago(30)),
                mk(3, owner="bob", status="succeeded", cost=1e9, started_at=ago(9000), finished_at=ago(8000)),
                mk(4, owner="carol", status="running", cost=120.0, started_at=ago(5)),
                mk(5, owner="dave", status="succeeded", cost=1e9, cached_from=1, started_at=ago(5), finished_at=ago(5)),
                mk(6, owner="erin", status="cancelled", cost=1e9, finished_at=ago(5)),  # cancelled while queued
            ])
            ses.commit()
            with read_connection() as conn:
                score = fairness.scores(conn)
            assert score == {"bob": 150.0, "carol": 120.0}
            # queued: dave (0) first, then carol (120) before bob (150), then the rest played forward
            queued = [mk(10 + k, owner=o, status="queued", cost=c) for k, (o, c) in
                      enumerate((("bob", 10.0), ("bob", 10.0), ("carol", 50.0), ("dave", 200.0), ("carol", 1.0)))]
            ses.add_all(queued)
            ses.commit()
            rows = [job_dict(j) for j in queued]
        with read_connection() as conn:
            places = [j["queue_position"] for j in add_queue_positions(conn, rows)]
        # dave 0 -> 1st (then 200); carol 120 -> 2nd (then 170); bob 150 -> 3rd (160), bob 160 -> 4th (170);
        # carol's second (170) last
        assert places == [3, 4, 2, 1, 5], places
        # the claim takes the same first job
        from backend import lifecycle

        with new_session() as ses:
            first = lifecycle.claim(queued[0].id)
            assert first is not None and first[0] == queued[3].id
    finally:
        close_stack(s)


@pytest.mark.parametrize("backend", ["embedded", "services"])
def test_a_fanned_out_job_lost_with_the_broker_is_queued_again_and_never_led_again(backend):
    lab = Lab(f"fairlost{backend[0]}", backend, extra={"TOROID_HEARTBEAT_TIMEOUT": "2", "TOROID_FANOUT_TIMEOUT": "4",
                                                         "TOROID_FANOUT_POINTS": "100"})
    s = lab.s
    try:
        net = lab.upload("bob", BIG, 5, "lost-big")
        params = dict(network=net, sigmas=[0.01 * (k + 1) for k in range(8)], draws=100, seed=2)
        leader = lab.submit("bob", "flatness", **params)
        wait_for(lambda: "fanned out in 8" in lab.job("bob", leader["id"])["message"], what="the job fanned out")
        follower = lab.submit("alice", "flatness", **params)  # the leader is alive: attached
        assert "waiting for job" in follower["message"]
        os.killpg(s.worker.pid, signal.SIGKILL)  # the worker and its chunk, then the broker forgets everything
        s.worker.wait()
        if backend == "services":
            import redis

            redis.Redis.from_url(s.env["TOROID_BROKER_URL"]).flushdb()
        else:
            shutil.rmtree(s.home / "broker" / "queue")
            (s.home / "broker" / "queue").mkdir()
        time.sleep(5)  # past the fan-out timeout: nothing was heard of its chunks
        late = lab.submit("alice", "flatness", **params)
        # before: attached to the lost leader, and like the first follower it waited for ever
        assert "waiting for job" not in late["message"], late
        s.activate()
        with new_session() as ses:
            out = jobs.reconcile(ses)
        assert out["requeued"] == [leader["id"]]  # before: a fanned-out job was never re-queued
        assert "made no progress" in lab.job("bob", leader["id"])["message"]
        s.worker = start_worker(s.env, s.home / "worker.log", "after-wipe")
        for job in (leader, follower, late):
            assert lab.wait(job, timeout=300)["status"] == "succeeded", job
        with new_session() as ses:
            assert ses.get(Job, leader["id"]).attempts == 2
    finally:
        lab.cancel_all()
        stop(s.worker)
        close_stack(s)


def test_a_job_ranked_ahead_of_a_fanned_out_job_is_forecast_to_start_after_its_current_chunk():
    """bob's fanned-out job (10 chunks, half done in 10 s: 10 s left, 2 s a chunk) holds the one worker;
    alice's queued job ranks ahead of it: it starts after the current chunk (before: after all of bob's
    job); bob's next job after alice's (rate known: 3 s) and the rest of his chunks (8 s)."""
    from backend.routes.jobs import add_queue_positions, job_dict

    s = make_stack("fairfan", with_worker=False)
    try:
        now = utcnow()
        with new_session() as ses:
            mk = lambda key, **kw: Job(params={}, inputs=[], cache_key=str(key), queue="batch", **kw)  # noqa: E731
            ses.add_all([mk(0, kind="train", owner="carol", status="succeeded", cost=100.0, started_at=now - timedelta(hours=3),
                            finished_at=now - timedelta(hours=3) + timedelta(seconds=3)),  # trains: 0.03 s per unit
                         mk(1, kind="flatness", owner="bob", status="running", cost=1e6, fanout=10, progress=0.5,
                            started_at=now - timedelta(seconds=10))])
            ses.flush()
            alice = mk(2, kind="train", owner="alice", status="queued", cost=100.0)
            bob = mk(3, kind="train", owner="bob", status="queued", cost=100.0)
            ses.add_all([alice, bob])
            ses.commit()
            rows = [job_dict(alice), job_dict(bob)]
        with read_connection() as conn:
            a, b = add_queue_positions(conn, rows)
        assert (a["queue_position"], b["queue_position"]) == (1, 2)
        assert a["starts_in_seconds"] == pytest.approx(2.0, abs=0.5), a
        assert b["starts_in_seconds"] == pytest.approx(2.0 + 3.0 + 8.0, abs=0.5), b
    finally:
        close_stack(s)
